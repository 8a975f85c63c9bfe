"""Every figure of a run, as PNG files in RUN/figures/.

Each figure is drawn for the families that declare what it needs (models/base.py):
sample grids for all (and the Bernoulli-sample / pixel-mean pair for
``bernoulli_pixels``); reconstructions for ``can_reconstruct``; latent scatter and
interpolation for ``can_encode``; the 2-D manifold for a 2-D Gaussian ``prior``;
temperatures for ``sample_temperatures``; the mixture for ``has_mixture``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.patches import Ellipse, Rectangle
from sklearn.decomposition import PCA
from torch.distributions import Normal

from genzoo.data import Data, Split
from genzoo.models import GenerativeModel
from genzoo.runs import load_run_config, read_metrics

N_GRID = 64  # samples per grid (8 x 8)


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


def _show(ax: plt.Axes, grid: np.ndarray, title: str = "") -> None:
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")


def _save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_image_grid(images: torch.Tensor, path: Path, title: str = "") -> None:
    """One grid of images, about square, as a PNG."""
    ncol = int(np.ceil(np.sqrt(len(images))))
    fig, ax = plt.subplots(figsize=(ncol * 0.6 + 0.5, ncol * 0.6 + 0.7))
    _show(ax, image_grid(images, ncol), title)
    _save(fig, path)


def draw_samples(model: GenerativeModel, title: str, path: Path) -> None:
    """Bernoulli samples beside their pixel means for the same z, or plain samples."""
    means, samples = _pixel_means_and_samples(model)
    if means is None:
        save_image_grid(samples, path, title)
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    _show(axes[0], image_grid(samples, 8), "Bernoulli samples")
    _show(axes[1], image_grid(means, 8), "pixel means")
    fig.suptitle(title)
    _save(fig, path)


def draw_temperatures(model: GenerativeModel, path: Path) -> None:
    """Flow samples at each of the model's temperatures (z ~ N(0, T^2 I)), side by side."""
    temperatures = model.sample_temperatures
    fig, axes = plt.subplots(1, len(temperatures), figsize=(5 * len(temperatures), 5.4))
    for ax, t in zip(np.atleast_1d(axes), temperatures, strict=True):
        _show(ax, image_grid(model.sample(N_GRID, temperature=t), 8), f"temperature {t}")
    _save(fig, path)


def draw_progress_samples(model: GenerativeModel, run_dir: Path, epoch: int) -> None:
    model.eval()
    label = "before training" if epoch == 0 else f"after epoch {epoch}"
    draw_samples(model, f"samples {label}", run_dir / "figures" / f"samples_epoch{epoch:03d}.png")


BOOKKEEPING = ("epoch", "seconds", "lr", "device")
# The panels of --quality-every, and the class entropy of samples free of collapse.
QUALITY_PANELS = {
    "FID (2,000 samples vs validation)": ["quality_fid"],
    "Inception score": ["quality_inception_score"],
    "class entropy of the samples": ["quality_class_entropy"],
}
QUALITY_REFERENCES = {"class entropy of the samples": (math.log(10), "no collapse: log 10")}


