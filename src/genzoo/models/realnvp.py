"""Real NVP: a normalizing flow of affine coupling layers.

Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP".

An invertible map f takes an image y in [0, 1]^D to z = f(y) with a simple base density
p(z) = N(0, I), and the model density follows from the change of variables

    log p(y) = log N(f(y); 0, I) + log |det df/dy|,

so training maximises the exact likelihood (the loss is the mean bits per dimension).

f is, in order: the logit transform s = logit(alpha + (1 - 2 alpha) y) (section 4.1),
then affine couplings y_b -> y_b * exp(s(y_a)) + t(y_a) whose Jacobian is triangular,
so log |det| = sum s. The conv variant uses checkerboard masks, squeezes (C, H, W) ->
(4C, H/2, W/2), channel masks, and factors out half of the channels after each scale
(the multi-scale architecture of section 3.6); the mlp variant alternates halves of the
flattened image.

Where the paper puts batch normalization (in the flow and in the coupling nets), this
flow has an actnorm after every coupling (Kingma & Dhariwal 2018, "Glow": a per-channel
affine map initialised on the first batch to give zero mean and unit variance) and
per-example group normalization in the coupling nets. Neither makes an image's density
depend on the rest of its batch; on MNIST they lower the validation bits/dim after 500
steps from 2.72 to 2.29 (benchmarks/README.md).

Grey levels x = x_int / 255 are dequantized to y = (x_int + u) / 256, u ~ U[0, 1)^D, and
reported as nll = -log p(y) + D ln 256 nats (an upper bound, in expectation over u, on the
8-bit discrete NLL) and bpd = nll / (D ln 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal

from genzoo import plots
from genzoo.errors import GenzooError
from genzoo.models.base import (
    Encodes,
    Figure,
    FigureContext,
    GenerativeModel,
    Tempered,
    check_values,
)


@dataclass
class RealNVPConfig:
    coupling: str = field(
        default="conv",
        metadata={
            "help": "coupling networks: residual CNNs on images or MLPs on flat vectors",
            "choices": ("conv", "mlp"),
        },
    )
    n_scales: int = field(
        default=3, metadata={"help": "scales of the multi-scale architecture (conv only)"}
    )
    # The defaults: the model of benchmarks/README.md, 0.24M parameters, sized for a CPU.
    n_couplings: int = field(
        default=2, metadata={"help": "coupling layers per mask type and scale"}
    )
    width: int = field(
        default=32, metadata={"help": "hidden channels (conv) or units (mlp) of coupling nets"}
    )
    depth: int = field(default=1, metadata={"help": "residual blocks per coupling net"})
    alpha: float = field(
        default=0.05,
        metadata={
            "help": "logit transform: logit(alpha + (1 - 2 alpha) y)",
            "min": 0.0,
            "below": 0.5,
        },
    )
    max_grad_norm: float = field(
        default=100.0,
        metadata={
            "help": "clip the gradient's global norm (a rare huge step can undo an "
            "epoch of training)",
            "max": 1e12,
        },
    )
    multiscale: bool = field(
        default=True,
        metadata={"help": "factor out half of the channels after each scale (conv only)"},
    )


# ---------------------------------------------------------------------- invertible layers
# Each layer maps x -> (y, log |det dy/dx|) with forward and y -> x with inverse.


class LogitTransform(nn.Module):
    """y in [0, 1] -> logit(alpha + (1 - 2 alpha) y): the base density lives on R, and
    alpha keeps the pixels at 0 and 1 finite."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * y
        log_p, log_1mp = torch.log(p), torch.log1p(-p)
        log_det = math.log(1 - 2 * self.alpha) - log_p - log_1mp  # d logit(p)/dp = 1/(p(1-p))
        return log_p - log_1mp, log_det.flatten(1).sum(1)

    def inverse(self, s: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(s) - self.alpha) / (1 - 2 * self.alpha)


class Squeeze(nn.Module):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block becomes 4 channels; a permutation."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.pixel_unshuffle(x, 2), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(y, 2)


