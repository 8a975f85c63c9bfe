"""The page of a run: ``genzoo report RUN`` -> RUN/report.html, one self-contained file.

The page leads with the answer: what the run is and how far it has trained, its headline
figures (the best validation figure, the test figures with their protocol, FID and the
spread of the classes) and its samples. Then the test figures in full, the main curves,
the metrics of every epoch, every figure of RUN/figures, the config and the environment,
built from the pieces of pagekit.py (self-contained, escaped, sortable tables, numbers
rounded as a person writes them), which the study pages (studies/page.py) and the index
of a folder of runs (index.py) are built from too.
"""

from __future__ import annotations

import fcntl
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
    Sortable,
    duration,
    estimate,
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
    return significant(value) if isinstance(value, float) else value_text(value)


def config_table(config: dict[str, Any]) -> Html:
    """config.json as one table: its model name, then every training and model setting
    (a setting given against the run's preset says so), then the preset's notes."""
    groups = {"train": "training", "model_config": "model"}
    preset = config.get("preset") or {}
    deviations = preset.get("deviations", {})
    rows: list[list[Cell]] = []
    for key, value in config.items():
        if key == "preset":
            rows += [["preset", "paper", preset.get("paper", "?")]]
            rows += [["preset", "note", note] for note in preset.get("notes", [])]
        elif isinstance(value, dict):
            group = groups.get(key, key)
            rows += [[group, name, setting_text(name, v, deviations)] for name, v in value.items()]
        else:
            rows.append(["run", key, value_text(value)])
    return table(["group", "setting", "value"], rows)


def setting_text(name: str, value: Any, deviations: dict[str, Any]) -> str:
    """A setting's value, and the preset's where the run deviates from it."""
    if name not in deviations:
        return value_text(value)
    return f"{value_text(value)} (deviation: the preset's {value_text(deviations[name]['preset'])})"


def preset_text(config: dict[str, Any]) -> str:
    """The run's preset in words, for the lead: " Preset burda-2l (paper), deviating in
    --epochs 1 (the preset's 3280)."; for a family with presets, a run without one says
    it followed genzoo's defaults and names them; empty for the other families."""
    preset = config.get("preset")
    if not isinstance(preset, dict):
        family = MODELS.get(config.get("model", ""))
        if family is None or not family.presets:
            return ""
        papers = "; ".join(f"--preset {name}: {p.paper}" for name, p in family.presets.items())
        return f" genzoo's default recipe, no preset (the papers' protocols: {papers})."
    deviations = preset.get("deviations") or {}
    how = "; ".join(
        f"--{name.replace('_', '-')} {value_text(pair['run'])} "
        f"(the preset's {value_text(pair['preset'])})"
        for name, pair in deviations.items()
    )
    tail = f", deviating in {how}" if how else ", with none of its settings changed"
    return f" Preset {preset.get('name')} ({preset.get('paper')}){tail}."


# Metrics whose key alone would pass for the reported protocol's figure.
METRIC_NOTES = {"quality_inception_score": "quality_inception_score (one split)"}


def metrics_table(metrics: list[dict[str, Any]]) -> Html:
    """Every per-epoch metric, one row per line of metrics.jsonl, sortable by any column."""
    columns = list(dict.fromkeys(k for record in metrics for k in record))
    rows = [
        [v if isinstance(v, int | float | str) or v is None else json.dumps(v) for v in row]
        for row in ([record.get(c) for c in columns] for record in metrics)
    ]
    return table([METRIC_NOTES.get(c, c) for c in columns], rows, sortable=True)


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


def _estimate(result: dict[str, Any], key: str) -> Sortable:
    """'mean ± spread' to the spread's precision: the standard error, or for the
    Inception score the standard deviation across its splits."""
    spread = result.get(f"{key}_se", result.get(f"{key}_std"))
    return estimate(result[key], spread if _is_number(spread) else None)


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
        [label, _estimate(result, key), epoch_text(result, kind, metrics)]
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