def curve_panels(model: GenerativeModel, metrics: list[dict]) -> dict[str, list[str]]:
    """Panel title -> metric names: the model's own ``curve_panels`` if it declares them,
    else its objective, its other validation terms, and one panel per logged diagnostic;
    the learning rate too where it changed (a schedule, or ``genzoo resume RUN --lr LR``),
    and the sample quality where it was watched (``--quality-every``)."""
    watched = QUALITY_PANELS if any("quality_fid" in m for m in metrics) else {}
    if model.curve_panels is not None:
        return {**model.curve_panels, **watched, **_rate_panel(metrics)}
    keys, metric = metrics[0].keys(), model.val_metric
    panels = {"objective": [f"train_{metric}", f"val_{metric}"]}
    terms = [k for k in keys if k.startswith("val_") and k != f"val_{metric}"]
    if terms:
        panels["validation terms"] = terms
    for k in keys:
        if k not in BOOKKEEPING and not k.startswith(("train_", "val_", "quality_")):
            panels[k.replace("_", " ")] = [k]
    return {**panels, **watched, **_rate_panel(metrics)}


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
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    if note:
        fig.suptitle(note, fontsize=9)
    for ax, (title, names) in zip(axes[0], panels.items(), strict=True):
        series = {name: epoch_points(metrics, name) for name in names}
        curve_panel(ax, title, series, (references or {}).get(title), "var" in title)
    _save(fig, path)


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
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, metric) in zip(axes[0], panels.items(), strict=True):
        series = {label: epoch_points(lines, metric) for label, lines in runs.items()}
        curve_panel(ax, title, series, (references or {}).get(title), title in log_scale)
    _save(fig, path)


