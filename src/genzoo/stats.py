"""Summary statistics of per-example measurements, as every reported figure states them."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean of (N,) values (NaN error for one value)."""
    n = values.numel()
    se = values.std().item() / math.sqrt(n) if n > 1 else math.nan
    return values.mean().item(), se


def importance_sampled_log_mean(
    log_weights: Callable[[int], torch.Tensor], k: int, max_rows: int, batch: int
) -> torch.Tensor:
    """log (1/k) sum_i w_i per example, in float64, from ``log_weights(n) -> (n, batch)``
    called in chunks of at most ``max_rows`` (sample x example) rows at a time, which
    bounds the memory of an importance-sampled likelihood at any k: (batch,)."""
    chunk = max(1, max_rows // batch)
    log_w = torch.cat(
        [log_weights(min(chunk, k - start)).double() for start in range(0, k, chunk)]
    )  # (k, batch)
    return torch.logsumexp(log_w, 0) - math.log(k)
