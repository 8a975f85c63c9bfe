"""The drawing kit and the figures common to every family, as PNG files.

Sample grids, training curves, reconstructions, the latent scatter, interpolations and
the 2-D manifold; figures.py decides which a run gets (by the model's declared
interfaces) and adds the family's own (``GenerativeModel.figures``). Nothing here reads
a run folder or imports the model families, so a family's own figures can draw with
this kit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.ticker import MaxNLocator
from torch.distributions import Normal

from genzoo.data import Split
from genzoo.files import atomic_write

if TYPE_CHECKING:
    from sklearn.decomposition import PCA

# A model's encode, decode or reconstruct: images or codes in, images or codes out.
Mapping = Callable[[torch.Tensor], torch.Tensor]

N_GRID = 64  # samples per grid (8 x 8)
MAX_STRIP_STEPS = 16  # columns of a step-by-step strip (DRAW's canvas, diffusion's chain)


def image_grid(images: torch.Tensor, ncol: int) -> np.ndarray:
    """Tile images (N, C, H, W) into one array with 1-pixel gaps: (rows*H, ncol*W) for
    grey images, (rows*H, ncol*W, 3) for colour ones, as imshow takes them."""
    images = images.detach().float().cpu().clamp(0, 1)
    n, channels, h, w = images.shape
    nrow = -(-n // ncol)
    grid = np.ones((nrow * (h + 1) - 1, ncol * (w + 1) - 1, channels), dtype=np.float32)
    for i, img in enumerate(images.permute(0, 2, 3, 1).numpy()):  # (H, W, C) each
        r, c = divmod(i, ncol)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
    return grid[..., 0] if channels == 1 else grid


def show(ax: plt.Axes, grid: np.ndarray, title: str = "") -> None:
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` atomically (a stopped command leaves no half image) and close it."""
    try:
        # The format named, as the temporary file's name ends in .tmp.
        atomic_write(
            path, lambda tmp: fig.savefig(tmp, format=path.suffix[1:], dpi=100, bbox_inches="tight")
        )
    finally:
        plt.close(fig)


def strip_steps(n_steps: int, most: int = MAX_STRIP_STEPS) -> list[int]:
    """At most ``most`` steps spread evenly over 0..n_steps-1, the first and the last
    among them."""
    picks = np.linspace(0, n_steps - 1, min(n_steps, most)).round().astype(int)
    return sorted(set(picks.tolist()))


def draw_strip(frames: torch.Tensor) -> tuple[plt.Figure, plt.Axes, list[int]]:
    """States of a few samples step by step, frames (S, n, C, H, W): a row per sample, a
    column per shown step (``strip_steps``). Returns the figure, its axes (tile (row, col)
    at the grid's offsets, for marks and the title) and the steps shown."""
    steps = strip_steps(len(frames))
    tiles = frames[steps].transpose(0, 1).flatten(0, 1)  # (n * S', C, H, W), sample-major
    fig, ax = plt.subplots(figsize=(len(steps) * 0.7 + 0.5, frames.shape[1] * 0.7 + 0.7))
    show(ax, image_grid(tiles, len(steps)))
    return fig, ax, steps


def animation_axes(n: int) -> tuple[plt.Figure, plt.Axes]:
    """A figure for a row of ``n`` images as an animation shows them, with room for a
    title and nothing cropped (an animation's frames are not trimmed like a PNG)."""
    fig, ax = plt.subplots(figsize=(n * 0.9 + 0.3, 1.5))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.8)
    return fig, ax


def save_gif(
    fig: plt.Figure,
    update: Callable[[int], list[matplotlib.artist.Artist]],
    frames: int,
    path: Path,
    fps: int,
) -> None:
    """Frames 0 .. frames - 1, each drawn by ``update(i)``, as an animated GIF written
    atomically; the figure is closed."""

    def write(tmp: Path) -> None:
        gif = tmp.with_name(tmp.name + ".gif")  # Pillow takes the format from the name
        try:
            FuncAnimation(fig, update, frames=frames).save(gif, writer=PillowWriter(fps=fps))
            os.replace(gif, tmp)
        finally:
            gif.unlink(missing_ok=True)

    try:
        atomic_write(path, write)
    finally:
        plt.close(fig)


