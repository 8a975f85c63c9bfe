"""Diffusion's own figures: a few samples denoised step by step, from noise x_T (or x_1)
to x_0 (denoising_chain.png, and the same as sampling.gif), and samples from one noise at
10, 50 and 250 sampler steps side by side (sample_steps.png); ``Diffusion.figures``
hands them to the run's figures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import FuncAnimation, PillowWriter

from genzoo import plots
from genzoo.models.base import Figure
from genzoo.models.diffusion import to_images
from genzoo.models.draw_figures import strip_steps

if TYPE_CHECKING:
    from genzoo.models.diffusion import Diffusion

CHAIN_SAMPLES = 8  # samples in denoising_chain.png and sampling.gif
# Samples per panel of sample_steps.png, from the chain's first noise: few, as its
# 250-step panel costs five times the rest of the figures.
STEP_SAMPLES = 4
MAX_GIF_FRAMES = 26
FIGURE_STEPS = (10, 50, 250)
SEED = 0  # the figures' noise, so that runs and epochs show the same draws


@torch.no_grad()
def figures(model: Diffusion) -> dict[str, Figure]:
    """The figures of ``model``; the chain is sampled once, for the PNG and the GIF."""
    device = model.alpha_bar.device
    generator = torch.Generator().manual_seed(SEED)
    noise = torch.randn(CHAIN_SAMPLES, *model.image_shape, generator=generator).to(device)
    labels = None
    if model.cfg.conditional:
        labels = torch.arange(CHAIN_SAMPLES, device=device) % model.cfg.num_classes
    chain = [noise]
    model.generate(noise, labels=labels, chain=chain)
    frames = torch.stack([to_images(x) for x in chain]).cpu()  # (S + 1, n, C, H, W)
    title = f"{model.sampler}, {len(chain) - 1} steps"
    return {
        "denoising_chain.png": lambda path: draw_chain(frames, title, path),
        "sampling.gif": lambda path: draw_chain_gif(frames, title, path),
        "sample_steps.png": lambda path: draw_step_counts(model, noise, labels, frames[-1], path),
    }


def draw_chain(frames: torch.Tensor, title: str, path: Path) -> None:
    """A row per sample, a column per shown step: from noise (left) to x_0 (right)."""
    steps = strip_steps(len(frames))
    n = frames.shape[1]
    tiles = frames[steps].transpose(0, 1).flatten(0, 1)  # (n * S, C, H, W), sample-major
    fig, ax = plt.subplots(figsize=(len(steps) * 0.7 + 0.5, n * 0.7 + 0.7))
    shown = ", ".join(str(s) for s in steps)
    plots.show(ax, plots.image_grid(tiles, len(steps)), f"{title}: states after steps {shown}")
    plots.save_figure(fig, path)


def draw_chain_gif(frames: torch.Tensor, title: str, path: Path, fps: int = 10) -> None:
    """The samples of ``draw_chain`` in one row, a frame per step, as an animated GIF."""
    n = frames.shape[1]
    # Evenly spaced states, the first (noise) and the last (the samples) among them.
    picks = np.linspace(0, len(frames) - 1, min(len(frames), MAX_GIF_FRAMES)).round().astype(int)
    grids = [plots.image_grid(frames[k], n) for k in picks]
    fig, ax = plt.subplots(figsize=(n * 0.9 + 0.3, 1.5))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.8)  # frames are not cropped
    plots.show(ax, grids[0])
    image = ax.images[0]

    def show(i: int) -> list[matplotlib.artist.Artist]:
        image.set_data(grids[i])
        ax.set_title(f"{title}: step {picks[i]}")
        return [image]

    path.parent.mkdir(parents=True, exist_ok=True)
    FuncAnimation(fig, show, frames=len(grids)).save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)


def draw_step_counts(
    model: Diffusion,
    noise: torch.Tensor,
    labels: torch.Tensor | None,
    default_samples: torch.Tensor,
    path: Path,
) -> None:
    """Samples from the same noise at each of FIGURE_STEPS steps (those the schedule has),
    side by side: what fewer steps cost in quality. The chain's samples stand in for the
    run's own step count."""
    counts = [s for s in FIGURE_STEPS if model.flow or s <= model.cfg.timesteps]
    noise = noise[:STEP_SAMPLES]
    labels = None if labels is None else labels[:STEP_SAMPLES]
    fig, axes = plt.subplots(1, len(counts), figsize=(2.6 * len(counts), 1.2))
    for ax, steps in zip(np.atleast_1d(axes), counts, strict=True):
        if steps == model.cfg.sample_steps:
            samples = default_samples[:STEP_SAMPLES]
        else:
            with torch.no_grad():
                samples = to_images(model.generate(noise, steps, labels))
        plots.show(ax, plots.image_grid(samples, 4), f"{steps} {model.sampler} steps")
    plots.save_figure(fig, path)
