"""Several runs side by side: one table of their numbers and one figure of their curves
and samples (``genzoo compare RUN RUN ...``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from genzoo import plots
from genzoo.models import MODELS
from genzoo.rng import EVAL_SEED, isolated_rng
from genzoo.runs import RunConfig, check_run_dir, load_run_config, load_trained, read_metrics


def settings(cfg: RunConfig) -> str:
    """The model's config values that differ from its family's defaults, e.g. 'baseline=none'."""
    defaults = MODELS[cfg.model].config()
    changed = [
        f"{f.name}={getattr(cfg.model_config, f.name)}"
        for f in dataclasses.fields(cfg.model_config)
        if getattr(cfg.model_config, f.name) != getattr(defaults, f.name)
    ]
    return " ".join(changed) or "defaults"


def table_row(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run_dir.name, "model": cfg.model, "settings": settings(cfg)}
    metrics = read_metrics(run_dir)
    row["epochs"] = len(metrics)
    eval_path = run_dir / "eval.json"
    if eval_path.exists():
        row.update(json.loads(eval_path.read_text()))
    return row


def shared_diagnostics(all_metrics: list[list[dict]]) -> list[str]:
    """Metric names other than train_/val_ terms that every run logged (e.g. encoder_grad_var)."""
    names = [
        {k for k in m[0] if k not in plots.BOOKKEEPING and not k.startswith(("train_", "val_"))}
        for m in all_metrics
        if m
    ]
    return sorted(set.intersection(*names)) if names else []


def compare_runs(
    run_dirs: list[Path],
    output: Path,
    metrics: list[str] | None = None,
    device: str = "auto",
    data_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Draw the comparison figure to ``output``; return one table row per run.

    ``metrics`` are the per-epoch curves to plot; by default each run's validation
    objective plus every diagnostic all runs logged.
    """
    run_dirs = [check_run_dir(r) for r in run_dirs]
    configs = [load_run_config(r) for r in run_dirs]
    all_metrics = [read_metrics(r) for r in run_dirs]
    if metrics is None:
        val_metrics = {MODELS[cfg.model].model.val_metric for cfg in configs}
        objectives = {f"val_{m}" for m in val_metrics if m}
        metrics = sorted(objectives) + shared_diagnostics(all_metrics)
    models = []
    for run_dir in run_dirs:
        _, model, _, _ = load_trained(run_dir, device, data_dir)
        models.append(model)
    with isolated_rng(EVAL_SEED, next(models[0].parameters()).device):
        plots.draw_comparison([r.name for r in run_dirs], all_metrics, models, metrics, output)
    return [table_row(r, cfg) for r, cfg in zip(run_dirs, configs, strict=True)]
