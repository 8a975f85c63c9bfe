"""Diffusion and flow matching (models/diffusion.py) against references: the schedules'
formulas, the posterior by Bayes' rule, the bound's stratified sum against the full sum,
the decoder's normalisation, DDIM written out by hand, the ODE likelihood of a Gaussian
in closed form, and guidance at w = 0. Tiny U-Nets on 8x8 images, T = 8."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from PIL import Image
from torch import nn
from torch.distributions import Normal

from genzoo import quality
from genzoo.cli import main
from genzoo.comparison import nll_samples
from genzoo.errors import GenzooError
from genzoo.models import diffusion
from genzoo.models import diffusion_process as process
from genzoo.models.diffusion import Diffusion, DiffusionConfig
from genzoo.models.diffusion_process import (
    BIN,
    log_discretized_gaussian,
    ode_log_likelihood,
    posterior,
    schedule_alpha_bars,
    schedule_betas,
    stratified_timesteps,
)
from genzoo.runs import load_trained

T = 8
SHAPE = (1, 8, 8)
TINY = {"base_channels": 8, "channel_mults": (1, 2), "timesteps": T, "sample_steps": 4}


def model(**changes) -> Diffusion:
    """A tiny model whose output layer is random, not zero as at initialisation, so that
    its predictions depend on its inputs."""
    torch.manual_seed(0)
    m = Diffusion(DiffusionConfig(**{**TINY, **changes}), SHAPE).eval()
    nn.init.normal_(m.net.conv_out[-1].weight, std=0.3)
    return m


def grey(n: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *SHAPE), generator=generator).float() / 255


# ---------------------------------------------------------------------- schedules


def test_cosine_schedule_is_nichol_and_dhariwals() -> None:
    s, steps = 0.008, 1000
    f = [math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2 for t in range(steps + 1)]
    betas = schedule_betas("cosine", steps)
    expected = torch.tensor([min(1 - f[t] / f[t - 1], 0.999) for t in range(1, steps + 1)])
    torch.testing.assert_close(betas, expected.double())
    alpha_bar = schedule_alpha_bars("cosine", steps)
    assert alpha_bar[0] == 1 and betas[-1] == 0.999  # the last step is clipped
    # Before the clipping, abar_t telescopes to f(t) / f(0).
    unclipped = torch.tensor(f[:-1]).double() / f[0]
    torch.testing.assert_close(alpha_bar[:-1], unclipped)
    torch.testing.assert_close(alpha_bar[1:], torch.cumprod(1 - betas, 0))


@pytest.mark.parametrize("steps", [1000, 100])
def test_linear_schedule_is_ho_et_als_scaled(steps: int) -> None:
    scale = 1000 / steps
    expected = torch.linspace(1e-4 * scale, 0.02 * scale, steps, dtype=torch.float64)
    torch.testing.assert_close(schedule_betas("linear", steps), expected)
    torch.testing.assert_close(
        schedule_alpha_bars("linear", steps)[1:], torch.cumprod(1 - expected, 0)
    )


def test_posterior_is_bayes_rule() -> None:
    """q(x_s | x_t, x_0) from q(x_s | x_0) = N(sqrt(abar_s) x_0, 1 - abar_s) and
    q(x_t | x_s) = N(sqrt(abar_t / abar_s) x_s, 1 - abar_t / abar_s)."""
    alpha_bar = schedule_alpha_bars("cosine", 50)
    x0, xt = 0.3, -1.2
    for t, s in [(2, 1), (30, 29), (50, 10), (7, 0)]:
        ab_t, ab_s = alpha_bar[t].item(), alpha_bar[s].item()
        a = ab_t / ab_s
        precision = 1 / (1 - ab_s) + a / (1 - a) if s > 0 else math.inf
        c0, ct, var, beta = posterior(ab_t, ab_s)
        if s == 0:  # x_0 itself
            assert (c0, ct, var) == pytest.approx((1, 0, 0), abs=1e-12)
            continue
        mean = (ab_s**0.5 * x0 / (1 - ab_s) + a**0.5 * xt / (1 - a)) / precision
        assert c0 * x0 + ct * xt == pytest.approx(mean, rel=1e-9)
        assert var == pytest.approx(1 / precision, rel=1e-9) and beta == pytest.approx(1 - a)


# ---------------------------------------------------------------------- the bound


def learned(fraction: torch.Tensor, var: float, beta: float) -> torch.Tensor:
    """Nichol & Dhariwal's eq. 15 written out: exp(f log beta + (1 - f) log var)."""
    return torch.exp(fraction * math.log(beta) + (1 - fraction) * math.log(var))


