"""A small U-Net for denoising 28x28 images on a CPU.

The encoder-decoder with skip connections of Ronneberger, Fischer & Brox (2015), in the
form Ho, Jain & Abbeel (2020) gave it for diffusion (after PixelCNN++ and the Wide
ResNet): pre-activation residual blocks with GroupNorm and SiLU, a sinusoidal embedding
of the time (Vaswani et al. 2017) through an MLP, added to every residual block, and
self-attention at the lowest resolution.

    28x28 (base) -> 14x14 -> 7x7 (the middle: res, attention, res) -> 14x14 -> 28x28

Each level has ``res_blocks`` residual blocks and ``base * mult`` channels; every block on
the way down leaves a skip connection that one block on the way up concatenates. The
time t is continuous in [0, 1] (a DDPM step index t is passed as t / T), so one network
serves discrete diffusion and flow matching. With ``num_classes`` set, an embedding of the
label, with one extra row for the "null" label of classifier-free guidance (Ho & Salimans
2022), is added to the time embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 8  # GroupNorm groups; channel counts must be multiples of it


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels)


def zero(module: nn.Module) -> nn.Module:
    """A layer whose weights start at zero, so the residual branch it ends starts as the
    identity (as in Ho et al.'s code): a deep U-Net then trains stably from the start."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t (B,) in [0, 1] -> (B, dim) sines and cosines of 1000 t at geometric frequencies
    from 1 to 1/10000, the scale of Ho et al.'s embedding of step indices 0..999."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)  # (half,)
    angles = 1000 * t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # (B, dim)


class ResBlock(nn.Module):
    """x + conv(drop(act(norm(conv(act(norm(x))) + emb)))), with a 1x1 conv on the skip
    path where the channel count changes."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
        self.out_layers = nn.Sequential(
            norm(c_out), nn.SiLU(), nn.Dropout(dropout), zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb(emb)[:, :, None, None]  # (B, C_out, H, W)
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # (B, HW, C)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        base: int = 32,
        mults: Sequence[int] = (1, 2, 2),
        res_blocks: int = 1,
        attention: bool = True,
        dropout: float = 0.0,
        num_classes: int | None = None,
        out_channels: int | None = None,
    ):
        super().__init__()
        self.base = base
        emb_dim = 4 * base
        self.time_mlp = nn.Sequential(
            nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        # Row num_classes is the null label (the unconditional model of guidance).
        self.label_emb = None if num_classes is None else nn.Embedding(num_classes + 1, emb_dim)
        widths = [base * m for m in mults]
        lowest = len(mults) - 1

        def block(c_in: int, c_out: int, level: int) -> nn.ModuleList:
            layers = [ResBlock(c_in, c_out, emb_dim, dropout)]
            if attention and level == lowest:
                layers.append(Attention(c_out))
            return nn.ModuleList(layers)

        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        # Per level: its blocks, then a resampling (Identity at the bottom / the top).
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c, skips = base, []
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(res_blocks):
                blocks.append(block(c, width, level))
                c = width
                skips.append(c)
            self.down.append(blocks)
            # a strided conv halves H and W
            self.downsample.append(
                nn.Conv2d(c, c, 3, stride=2, padding=1) if level < lowest else nn.Identity()
            )
        self.middle = nn.ModuleList([ResBlock(c, c, emb_dim, dropout)])
        if attention:
            self.middle.append(Attention(c))
        self.middle.append(ResBlock(c, c, emb_dim, dropout))
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(res_blocks):
                blocks.append(block(c + skips.pop(), width, level))
                c = width
            self.up.append(blocks)
            self.upsample.append(  # nearest-neighbour doubling, then a conv
                nn.Sequential(nn.Upsample(scale_factor=2.0), nn.Conv2d(c, c, 3, padding=1))
                if level > 0
                else nn.Identity()
            )
        self.conv_out = nn.Sequential(
            norm(c), nn.SiLU(), zero(nn.Conv2d(c, out_channels or in_channels, 3, padding=1))
        )

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, C, H, W), t (B,) in [0, 1], labels (B,) in 0..num_classes (the last:
        null) or None for an unconditional net -> (B, out_channels or C, H, W)."""
        emb = self.time_mlp(sinusoidal(t, self.base))  # (B, 4 base)
        if self.label_emb is not None:
            emb = emb + self.label_emb(labels)
        h = self.conv_in(x)  # (B, base, H, W)
        skips = []
        for blocks, downsample in zip(self.down, self.downsample, strict=True):
            for layers in blocks:
                h = run(layers, h, emb)
                skips.append(h)
            h = downsample(h)  # (B, C, H/2, W/2) but at the bottom
        h = run(self.middle, h, emb)
        for blocks, upsample in zip(self.up, self.upsample, strict=True):
            for layers in blocks:
                h = run(layers, torch.cat([h, skips.pop()], dim=1), emb)  # in: C + C_skip
            h = upsample(h)  # (B, C, 2H, 2W) but at the top
        return self.conv_out(h)  # (B, C, H, W)


def run(layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        h = layer(h, emb)
    return h