def draw_reconstructions(
    model: GenerativeModel, x: torch.Tensor, path: Path, ncol: int = 10
) -> None:
    """Up to three rows of test images, each followed by a row of their reconstructions."""
    ncol = min(ncol, len(x))
    rows = min(3, len(x) // ncol)
    x = x[: rows * ncol]
    recon = model.reconstruct(x)
    shape = (rows, ncol, *x.shape[1:])
    pairs = torch.stack([x.view(shape), recon.view(shape)], 1)  # (rows, 2, ncol, C, H, W)
    fig, ax = plt.subplots(figsize=(ncol * 0.6, 2 * rows * 0.6 + 0.5))
    _show(ax, image_grid(pairs.flatten(0, 2), ncol), "test images (odd rows), reconstructions")
    _save(fig, path)


def draw_manifold(model: GenerativeModel, path: Path, n: int = 20) -> None:
    """Decoded means over an n x n grid of a 2-D latent, spaced by the inverse normal CDF
    so that every cell holds equal prior mass (Kingma & Welling 2014, fig. 4)."""
    device = next(model.parameters()).device
    u = torch.linspace(0.5 / n, 1 - 0.5 / n, n, device=device)
    coords = Normal(0.0, 1.0).icdf(u)  # (n,)
    z1, z2 = torch.meshgrid(coords, coords.flip(0), indexing="xy")  # z2 grows upwards
    means = model.decode(torch.stack([z1, z2], -1).view(-1, 2))  # (n*n, 1, 28, 28)
    fig, ax = plt.subplots(figsize=(9, 9))
    _show(ax, image_grid(means, n), "2-D latent manifold (decoded means)")
    _save(fig, path)


def _encode_split(model: GenerativeModel, split: Split, n: int) -> np.ndarray:
    """Codes of the first ``n`` images of ``split``, encoded 1000 at a time: (n, L)."""
    return torch.cat([model.encode(x) for x in split.images[:n].split(1000)]).cpu().numpy()


def draw_latents(model: GenerativeModel, split: Split, path: Path, n: int = 5000) -> None:
    """Codes (posterior means) of test images coloured by class; PCA above 2 dimensions."""
    codes = _encode_split(model, split, n)
    points, _, axis_name = _codes_in_2d(codes)
    fig, ax = plt.subplots(figsize=(7, 6))
    _scatter_by_class(fig, ax, points, split.labels[:n].cpu().numpy())
    ax.set(title=f"latent codes of test images ({axis_name})")
    _save(fig, path)


def draw_interpolation(
    model: GenerativeModel, x_pair: torch.Tensor, path: Path, steps: int = 10
) -> None:
    """Decoded means along the straight line between the codes of two test images."""
    z = model.encode(x_pair)  # (2, L)
    t = torch.linspace(0, 1, steps, device=z.device)[:, None]
    means = model.decode((1 - t) * z[0] + t * z[1])
    row = torch.cat([x_pair[:1], means, x_pair[1:]])
    fig, ax = plt.subplots(figsize=(steps * 0.7, 1.4))
    _show(ax, image_grid(row, len(row)), "interpolation between two test images (ends: data)")
    _save(fig, path)


def has_2d_gaussian_prior(model: GenerativeModel) -> bool:
    if not (model.has_prior and model.can_encode):
        return False
    prior = model.prior()
    return isinstance(prior.base_dist, Normal) and prior.event_shape == (2,)


def _codes_in_2d(codes: np.ndarray) -> tuple[np.ndarray, PCA | None, str]:
    """Codes (N, L) as (N, 2): themselves for L <= 2, else their first two principal
    components (the fitted PCA is returned to project other things the same way)."""
    if codes.shape[1] == 1:
        return np.hstack([codes, np.zeros_like(codes)]), None, "z"
    if codes.shape[1] == 2:
        return codes, None, "z"
    pca = PCA(n_components=2).fit(codes)
    return (
        pca.transform(codes),
        pca,
        f"PCA of z, {pca.explained_variance_ratio_.sum():.0%} of variance",
    )


def _scatter_by_class(fig: plt.Figure, ax: plt.Axes, points: np.ndarray, labels) -> None:
    dots = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
    fig.colorbar(dots, ax=ax, ticks=range(10), label="class")


def draw_mixture(model: GenerativeModel, split: Split, path: Path, n: int = 5000) -> None:
    """Codes of test images by class with the fitted mixture's 2-sigma ellipses on top;
    beside them, decoded samples from the mixture and from N(0, I)."""
    codes = _encode_split(model, split, n)
    points, pca, axis_name = _codes_in_2d(codes)
    mixture = model.mixture()
    means = mixture.component_distribution.mean.cpu().numpy()  # (C, L)
    covs = mixture.component_distribution.covariance_matrix.cpu().numpy()  # (C, L, L)
    if pca is not None:  # project the components the same way as the codes
        means, covs = pca.transform(means), pca.components_ @ covs @ pca.components_.T
    elif codes.shape[1] == 1:
        means = np.hstack([means, np.zeros_like(means)])
        covs = np.pad(covs, ((0, 0), (0, 1), (0, 1)), constant_values=1e-6)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), width_ratios=[1.25, 1, 1])
    labels = None if split.labels is None else split.labels[:n].cpu().numpy()
    _scatter_by_class(fig, axes[0], points, labels)
    for weight, mean, cov in zip(
        mixture.mixture_distribution.probs.tolist(), means, covs, strict=True
    ):
        eigvals, eigvecs = np.linalg.eigh(cov)
        angle = np.degrees(np.arctan2(eigvecs[1, 1], eigvecs[0, 1]))
        width, height = 4 * np.sqrt(np.maximum(eigvals[::-1], 0))  # 2 sigma each side
        axes[0].add_patch(Ellipse(mean, width, height, angle=angle, fill=False, lw=1 + 6 * weight))
    axes[0].set(title=f"codes of test images and the mixture ({axis_name})")
    _show(axes[1], image_grid(model.sample(N_GRID), 8), "z from the mixture")
    _show(axes[2], image_grid(model.sample_standard_normal(N_GRID), 8), "z from N(0, I)")
    _save(fig, path)