@pytest.mark.parametrize("variance", ["posterior", "beta", "learned"])
def test_each_kl_of_the_bound_is_the_gaussian_kl(variance: str) -> None:
    m = model(objective="eps", variance=variance)
    x0, noise = 2 * grey(3) - 1, torch.randn(3, *SHAPE)
    alpha_bar = m.alpha_bar_list
    for step in range(2, T + 1):
        t = torch.full((3,), step)
        ab = alpha_bar[step]
        x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * noise
        with torch.no_grad():
            x0_hat, _, fraction = m.denoise(x_t, t)
        c0, ct, var, beta = posterior(ab, alpha_bar[step - 1])
        p_var = {"posterior": var, "beta": beta}.get(variance)
        if variance == "learned":
            assert fraction.shape == x0.shape and fraction.std() > 0  # per pixel
            p_var = learned(fraction, var, beta)
        else:
            assert fraction is None
        mean_q, mean_p = c0 * x0 + ct * x_t, c0 * x0_hat + ct * x_t
        # KL(N(m_q, v_q) || N(m_p, v_p)) per pixel, written out.
        kl = 0.5 * (
            torch.as_tensor(p_var / var).log() + var / p_var + (mean_q - mean_p) ** 2 / p_var - 1
        )
        torch.testing.assert_close(
            m.bound_term(x0, t, noise), kl.flatten(1).sum(1).double(), rtol=1e-4, atol=1e-4
        )


@pytest.mark.parametrize("variance", ["posterior", "learned"])
def test_the_first_term_is_the_discretized_decoder(variance: str) -> None:
    """At t = 1: -log p(x_0 | x_1), a fixed variance beta_1 (either choice: the posterior's
    is 0 there), a learned one between step 2's posterior variance and beta_1."""
    m = model(objective="eps", variance=variance)
    x0, noise, t = 2 * grey(3) - 1, torch.randn(3, *SHAPE), torch.ones(3, dtype=torch.long)
    ab = m.alpha_bar_list
    x_t = ab[1] ** 0.5 * x0 + (1 - ab[1]) ** 0.5 * noise
    x0_hat, _, fraction = m.denoise(x_t, t)
    var = (
        1 - ab[1] if fraction is None else learned(fraction, posterior(ab[2], ab[1])[2], 1 - ab[1])
    )
    expected = -log_discretized_gaussian(x0, x0_hat, var**0.5).flatten(1).sum(1)
    torch.testing.assert_close(m.bound_term(x0, t, noise).float(), expected)  # fp32 sums


def test_a_learned_variance_spans_the_posteriors_to_beta() -> None:
    var, beta = 1e-4, 2e-2
    fraction = torch.tensor([0.0, 0.5, 1.0])
    sigma2 = process.learned_variance(fraction, var, beta)
    torch.testing.assert_close(sigma2, torch.tensor([var, (var * beta) ** 0.5, beta]))


def test_the_hybrid_loss_adds_the_bounds_term_and_trains_only_the_variances(
    monkeypatch,
) -> None:
    """L_simple + lambda T/1000 L_vlb (L_vlb the bound's term at t in bits/dim), whose
    gradient reaches the network's mean output as L_simple's alone (the stop-gradient)."""
    x0, noise = 2 * grey(4) - 1, torch.randn(4, *SHAPE)
    t = torch.tensor([1, 2, 5, T])
    m = model(objective="eps", variance="learned", hybrid_weight=0.0)
    mse = m.per_example_loss(x0, t, noise)
    terms = m.bound_term(x0, t, noise) / (x0[0].numel() * math.log(2))
    hybrid = model(objective="eps", variance="learned", hybrid_weight=0.5)
    expected = mse.double() + 0.5 * T / 1000 * terms
    torch.testing.assert_close(hybrid.per_example_loss(x0, t, noise).double(), expected)
    # The network's output as a leaf: the gradient on its two halves under each weight.
    out = torch.randn(4, 2, *SHAPE[1:])
    grads = []
    for weight in (0.0, 0.5):
        m = model(objective="eps", variance="learned", hybrid_weight=weight)
        leaf = out.clone().requires_grad_(True)
        monkeypatch.setattr(m.net, "forward", lambda *_, leaf=leaf: leaf)
        m.per_example_loss(x0, t, noise).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0][:, :1], grads[1][:, :1])  # the mean: L_simple's
    assert (grads[0][:, 1:] == 0).all() and (grads[1][:, 1:] != 0).any()  # the variance


def test_the_decoder_sums_to_one_over_the_256_levels() -> None:
    levels = (2 * torch.arange(256).double() / 255 - 1)[:, None]  # (256, 1)
    means = torch.tensor([-1.3, -1.0, -0.5, 0.0, 0.01, 0.9, 1.0, 1.6]).double()
    for std in (1e-3, 0.01, 0.3, 2.0):
        log_p = log_discretized_gaussian(levels, means[None], std)  # (256, 8)
        assert torch.isfinite(log_p).all()
        torch.testing.assert_close(log_p.exp().sum(0), torch.ones(8).double())
    # The mass at a level is the Gaussian's on its bin.
    x, mean, std = torch.tensor([0.2]), torch.tensor([0.1]), 0.05
    normal = Normal(mean, std)
    expected = normal.cdf(x + BIN / 2) - normal.cdf(x - BIN / 2)
    torch.testing.assert_close(log_discretized_gaussian(x, mean, std).exp(), expected)


def test_strata_cover_every_step_once() -> None:
    for samples in (1, 3, 8):
        strata = stratified_timesteps(T, samples, 1000, torch.device("cpu"))
        assert sum(size for _, size in strata) == T
        lo = 0
        for t, size in strata:  # each draw within its stratum, every step of it drawn
            assert sorted(set(t.tolist())) == list(range(lo + 1, lo + size + 1))
            lo += size