def save_image_grid(images: torch.Tensor, path: Path, title: str = "") -> None:
    """One grid of images, about square, as a PNG."""
    ncol = int(np.ceil(np.sqrt(len(images))))
    fig, ax = plt.subplots(figsize=(ncol * 0.6 + 0.5, ncol * 0.6 + 0.7))
    show(ax, image_grid(images, ncol), title)
    save_figure(fig, path)


def draw_samples(samples: torch.Tensor, means: torch.Tensor | None, title: str, path: Path) -> None:
    """Bernoulli samples beside the pixel means they were drawn from, or plain samples
    (``means`` None)."""
    if means is None:
        save_image_grid(samples, path, title)
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    show(axes[0], image_grid(samples, 8), "Bernoulli samples")
    show(axes[1], image_grid(means, 8), "pixel means")
    fig.suptitle(title)
    save_figure(fig, path)


def draw_class_rows(samples: torch.Tensor, classes: int, path: Path) -> None:
    """Samples (classes * n, C, H, W) of class 0 first, n of each: a row per class."""
    n = len(samples) // classes
    fig, ax = plt.subplots(figsize=(n * 0.6 + 0.8, classes * 0.6 + 0.7))
    show(ax, image_grid(samples, n), "samples of the class asked for, one row per class")
    ax.axis("on")  # the class names as row labels
    ax.set(xticks=[], yticks=[(c + 0.5) * (samples.shape[-2] + 1) for c in range(classes)])
    ax.set_yticklabels(range(classes))
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    save_figure(fig, path)


BOOKKEEPING = ("epoch", "seconds", "lr", "device", "quality_samples")
# The class entropy of samples free of collapse.
QUALITY_REFERENCES = {"class entropy of the samples": (math.log(10), "no collapse: log 10")}


def curve_panels(
    declared: dict[str, list[str]] | None, val_metric: str | None, metrics: list[dict]
) -> dict[str, list[str]]:
    """Panel title -> metric names: the panels a family ``declared`` if it did, else its
    objective ``val_metric``, its other validation terms, and one panel per logged
    diagnostic; the learning rate too where it changed (a schedule, or ``genzoo resume RUN
    --lr LR``), and the sample quality where it was watched (``--quality-every``)."""
    watched = quality_panels(metrics)
    if declared is not None:
        return {**declared, **watched, **_rate_panel(metrics)}
    keys, metric = metrics[0].keys(), val_metric
    panels = {"objective": [f"train_{metric}", f"val_{metric}"]}
    terms = [k for k in keys if k.startswith("val_") and k != f"val_{metric}"]
    if terms:
        panels["validation terms"] = terms
    for k in keys:
        if k not in BOOKKEEPING and not k.startswith(("train_", "val_", "quality_")):
            panels[k.replace("_", " ")] = [k]
    return {**panels, **watched, **_rate_panel(metrics)}


def quality_panels(metrics: list[dict]) -> dict[str, list[str]]:
    """The panels of --quality-every where it ran: FID (titled with the probe's samples,
    2,000 where the metrics predate --quality-samples), Inception score (the probe's one
    split, not the reported protocol's 10), class entropy."""
    probed = [m for m in metrics if "quality_fid" in m]
    if not probed:
        return {}
    n = probed[-1].get("quality_samples", 2000)
    return {
        f"FID ({n:,} samples vs validation)": ["quality_fid"],
        "Inception score (one split)": ["quality_inception_score"],
        "class entropy of the samples": ["quality_class_entropy"],
    }


def _rate_panel(metrics: list[dict]) -> dict[str, list[str]]:
    return {"learning rate": ["lr"]} if len({m.get("lr") for m in metrics}) > 1 else {}


def draw_curves(
    metrics: list[dict],
    panels: dict[str, list[str]],
    references: dict[str, tuple[float, str]] | None,
    note: str | None,
    path: Path,
) -> None:
    """One panel per entry of ``panels``, a curve per metric; ``references`` adds a
    labelled horizontal line to a panel (e.g. the GAN's equilibrium value), ``note`` a
    line above them all."""
    fig, axes = panel_axes(len(panels))
    if note:
        fig.suptitle(note, fontsize=9)
    for ax, (title, names) in zip(axes, panels.items(), strict=True):
        series = {name: epoch_points(metrics, name) for name in names}
        curve_panel(ax, title, series, (references or {}).get(title), "var" in title)
    save_figure(fig, path)


