"""Several runs side by side: one table of their numbers and one figure of their curves
and samples (``genzoo compare RUN RUN ...``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from genzoo import plots
from genzoo.config import TrainConfig
from genzoo.figures import means_and_samples
from genzoo.files import read_json_object
from genzoo.models import MODELS
from genzoo.report import measured_epochs, moved_on, trained_epochs, value_text
from genzoo.rng import EVAL_SEED, isolated_rng
from genzoo.runs import RunConfig, check_run_dir, load_run_config, load_trained, read_metrics


def all_settings(cfg: RunConfig) -> dict[str, Any]:
    """Every training and model setting of a run, by name (training's first)."""
    return {**dataclasses.asdict(cfg.train), **dataclasses.asdict(cfg.model_config)}


def default_settings(cfg: RunConfig) -> dict[str, Any]:
    """What ``all_settings`` would hold for a run of the same family with no flags (the
    family's own training defaults included)."""
    family = MODELS[cfg.model]
    train = TrainConfig(**family.training_defaults())
    return {**dataclasses.asdict(train), **dataclasses.asdict(family.config())}


def varying_settings(runs: list[dict[str, Any]]) -> set[str]:
    """The names of the settings whose values differ between ``runs``."""
    names = {name for settings in runs for name in settings}
    return {name for name in names if len({value_text(s[name]) for s in runs}) > 1}


def settings_column(configs: list[RunConfig]) -> list[str]:
    """Per run, every setting that differs from its family's default or between the
    compared runs of its family (training size, epochs, schedule and seed included), as
    'name=value' in config order, e.g. 'train_size=1000 epochs=5 seed=1'; "defaults" for
    a run with none. Runs of other families differ by their defaults, which the model
    column already says."""
    runs = [all_settings(cfg) for cfg in configs]
    pairs = list(zip(configs, runs, strict=True))
    varying = {
        family: varying_settings([s for cfg, s in pairs if cfg.model == family])
        for family in {cfg.model for cfg in configs}
    }
    columns = []
    for cfg, settings in pairs:
        defaults = default_settings(cfg)
        shown = [
            f"{name}={value_text(value)}"
            for name, value in settings.items()
            if name in varying[cfg.model] or value_text(value) != value_text(defaults[name])
        ]
        columns.append(" ".join(shown) or "defaults")
    return columns


def table_row(run_dir: Path, cfg: RunConfig, settings: str) -> dict[str, Any]:
    """What the comparison tables show of a run: its eval.json's top level (the best
    evaluation of each kind), its settings, the epochs it has trained, and the epoch it
    has trained to since its figures and its sample quality were measured (None where
    it has not moved on)."""
    row: dict[str, Any] = {"run": run_dir.name, "model": cfg.model, "settings": settings}
    metrics = read_metrics(run_dir)
    eval_path = run_dir / "eval.json"
    if eval_path.exists():
        shown = read_json_object(eval_path)
        row.update({k: v for k, v in shown.items() if k != "evaluations"})
    row["epochs"] = trained_epochs(metrics)
    row["figures_moved_on"] = moved_on(row, "figures", metrics) if shows_figures(row) else None
    row["quality_moved_on"] = moved_on(row, "quality", metrics) if "fid" in row else None
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
    return [
        table_row(*run) for run in zip(run_dirs, configs, settings_column(configs), strict=True)
    ]


MOVED_ON = "†"  # marks a figure measured before the run's last epoch


def measured_at(row: dict[str, Any], kind: str) -> str:
    """The epoch of the weights behind a row's figures of ``kind`` ("figures",
    "quality"), marked when the run has trained further since."""
    epoch, _ = measured_epochs(row, kind)
    return "-" if epoch is None else f"{epoch}{MOVED_ON if row[f'{kind}_moved_on'] else ''}"


def moved_on_notes(rows: list[dict[str, Any]], kind: str, what: str) -> list[str]:
    """A footnote for each row whose ``what`` was measured before the run moved on."""
    return [
        f"{MOVED_ON} {row['run']}: {what} of epoch {measured_epochs(row, kind)[0]}; the run "
        f"has trained to epoch {row[f'{kind}_moved_on']} since (genzoo eval it again)"
        for row in rows
        if row[f"{kind}_moved_on"]
    ]


def _mean_se_cell(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:8.2f} ± {row[key + '_se']:5.2f}" if key in row else f"{'-':>15}"


def figures_table(rows: list[dict[str, Any]], figure: Path) -> list[str]:
    """The table of test figures, one line per run: its epochs, the K and images behind
    its NLL, its -ELBO and NLL, the epoch they were measured at, and its settings; then a
    footnote for each row that cannot be compared with the first or was measured before
    the run moved on, and the units."""
    reasons = comparability(rows)
    lines = [
        f"{'run':<24}{'model':<10}{'epochs':>6}{'K':>7}{'images':>8}{'-ELBO':>17}{'NLL':>17}"
        f"{'at epoch':>10}  settings"
    ]
    for row, reason in zip(rows, reasons, strict=True):
        at = measured_at(row, "figures") if shows_figures(row) else "-"
        lines.append(
            f"{row['run']:<24}{row['model']:<10}{row['epochs']:>6}{nll_samples(row):>7}"
            f"{n_images(row):>8}  {_mean_se_cell(row, 'neg_elbo')}  {_mean_se_cell(row, 'nll')}"
            f"{at:>10}  {row['settings']}" + (" *" if reason else "")
        )
    lines += [
        f"* {row['run']}: {reason}" for row, reason in zip(rows, reasons, strict=True) if reason
    ]
    lines += moved_on_notes(rows, "figures", "test figures")
    lines.append(
        f"(units: {units_note(rows)}; the best protocol of each run's eval.json; figure: {figure})"
    )
    return lines


def _score(row: dict[str, Any], key: str, width: int, digits: int) -> str:
    """A score right-aligned in ``width`` characters, '-' where the row lacks it (an
    eval.json from before density and coverage)."""
    return f"{row[key]:{width}.{digits}f}" if key in row else f"{'-':>{width}}"


def inception_cell(row: dict[str, Any]) -> str:
    """The Inception score with its standard deviation over the splits, or marked as the
    one-split figure of an older eval.json."""
    if "inception_score_std" in row:
        return f"{row['inception_score']:.2f} ± {row['inception_score_std']:.2f}"
    return f"{row['inception_score']:.2f} (1 split)"


def quality_table(rows: list[dict[str, Any]]) -> list[str]:
    """The sample-quality scores of the rows whose eval.json has them (genzoo eval
    --quality), one line each under a header, with the epoch and the protocol each was
    measured on; a footnote for each measured before the run moved on."""
    scored = [row for row in rows if "fid" in row]
    if not scored:
        return []
    lines = [
        f"{'run':<24}{'FID':>8}{'IS':>16}{'precision':>10}{'recall':>8}"
        f"{'density':>9}{'coverage':>10}{'Parzen (nats)':>17}{'at epoch':>10}"
    ]
    lines += [
        f"{row['run']:<24}{row['fid']:8.2f}{inception_cell(row):>16}{row['precision']:10.3f}"
        f"{row['recall']:8.3f}{_score(row, 'density', 9, 3)}{_score(row, 'coverage', 10, 3)}"
        f"{row['parzen_ll']:9.1f} ± {row['parzen_ll_se']:5.1f}{measured_at(row, 'quality'):>10}"
        f"  {row['quality_protocol']}"
        for row in scored
    ]
    return lines + moved_on_notes(scored, "quality", "sample quality")
