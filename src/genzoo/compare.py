"""Several runs side by side: one table of their numbers and one figure of their curves
and samples (``genzoo compare RUN RUN ...``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from genzoo import plots
from genzoo.figures import means_and_samples
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


# What a row's -ELBO and NLL depend on besides the model: eval.json key -> the word a
# footnote uses. Rows that differ in any of these measure different quantities, or the
# same quantity on different images, and their figures cannot be set side by side.
PROTOCOL = {
    "dataset": "dataset",
    "binarize": "binarize",
    "split": "split",
    "n_examples": "images",
    "units": "units",
}
# ... and what the NLL alone depends on: the importance sampler's bias shrinks with K.
NLL_PROTOCOL = {"iw_samples": "K", "estimator": "proposal"}
FIGURES = ("neg_elbo", "nll")  # the table's columns


def shows_figures(row: dict[str, Any]) -> bool:
    """Whether the table prints a number for ``row`` (a GAN's or an autoencoder's has none)."""
    return any(name in row for name in FIGURES)


def nll_samples(row: dict[str, Any]) -> str:
    """The samples behind the row's NLL (importance samples K, or timesteps or ODE steps
    of a bound, marked 'bound'), 'exact' for a model that computes its likelihood itself
    (the flow), '-' without an NLL."""
    if "nll" not in row:
        return "-"
    samples = str(row.get("iw_samples", "exact"))
    bound = row.get("likelihood", {}).get("kind") == "lower bound"
    return f"{samples} bound" if bound else samples


def n_images(row: dict[str, Any]) -> str:
    """The number of images behind the row's figures, '-' when the table shows none."""
    return str(row.get("n_examples", "-")) if shows_figures(row) else "-"


def protocol_value(row: dict[str, Any], key: str) -> str:
    """``row``'s value of a protocol key as a footnote prints it ('-' where eval.json
    lacks it, so that a missing value differs from any given one)."""
    return nll_samples(row) if key == "iw_samples" else str(row.get(key, "-"))


def differences(reference: dict[str, Any], row: dict[str, Any]) -> str:
    """What of the protocol ``row`` measured differently from ``reference``, e.g.
    'K 100 vs 5000' (this row's value first); "" when nothing."""
    keys = dict(PROTOCOL)
    if "nll" in reference and "nll" in row:
        keys.update(NLL_PROTOCOL)
    pairs = [
        (label, protocol_value(row, key), protocol_value(reference, key))
        for key, label in keys.items()
    ]
    return ", ".join(
        f"{label} {mine} vs {theirs}" for label, mine, theirs in pairs if mine != theirs
    )


def comparability(rows: list[dict[str, Any]]) -> list[str]:
    """Per row, why its figures cannot be compared with those of the first row that has
    any, e.g. 'not comparable with a: K 100 vs 5000' ("" when they can): a table of NLLs
    at different K or on other images reads as a ranking that it is not. Rows without
    figures are never marked."""
    reference = next((row for row in rows if shows_figures(row)), None)
    reasons = []
    for row in rows:
        differ = differences(reference, row) if reference and shows_figures(row) else ""
        reasons.append(differ and f"not comparable with {reference['run']}: {differ}")
    return reasons


def units_note(rows: list[dict[str, Any]]) -> str:
    """The units of the table's figures as each run's eval.json states them: once when
    the rows share them, else per run."""
    units = {row["run"]: str(row.get("units", "-")) for row in rows if shows_figures(row)}
    if not units:
        if any("fid" in row for row in rows):
            return "no likelihoods; sample quality below"
        return "no figures yet: genzoo eval RUN"
    if len(set(units.values())) == 1:
        return next(iter(units.values()))
    return "; ".join(f"{run}: {unit}" for run, unit in units.items())


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
    families = [MODELS[cfg.model].model for cfg in configs]
    lines = {k: v for f in families for k, v in f.compare_metrics.items() if v is not None}
    if metrics is None:
        objectives = {f"val_{f.val_metric}" for f in families if f.val_metric}
        own = [k for f in families for k in f.compare_metrics if k not in objectives]
        metrics = [*sorted(objectives), *dict.fromkeys(own), *shared_diagnostics(all_metrics)]
    models = []
    for run_dir in run_dirs:
        _, model, _, _ = load_trained(run_dir, device, data_dir)
        models.append(model)
    with isolated_rng(EVAL_SEED, next(models[0].parameters()).device):
        drawn = [means_and_samples(model) for model in models]
        plots.draw_comparison(
            [r.name for r in run_dirs], all_metrics, drawn, metrics, output, lines
        )
    return [table_row(r, cfg) for r, cfg in zip(run_dirs, configs, strict=True)]


def quality_table(rows: list[dict[str, Any]]) -> list[str]:
    """The sample-quality scores of the rows whose eval.json has them (genzoo eval
    --quality), one line each under a header, with the protocol each was measured on."""
    scored = [row for row in rows if "fid" in row]
    if not scored:
        return []
    lines = [f"{'run':<24}{'FID':>8}{'IS':>7}{'precision':>10}{'recall':>8}{'Parzen (nats)':>17}"]
    lines += [
        f"{row['run']:<24}{row['fid']:8.2f}{row['inception_score']:7.2f}{row['precision']:10.3f}"
        f"{row['recall']:8.3f}{row['parzen_ll']:9.1f} ± {row['parzen_ll_se']:5.1f}  "
        f"{row['quality_protocol']}"
        for row in scored
    ]
    return lines
