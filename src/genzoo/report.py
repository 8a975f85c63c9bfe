"""The page of a run: ``genzoo report RUN`` -> RUN/report.html, one self-contained file.

The page shows every figure of RUN/figures, the main curves, the test figures, the
metrics of every epoch, the config and the environment, built from the pieces of
pagekit.py (self-contained, escaped, sortable tables), which the study pages
(studies/page.py) are built from too.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import torch

import genzoo
from genzoo.files import atomic_write, read_json_object
from genzoo.models import MODELS
from genzoo.pagekit import (
    Cell,
    Html,
    Section,
    figure_files,
    figure_gallery,
    line_chart,
    page,
    section,
    significant,
    table,
)
from genzoo.runs import check_run_dir, read_metrics

# ----------------------------------------------------------------------------- the run's parts


def _family(model_name: Any) -> Any:
    """The family's model class (for its declared labels), or None for a name genzoo
    does not know (the page still shows what the files hold)."""
    family = MODELS.get(model_name) if isinstance(model_name, str) else None
    return None if family is None else family.model


def value_text(value: Any) -> str:
    """A config value as text: strings as they are, everything else as JSON (exact)."""
    return value if isinstance(value, str) else json.dumps(value)


def _plain(value: Any) -> str:
    """A value for a two-column key/value table: text, left-aligned like its neighbours
    (floats to 4 significant figures)."""
    return significant(value, 4) if isinstance(value, float) else value_text(value)


def config_table(config: dict[str, Any]) -> Html:
    """config.json as one table: its model name, then every training and model setting."""
    groups = {"train": "training", "model_config": "model"}
    rows: list[list[Cell]] = []
    for key, value in config.items():
        if isinstance(value, dict):
            group = groups.get(key, key)
            rows += [[group, name, value_text(v)] for name, v in value.items()]
        else:
            rows.append(["run", key, value_text(value)])
    return table(["group", "setting", "value"], rows)


def metrics_table(metrics: list[dict[str, Any]]) -> Html:
    """Every per-epoch metric, one row per line of metrics.jsonl, sortable by any column."""
    columns = list(dict.fromkeys(k for record in metrics for k in record))
    rows = [
        [v if isinstance(v, int | float | str) or v is None else json.dumps(v) for v in row]
        for row in ([record.get(c) for c in columns] for record in metrics)
    ]
    return table(columns, rows, sortable=True)


def main_curves(model_name: Any, metrics: list[dict[str, Any]]) -> dict[str, list[tuple]]:
    """The training loss and the validation objective (the family's ``val_metric``, with
    its label from ``eval_terms``) per epoch; a family without one shows the loss alone."""
    family = _family(model_name)
    val_metric = family.val_metric if family else "loss"
    terms = family.eval_terms if family else {}
    loss_label = family.loss_label if family else "loss"
    keys = {f"training {loss_label}": "train_loss"}
    if val_metric:
        keys[f"validation {terms.get(val_metric, val_metric)}"] = f"val_{val_metric}"
    return {
        name: [(r["epoch"], r[key]) for r in metrics if _is_number(r.get(key), r.get("epoch"))]
        for name, key in keys.items()
    }


def _is_number(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _mean_se(result: dict[str, Any], key: str) -> str:
    """'mean ± spread' with three decimals, as ``genzoo eval`` prints it: the standard
    error, or for the Inception score the standard deviation across its splits."""
    spread = result.get(f"{key}_se", result.get(f"{key}_std"))
    return f"{result[key]:.3f}" + (f" ± {spread:.3f}" if _is_number(spread) else "")


def inception_label(result: dict[str, Any]) -> str:
    """The Inception score's label with its protocol: over how many splits (eval.json
    before the splits: one)."""
    splits = result.get("inception_splits")
    if splits:
        return f"Inception score (± standard deviation over {splits} splits)"
    return "Inception score (one split)"


QUALITY_LABELS = {
    "fid": "FID (sample quality)",
    "inception_score": "Inception score",  # labelled with its splits (inception_label)
    "precision": "precision (samples inside the real images' manifold)",
    "recall": "recall (real images inside the samples' manifold)",
    "density": "density (real neighbourhoods around each sample, / k)",
    "coverage": "coverage (share of real neighbourhoods holding a sample)",
    "parzen_ll": "Parzen log-likelihood (nats)",
    "class_accuracy": "samples classified as the class asked for",
}
QUALITY_NOTE = (
    "Precision and recall (Kynkäänniemi et al. 2019) are the share of samples inside the "
    "real images' k-nearest-neighbour balls (are the samples realistic?) and of real images "
    "inside the samples' balls (is the data covered?); a few real outliers with large balls "
    "can lift precision to 1 even for collapsed samples. Density and coverage (Naeem et al. "
    "2020) use the real balls alone: density counts how many real neighbourhoods hold each "
    "sample, divided by k (about 1 for samples like the data, an outlier's ball adds only "
    "1/k), coverage is the share of real neighbourhoods holding any sample (the diversity "
    "that collapse loses). The Parzen log-likelihood is kept for comparison with Goodfellow "
    "et al. 2014 only: Parzen estimates disagree with the likelihood and with sample quality "
    "(Theis, van den Oord & Bethge 2016); let FID, precision and recall, density and "
    "coverage and the spread of the classes decide."
)


def trained_epochs(metrics: list[dict[str, Any]]) -> int:
    """The last epoch the run has trained (0 before the first)."""
    return max((r["epoch"] for r in metrics if _is_number(r.get("epoch"))), default=0)


def measured_epochs(result: dict[str, Any], kind: str) -> tuple[Any, Any]:
    """The epoch of the weights behind a result's "figures" or "quality" scores and the
    epochs the run had trained when they were measured; an eval.json that predates the
    latter gives the weights' epoch for both."""
    prefix = "quality_" if kind == "quality" else ""
    epoch = result.get(f"{prefix}epoch", result.get("epoch"))
    return epoch, result.get(f"{prefix}run_epochs", epoch)


