"""The autoencoder and its Gaussian-mixture sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from genzoo.errors import GenzooError
from genzoo.models.autoencoder import Autoencoder, AutoencoderConfig
from genzoo.runs import load_checkpoint, save_checkpoint

SHAPE = (1, 4, 4)


def tiny_ae(**overrides) -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(
        AutoencoderConfig(latent_dim=2, hidden=(16,), gmm_components=3, **overrides), SHAPE
    )


def clustered_codes(n: int = 600) -> torch.Tensor:
    rng = np.random.default_rng(0)
    centres = np.array([[-4.0, 0.0], [4.0, 1.0], [0.0, 5.0]])
    return torch.from_numpy(centres[np.arange(n) % 3] + rng.normal(0, 0.5, (n, 2))).float()


def test_mixture_matches_sklearn_and_survives_a_checkpoint(tmp_path: Path) -> None:
    model = tiny_ae()
    with pytest.raises(GenzooError, match="mixture"):
        model.sample(4)
    codes = clustered_codes()
    model.fit_mixture(codes, seed=0)
    reference = GaussianMixture(model.cfg.gmm_components, covariance_type="full", random_state=0)
    gmm = reference.fit(codes.double().numpy())
    probe = codes[:50]
    expected = torch.from_numpy(gmm.score_samples(probe.double().numpy())).float()
    torch.testing.assert_close(model.mixture().log_prob(probe), expected, rtol=1e-4, atol=1e-4)

    save_checkpoint(tmp_path, "best", model, {"epoch": 1})
    torch.manual_seed(9)  # different initial weights: the checkpoint must bring everything
    reloaded = Autoencoder(model.cfg, SHAPE)
    load_checkpoint(tmp_path, "best", reloaded)
    torch.testing.assert_close(reloaded.mixture().log_prob(probe), model.mixture().log_prob(probe))
    samples = reloaded.sample(5)
    assert samples.shape == (5, *SHAPE) and ((samples >= 0) & (samples <= 1)).all()
    assert reloaded.sample_standard_normal(3).shape == (3, *SHAPE)


def test_mixture_samples_follow_the_fitted_components() -> None:
    model = tiny_ae()
    model.fit_mixture(clustered_codes())
    z = model.mixture().sample((3000,))
    centres = torch.tensor([[-4.0, 0.0], [4.0, 1.0], [0.0, 5.0]])
    nearest = torch.cdist(z, centres).argmin(1)
    assert torch.bincount(nearest, minlength=3).float().div(3000).sub(1 / 3).abs().max() < 0.05


@pytest.mark.parametrize("recon", ["bce", "mse"])
def test_sparsity_penalty_shrinks_the_code(recon: str) -> None:
    x = (torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    l1 = {}
    for sparsity in (0.0, 1.0):
        model = tiny_ae(recon=recon, sparsity=sparsity)
        optimizers = model.configure_optimizers(1e-2)
        for _ in range(150):
            stats = model.train_step(x, optimizers)
        terms = model.evaluate_batch(x)
        torch.testing.assert_close(terms["loss"], terms["recon"] + sparsity * terms["l1"])
        l1[sparsity] = stats["l1"]
    assert l1[1.0] < 0.5 * l1[0.0], l1