def full_bound(m: Diffusion, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """-(L_T + sum over every t of the bound's term), brute force."""
    ab_T = m.alpha_bar_list[-1]
    prior = 0.5 * (ab_T * x0**2 + (1 - ab_T) - 1 - math.log(1 - ab_T))  # KL to N(0, 1)
    terms = sum(m.bound_term(x0, torch.full((len(x0),), t), noise) for t in range(1, T + 1))
    return -(prior.flatten(1).sum(1).double() + terms)


@pytest.mark.parametrize(("objective", "variance"), [("eps", "posterior"), ("v", "learned")])
def test_the_stratified_bound_is_the_full_sum_in_expectation(objective: str, variance: str) -> None:
    m = model(objective=objective, variance=variance)
    x0, noise = 2 * grey(2) - 1, torch.randn(2, *SHAPE)
    exact = full_bound(m, x0, noise)
    torch.testing.assert_close(m.variational_bound(x0, T, noise), exact)  # one t per stratum
    draws = 500  # estimates of each image's bound: copies of it in one batch
    for samples in (2, 3):  # 3 strata of sizes 2, 3, 3
        estimates = m.variational_bound(
            x0.repeat(draws, 1, 1, 1), samples, noise.repeat(draws, 1, 1, 1)
        ).view(draws, 2)
        se = estimates.std(0) / math.sqrt(draws)
        assert ((estimates.mean(0) - exact).abs() < 4 * se).all()


def test_the_likelihood_is_in_nats_per_8_bit_image() -> None:
    """Flow matching with the untrained net (its zero last layer: v = 0) is the density
    N(0, I) on the dequantized image in [-1, 1], plus D log(2/255) for the bins."""
    m = Diffusion(DiffusionConfig(**TINY), SHAPE).eval()
    x = grey(3)
    torch.manual_seed(5)
    log_p = m.log_likelihood(x, 2)
    torch.manual_seed(5)
    z = 2 * x - 1 + BIN * (torch.rand_like(x) - 0.5)
    expected = Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1) + z[0].numel() * math.log(BIN)
    assert log_p.dtype == torch.float64
    torch.testing.assert_close(log_p, expected.double())


def test_ode_likelihood_of_a_gaussian_is_its_closed_form() -> None:
    """Data N(mu, s^2) on the straight path x_t = (1 - t) x_0 + t eps have marginals
    N((1 - t) mu, (1 - t)^2 s^2 + t^2), moved by the velocity field below; the ODE's
    log-likelihood must be the data's log density."""
    mu, s = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 1.5, 0.8])

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        var = (1 - t) ** 2 * s**2 + t**2
        return -mu + (t - (1 - t) * s**2) / var * (x - (1 - t) * mu)

    z = mu + s * torch.randn(4, 3, dtype=torch.float64)
    probes = 2 * torch.randint(2, (2, 4, 3)).double() - 1
    log_p = ode_log_likelihood(velocity, z, 200, probes)
    torch.testing.assert_close(log_p, Normal(mu, s).log_prob(z).sum(1), rtol=0, atol=1e-4)


def test_the_ode_grid_resolves_a_density_as_narrow_as_a_grey_level(monkeypatch) -> None:
    """Data N(0, s^2) with s half a grey level's bin: the divergence changes within t ~ s
    of the data, which the grid's steps dense near t = 0 follow and a uniform grid's
    do not (its error 40 times larger at 100 steps)."""
    s = 0.004

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        return (t - (1 - t) * s**2) / ((1 - t) ** 2 * s**2 + t**2) * x

    z = s * torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    probes = 2 * torch.randint(2, (2, 4, 3)).double() - 1
    exact = Normal(0.0, s).log_prob(z).sum(1)
    error = (ode_log_likelihood(velocity, z, 100, probes) - exact).abs().max()
    monkeypatch.setattr(process, "ode_time_grid", lambda n: torch.linspace(0, 1, n + 1).tolist())
    uniform_error = (ode_log_likelihood(velocity, z, 100, probes) - exact).abs().max()
    assert error < 0.05 and uniform_error > 10 * error


# ---------------------------------------------------------------------- sampling


def test_ddim_with_every_step_is_the_deterministic_chain() -> None:
    m = model(objective="eps", sampler="ddim", sample_steps=T, sample_precision="fp32")
    torch.manual_seed(3)
    samples = m.sample(2)
    torch.manual_seed(3)
    x = torch.randn(2, *SHAPE)
    ab = m.alpha_bar_list
    with torch.no_grad():
        for t in range(T, 0, -1):
            eps = m.net(x, torch.full((2,), t / T))
            x0 = ((x - (1 - ab[t]) ** 0.5 * eps) / ab[t] ** 0.5).clamp(-1, 1)
            eps = (x - ab[t] ** 0.5 * x0) / (1 - ab[t]) ** 0.5
            x = ab[t - 1] ** 0.5 * x0 + (1 - ab[t - 1]) ** 0.5 * eps
    torch.testing.assert_close(samples, ((x + 1) / 2).clamp(0, 1))


