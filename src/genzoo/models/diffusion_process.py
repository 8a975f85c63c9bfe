"""The fixed parts of diffusion and flow matching (models/diffusion.py), as plain
functions of tensors with no network in them: noise schedules, the Gaussian posterior
q(x_s | x_t, x_0), the timesteps of the stratified bound, the discretized Gaussian
decoder, the learned variance of Nichol & Dhariwal, the samplers (DDPM, DDIM, Euler,
Heun) and the log-likelihood along an ODE.

Discrete time: steps t = 0..T with abar_0 = 1 (clean data); a sampler's grid runs from T
down to 0. Flow matching: continuous t in [0, 1], t = 0 the data and t = 1 the noise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.distributions import Normal

BIN = 2 / 255  # the width of a grey level in [-1, 1]
Num = TypeVar("Num", float, torch.Tensor)

# ---------------------------------------------------------------------- schedules


def schedule_betas(schedule: str, timesteps: int) -> torch.Tensor:
    """beta_1..beta_T (T,) in float64."""
    if schedule == "linear":  # Ho et al.'s 1e-4..0.02 for T = 1000, scaled to keep abar_T
        scale = 1000 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    # cosine: abar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) pi/2), with beta
    # clipped at 0.999 so that the last steps do not divide by abar(T) = 0.
    s = 0.008
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps  # t / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


def schedule_alpha_bars(schedule: str, timesteps: int) -> torch.Tensor:
    """abar_0..abar_T (T + 1,) float64, abar_0 = 1 (clean data)."""
    alphas = 1 - schedule_betas(schedule, timesteps)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(alphas, 0)])


def posterior(ab_t: Num, ab_s: Num) -> tuple[Num, Num, Num, Num]:
    """q(x_s | x_t, x_0) for s < t = N(c0 x_0 + ct x_t, var): (c0, ct, var, beta) with
    beta = 1 - abar_t / abar_s, the variance of the step s -> t."""
    beta = 1 - ab_t / ab_s
    c0 = ab_s**0.5 * beta / (1 - ab_t)
    ct = (1 - beta) ** 0.5 * (1 - ab_s) / (1 - ab_t)
    return c0, ct, (1 - ab_s) / (1 - ab_t) * beta, beta


def stratified_timesteps(
    timesteps: int, samples: int, batch: int, device: torch.device
) -> list[tuple[torch.Tensor, int]]:
    """``samples`` strata of consecutive steps among 1..T (equal sizes where samples
    divides T): per stratum, a uniform draw t (batch,) and the stratum's size, its weight
    in the unbiased estimate sum_k size_k term(t_k) of sum_t term(t)."""
    edges = [k * timesteps // samples for k in range(samples + 1)]
    return [
        (torch.randint(lo + 1, hi + 1, (batch,), device=device), hi - lo)
        for lo, hi in itertools.pairwise(edges)
    ]


def log_discretized_gaussian(
    x0: torch.Tensor, mean: torch.Tensor, std: float | torch.Tensor
) -> torch.Tensor:
    """log P(x_0) per pixel, the mass of N(mean, std^2) (std a number or per pixel) on
    x_0's grey-level bin of width 2/255 in [-1, 1], the outer bins reaching to -inf and
    +inf (Ho et al. eq. 13)."""
    lo = torch.where(x0 < -1 + BIN / 2, -math.inf, (x0 - BIN / 2 - mean) / std)
    hi = torch.where(x0 > 1 - BIN / 2, math.inf, (x0 + BIN / 2 - mean) / std)
    # Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi): take the tails' side, where it is not 1 - 1.
    flip = lo > 0
    lo, hi = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi))


# ---------------------------------------------------------------------- samplers
# Each takes the state x at the first time of ``grid`` to the last, appending every new
# state to ``chain`` when given one.

# x_t, t -> (x0_hat, eps_hat, the fraction of a learned variance or None)
Denoiser = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]
# the step's posterior variance, beta_{t|s}, the fraction -> the reverse step's variance
Variance = Callable[[float, float, torch.Tensor | None], float | torch.Tensor]
Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def ddpm(
    denoise: Denoiser,
    x: torch.Tensor,
    grid: list[int],
    alpha_bar: list[float],
    variance: Variance,
    chain: list | None = None,
) -> torch.Tensor:
    """Ancestral steps t -> s along ``grid`` (T..0): x_s ~ N(mean of q(x_s | x_t, x0_hat),
    ``variance``); the last step (to 0) adds no noise."""
    for t, s in itertools.pairwise(grid):
        x0, _, fraction = denoise(x, t)
        c0, ct, var, beta = posterior(alpha_bar[t], alpha_bar[s])
        x = c0 * x0 + ct * x
        if s > 0:
            x = x + variance(var, beta, fraction) ** 0.5 * torch.randn_like(x)
        _record(chain, x)
    return x


def learned_variance(fraction: torch.Tensor, var: Num, beta: Num) -> torch.Tensor:
    """Nichol & Dhariwal's (2021, eq. 15) reverse variance exp(f log beta + (1 - f) log
    var), f = ``fraction`` (the network's output v as (v + 1) / 2) per pixel: between the
    posterior's variance (f = 0) and beta (f = 1), both bounds of the best variance (Ho et
    al. section 3.2), interpolated in the log domain where their ratio spans decades."""
    log_beta, log_var = torch.as_tensor(beta).log(), torch.as_tensor(var).log()
    return (fraction * log_beta + (1 - fraction) * log_var).exp()


def ddim(
    denoise: Denoiser,
    x: torch.Tensor,
    grid: list[int],
    alpha_bar: list[float],
    chain: list | None = None,
) -> torch.Tensor:
    """DDIM with eta = 0: x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_hat."""
    for t, s in itertools.pairwise(grid):
        x0, eps, _ = denoise(x, t)
        x = alpha_bar[s] ** 0.5 * x0 + (1 - alpha_bar[s]) ** 0.5 * eps
        _record(chain, x)
    return x


def euler(
    velocity: Velocity, x: torch.Tensor, grid: list[float], chain: list | None = None
) -> torch.Tensor:
    for t, s in itertools.pairwise(grid):
        x = x + (s - t) * velocity(x, t)
        _record(chain, x)
    return x


def heun(
    velocity: Velocity, x: torch.Tensor, grid: list[float], chain: list | None = None
) -> torch.Tensor:
    """The trapezoidal correction of an Euler step (two evaluations a step)."""
    for t, s in itertools.pairwise(grid):
        v = velocity(x, t)
        x = x + (s - t) / 2 * (v + velocity(x + (s - t) * v, s))
        _record(chain, x)
    return x


def _record(chain: list | None, x: torch.Tensor) -> None:
    if chain is not None:
        chain.append(x)


def velocity_and_divergence(
    velocity: Velocity, x: torch.Tensor, t: float, probes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """v(x, t) and Hutchinson's estimate of div v, mean_p p^T (dv/dx) p over the probes
    (P, B, ...) (Rademacher: exact where the Jacobian is diagonal): (B, ...), (B,)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        div = sum(
            (torch.autograd.grad(v, x, p, retain_graph=i < len(probes) - 1)[0] * p)
            .flatten(1)
            .sum(1)
            for i, p in enumerate(probes)
        )
    return v.detach(), div.detach() / len(probes)


