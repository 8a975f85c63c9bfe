"""DRAW's own figures: samples drawn on the canvas step by step (drawing.png and
drawing.gif, from the same samples), test images read and redrawn (reading.png) and the
KL of each step (kl_per_step.png); ``DRAW.figures`` hands them to the run's figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from genzoo import plots

DRAWING_SAMPLES = 8  # samples in drawing.png and drawing.gif


def _window_box(
    window: torch.Tensor, row: int, col: int, h: int, w: int
) -> tuple[float, float, float, float]:
    """A window (centre x, centre y, width, height) in an image's pixels as a Rectangle's
    (x, y, width, height) on tile (row, col) of ``image_grid``, clipped to the tile so
    that a window partly off its image does not cover the neighbours."""
    gx, gy, bw, bh = (float(v) for v in window)
    x0, x1 = max(gx - bw / 2, -0.5), min(gx + bw / 2, w - 0.5)
    y0, y1 = max(gy - bh / 2, -0.5), min(gy + bh / 2, h - 0.5)
    return col * (w + 1) + x0, row * (h + 1) + y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0)


def _add_window(ax: plt.Axes, window: torch.Tensor, row: int, col: int, h: int, w: int) -> None:
    x, y, width, height = _window_box(window, row, col, h, w)
    ax.add_patch(Rectangle((x, y), width, height, fill=False, edgecolor="tab:red", lw=1))


def draw_drawing(canvases: torch.Tensor, windows: torch.Tensor | None, path: Path) -> None:
    """A row per sample, a column per step: the canvas sigmoid(c_t) (T, n, 1, H, W) with
    the window written at step t (T, n, 4) in red, every few steps where T is large."""
    fig, ax, steps = plots.draw_strip(canvases)
    labels = ", ".join(str(t + 1) for t in steps)
    ax.set_title(f"canvas at steps {labels} (red: write window)")
    n, h, w = canvases.shape[1], *canvases.shape[-2:]
    if windows is not None:
        for col, t in enumerate(steps):
            for row in range(n):
                _add_window(ax, windows[t, row], row, col, h, w)
    plots.save_figure(fig, path)


def draw_drawing_gif(
    canvases: torch.Tensor, windows: torch.Tensor | None, path: Path, fps: int = 4
) -> None:
    """The samples of ``draw_drawing`` in one row, a frame per step, as an animated GIF."""
    n_steps, n, _, h, w = canvases.shape
    frames = [plots.image_grid(canvas, n) for canvas in canvases]
    fig, ax = plots.animation_axes(n)
    plots.show(ax, frames[0])
    image = ax.images[0]
    boxes: list[Rectangle] = []
    if windows is not None:  # moved to each step's windows by show()
        boxes = [ax.add_patch(Rectangle((0, 0), 0, 0, fill=False, ec="tab:red")) for _ in range(n)]

    def show(t: int) -> list[matplotlib.artist.Artist]:
        image.set_data(frames[t])
        ax.set_title(f"step {t + 1} of {n_steps}")
        for col, box in enumerate(boxes):
            box.set_bounds(*_window_box(windows[t, col], 0, col, h, w))
        return [image, *boxes]

    plots.save_gif(fig, show, n_steps, path, fps)


def draw_reading(
    x: torch.Tensor, canvases: torch.Tensor, windows: torch.Tensor | None, path: Path
) -> None:
    """For each test image in x (B, 1, H, W), two rows: the image with the window read at
    step t (windows (T, B, 4)), and the canvas after step t (canvases (T, B, 1, H, W),
    z_t at the posterior means)."""
    steps = plots.strip_steps(len(canvases))
    b, h, w = x.shape[0], *x.shape[-2:]
    targets = x[None].expand(len(steps), *x.shape)  # (S, B, 1, H, W)
    tiles = torch.stack([targets, canvases[steps]], 2)  # (S, B, 2, 1, H, W)
    tiles = tiles.permute(1, 2, 0, 3, 4, 5).flatten(0, 2)  # rows: image, canvas, image, ...
    fig, ax = plt.subplots(figsize=(len(steps) * 0.7 + 0.5, 2 * b * 0.7 + 0.7))
    labels = ", ".join(str(t + 1) for t in steps)
    title = f"test images read (red: read window) and redrawn, steps {labels}"
    plots.show(ax, plots.image_grid(tiles, len(steps)), title)
    if windows is not None:
        for col, t in enumerate(steps):
            for i in range(b):
                _add_window(ax, windows[t, i], 2 * i, col, h, w)
    plots.save_figure(fig, path)


def draw_kl_per_step(kl: torch.Tensor, path: Path) -> None:
    """Mean KL(q(z_t|.) || p(z_t)) of each step over images, kl (T, N), with standard
    errors: when the model spends its nats."""
    mean, se = kl.mean(1), kl.std(1) / np.sqrt(kl.shape[1])  # (T,) each
    steps = len(kl)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.3 * steps + 2), 3.5))
    ax.bar(range(1, steps + 1), mean.numpy(), yerr=se.numpy(), color="tab:blue")
    ax.set(
        xlabel="step t",
        xticks=[t + 1 for t in plots.strip_steps(steps)],
        ylabel="KL (nats per image)",
        title=f"KL per step, mean over {kl.shape[1]} test images",
    )
    ax.grid(alpha=0.3, axis="y")
    plots.save_figure(fig, path)