@pytest.mark.parametrize(
    ("objective", "sampler", "variance"),
    [
        ("eps", "ddpm", "posterior"),
        ("eps", "ddim", "posterior"),
        ("v", "ddpm", "beta"),
        ("eps", "ddpm", "learned"),
        ("v", "ddim", "learned"),
        ("flow-matching", "euler", "posterior"),
        ("flow-matching", "heun", "posterior"),
    ],
)
def test_samplers_give_images_and_chains(objective: str, sampler: str, variance: str) -> None:
    m = model(objective=objective, sampler=sampler, variance=variance)
    samples = m.sample(5)
    assert samples.shape == (5, *SHAPE) and ((samples >= 0) & (samples <= 1)).all()
    chain: list[torch.Tensor] = []
    with torch.no_grad():
        m.generate(torch.randn(3, *SHAPE), steps=3, chain=chain)
    assert len(chain) == 3 and all(x.shape == (3, *SHAPE) for x in chain)


@pytest.mark.parametrize(
    ("objective", "sampler", "steps", "evaluations"),
    [
        ("flow-matching", "auto", 25, 50),  # auto: heun, two evaluations a step
        ("flow-matching", "euler", 50, 50),
        ("eps", "ddpm", T, T),  # 50 at most T
    ],
)
def test_unset_steps_spend_fifty_network_evaluations(
    monkeypatch, objective: str, sampler: str, steps: int, evaluations: int
) -> None:
    m = model(objective=objective, sampler=sampler, sample_steps=None)
    calls = []
    monkeypatch.setattr(m.net, "forward", lambda x, *_: calls.append(1) or torch.zeros_like(x))
    chain: list[torch.Tensor] = []
    with torch.no_grad():
        m.generate(torch.randn(2, *SHAPE), chain=chain)
    assert (len(chain), len(calls)) == (steps, evaluations)
    assert m.sampling_note().startswith(f"{m.sampler}, {steps} steps")


@pytest.mark.parametrize("objective", ["eps", "flow-matching"])
def test_bf16_sampling_follows_the_fp32_chain_from_the_same_noise(objective: str) -> None:
    noise = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model(objective=objective, sample_precision="fp32").generate(noise)
        m = model(objective=objective, sample_precision="bf16")
        rounded = m.generate(noise)
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)
    # bfloat16 keeps 8 bits of mantissa: each pass's relative error is about 2^-9.
    assert (rounded - exact).abs().mean() < 0.02 * exact.abs().mean()
    assert m.sampling_note().endswith(", bf16")


@pytest.mark.parametrize("kernels", [True, False])
def test_auto_sample_precision_is_bf16_where_the_device_has_its_kernels(
    monkeypatch, kernels: bool
) -> None:
    noise = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(diffusion, "has_bf16_kernels", lambda device: kernels)
    with torch.no_grad():
        auto = model().generate(noise)
        chosen = model(sample_precision="bf16" if kernels else "fp32").generate(noise)
        other = model(sample_precision="fp32" if kernels else "bf16").generate(noise)
    assert torch.equal(auto, chosen) and not torch.equal(auto, other)
    assert model().sampling_note().endswith(", bf16") == kernels


def test_training_steps_run_for_every_objective() -> None:
    for objective, variance in [
        ("eps", "posterior"),
        ("v", "learned"),
        ("flow-matching", "posterior"),
    ]:
        m = model(objective=objective, variance=variance).train()
        stats = m.train_step(grey(4), m.configure_optimizers(1e-3))
        assert math.isfinite(stats["loss"])


def test_validation_terms_are_the_same_every_time() -> None:
    m, x = model(objective="v"), grey(3)
    first = m.evaluate_batch(x)["loss"]
    torch.manual_seed(123)
    assert first.shape == (3,) and torch.equal(first, m.evaluate_batch(x)["loss"])


def test_logit_normal_times_follow_their_distribution() -> None:
    """Flow matching: logit(t) is a standard normal (Kolmogorov-Smirnov); discrete: step i
    has the logit-normal's mass over ((i-1)/T, i/T] (chi-square), every step in 1..T."""
    flow, n = model(), 20_000
    generator = torch.Generator().manual_seed(5)
    t = flow.draw_times(n, torch.device("cpu"), generator, how="logit-normal").double()
    assert scipy.stats.kstest(torch.logit(t).numpy(), "norm").pvalue > 1e-3
    uniform = flow.draw_times(n, torch.device("cpu"), generator).numpy()
    assert scipy.stats.kstest(uniform, "uniform").pvalue > 1e-3
    steps = model(objective="eps").draw_times(n, torch.device("cpu"), generator, "logit-normal")
    counts = torch.bincount(steps, minlength=T + 1)
    assert counts[0] == 0 and len(counts) == T + 1
    edges = scipy.special.logit(np.arange(T + 1) / T)  # -inf ... inf
    expected = n * np.diff(scipy.stats.norm.cdf(edges))
    assert scipy.stats.chisquare(counts[1:].numpy(), expected).pvalue > 1e-3
    assert not np.allclose(expected, n / T, rtol=0.2)  # far from uniform: the test can fail


