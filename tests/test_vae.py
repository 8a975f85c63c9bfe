"""Properties of the Gaussian VAE checked against references: closed forms, bounds,
and a marginal likelihood computed by numerical integration."""

from __future__ import annotations

import math

import pytest
import torch

from genzoo.models.vae import VAE, VAEConfig


def tiny_vae(latent_dim: int = 2, shape=(1, 4, 4), seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(VAEConfig(latent_dim=latent_dim, hidden=(16,), activation="tanh"), shape)


def binary_batch(n: int, shape=(1, 4, 4), seed: int = 1) -> torch.Tensor:
    return (torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def test_closed_form_kl_matches_formula_and_monte_carlo() -> None:
    model, x = tiny_vae(latent_dim=3), binary_batch(4)
    with torch.no_grad():
        _, kl = model.elbo_terms(x)
        q = model.posterior(x)
        mu, var = q.mean, q.variance
        formula = 0.5 * (mu**2 + var - 1 - var.log()).sum(-1)  # Kingma & Welling, appendix B
        torch.testing.assert_close(kl, formula)
        z = q.sample((200_000,))  # (S, B, L)
        log_ratio = q.log_prob(z) - model.prior().log_prob(z)  # (S, B)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(z.shape[0])
    assert ((kl - mc).abs() < 4 * se).all(), (kl, mc, se)


def test_iwae_bound_exceeds_elbo_and_grows_with_k() -> None:
    model, x = tiny_vae(), binary_batch(8)
    repeats = 400
    with torch.no_grad():
        recon, kl = model.elbo_terms(x)
        elbo = -(recon + kl).mean()
        bounds = {}
        for k in (1, 5, 50):
            log_w = model.log_weights(x, repeats * k).view(repeats, k, -1)  # (R, k, B)
            per_repeat = (torch.logsumexp(log_w, 1) - math.log(k)).mean(-1)  # (R,)
            bounds[k] = (per_repeat.mean(), per_repeat.std() / math.sqrt(repeats))
    # K=1 is the ELBO itself (sampled KL instead of closed form): equal within error.
    assert abs(bounds[1][0] - elbo) < 4 * bounds[1][1] + 0.05
    for small, large in ((1, 5), (5, 50)):
        gap = bounds[large][0] - bounds[small][0]
        assert gap > 4 * math.hypot(bounds[large][1], bounds[small][1]), bounds


def exact_log_marginal(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log ∫ N(z; 0, 1) p(x|z) dz for a 1-D latent, by the trapezoid rule."""
    z = torch.linspace(-12, 12, 40001)[:, None]  # (G, 1)
    with torch.no_grad():
        log_joint = model.likelihood(z[:, None]).log_prob(x.flatten(1)).double()  # (G, B)
        log_joint += torch.distributions.Normal(0.0, 1.0).log_prob(z).double()  # (G, 1)
    dz = (z[1] - z[0]).item()
    weights = torch.full((z.shape[0], 1), dz, dtype=torch.float64)
    weights[[0, -1]] /= 2
    return torch.logsumexp(log_joint + weights.log(), 0)  # (B,)


@pytest.mark.parametrize("proposal", ["posterior", "prior"])
def test_importance_sampled_likelihood_matches_numerical_integral(proposal: str) -> None:
    shape = (1, 1, 3)  # three pixels and one latent: p(x) is a 1-D integral
    model, x = tiny_vae(latent_dim=1, shape=shape), binary_batch(6, shape)
    torch.manual_seed(5)
    k = 20000  # 30 chunks of at most MAX_DECODER_ROWS rows: the chunked sum is checked too
    estimate = model.log_likelihood(x, k, proposal)
    exact = exact_log_marginal(model, x)
    with torch.no_grad():  # the estimator's own standard error: std(w) / (mean(w) sqrt(k))
        w = model.log_weights(x, k, proposal).double().exp()
    se = w.std(0) / (w.mean(0) * math.sqrt(k))
    assert ((estimate - exact).abs() < 4 * se + 1e-4).all(), (estimate, exact, se)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_train_step_updates_encoder_and_decoder(objective: str) -> None:
    torch.manual_seed(0)
    model = VAE(
        VAEConfig(latent_dim=2, hidden=(16,), objective=objective, k=3, mc_samples=2), (1, 4, 4)
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = model.train_step(binary_batch(8), model.configure_optimizers(1e-2))
    assert {"loss", "neg_elbo", "recon", "kl"} <= stats.keys()
    assert stats["neg_elbo"] == pytest.approx(stats["recon"] + stats["kl"])
    if objective == "iwae":
        assert stats["loss"] < stats["neg_elbo"] + 1.0  # a tighter bound, up to sampling noise
    for name, p in model.named_parameters():
        assert not torch.equal(before[name], p), f"{name} was not updated"


def test_image_space_methods_have_image_shapes() -> None:
    model, x = tiny_vae(), binary_batch(5)
    assert model.sample(7).shape == (7, 1, 4, 4)
    assert set(model.sample(7).unique().tolist()) <= {0.0, 1.0}
    assert model.reconstruct(x).shape == x.shape
    assert model.encode(x).shape == (5, 2)
    means = model.decode(torch.zeros(3, 2))
    assert means.shape == (3, 1, 4, 4) and ((means > 0) & (means < 1)).all()
    terms = model.evaluate_batch(x)
    assert all(t.shape == (5,) for t in terms.values())
    torch.testing.assert_close(terms["neg_elbo"], terms["recon"] + terms["kl"])


@pytest.mark.parametrize("samples", [1, 50])
@pytest.mark.parametrize("binary", [True, False])
def test_fast_log_likelihood_equals_the_bernoulli_distribution(samples: int, binary: bool) -> None:
    model = tiny_vae()
    x = binary_batch(6) if binary else torch.rand(6, 1, 4, 4)  # grey targets: the same BCE
    z = torch.randn(samples, 6, 2)
    with torch.no_grad():
        expected = model.likelihood(z).log_prob(x.flatten(1))  # (S, B)
        torch.testing.assert_close(model.log_px_given_z(z, x.flatten(1)), expected)
