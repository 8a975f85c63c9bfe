"""Diffusion's own figures: a few samples denoised step by step, from noise x_T (or x_1)
to x_0 (denoising_chain.png, and the same as sampling.gif), and samples from one noise at
10, 50 and 250 sampler steps side by side (sample_steps.png); ``Diffusion.figures``
computes what they show and hands them to the run's figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

from genzoo import plots

MAX_GIF_FRAMES = 26


def draw_chain(frames: torch.Tensor, title: str, path: Path) -> None:
    """A row per sample, a column per shown step: from noise (left) to x_0 (right)."""
    fig, ax, steps = plots.draw_strip(frames)
    ax.set_title(f"{title}: states after steps {', '.join(str(s) for s in steps)}")
    plots.save_figure(fig, path)


def draw_chain_gif(frames: torch.Tensor, title: str, path: Path, fps: int = 10) -> None:
    """The samples of ``draw_chain`` in one row, a frame per step, as an animated GIF."""
    picks = plots.strip_steps(len(frames), MAX_GIF_FRAMES)  # noise and samples among them
    grids = [plots.image_grid(frames[k], frames.shape[1]) for k in picks]
    fig, ax = plots.animation_axes(frames.shape[1])
    plots.show(ax, grids[0])
    image = ax.images[0]

    def show(i: int) -> list[matplotlib.artist.Artist]:
        image.set_data(grids[i])
        ax.set_title(f"{title}: step {picks[i]}")
        return [image]

    plots.save_gif(fig, show, len(grids), path, fps)


def draw_step_counts(samples: dict[int, torch.Tensor], sampler: str, path: Path) -> None:
    """Samples from the same noise at each number of sampler steps (steps -> (n, C, H, W)),
    side by side: what fewer steps cost in quality."""
    fig, axes = plt.subplots(1, len(samples), figsize=(2.6 * len(samples), 1.2))
    for ax, (steps, images) in zip(np.atleast_1d(axes), samples.items(), strict=True):
        plots.show(ax, plots.image_grid(images, len(images)), f"{steps} {sampler} steps")
    plots.save_figure(fig, path)
