"""Which figures a run gets: the common ones of plots.py that the model's declared
interfaces allow (models/base.py), then the family's own (``model.figures``).

The callers pass in what the figures show (the test images, the metrics, the averaging
setting): nothing here reads the run folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Independent, Normal

from genzoo import plots
from genzoo.data import Split
from genzoo.models.base import (
    Encodes,
    FigureContext,
    GenerativeModel,
    HasPrior,
    PixelMeans,
    Reconstructs,
    trained_on_labels,
)

CLASS_ROW = 10  # samples per class in classes.png


def means_and_samples(
    model: GenerativeModel, n: int = plots.N_GRID
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Pixel means and the Bernoulli samples drawn from them, for the same z, where the
    model has Bernoulli pixels; else (None, samples)."""
    if isinstance(model, PixelMeans):
        means = model.sample_means(n)
        return means, torch.bernoulli(means)
    return None, model.sample(n)


def has_2d_gaussian_prior(model: GenerativeModel) -> bool:
    """A 2-D Gaussian prior whose z is the whole code (a conditional model's code holds
    its label too: no manifold of z alone)."""
    if not (isinstance(model, HasPrior) and isinstance(model, Encodes)) or trained_on_labels(model):
        return False
    prior = model.prior()  # a Gaussian one is Independent(Normal) in every family
    return (
        isinstance(prior, Independent)
        and isinstance(prior.base_dist, Normal)
        and prior.event_shape == (2,)
    )


def averaging_note(ema: float | None) -> str | None:
    """Says so where validation saw a moving average of the weights (``--ema``), which is
    why its curve can lie below the training one."""
    return f"validation: moving average of the weights (ema {ema})" if ema else None


def draw_run_figures(
    model: GenerativeModel,
    test: Split,
    metrics: list[dict[str, Any]],
    out: Path,
    ema: float | None = None,
) -> list[Path]:
    """Every figure the model supports, from its current weights, into the folder
    ``out``; ``metrics`` are the run's epoch lines, ``ema`` its averaging rate. Returns
    the files."""
    model.eval()
    drawn = []

    def draw(name: str, fn: Callable[..., None], *args: object) -> None:
        fn(*args, out / name)
        drawn.append(out / name)

    if metrics:
        panels = plots.curve_panels(model.curve_panels, model.val_metric, metrics)
        references = {**model.reference_lines, **plots.QUALITY_REFERENCES}
        draw("curves.png", plots.draw_curves, metrics, panels, references, averaging_note(ema))
    means, samples = means_and_samples(model)
    draw("samples.png", plots.draw_samples, samples, means, "samples (best checkpoint)")
    if isinstance(model, Reconstructs):
        draw("reconstructions.png", plots.draw_reconstructions, model.reconstruct, test.images)
    if isinstance(model, Encodes):
        pair = test.images[:2]
        draw("interpolation.png", plots.draw_interpolation, model.encode, model.decode, pair)
        if test.labels is not None:
            draw("latents.png", plots.draw_latents, model.encode, test)
        if has_2d_gaussian_prior(model):
            device = next(model.parameters()).device
            draw("manifold.png", plots.draw_manifold, model.decode, device)
    if trained_on_labels(model):
        classes = model.class_count()
        device = next(model.parameters()).device
        labels = torch.arange(classes, device=device).repeat_interleave(CLASS_ROW)
        draw("classes.png", plots.draw_class_rows, model.sample_classes(labels), classes)
    for name, figure in model.figures(FigureContext(test)).items():
        draw(name, figure)
    return drawn