def moved_on(result: dict[str, Any], kind: str, metrics: list[dict[str, Any]]) -> int | None:
    """The run's last epoch now if it has trained further since the result's ``kind`` of
    scores was measured, else None."""
    _, then = measured_epochs(result, kind)
    now = trained_epochs(metrics)
    return now if _is_number(then) and now > then else None


def epoch_text(result: dict[str, Any], kind: str, metrics: list[dict[str, Any]]) -> str:
    """The epoch of the weights a figure was measured on, marked when the run has moved on
    since, e.g. "2 (the run has trained to epoch 15 since)"."""
    epoch, _ = measured_epochs(result, kind)
    now = moved_on(result, kind, metrics)
    return f"{epoch}" + (f" (the run has trained to epoch {now} since)" if now else "")


def eval_rows(result: dict[str, Any], metrics: list[dict[str, Any]]) -> list[list[Cell]]:
    """One row per measured figure with the epoch it was measured at: the family's terms
    with their labels (eval.json's ``terms``; without it, every figure that has a
    standard error), then sample quality."""
    terms = result.get("terms") or {k: k for k in result if f"{k}_se" in result}
    quality = {**QUALITY_LABELS, "inception_score": inception_label(result)}
    rows = [(key, label, "figures") for key, label in terms.items()]
    rows += [(key, label, "quality") for key, label in quality.items() if key not in terms]
    return [
        [label, _mean_se(result, key), epoch_text(result, kind, metrics)]
        for key, label, kind in rows
        if _is_number(result.get(key))
    ]


def eval_protocol(result: dict[str, Any], metrics: list[dict[str, Any]]) -> list[list[Cell]]:
    """How the figures were measured, as far as eval.json says: the images, their
    binarization, the weights, the likelihood's estimator (its samples, and whether it is
    an estimate, a bound or exact) and the sample-quality protocol."""
    rows: list[list[Cell]] = []
    likelihood = result.get("likelihood")
    for key, label in (
        ("protocol", "test figures shown"),
        ("dataset", "dataset"),
        ("split", "split"),
        ("n_examples", "images"),
        ("binarize", "binarization"),
        ("checkpoint", "checkpoint"),
        ("epoch", "epoch of the weights"),
        ("iw_samples", "K (importance samples per image)"),
        ("estimator", "proposal"),
        ("quality_protocol", "sample quality shown"),
        ("n_test", "real images the samples are scored against"),
        ("quality_epoch", "epoch of the weights (sample quality)"),
        ("seconds", "evaluation seconds"),
    ):
        if key in result and not (likelihood and key in ("iw_samples", "estimator")):
            kind = "quality" if key == "quality_epoch" else "figures"
            value = epoch_text(result, kind, metrics) if "epoch" in key else result[key]
            rows.append([label, _plain(value)])
    if likelihood:
        rows.append(["likelihood", f"{likelihood['protocol']} ({likelihood['kind']})"])
    return rows


def other_evaluations(result: dict[str, Any]) -> list[list[Cell]]:
    """The evaluations eval.json keeps besides the ones it shows (another protocol): kind,
    protocol and the epoch of the weights."""
    shown = {result.get("protocol"), result.get("quality_protocol")}
    kept = result.get("evaluations", {})
    epochs = {"figures": "epoch", "quality": "quality_epoch"}
    return [
        [kind, protocol, record.get(epochs[kind])]
        for kind, records in kept.items()
        for protocol, record in records.items()
        if protocol not in shown
    ]