def _pixel_means_and_samples(
    model: GenerativeModel,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Pixel means and Bernoulli samples for the same z (latent-variable models with
    Bernoulli pixels), else (None, samples)."""
    if model.bernoulli_pixels:
        means = model.decode(model.prior().sample((N_GRID,)))
        return means, torch.bernoulli(means)
    return None, model.sample(N_GRID)


def draw_comparison(
    names: list[str],
    all_metrics: list[list[dict]],
    models: list[GenerativeModel],
    metrics: list[str],
    path: Path,
    lines: dict[str, tuple[float, str]] | None = None,
) -> None:
    """Top: one panel per metric with a curve per run (log scale for variances), and a
    labelled horizontal line where ``lines`` names one for the metric (the class entropy
    of samples free of collapse always). Below: each run's samples and, for
    Bernoulli-pixel models, the pixel means and the most probable pixel values for the
    same z."""
    lines = {"quality_class_entropy": QUALITY_REFERENCES["class entropy of the samples"]} | (
        lines or {}
    )
    drawn = [_pixel_means_and_samples(model) for model in models]
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
        _show(grid_axes[0, col], image_grid(samples, 8), f"{name}: samples")
        if means is None:
            for row in range(1, grid_rows):
                grid_axes[row, col].axis("off")
            continue
        _show(grid_axes[1, col], image_grid(means, 8), f"{name}: pixel means")
        # The mode of each Bernoulli pixel: the single most probable image for that z.
        _show(grid_axes[2, col], image_grid((means > 0.5).float(), 8), f"{name}: most probable")
    _save(fig, path)


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
    _save(fig, path)


def _averaging_note(run_dir: Path) -> str | None:
    """Says so where validation saw a moving average of the weights (``--ema``), which is
    why its curve can lie below the training one."""
    ema = load_run_config(run_dir).train.ema
    return f"validation: moving average of the weights (ema {ema})" if ema else None


def draw_run_figures(model: GenerativeModel, data: Data, run_dir: Path) -> list[Path]:
    """Every figure the model supports, from its current weights; returns the files."""
    model.eval()
    out = run_dir / "figures"
    drawn = []

    def draw(name: str, fn: Callable[..., None], *args: object) -> None:
        fn(*args, out / name)
        drawn.append(out / name)

    metrics = read_metrics(run_dir)
    if metrics:
        panels = curve_panels(model, metrics)
        references = {**model.reference_lines, **QUALITY_REFERENCES}
        draw("curves.png", draw_curves, metrics, panels, references, _averaging_note(run_dir))
    draw("samples.png", draw_samples, model, "samples (best checkpoint)")
    test = data.test
    if model.can_reconstruct:
        draw("reconstructions.png", draw_reconstructions, model, test.images)
    if model.can_encode:
        draw("interpolation.png", draw_interpolation, model, test.images[:2])
        if test.labels is not None:
            draw("latents.png", draw_latents, model, test)
        if has_2d_gaussian_prior(model):
            draw("manifold.png", draw_manifold, model)
    if model.sample_temperatures:
        draw("temperatures.png", draw_temperatures, model)
    if model.has_mixture:
        draw("mixture.png", draw_mixture, model, test)
    if model.draws_on_canvas:
        drawn += draw_canvas_figures(model, test.images, out)
    return drawn


# ---------------------------------------------------------------------- DRAW's canvas

DRAWING_SAMPLES = 8  # samples in drawing.png and drawing.gif
MAX_STRIP_STEPS = 16  # columns of a step-by-step strip


def draw_canvas_figures(model: GenerativeModel, images: torch.Tensor, out: Path) -> list[Path]:
    """The figures of a model that ``draws_on_canvas`` (DRAW): samples drawn step by step
    (drawing.png, and drawing.gif from the same samples), test images read and redrawn
    (reading.png) and the KL of each step (kl_per_step.png)."""
    canvases, windows = model.sample_sequence(DRAWING_SAMPLES)
    paths = [out / name for name in ("drawing.png", "drawing.gif", "reading.png")]
    draw_drawing(canvases, windows, paths[0])
    draw_drawing_gif(canvases, windows, paths[1])
    draw_reading(model, images[:4], paths[2])
    draw_kl_per_step(model, images, out / "kl_per_step.png")
    return [*paths, out / "kl_per_step.png"]


def _strip_steps(n_steps: int) -> list[int]:
    """At most MAX_STRIP_STEPS steps spread evenly over 0..n_steps-1, the last among them."""
    picks = np.linspace(0, n_steps - 1, min(n_steps, MAX_STRIP_STEPS)).round().astype(int)
    return sorted(set(picks.tolist()))


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
    steps = _strip_steps(len(canvases))
    n, h, w = canvases.shape[1], *canvases.shape[-2:]
    tiles = canvases[steps].transpose(0, 1).flatten(0, 1)  # (n * S, 1, H, W), sample-major
    fig, ax = plt.subplots(figsize=(len(steps) * 0.7 + 0.5, n * 0.7 + 0.7))
    labels = ", ".join(str(t + 1) for t in steps)
    _show(ax, image_grid(tiles, len(steps)), f"canvas at steps {labels} (red: write window)")
    if windows is not None:
        for col, t in enumerate(steps):
            for row in range(n):
                _add_window(ax, windows[t, row], row, col, h, w)
    _save(fig, path)


def draw_drawing_gif(
    canvases: torch.Tensor, windows: torch.Tensor | None, path: Path, fps: int = 4
) -> None:
    """The samples of ``draw_drawing`` in one row, a frame per step, as an animated GIF."""
    n_steps, n, _, h, w = canvases.shape
    frames = [image_grid(canvas, n) for canvas in canvases]
    fig, ax = plt.subplots(figsize=(n * 0.9 + 0.3, 1.5))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.8)  # frames are not cropped
    _show(ax, frames[0])
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

    path.parent.mkdir(parents=True, exist_ok=True)
    FuncAnimation(fig, show, frames=n_steps).save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)


def draw_reading(model: GenerativeModel, x: torch.Tensor, path: Path) -> None:
    """For each test image in x (B, 1, H, W), two rows: the image with the window read at
    step t, and the canvas after step t (z_t at the posterior means)."""
    canvases, windows = model.reconstruct_sequence(x)  # (T, B, 1, H, W), (T, B, 4)
    steps = _strip_steps(len(canvases))
    b, h, w = x.shape[0], *x.shape[-2:]
    targets = x[None].expand(len(steps), *x.shape)  # (S, B, 1, H, W)
    tiles = torch.stack([targets, canvases[steps]], 2)  # (S, B, 2, 1, H, W)
    tiles = tiles.permute(1, 2, 0, 3, 4, 5).flatten(0, 2)  # rows: image, canvas, image, ...
    fig, ax = plt.subplots(figsize=(len(steps) * 0.7 + 0.5, 2 * b * 0.7 + 0.7))
    labels = ", ".join(str(t + 1) for t in steps)
    title = f"test images read (red: read window) and redrawn, steps {labels}"
    _show(ax, image_grid(tiles, len(steps)), title)
    if windows is not None:
        for col, t in enumerate(steps):
            for i in range(b):
                _add_window(ax, windows[t, i], 2 * i, col, h, w)
    _save(fig, path)


def draw_kl_per_step(
    model: GenerativeModel, images: torch.Tensor, path: Path, n: int = 1000
) -> None:
    """Mean KL(q(z_t|.) || p(z_t)) of each step over the first ``n`` images, from the
    ``kl_step{t}`` terms of ``evaluate_batch``, with standard errors: when the model
    spends its nats."""
    parts = [model.evaluate_batch(x) for x in images[:n].split(500)]
    names = [name for name in parts[0] if name.startswith("kl_step")]
    kl = torch.stack([torch.cat([p[name] for p in parts]) for name in names]).double().cpu()
    mean, se = kl.mean(1), kl.std(1) / np.sqrt(kl.shape[1])  # (T,) each
    fig, ax = plt.subplots(figsize=(max(5.0, 0.3 * len(names) + 2), 3.5))
    ax.bar(range(1, len(names) + 1), mean.numpy(), yerr=se.numpy(), color="tab:blue")
    ax.set(
        xlabel="step t",
        xticks=[t + 1 for t in _strip_steps(len(names))],
        ylabel="KL (nats per image)",
        title=f"KL per step, mean over {kl.shape[1]} test images",
    )
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)