MAX_PANELS_PER_ROW = 3  # a GAN's seven panels in one row made a 3000-pixel-wide strip


def panel_axes(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of ``n`` curve panels, wrapped into rows of at most MAX_PANELS_PER_ROW,
    and its ``n`` axes in reading order (the unused cells of the last row left blank)."""
    ncol = min(n, MAX_PANELS_PER_ROW)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 4 * nrow), squeeze=False)
    cells = list(axes.flat)
    for ax in cells[n:]:
        ax.axis("off")
    return fig, cells[:n]


def epoch_points(metrics: list[dict], name: str) -> list[tuple[int, float]]:
    """(epoch, value) of a metric, from the lines that have it (some are logged in some
    epochs only)."""
    return [(m["epoch"], m[name]) for m in metrics if name in m]


def curve_panel(
    ax: plt.Axes,
    title: str,
    series: dict[str, list[tuple[int, float]]],
    line: tuple[float, str] | None = None,
    log_scale: bool = False,
    marker: str | None = ".",
) -> None:
    """One panel of curves over the epochs (label -> points, empty ones left out), with
    an optional labelled horizontal line."""
    for label, points in series.items():
        if points:
            ax.plot(*zip(*points, strict=True), marker=marker, label=label)
    if line is not None:
        ax.axhline(line[0], color="gray", ls="--", label=line[1])
    if log_scale:
        ax.set_yscale("log")
    ax.set(xlabel="epoch", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if ax.lines:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def draw_metric_panels(
    runs: dict[str, list[dict]],
    panels: dict[str, str],
    path: Path,
    log_scale: tuple[str, ...] = (),
    references: dict[str, tuple[float, str]] | None = None,
) -> None:
    """One panel per (title -> metric), one curve per run (label -> its metrics lines)."""
    fig, axes = panel_axes(len(panels))
    for ax, (title, metric) in zip(axes, panels.items(), strict=True):
        series = {label: epoch_points(lines, metric) for label, lines in runs.items()}
        curve_panel(ax, title, series, (references or {}).get(title), title in log_scale)
    save_figure(fig, path)


def draw_reconstructions(reconstruct: Mapping, x: torch.Tensor, path: Path, ncol: int = 10) -> None:
    """Up to three rows of test images, each followed by a row of their reconstructions."""
    ncol = min(ncol, len(x))
    rows = min(3, len(x) // ncol)
    x = x[: rows * ncol]
    recon = reconstruct(x)
    shape = (rows, ncol, *x.shape[1:])
    pairs = torch.stack([x.view(shape), recon.view(shape)], 1)  # (rows, 2, ncol, C, H, W)
    fig, ax = plt.subplots(figsize=(ncol * 0.6, 2 * rows * 0.6 + 0.5))
    show(ax, image_grid(pairs.flatten(0, 2), ncol), "test images (odd rows), reconstructions")
    save_figure(fig, path)


def draw_manifold(decode: Mapping, device: torch.device, path: Path, n: int = 20) -> None:
    """Decoded means over an n x n grid of a 2-D latent, spaced by the inverse normal CDF
    so that every cell holds equal prior mass (Kingma & Welling 2014, fig. 4)."""
    u = torch.linspace(0.5 / n, 1 - 0.5 / n, n, device=device)
    coords = Normal(0.0, 1.0).icdf(u)  # (n,)
    z1, z2 = torch.meshgrid(coords, coords.flip(0), indexing="xy")  # z2 grows upwards
    means = decode(torch.stack([z1, z2], -1).view(-1, 2))  # (n*n, 1, 28, 28)
    fig, ax = plt.subplots(figsize=(9, 9))
    show(ax, image_grid(means, n), "2-D latent manifold (decoded means)")
    save_figure(fig, path)


def encode_split(encode: Mapping, split: Split, n: int) -> np.ndarray:
    """Codes of the first ``n`` images of ``split``, encoded 1000 at a time: (n, L)."""
    return torch.cat([encode(x) for x in split.images[:n].split(1000)]).cpu().numpy()


def draw_latents(encode: Mapping, split: Split, path: Path, n: int = 5000) -> None:
    """Codes (posterior means) of test images coloured by class; PCA above 2 dimensions."""
    codes = encode_split(encode, split, n)
    points, _, axis_name = codes_in_2d(codes)
    fig, ax = plt.subplots(figsize=(7, 6))
    scatter_by_class(fig, ax, points, split.labels[:n].cpu().numpy())
    ax.set(title=f"latent codes of test images ({axis_name})")
    save_figure(fig, path)


def draw_interpolation(
    encode: Mapping, decode: Mapping, x_pair: torch.Tensor, path: Path, steps: int = 10
) -> None:
    """Decoded means along the straight line between the codes of two test images."""
    z = encode(x_pair)  # (2, L)
    t = torch.linspace(0, 1, steps, device=z.device)[:, None]
    means = decode((1 - t) * z[0] + t * z[1])
    row = torch.cat([x_pair[:1], means, x_pair[1:]])
    fig, ax = plt.subplots(figsize=(steps * 0.7, 1.4))
    show(ax, image_grid(row, len(row)), "interpolation between two test images (ends: data)")
    save_figure(fig, path)


def codes_in_2d(codes: np.ndarray) -> tuple[np.ndarray, PCA | None, str]:
    """Codes (N, L) as (N, 2): themselves for L <= 2, else their first two principal
    components (the fitted PCA is returned to project other things the same way)."""
    if codes.shape[1] == 1:
        return np.hstack([codes, np.zeros_like(codes)]), None, "z"
    if codes.shape[1] == 2:
        return codes, None, "z"
    # Imported here: scikit-learn (and scipy.stats with it) adds 1.4 s to every command's start.
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0).fit(codes)  # its solver may be randomized
    return (
        pca.transform(codes),
        pca,
        f"PCA of z, {pca.explained_variance_ratio_.sum():.0%} of variance",
    )


def scatter_by_class(fig: plt.Figure, ax: plt.Axes, points: np.ndarray, labels) -> None:
    dots = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
    fig.colorbar(dots, ax=ax, ticks=range(10), label="class")


def draw_comparison(
    names: list[str],
    all_metrics: list[list[dict]],
    drawn: list[tuple[torch.Tensor | None, torch.Tensor]],
    metrics: list[str],
    path: Path,
    lines: dict[str, tuple[float, str]] | None = None,
) -> None:
    """Top: one panel per metric with a curve per run (log scale for variances), and a
    labelled horizontal line where ``lines`` names one for the metric (the class entropy
    of samples free of collapse always). Below: each run's samples and, where ``drawn``
    gives their pixel means as (means, samples), the means and the most probable pixel
    values for the same z."""
    lines = {"quality_class_entropy": QUALITY_REFERENCES["class entropy of the samples"]} | (
        lines or {}
    )
    grid_rows = 3 if any(means is not None for means, _ in drawn) else 1
    width = max(4.2 * len(names), 4.5 * len(metrics))
    fig = plt.figure(figsize=(width, 4 + 4 * grid_rows), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, grid_rows])
    curve_axes = np.atleast_1d(top.subplots(1, len(metrics)))
    for ax, metric in zip(curve_axes, metrics, strict=True):
        series = {
            name: epoch_points(rows, metric) for name, rows in zip(names, all_metrics, strict=True)
        }
        title = metric.replace("_", " ")
        curve_panel(ax, title, series, lines.get(metric), "var" in metric, marker=None)
    grid_axes = bottom.subplots(grid_rows, len(names), squeeze=False)
    for col, (name, (means, samples)) in enumerate(zip(names, drawn, strict=True)):
        show(grid_axes[0, col], image_grid(samples, 8), f"{name}: samples")
        if means is None:
            for row in range(1, grid_rows):
                grid_axes[row, col].axis("off")
            continue
        show(grid_axes[1, col], image_grid(means, 8), f"{name}: pixel means")
        # The mode of each Bernoulli pixel: the single most probable image for that z.
        show(grid_axes[2, col], image_grid((means > 0.5).float(), 8), f"{name}: most probable")
    save_figure(fig, path)


def draw_class_histogram(counts: list[int], path: Path) -> None:
    """How many samples the feature classifier puts in each class: a collapsed generator
    leaves some classes (nearly) empty."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(counts)), counts, color="tab:blue")
    ax.axhline(sum(counts) / len(counts), color="gray", ls="--", label="uniform")
    ax.set(
        xticks=range(len(counts)),
        xlabel="class (feature classifier)",
        ylabel="samples",
        title=f"classes of {sum(counts)} samples",
    )
    ax.legend()
    save_figure(fig, path)