def test_near_data_times_are_half_uniform_half_log_uniform() -> None:
    """Every other time log-uniform on [NEAR_DATA_MIN, 1) (Kolmogorov-Smirnov on log t),
    the rest uniform; discrete steps from the same times, every step in 1..T."""
    flow, n = model(), 20_000
    generator = torch.Generator().manual_seed(6)
    t = flow.draw_times(n, torch.device("cpu"), generator, how="near-data").double()
    uniform, log_uniform = t[0::2].numpy(), t[1::2].log().numpy()
    assert scipy.stats.kstest(uniform, "uniform").pvalue > 1e-3
    low = math.log(diffusion.NEAR_DATA_MIN)
    assert scipy.stats.kstest(log_uniform, "uniform", args=(low, -low)).pvalue > 1e-3
    assert scipy.stats.kstest(t.numpy(), "uniform").pvalue < 1e-6  # the test can fail
    steps = model(objective="eps").draw_times(n, torch.device("cpu"), generator, "near-data")
    assert steps.min() == 1 and steps.max() <= T
    first = 1 - math.log(T) / -low  # the log-uniform's mass below 1/T: the first step
    assert abs((steps[1::2] == 1).double().mean().item() - first) < 0.02


def test_training_takes_logit_normal_times_and_validation_uniform_ones(monkeypatch) -> None:
    m, seen = model(time_sampling="logit-normal"), []
    original = m.per_example_loss
    monkeypatch.setattr(
        m, "per_example_loss", lambda x0, t, *a: seen.append(t) or original(x0, t, *a)
    )
    torch.manual_seed(0)
    for _ in range(50):
        m.loss(grey(40))
    trained = torch.cat(seen).double()
    assert scipy.stats.kstest(torch.logit(trained).numpy(), "norm").pvalue > 1e-3
    seen.clear()
    m.evaluate_batch(grey(1000))
    assert scipy.stats.kstest(seen[0].numpy(), "uniform").pvalue > 1e-3


# ---------------------------------------------------------------------- guidance


def test_no_guidance_is_the_conditional_model() -> None:
    m = model(conditional=True, guidance=0.0)
    x, t, labels = torch.randn(4, *SHAPE), torch.rand(4), torch.tensor([0, 3, 9, 9])
    with torch.no_grad():
        cond, uncond = m.net(x, t, labels), m.net(x, t, torch.full((4,), 10))
        assert torch.equal(m.predict(x, t, labels, 0.0), cond)
        assert torch.equal(m.predict(x, t, None), uncond)  # no labels: the null label
        torch.testing.assert_close(m.predict(x, t, labels, 2.0), 3 * cond - 2 * uncond)
    assert m.sample_classes(labels).shape == (4, *SHAPE)


def guided_model(**changes) -> Diffusion:
    """A tiny model with a guide kept (after epoch 1) that differs from its network."""
    m = model(**changes)
    m.after_epoch(1)
    nn.init.normal_(m.net.conv_out[-1].weight, std=0.3)  # the net moves on from its guide
    return m


@pytest.mark.parametrize("conditional", [False, True])
def test_autoguidance_pushes_the_prediction_away_from_the_guides(conditional: bool) -> None:
    m = guided_model(guide_epoch=1, conditional=conditional)
    x, t = torch.randn(4, *SHAPE), torch.rand(4)
    labels = torch.tensor([0, 3, 9, 9]) if conditional else None
    with torch.no_grad():
        f, f_guide = m.output(m.net, x, t, labels), m.output(m.guide, x, t, labels)
        assert not torch.allclose(f, f_guide)
        assert torch.equal(m.predict(x, t, labels, autoguidance=0.0), f)
        guided = m.predict(x, t, labels, autoguidance=1.5)
    torch.testing.assert_close(guided, 2.5 * f - 1.5 * f_guide)


def test_the_guide_is_kept_after_its_epoch_and_frozen() -> None:
    m = model(guide_epoch=2)
    m.after_epoch(1)
    assert int(m.guide_from) == 0 and m.autoguidance() == 0.0  # none kept: unguided
    m.after_epoch(2)
    kept = {k: v.clone() for k, v in m.guide.state_dict().items()}
    assert kept.keys() == m.net.state_dict().keys()
    assert all(torch.equal(v, m.net.state_dict()[k]) for k, v in kept.items())
    m.after_epoch(3)  # later epochs leave it
    nn.init.normal_(m.net.conv_out[-1].weight)
    assert all(torch.equal(v, m.guide.state_dict()[k]) for k, v in kept.items())
    assert int(m.guide_from) == 2 and m.autoguidance() == diffusion.AUTOGUIDANCE
    assert not any(p.requires_grad for p in m.guide.parameters())
    assert all(p.requires_grad for p in m.net.parameters())
    optimized = {
        id(p) for group in m.configure_optimizers(1e-3)[0].param_groups for p in group["params"]
    }
    assert optimized == {id(p) for p in m.net.parameters()}