def eval_section(run: RunFiles) -> Section:
    """eval.json's figures (mean ± standard error) in the family's units, the epoch each
    was measured at, the protocol, what the quality scores measure, and the evaluations
    of other protocols eval.json keeps."""
    result = run.result
    if result is None:
        return section("eval", "Test figures", f"Not evaluated yet: genzoo eval {run.run_dir}")
    units = result.get("units")
    others = other_evaluations(result)
    return section(
        "eval",
        "Test figures",
        table(["figure", "mean ± standard error", "epoch"], eval_rows(result, run.metrics)),
        f"Units: {units}." if units else "",
        QUALITY_NOTE if "fid" in result else "",
        table(["protocol", ""], eval_protocol(result, run.metrics)),
        "Also kept in eval.json (other protocols, not shown above):" if others else "",
        table(["kind", "protocol", "epoch"], others) if others else "",
    )


def training_seconds(metrics: list[dict[str, Any]]) -> float:
    """The run's training time: each epoch's ``seconds`` is its training pass alone."""
    return sum(r["seconds"] for r in metrics if _is_number(r.get("seconds")))


def device_of(*records: dict[str, Any]) -> str | None:
    """The device the run trained on, where one of its files records it (``device`` at
    the top, in ``train``, or in a metrics line)."""
    for record in records:
        for place in (record, record.get("train")):
            if isinstance(place, dict) and isinstance(place.get("device"), str):
                return place["device"]
    return None


def environment_rows(run: RunFiles, written: datetime) -> list[list[Cell]]:
    """Versions of what wrote the page (the run may have trained under others), the
    device, the date, and the total training time."""
    device = device_of(run.config, *reversed(run.metrics))
    return [
        ["genzoo", genzoo.__version__],
        ["torch", torch.__version__],
        ["python", platform.python_version()],
        ["device", device or "not recorded in the run's files"],
        ["page written", written.isoformat(sep=" ", timespec="seconds")],
        ["training seconds (all epochs)", f"{training_seconds(run.metrics):.1f}"],
    ]


@dataclass(frozen=True)
class RunFiles:
    """What a run's page shows, read once."""

    run_dir: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    result: dict[str, Any] | None  # eval.json, None before `genzoo eval`
    summary: dict[str, Any]  # summary.json, {} before training has ended

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name


def read_run_files(run_dir: Path) -> RunFiles:
    """The run's config, metrics, eval.json and summary.json (the last two if written)."""
    config = read_json_object(check_run_dir(run_dir) / "config.json")
    optional = [run_dir / "eval.json", run_dir / "summary.json"]
    result, summary = (read_json_object(p) if p.is_file() else None for p in optional)
    return RunFiles(run_dir, config, read_metrics(run_dir), result, summary or {})


def run_lead(run: RunFiles) -> Html:
    """One line to start with: what was trained, for how long, and its best epoch."""
    facts = [f"model {run.config.get('model', '?')}", f"{len(run.metrics)} epochs"]
    if "best_epoch" in run.summary:
        facts.append(f"best epoch {run.summary['best_epoch']}")
    facts.append(f"{training_seconds(run.metrics):.1f} s of training")
    return Html(f'<p class="lead">{escape(", ".join(facts))}</p>')


def curves_section(run: RunFiles) -> Section:
    """The main curves as an SVG; the figures section has every curve as a PNG."""
    if not run.metrics:
        return section("curves", "Curves", "No epoch has finished yet.")
    chart = line_chart(
        main_curves(run.config.get("model"), run.metrics),
        "epoch",
        f"{run.name}: training loss and validation objective",
        "(hover over or tap a point for its value)",
    )
    return section("curves", "Curves", chart)


def run_sections(run: RunFiles, written: datetime | None = None) -> list[Section]:
    """The run's sections in page order."""
    figures = figure_files(run.run_dir / "figures")
    written = written or datetime.now().astimezone()
    metrics = metrics_table(run.metrics) if run.metrics else "None yet."
    return [
        eval_section(run),
        curves_section(run),
        section("metrics", "Metrics per epoch", metrics),
        section("figures", "Figures", figure_gallery(figures) if figures else "None yet."),
        section("config", "Config", config_table(run.config)),
        section("environment", "Environment", table([], environment_rows(run, written))),
    ]


def run_report_html(run_dir: Path, written: datetime | None = None) -> str:
    """The run's whole page as a string."""
    run = read_run_files(run_dir)
    return page(f"genzoo run {run.name}", run_sections(run, written), run_lead(run))


def write_run_report(run_dir: Path, output: Path | None = None) -> Path:
    """Write the run's page to ``output`` (default RUN/report.html), atomically, so a
    reader never opens half a page; returns the path written."""
    html = run_report_html(run_dir)
    path = output or run_dir / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return path