def wall_seconds(metrics: list[dict[str, Any]], summary: dict[str, Any]) -> float:
    """What the training command took, near enough: each epoch's pass, validation and
    quality probe (``wall_seconds``; runs older than it: the pass), then the finishing
    figures; not the start (data, a first feature net), checkpoints and grids (seconds)."""
    epochs = sum(
        r.get("wall_seconds", r["seconds"]) for r in metrics if _is_number(r.get("seconds"))
    )
    return epochs + summary.get("finishing_seconds", 0.0)


def time_text(run: RunFiles) -> str:
    """The command's time, with the training passes' beside it where they differ (by a
    probe's or the figures' minutes): "34.2 min (training passes 31.8 min)"."""
    passes, wall = training_seconds(run.metrics), wall_seconds(run.metrics, run.summary)
    if wall - passes <= 0.01 * wall:
        return duration(passes)
    return f"{duration(wall)} (training passes {duration(passes)})"


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
        ["training seconds (all epochs)", significant(training_seconds(run.metrics))],
        [
            "seconds of training with validation, probes and figures",
            significant(wall_seconds(run.metrics, run.summary)),
        ],
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


# ----------------------------------------------------------------------------- the answer first


def being_trained(run_dir: Path) -> bool:
    """Whether a training holds the run's lock (runs.lock_run, an exclusive flock) now:
    a shared lock cannot be had while it does. Taken and let go at once, and on a file
    opened read-only, so looking never makes a lock file."""
    try:
        handle = open(run_dir / ".lock")  # noqa: SIM115 - closed below, which unlocks
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def run_state(run: RunFiles) -> str:
    """Where the run stands: "training" while a process holds its lock, else "done" once
    training has come to its end (summary.json), else "stopped" (killed, or a study not
    run through), which ``genzoo resume`` continues."""
    if being_trained(run.run_dir):
        return "training"
    return "done" if run.summary else "stopped"


def train_settings(config: dict[str, Any]) -> dict[str, Any]:
    """config.json's training settings ({} where it holds none)."""
    train = config.get("train")
    return train if isinstance(train, dict) else {}


def state_text(run: RunFiles) -> str:
    """How far the run has trained, in words, with the command that continues a stopped
    run, e.g. "being trained: 3 of 10 epochs done"."""
    done, planned = trained_epochs(run.metrics), train_settings(run.config).get("epochs")
    state = run_state(run)
    if state == "done":
        return f"trained {done} epoch{'' if done == 1 else 's'}"
    if state == "training":
        return f"being trained: {done} of {planned} epochs done"
    return f"stopped after {done} of {planned} epochs (continue: genzoo resume {run.run_dir})"


def samples_figure(run_dir: Path) -> Path | None:
    """The run's samples: the final grid, or before it the last one drawn in training."""
    figures = figure_files(run_dir / "figures")
    final = [p for p in figures if p.name == "samples.png"]
    during = [p for p in figures if p.stem.startswith("samples_epoch")]
    return next(iter(final or during[-1:]), None)


@dataclass(frozen=True)
class Best:
    """The figure that picked the run's best checkpoint (its label, e.g. "-ELBO"), and
    its epoch."""

    name: str
    value: float
    epoch: int


def best_validation(model_name: Any, metrics: list[dict[str, Any]]) -> Best | None:
    """What the best checkpoint minimises (training.py's selection) at its lowest: the
    family's validation objective, or for a family without one (a GAN) the FID of the
    quality probe's samples; None before an epoch has measured it."""
    family = _family(model_name)
    metric = family.val_metric if family else "loss"
    terms = family.eval_terms if family else {}
    key, name = f"val_{metric}", terms.get(metric, metric)
    if not metric:
        key, name = "quality_fid", "FID (probe)"
    scored = [r for r in metrics if _is_number(r.get(key), r.get("epoch"))]
    if not scored:
        return None
    best = min(scored, key=lambda r: r[key])  # the first of equals, as training keeps it
    return Best(name, best[key], best["epoch"])