def test_autoguidance_defaults_to_none_where_guidance_is_asked_or_no_guide_was_kept() -> None:
    assert guided_model(guide_epoch=1).autoguidance() == diffusion.AUTOGUIDANCE
    assert guided_model(guide_epoch=1, autoguidance=0.5).autoguidance() == 0.5
    cfg = {"guide_epoch": 1, "conditional": True, "guidance": 2.0}
    assert guided_model(**cfg).autoguidance() == 0.0
    assert model(guide_epoch=0).guide is None and model(guide_epoch=0).autoguidance() == 0.0
    with pytest.raises(GenzooError, match="--autoguidance 0"):
        model(guide_epoch=3, autoguidance=1.0).autoguidance()  # not trained that far


def test_the_default_sampler_spends_the_same_passes_with_a_guide() -> None:
    unguided, guided = model(sample_steps=None), guided_model(guide_epoch=1, sample_steps=None)
    assert (unguided.sampler, unguided.sample_steps) == ("heun", diffusion.DEFAULT_EVALUATIONS // 2)
    assert (guided.sampler, guided.sample_steps) == ("euler", diffusion.DEFAULT_EVALUATIONS // 2)
    eps = guided_model(guide_epoch=1, sample_steps=None, objective="eps", timesteps=1000)
    assert (eps.sampler, eps.sample_steps) == ("ddim", diffusion.DEFAULT_EVALUATIONS // 2)


def test_weights_saved_before_guides_load_with_none_kept() -> None:
    old = model(guide_epoch=0)
    new = model(guide_epoch=2)
    new.load_state_dict(old.state_dict())  # no guide.* keys: strict loading still passes
    assert int(new.guide_from) == 0 and new.autoguidance() == 0.0
    assert all(torch.equal(v, old.net.state_dict()[k]) for k, v in new.net.state_dict().items())


def test_the_sampler_follows_the_guided_prediction() -> None:
    noise = torch.randn(3, *SHAPE)
    settings = {"sampler": "euler", "sample_steps": 1, "sample_precision": "fp32"}
    m = guided_model(guide_epoch=1, autoguidance=1.0, **settings)
    with torch.no_grad():
        t1 = torch.ones(3)
        expected = noise - (2 * m.net(noise, t1) - m.guide(noise, t1))  # one step, g = 1
        torch.testing.assert_close(m.generate(noise), expected)
    assert m.sampling_note() == "euler, 1 steps, autoguidance 1 (guide: epoch 1)"


def test_conditional_training_drops_labels() -> None:
    m = model(conditional=True, label_dropout=0.5).train()
    seen = []
    m.net.register_forward_pre_hook(lambda _, args: seen.append(args[2].clone()))
    m.loss(grey(64), torch.zeros(64, dtype=torch.long))
    assert set(seen[0].tolist()) == {0, 10}


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sample_steps": 0}, "--sample-steps must be at least 1"),
        ({"objective": "eps", "sample_steps": T + 1}, "at most --timesteps (8)"),
        ({"objective": "eps", "sampler": "euler"}, "choose ddpm or ddim"),
        ({"sampler": "ddim"}, "choose euler or heun"),
        ({"guidance": 1.0}, "add --conditional"),
        ({"guidance": 1.0, "conditional": True, "label_dropout": 0.0}, "--label-dropout above 0"),
        ({"base_channels": 12}, "multiple of 8"),
        ({"channel_mults": (1, 1, 1, 1, 1)}, "use fewer --channel-mults"),
        ({"schedule": "linear"}, "--timesteps above 20"),
        ({"variance": "learned"}, "--variance learned is for --objective eps or v"),
        ({"guidance": 1.0, "conditional": True, "autoguidance": 1.0}, "give one"),
    ],
)
def test_bad_settings_are_one_clear_line(changes: dict, message: str) -> None:
    with pytest.raises(GenzooError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Diffusion(DiffusionConfig(**{**TINY, **changes}), SHAPE)


def test_bad_calls_are_one_clear_line() -> None:
    m = model(objective="eps")
    with pytest.raises(GenzooError, match="--iw-samples 8 or fewer"):
        m.log_likelihood(grey(2), T + 1)
    with pytest.raises(GenzooError, match="--iw-samples 1000 or fewer"):
        model().log_likelihood(grey(2), 5000)
    with pytest.raises(GenzooError, match="--binarize none"):
        m.log_likelihood(torch.full((2, *SHAPE), 0.5), 2)
    with pytest.raises(GenzooError, match="at most --timesteps"):
        m.generate(torch.randn(1, *SHAPE), steps=T + 1)
    with pytest.raises(GenzooError, match="trained on labelled batches"):
        model(conditional=True).loss(grey(2))
    with pytest.raises(GenzooError, match="--conditional"):
        m.sample_classes(torch.tensor([1]))


# ---------------------------------------------------------------------- through the CLI

CLI_TINY = [
    "--base-channels", "8", "--channel-mults", "1,2", "--epochs", "1", "--batch-size", "16",
    "--val-size", "20", "--device", "cpu", "--quality-every", "0",
]  # fmt: skip


@pytest.fixture
def eps_run(data_dir, tmp_path):
    """fp32 sampling, so that the notes these tests read are the same on every machine."""
    run = tmp_path / "eps"
    argv = ["train", "diffusion", "--objective", "eps", "--timesteps", "30", "--sample-steps"]
    fp32 = ("--sample-precision", "fp32")
    assert main([*argv, "5", *CLI_TINY, *fp32, "--run-dir", str(run)]) == 0
    return run


def test_sampling_settings_apply_to_a_trained_run(eps_run, tmp_path, capsys) -> None:
    out = tmp_path / "s.npy"
    for sampler, steps in (("ddpm", "30"), ("ddim", "2")):
        argv = ["sample", str(eps_run), "-n", "3", "--sampler", sampler, "--sample-steps", steps]
        assert main([*argv, "-o", str(out), "--force"]) == 0
    capsys.readouterr()
    quality.load_or_train_feature_net(epochs=1, val_size=20)  # briefly, on the tiny data
    argv = ["eval", str(eps_run), "--limit", "4", "--quality", "--n-samples", "6"]
    assert main([*argv, "--sample-steps", "2", "--bound-samples", "30"]) == 0
    printed = capsys.readouterr().out
    assert "variational bound" in printed and "timesteps=30" in printed and "bits/dim" in printed
    result = json.loads((eps_run / "eval.json").read_text())
    assert result["sampling"] == {"sample_steps": 2}
    assert "(ddim, 2 steps)" in result["quality_protocol"]
    assert result["likelihood"]["kind"] == "lower bound" and result["iw_samples"] == 30


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sample-steps", "0"], "must be positive"),
        (["--sample-steps", "31"], "at most --timesteps (30)"),
        (["--sampler", "euler"], "does not fit --objective eps"),
        (["--guidance", "2"], "add --conditional"),
        (["--class", "3"], "--conditional"),
        (["--autoguidance", "1"], "has none (trained fewer epochs"),  # 1 epoch, guide after 2
    ],
)
def test_bad_sampling_input_is_one_line_and_exit_2(eps_run, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(["sample", str(eps_run), *argv, "-o", str(tmp_path / "s.png")]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_a_run_keeps_its_averaged_weights_after_the_guide_epoch(data_dir, tmp_path) -> None:
    runs = {epochs: tmp_path / f"e{epochs}" for epochs in (1, 2)}
    for epochs, run in runs.items():
        argv = ["train", "diffusion", *CLI_TINY, "--epochs", str(epochs), "--ema", "0.9"]
        flags = ["--lr-schedule", "constant", "--guide-epoch", "1", "--sample-steps", "2"]
        assert main([*argv, *flags, "--run-dir", str(run)]) == 0
    _, after_one, _, _ = load_trained(runs[1], "cpu")
    _, after_two, _, _ = load_trained(runs[2], "cpu")
    assert int(after_two.guide_from) == 1
    one, guide = after_one.net.state_dict(), after_two.guide.state_dict()
    assert all(torch.equal(guide[k], one[k]) for k in one)  # the average after epoch 1
    assert not all(torch.equal(after_two.net.state_dict()[k], one[k]) for k in one)
    assert f"autoguidance {diffusion.AUTOGUIDANCE:g} (guide: epoch 1)" in after_two.sampling_note()


def test_class_out_of_range_and_settings_of_another_family(data_dir, tmp_path, capsys) -> None:
    model = Diffusion(DiffusionConfig(**TINY, conditional=True), (1, 28, 28))
    with pytest.raises(GenzooError, match="0 to 9"):
        model.sample_classes(torch.tensor([11]))
    vae = tmp_path / "vae"
    flags = ["--epochs", "1", "--val-size", "20", "--hidden", "8", "--run-dir", str(vae)]
    assert main(["train", "vae", *flags]) == 0
    argv = ["sample", str(vae), "--sample-steps", "5", "-o", str(tmp_path / "s.png")]
    assert main(argv) == 2
    assert "--sample-steps applies to diffusion only" in capsys.readouterr().err
    assert main(["sample", str(vae), "--class", "3", "-o", str(tmp_path / "s.png")]) == 2
    assert "--class applies to class-conditional models" in capsys.readouterr().err


def test_conditional_training_gets_the_labels_and_the_class_reaches_the_net(
    data_dir, tmp_path, monkeypatch, capsys
) -> None:
    seen = []
    real_loss = Diffusion.loss

    def recording_loss(self, x, labels=None):
        seen.append(labels)
        return real_loss(self, x, labels)

    monkeypatch.setattr(Diffusion, "loss", recording_loss)
    run = tmp_path / "cond"
    argv = ["train", "diffusion", "--conditional", "--sample-steps", "3", *CLI_TINY]
    assert main([*argv, "--run-dir", str(run)]) == 0
    # The loop passed each batch's labels (of the fake digits: class = index mod 10).
    assert seen and all(y is not None and y.shape == (16,) for y in seen[:-1])
    assert {"denoising_chain.png", "sample_steps.png", "classes.png"} <= {
        p.name for p in (run / "figures").iterdir()
    }
    draws = {}
    for label in (3, 5):
        out = tmp_path / f"c{label}.npy"
        argv = ["sample", str(run), "-n", "2", "--class", str(label), "--guidance", "1"]
        assert main([*argv, "-o", str(out)]) == 0
        draws[label] = np.load(out)
    assert not np.array_equal(draws[3], draws[5])  # same noise (seed), another class
    capsys.readouterr()
    quality.load_or_train_feature_net(epochs=1, val_size=20)  # briefly, on the tiny data
    argv = ["eval", str(run), "--iw-samples", "0", "--quality", "--n-samples", "20"]
    assert main([*argv, "--guidance", "1"]) == 0
    printed = capsys.readouterr().out
    assert "samples of the class asked for, classified as it" in printed
    result = json.loads((run / "eval.json").read_text())
    # 20 samples, two of each class: each class's accuracy is 0, 1/2 or 1.
    assert len(result["class_accuracies"]) == 10 == len(result["class_fids"])
    assert set(result["class_accuracies"]) <= {0.0, 0.5, 1.0}
    assert result["class_accuracy"] == pytest.approx(np.mean(result["class_accuracies"]))
    assert "2 or more of each class" in result["quality_protocol"]


def test_conditional_training_on_an_unlabelled_folder_is_refused(tmp_path, capsys) -> None:
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.full((28, 28), 20 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    argv = ["train", "diffusion", "--conditional", "--dataset", f"folder:{folder}", *CLI_TINY]
    assert main([*argv, "--val-size", "2", "--run-dir", str(tmp_path / "r")]) == 2
    assert "has none (a folder needs a subfolder per class)" in capsys.readouterr().err


def test_eval_states_the_bound_and_keeps_no_stale_sampling(eps_run, tmp_path, capsys) -> None:
    quality.load_or_train_feature_net(epochs=1, val_size=20)
    base = ["eval", str(eps_run), "--limit", "4", "--iw-samples", "30"]
    assert main([*base, "--quality", "--n-samples", "6", "--sample-steps", "2"]) == 0
    assert main([*base, "--quality", "--n-samples", "6"]) == 0
    result = json.loads((eps_run / "eval.json").read_text())
    assert result["sampling"] == {} and "(ddim, 5 steps)" in result["quality_protocol"]
    assert "estimator" not in result  # no proposal to choose for a bound
    # The sampling flags set how --quality draws; alone they would be silently unused.
    assert main([*base, "--sample-steps", "2"]) == 2
    assert "add --quality" in capsys.readouterr().err
    assert main([*base, "--estimator", "prior"]) == 2
    assert "--estimator prior does not apply to diffusion" in capsys.readouterr().err
    # compare marks the bound beside the samples it took.
    assert nll_samples(result) == "30 bound"


def test_a_run_with_learned_variances_samples_and_states_its_bound(data_dir, tmp_path) -> None:
    run = tmp_path / "learned"
    argv = ["train", "diffusion", "--objective", "eps", "--variance", "learned"]
    assert main([*argv, "--timesteps", "30", *CLI_TINY, "--run-dir", str(run)]) == 0
    argv = ["sample", str(run), "-n", "3", "--sampler", "ddpm", "--sample-steps", "10"]
    assert main([*argv, "-o", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (3, 1, 28, 28)
    assert main(["eval", str(run), "--limit", "4", "--bound-samples", "30"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["likelihood"]["estimator"].startswith("variational bound (learned variances)")
    assert math.isfinite(result["bpd"]) and result["bpd"] > 0


def test_only_sampling_settings_can_change_on_a_trained_run(eps_run) -> None:
    _, model, _, _ = load_trained(eps_run, "cpu", sampling={"sample_steps": 7})
    assert model.sampling_note() == "ddim, 7 steps"
    with pytest.raises(GenzooError, match="timesteps: not a sampling setting of diffusion"):
        load_trained(eps_run, "cpu", sampling={"timesteps": 10})


def test_flow_matching_trains_on_dequantized_levels_or_gives_no_likelihood(monkeypatch) -> None:
    """Flow matching sees the levels plus noise within their bin, in training and in
    validation; eps (Ho et al.) the levels themselves."""
    seen = []
    real = Diffusion.per_example_loss

    def recording(self, x0, t, noise, labels=None):
        seen.append(x0)
        return real(self, x0, t, noise, labels)

    monkeypatch.setattr(Diffusion, "per_example_loss", recording)
    x = torch.randint(0, 256, (4, 1, 28, 28)).float() / 255
    model = Diffusion(DiffusionConfig(**TINY), (1, 28, 28))
    model.loss(x)
    model.evaluate_batch(x)
    for x0 in seen:
        offset = (x0 - (2 * x - 1)).abs()  # within half a bin (1/255 in [-1, 1]), not 0
        assert 0 < offset.max() <= 1 / 255 and offset.min() < offset.max()
    seen.clear()
    plain = Diffusion(DiffusionConfig(**TINY, dequantize=False), (1, 28, 28))
    plain.loss(x)
    Diffusion(DiffusionConfig(**TINY, objective="eps"), (1, 28, 28)).loss(x)
    assert all(torch.equal(x0, 2 * x - 1) for x0 in seen)
    with pytest.raises(GenzooError, match="--dequantize"):
        plain.log_likelihood(x, 2)
