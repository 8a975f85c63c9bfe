"""Summary statistics of per-example measurements, as every reported figure states them."""

from __future__ import annotations

import math

import torch


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean of (N,) values (NaN error for one value)."""
    n = values.numel()
    se = values.std().item() / math.sqrt(n) if n > 1 else math.nan
    return values.mean().item(), se