LIKELIHOOD_TERMS = ("bpd", "nll", "neg_elbo")  # a result's headline figures, in this order


def headline_terms(model_name: Any, result: dict[str, Any]) -> list[str]:
    """The test figures a reader looks for first: the likelihood's (bits/dim, NLL,
    -ELBO) where the family has them, else its validation objective (an autoencoder's
    loss); none for a GAN, whose answer is its sample quality."""
    terms = [key for key in LIKELIHOOD_TERMS if _is_number(result.get(key))]
    family = _family(model_name)
    own = family.val_metric if family else None
    return terms or ([own] if own and _is_number(result.get(own)) else [])


def class_spread(result: dict[str, Any]) -> Sortable | None:
    """The shares of the samples the classifier calls each class, fewest to most, e.g.
    "9.1–10.9%" (even classes are 10% each for MNIST), sorted by the gap between them;
    None without a class histogram."""
    counts = result.get("class_histogram")
    if not (isinstance(counts, list) and counts and all(_is_number(c) for c in counts)):
        return None
    total = sum(counts)
    if total <= 0:
        return None
    low, high = 100 * min(counts) / total, 100 * max(counts) / total
    return Sortable(f"{low:.1f}–{high:.1f}%", high - low)


def measured_how(result: dict[str, Any], kind: str, metrics: list[dict[str, Any]]) -> str:
    """The protocol of a result's ``kind`` of figures ("figures", "quality") and the
    epoch of the weights, e.g. "test split, 10000 images, importance sampling, K=5000,
    proposal q(z|x); weights of epoch 40"."""
    protocol = result.get("quality_protocol" if kind == "quality" else "protocol")
    weights = f"weights of epoch {epoch_text(result, kind, metrics)}"
    return f"{protocol}; {weights}" if protocol else weights


Fact = tuple[str, str, str]  # a headline figure: its label, its value, how it was measured


def headline_facts(run: RunFiles) -> list[Fact]:
    """The run's answer in a few figures, each with how it was measured."""
    model = run.config.get("model")
    facts: list[Fact] = []
    best = best_validation(model, run.metrics)
    if best:
        facts.append(
            (f"best validation {best.name}", significant(best.value), f"epoch {best.epoch}")
        )
    result = run.result
    if result is None:
        return [*facts, ("test figures", "not evaluated yet", f"genzoo eval {run.run_dir}")]
    terms = result.get("terms") or {}
    for key in headline_terms(model, result):
        how = measured_how(result, "figures", run.metrics)
        facts.append((f"test {terms.get(key, key)}", _estimate(result, key).text, how))
    if _is_number(result.get("fid")):
        how = measured_how(result, "quality", run.metrics)
        facts.append(("FID", _estimate(result, "fid").text, how))
    spread = class_spread(result)
    if spread:
        even = 100 / len(result["class_histogram"])
        facts.append(
            ("samples per class", spread.text, f"the fewest to the most ({even:.1f}% each if even)")
        )
    return facts


def headline_table(facts: list[Fact]) -> Html:
    """The headline figures as label and value, how each was measured under its value
    (so that a phone's narrow column wraps the words, never the figures)."""
    rows: list[list[Cell]] = [
        [
            label,
            Html(f'<span class="value">{escape(value)}</span><div class="how">{escape(how)}</div>'),
        ]
        for label, value, how in facts
    ]
    return table([], rows)


def run_lead(run: RunFiles) -> Html:
    """The answer first: what the run is and how far it has trained, its headline
    figures, and its samples beside them."""
    train = train_settings(run.config)
    what = f"{run.config.get('model', '?')} on {train.get('dataset', '?')}"
    what += f", binarize={train.get('binarize', '?')}"
    facts = f"{what}: {state_text(run)}; trained for {time_text(run)}."
    facts += preset_text(run.config)
    samples = samples_figure(run.run_dir)
    return Html(
        f'<p class="lead">{escape(facts)}</p><div class="headline">'
        f"{headline_table(headline_facts(run))}{figure_gallery([samples]) if samples else ''}</div>"
    )


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