class Flatten(nn.Module):
    """(B, C, H, W) -> (B, D), for the mlp couplings."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flatten(1), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.view(-1, *self.shape)


class ActNorm(nn.Module):
    """y = (x - b) * exp(-log_s) per channel (per coordinate for flat inputs), so
    log |det| = -(pixels per channel) * sum log_s.

    b and log_s are set on the first batch the layer sees (data-dependent
    initialisation), so every layer starts with outputs of zero mean and unit variance
    per channel; the ``initialized`` buffer saves that it happened, so a loaded
    checkpoint is not re-initialised.
    """

    def __init__(self, shape: tuple[int, ...]):
        """``shape``: one input, (C, H, W) or (D,)."""
        super().__init__()
        param_shape = (1, shape[0], *[1] * (len(shape) - 1))  # (1, C, 1, 1) or (1, D)
        self.loc = nn.Parameter(torch.zeros(param_shape))
        self.log_scale = nn.Parameter(torch.zeros(param_shape))
        self.pixels_per_channel = math.prod(shape[1:])
        self.register_buffer("initialized", torch.tensor(False))
        # A host copy of the buffer, read on every forward pass: reading the buffer itself
        # would make a GPU wait for every actnorm of every step.
        self.ready = False
        self.register_load_state_dict_post_hook(lambda module, _: module._copy_flag())

    def _copy_flag(self) -> None:
        self.ready = bool(self.initialized)

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        dims = [0, *range(2, x.dim())]  # all but the channel
        self.loc.copy_(x.mean(dims, keepdim=True))
        # The 1e-6 keeps a constant channel (a one-image batch) finite.
        self.log_scale.copy_(torch.log(x.std(dims, keepdim=True, correction=0) + 1e-6))
        self.initialized.fill_(True)
        self.ready = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.ready:
            self._initialize(x)
        y = (x - self.loc) * torch.exp(-self.log_scale)
        log_det = -self.log_scale.sum() * self.pixels_per_channel
        return y, log_det.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(self.log_scale) + self.loc


class AffineCoupling(nn.Module):
    """y = m x + (1 - m) (x exp(s) + t), with (s, t) = net(m x) and binary mask m.

    The masked part passes unchanged and conditions the rest, so the Jacobian is
    triangular with log |det| = sum over the unmasked part of s. s = scale * tanh(raw)
    stays bounded, which keeps early training stable.
    """

    def __init__(self, mask: torch.Tensor, net: nn.Module):
        super().__init__()
        # Not saved in checkpoints: the config rebuilds it.
        self.register_buffer("mask", mask, persistent=False)  # (1, C, H, W) or (1, D)
        self.net = net
        # One learnable bound per channel (per coordinate for flat inputs).
        self.scale = nn.Parameter(torch.ones(mask.shape[1], *[1] * (mask.dim() - 2)))

    def _scale_shift(self, x_cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, t = self.net(x_cond).chunk(2, dim=1)
        free = 1 - self.mask
        return free * self.scale * torch.tanh(raw), free * t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._scale_shift(x * self.mask)
        return x * torch.exp(s) + t, s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._scale_shift(y * self.mask)  # y equals x on the mask
        return (y - t) * torch.exp(-s)


def checkerboard_mask(shape: tuple[int, int, int], parity: int) -> torch.Tensor:
    c, h, w = shape
    ij = torch.arange(h)[:, None] + torch.arange(w)[None, :]  # (H, W)
    return ((ij % 2) == parity).float().expand(1, c, h, w).clone()  # (1, C, H, W)


def channel_mask(shape: tuple[int, int, int], parity: int) -> torch.Tensor:
    c, h, w = shape
    first_half = (torch.arange(c) < c // 2) == (parity == 0)  # (C,)
    return first_half.float()[None, :, None, None].expand(1, c, h, w).clone()  # (1, C, H, W)


def alternating_mask(d: int, parity: int) -> torch.Tensor:
    return ((torch.arange(d) % 2) == parity).float()[None]  # (1, D)


class ResidualBlock(nn.Module):
    """h + layer(act(norm(layer(act(norm(h)))))), the pre-activation block of He et al.
    (2016)."""

    def __init__(self, make_layer: Callable[[], nn.Module], make_norm: Callable[[], nn.Module]):
        super().__init__()
        self.body = nn.Sequential(
            make_norm(), nn.ReLU(), make_layer(), make_norm(), nn.ReLU(), make_layer()
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


def coupling_net(conv: bool, n_in: int, width: int, depth: int) -> nn.Sequential:
    """n_in -> 2 n_in (raw scale and shift): 3x3 convs or linear layers with residual blocks,
    normalized per example (over all of an image's hidden units)."""

    def layer(i: int, o: int) -> nn.Module:
        return nn.Conv2d(i, o, 3, padding=1) if conv else nn.Linear(i, o)

    def norm() -> nn.Module:
        return nn.GroupNorm(1, width) if conv else nn.LayerNorm(width)

    last = layer(width, 2 * n_in)
    # s = t = 0: every coupling starts as the identity.
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    blocks = [ResidualBlock(lambda: layer(width, width), norm) for _ in range(depth)]
    return nn.Sequential(layer(n_in, width), *blocks, norm(), nn.ReLU(), last)


def coupling_step(mask: torch.Tensor, cfg: RealNVPConfig) -> list[nn.Module]:
    """One step of the flow: an affine coupling with ``mask`` (1, C, H, W) or (1, D), then
    an actnorm."""
    shape = tuple(mask.shape[1:])
    net = coupling_net(len(shape) == 3, shape[0], cfg.width, cfg.depth)
    return [AffineCoupling(mask, net), ActNorm(shape)]


# ---------------------------------------------------------------------- the flow


class RealNVP(GenerativeModel, Encodes, Tempered):
    val_metric = "bpd"
    eval_terms: ClassVar[dict[str, str]] = {"nll": "NLL", "bpd": "bits/dim"}
    units = "nll: nats per image (8-bit grey levels); bpd: bits per dimension"

    def __init__(self, cfg: RealNVPConfig, image_shape: tuple[int, ...]):
        super().__init__()
        if len(image_shape) != 3:
            raise GenzooError(f"realnvp needs (C, H, W) images, got shape {image_shape}")
        self.cfg = cfg
        self.max_grad_norm = cfg.max_grad_norm
        self.image_shape = tuple(image_shape)
        self.data_dim = math.prod(image_shape)
        self.logit = LogitTransform(cfg.alpha)
        if cfg.coupling == "mlp":
            scales, z_shapes = self._build_mlp(cfg)
        else:
            scales, z_shapes = self._build_conv(cfg)
        self.scales = nn.ModuleList(scales)
        self.factor_out = cfg.coupling == "conv" and cfg.multiscale
        # z is the concatenation of the flattened factored-out parts and the final output.
        self.z_shapes = z_shapes
        self.z_sizes = [math.prod(s) for s in z_shapes]
        self.register_buffer("base_loc", torch.zeros(self.data_dim))
        self.register_buffer("base_scale", torch.ones(self.data_dim))

    def _build_mlp(self, cfg: RealNVPConfig) -> tuple[list[nn.ModuleList], list[tuple[int, ...]]]:
        d = self.data_dim
        if d < 2:
            raise GenzooError(f"realnvp couplings need at least 2 dimensions, got {d}")
        couplings = [
            layer
            for k in range(cfg.n_couplings)
            for layer in coupling_step(alternating_mask(d, k % 2), cfg)
        ]
        return [nn.ModuleList([Flatten(self.image_shape), *couplings])], [(d,)]

    def _build_conv(self, cfg: RealNVPConfig) -> tuple[list[nn.ModuleList], list[tuple[int, ...]]]:
        c, h, w = self.image_shape
        factor = 2 ** (cfg.n_scales - 1)
        if h % factor or w % factor:
            raise GenzooError(
                f"realnvp with --n-scales {cfg.n_scales} squeezes {cfg.n_scales - 1} times, "
                f"halving H and W each time, so H and W must be divisible by {factor}; "
                f"got image shape {self.image_shape}: use fewer scales"
            )

        def couplings(mask: Callable, shape: tuple[int, int, int], n: int) -> list[nn.Module]:
            return [layer for k in range(n) for layer in coupling_step(mask(shape, k % 2), cfg)]

        scales, z_shapes = [], []
        for i in range(cfg.n_scales):
            if i == cfg.n_scales - 1:  # the last scale: one more checkerboard coupling (paper)
                scales.append(
                    nn.ModuleList(couplings(checkerboard_mask, (c, h, w), cfg.n_couplings + 1))
                )
                break
            layers = [*couplings(checkerboard_mask, (c, h, w), cfg.n_couplings), Squeeze()]
            c, h, w = 4 * c, h // 2, w // 2
            layers += couplings(channel_mask, (c, h, w), cfg.n_couplings)
            scales.append(nn.ModuleList(layers))
            if cfg.multiscale:
                c //= 2
                z_shapes.append((c, h, w))
        z_shapes.append((c, h, w))
        return scales, z_shapes

    # ------------------------------------------------------------------ density

    def base(self) -> Independent:
        return Independent(Normal(self.base_loc, self.base_scale), 1)

    def transform(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous images y (B, C, H, W) in [0, 1] -> z (B, D) and log |det dz/dy| (B,).
        (Not ``forward``: that name is the objective's, for DDP; models/base.py.)"""
        h, log_det = self.logit(y)  # (B, C, H, W), (B,)
        zs = []
        for i, scale in enumerate(self.scales):
            for layer in scale:
                h, layer_log_det = layer(h)
                log_det = log_det + layer_log_det
            if self.factor_out and i < len(self.scales) - 1:
                z_i, h = h.chunk(2, dim=1)  # half of the channels leave the flow here
                zs.append(z_i.flatten(1))
        zs.append(h.flatten(1))
        return torch.cat(zs, 1), log_det  # (B, D), (B,)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> continuous images y (B, C, H, W); not clamped."""
        parts = z.split(self.z_sizes, dim=1)
        h = parts[-1].reshape(-1, *self.z_shapes[-1])
        for i in reversed(range(len(self.scales))):
            if self.factor_out and i < len(self.scales) - 1:
                h = torch.cat([parts[i].reshape(-1, *self.z_shapes[i]), h], 1)
            for layer in reversed(self.scales[i]):
                h = layer.inverse(h)
        return self.logit.inverse(h)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """Exact log density (nats) of continuous images y (B, C, H, W) in [0, 1]^D: (B,)."""
        z, log_det = self.transform(y)
        return self.base().log_prob(check_values("the flow's output z", z)) + log_det

    def dequantize(self, x: torch.Tensor) -> torch.Tensor:
        """Grey levels x = x_int / 255 -> y = (x_int + u) / 256, a fresh u ~ U[0, 1)^D."""
        return (self._grey_levels(x) + torch.rand_like(x)) / 256

    def _grey_levels(self, x: torch.Tensor) -> torch.Tensor:
        x_int = torch.round(255 * x)
        if x.min() < 0 or x.max() > 1 or (255 * x - x_int).abs().max() > 1e-3:
            raise GenzooError(
                "realnvp models 8-bit grey levels: pixels must be multiples of 1/255 in "
                "[0, 1] (train with --binarize none)"
            )
        return x_int

    def nll_8bit(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(y) + D ln 256 nats for one dequantized draw y of grey levels x: (B,)."""
        return -self.log_prob(self.dequantize(x)) + self.data_dim * math.log(256)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        nll = self.nll_8bit(x)  # (B,)
        bpd = nll / (self.data_dim * math.log(2))
        loss = bpd.mean()
        mean_bpd, mean_nll = torch.stack([loss, nll.mean()]).detach().tolist()
        return loss, {"loss": mean_bpd, "bpd": mean_bpd, "nll": mean_nll}

    # ------------------------------------------------------------------ model contract

    @torch.no_grad()
    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        nll = self.nll_8bit(x)  # (B,)
        return {"bpd": nll / (self.data_dim * math.log(2)), "nll": nll}

    # ------------------------------------------------------------------ images

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Grey levels x (B, C, H, W) -> z (B, D), deterministic: the centre of each
        dequantization bin, (x_int + 1/2) / 256, for interpolation in z."""
        return self.transform((self._grey_levels(x) + 0.5) / 256)[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, D) -> images (N, C, H, W) in [0, 1]."""
        return self.inverse(z).clamp(0, 1)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """Images decoded from z ~ N(0, temperature^2 I): (n, C, H, W) in [0, 1]."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        return self.decode(temperature * self.base().sample((n,)))

    def figure_temperatures(self) -> tuple[float, ...]:
        return (1.0, 0.7)  # lower T trades variety for quality

    def figures(self, context: FigureContext) -> dict[str, Figure]:
        return {"temperatures.png": lambda path: draw_temperatures(self, path)}


def draw_temperatures(model: RealNVP, path: Path) -> None:
    """Flow samples at each of the figure temperatures (z ~ N(0, T^2 I)), side by side."""
    temperatures = model.figure_temperatures()
    fig, axes = plt.subplots(1, len(temperatures), figsize=(5 * len(temperatures), 5.4))
    for ax, t in zip(np.atleast_1d(axes), temperatures, strict=True):
        grid = plots.image_grid(model.sample(plots.N_GRID, temperature=t), 8)
        plots.show(ax, grid, f"temperature {t}")
    plots.save_figure(fig, path)