def ode_time_grid(steps: int) -> list[float]:
    """t_i = (i / S)^3, i = 0..S: steps dense near the data (t = 0), where a model of
    dequantized 8-bit images changes its divergence within a grey level's bin. On the
    default run's first 8 test images (benchmarks/README.md) this grid's 50, 100 and 200
    steps gave 1.214, 1.243 and 1.251 bits/dim, a uniform grid's 1.130 at 200."""
    return [(i / steps) ** 3 for i in range(steps + 1)]


def ode_log_likelihood(
    velocity: Velocity, z: torch.Tensor, steps: int, probes: torch.Tensor
) -> torch.Tensor:
    """log p_0(z) (B,) float64 for the ODE dx/dt = v(x, t) from t = 0 (z) to t = 1, where
    x_1 ~ N(0, I): log N(x_1) + int_0^1 div v dt, both integrated by Heun's method on
    ``ode_time_grid``."""
    grid = ode_time_grid(steps)
    x, log_det = z, torch.zeros(len(z), dtype=torch.float64, device=z.device)
    for t, s in itertools.pairwise(grid):
        v1, div1 = velocity_and_divergence(velocity, x, t, probes)
        v2, div2 = velocity_and_divergence(velocity, x + (s - t) * v1, s, probes)
        x = x + (s - t) / 2 * (v1 + v2)
        log_det += (s - t) / 2 * (div1 + div2).double()
    base = Normal(torch.zeros((), device=z.device), torch.ones((), device=z.device))
    return base.log_prob(x).flatten(1).sum(1).double() + log_det
