"""The binary-latent VAE against exact enumeration over all 2^3 latent states."""

from __future__ import annotations

import itertools
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from genzoo.config import TrainConfig
from genzoo.models.binary_vae import BinaryVAE, BinaryVAEConfig
from genzoo.runs import RunConfig, load_checkpoint
from genzoo.training import train

SHAPE = (1, 1, 4)  # four pixels
STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))  # (8, 3)


def tiny_bvae(**overrides) -> BinaryVAE:
    torch.manual_seed(0)
    cfg = BinaryVAEConfig(latent_dim=3, hidden=(5,), activation="tanh", **overrides)
    return BinaryVAE(cfg, SHAPE)


X = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]]).view(2, *SHAPE)


def exact_neg_elbo(model: BinaryVAE, x: torch.Tensor) -> torch.Tensor:
    """-ELBO averaged over the batch, the expectation over q(z|x) summed over all 8 states."""
    q = model.posterior(x)
    z = STATES[:, None, :]  # (8, 1, 3), broadcast against the batch
    q_z = q.log_prob(z).exp()  # (8, B)
    log_px = model.likelihood(z).log_prob(x.flatten(1))  # (8, B)
    return -((q_z * log_px).sum(0) - model.kl(q)).mean()


def encoder_grad(model: BinaryVAE, loss: torch.Tensor) -> torch.Tensor:
    params = list(model.encoder.parameters())
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def test_bernoulli_kl_matches_enumeration_and_formula() -> None:
    model = tiny_bvae()
    with torch.no_grad():
        q = model.posterior(X)
        kl = model.kl(q)  # (B,)
        log_q = q.log_prob(STATES[:, None, :])  # (8, B)
        enumerated = (log_q.exp() * (log_q - math.log(1 / 8))).sum(0)
        mu = q.mean
        formula = (mu * mu.log() + (1 - mu) * (1 - mu).log()).sum(-1) + 3 * math.log(2)
    torch.testing.assert_close(kl, enumerated)
    torch.testing.assert_close(kl, formula)


@pytest.mark.parametrize("baseline", ["none", "ema"])
def test_score_function_estimator_is_unbiased(baseline: str) -> None:
    model = tiny_bvae(baseline=baseline)
    exact = encoder_grad(model, exact_neg_elbo(model, X))
    if baseline == "ema":  # any constant baseline keeps the estimator unbiased
        model.baseline.fill_(-2.0)
    copies, repeats = 500, 60  # each estimate averages 500 single-sample estimates per image
    x = X.repeat(copies, 1, 1, 1)
    torch.manual_seed(1)
    estimates = torch.stack(
        [encoder_grad(model, model.loss(x)[0]) for _ in range(repeats)]
    )  # (R, P)
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(repeats)
    assert ((mean - exact).abs() < 5 * se + 1e-6).all(), (mean - exact) / se
    assert exact.abs().max() > 10 * se.max()  # the check has the power to see a wrong gradient


def test_baseline_lowers_the_variance_of_the_encoder_gradient() -> None:
    variances = {}
    for baseline in ("none", "ema"):
        model = tiny_bvae(baseline=baseline)
        if baseline == "ema":
            with torch.no_grad():  # a running average of log p(x|z) that has settled
                model.baseline.copy_(-exact_neg_elbo(model, X))
        torch.manual_seed(2)
        variances[baseline] = model.encoder_gradients(X, 100).var(0).mean().item()
    assert variances["ema"] < 0.5 * variances["none"], variances


def test_gumbel_estimator_uses_binary_latents_and_trains_the_encoder() -> None:
    model = tiny_bvae(estimator="gumbel", temperature=0.5)
    seen = []
    model.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    loss, _ = model.loss(X)
    assert set(torch.cat(seen).unique().tolist()) <= {0.0, 1.0}  # hard forward pass
    assert encoder_grad(model, loss).abs().sum() > 0  # relaxed backward pass


def test_importance_sampled_likelihood_matches_enumeration() -> None:
    model = tiny_bvae()
    with torch.no_grad():
        log_joint = model.prior().log_prob(STATES)[:, None] + model.likelihood(
            STATES[:, None, :]
        ).log_prob(X.flatten(1))  # (8, B)
        exact = torch.logsumexp(log_joint.double(), 0)
    torch.manual_seed(3)
    k = 20000
    estimate = model.log_likelihood(X, k)
    w = model.log_weights(X, k).double().exp()
    se = w.std(0) / (w.mean(0) * math.sqrt(k))
    assert ((estimate - exact).abs() < 4 * se + 1e-4).all(), (estimate, exact, se)


def test_ema_baseline_tracks_log_likelihood_and_diagnostic_is_logged() -> None:
    model = tiny_bvae(ema_decay=0.5)
    assert torch.isnan(model.baseline)
    optimizers = model.configure_optimizers(1e-3)
    stats = model.train_step(X, optimizers)
    assert model.baseline.item() == pytest.approx(-stats["recon"], rel=1e-5)  # first batch
    diag = model.epoch_diagnostics(X)
    assert diag["encoder_grad_var"] > 0
    first = model.baseline.item()
    assert first == pytest.approx(-stats["recon"], rel=1e-5)  # not moved
    stats = model.train_step(X, optimizers)  # then halfway (decay 0.5) to the new mean
    assert model.baseline.item() == pytest.approx(0.5 * first - 0.5 * stats["recon"], rel=1e-5)


@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="inductor needs a C++ compiler"
)
def test_a_compiled_reinforce_run_trains_and_moves_its_baseline(
    data_dir: Path, tmp_path: Path
) -> None:
    # `genzoo train bvae --compile` once failed at its first backward: the objective wrote
    # the baseline that its compiled backward still read.
    cfg = RunConfig(
        "bvae",
        TrainConfig(epochs=1, batch_size=16, val_size=20, train_size=48, compile=True),
        BinaryVAEConfig(hidden=(8,), latent_dim=4),
    )
    summary = train(tmp_path / "run", cfg, device="cpu")
    assert math.isfinite(summary["best_val_neg_elbo"])
    model = BinaryVAE(cfg.model_config, (1, 28, 28))
    load_checkpoint(tmp_path / "run", "last", model, with_state=False)
    assert math.isfinite(model.baseline.item())


def test_linear_decoder_is_a_sigmoid_belief_network() -> None:
    model = tiny_bvae(decoder="linear")
    assert [type(m).__name__ for m in model.decoder] == ["Linear"]
