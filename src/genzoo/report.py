"""The page of a run: ``genzoo report RUN`` -> RUN/report.html, one self-contained file.

The page can be mailed or uploaded as it is and read offline on a phone: every figure of
RUN/figures is embedded as a base64 data URI, the main curves are inline SVG drawn here
(a point's value shows on hover), tables sort on a click through a few lines of inline
JavaScript, and nothing is fetched from a network (no CDN, no web font). Every string
read from the run's files goes through ``html.escape``, so a config value cannot inject
markup.

The page is built from small pieces that return HTML fragments (``table``, ``section``,
``line_chart``, ``figure_gallery``, ``page``, and the run's sections from
``run_sections``), so a study page can show several runs' tables and figures side by side
with the same pieces and the same style.
"""

from __future__ import annotations

import base64
import json
import math
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import torch

import genzoo
from genzoo.files import atomic_write, read_json_object
from genzoo.models import MODELS
from genzoo.runs import check_run_dir, read_metrics

# ----------------------------------------------------------------------------- HTML pieces


class Html(str):
    """A string that is already HTML (built here, its file data escaped), so ``table``
    and ``section`` put it in as it is instead of escaping it a second time."""


Cell = Html | str | int | float | None


def _number(value: float, digits: int = 5) -> str:
    """A float as a reader wants it in a table: ``digits`` significant figures."""
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _cell(value: Cell) -> str:
    """One table cell. Numbers carry their exact value in ``data-value`` so that sorting
    uses it rather than the rounded text; anything else is escaped unless it is Html."""
    if isinstance(value, Html):
        return f"<td>{value}</td>"
    if isinstance(value, bool) or value is None:
        return f"<td>{escape(json.dumps(value))}</td>"
    if isinstance(value, int | float):
        text = str(value) if isinstance(value, int) else _number(value)
        return f'<td class="num" data-value="{escape(repr(value))}">{escape(text)}</td>'
    return f"<td>{escape(str(value))}</td>"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    sortable: bool = False,
    caption: str | None = None,
) -> Html:
    """A table in a horizontally scrolling box (wide tables stay readable on a phone),
    without a header row if ``headers`` is empty; ``sortable`` makes its headers sort the
    rows on a click (the page's inline script)."""
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    head = f"<thead><tr>{head}</tr></thead>" if headers else ""
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    cls = ' class="sortable"' if sortable else ""
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return Html(f'<div class="scroll"><table{cls}>{cap}{head}<tbody>{body}</tbody></table></div>')


@dataclass(frozen=True)
class Section:
    """A titled part of a page; ``page`` lists every section in its contents line."""

    anchor: str
    title: str
    body: Html

    def html(self) -> Html:
        return Html(
            f'<section id="{escape(self.anchor)}"><h2>{escape(self.title)}</h2>'
            f"{self.body}</section>"
        )


def section(anchor: str, title: str, *parts: str) -> Section:
    """A section from ``parts``: Html fragments as they are, plain text escaped into a
    paragraph (empty text left out)."""
    body = "".join(p if isinstance(p, Html) else f"<p>{escape(p)}</p>" for p in parts if p)
    return Section(anchor, title, Html(body))


# ----------------------------------------------------------------------------- figures

IMAGE_TYPES = {
    ".png": "image/png",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}


def data_uri(path: Path) -> str:
    """The file as a data: URI, so the page carries its images inside itself."""
    mime = IMAGE_TYPES[path.suffix.lower()]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def figure_files(folder: Path) -> list[Path]:
    """The images of a figures folder in reading order: the curves and the final
    samples first, the other figures by name, the samples drawn during training last."""

    def order(path: Path) -> tuple[int, str]:
        rank = {"curves": 0, "samples": 1}.get(
            path.stem, 3 if path.stem.startswith("samples_") else 2
        )
        return rank, path.name

    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_TYPES), key=order)


def figure_gallery(paths: Sequence[Path], captions: Sequence[str] | None = None) -> Html:
    """Each image embedded, captioned with its file name (what ``genzoo plot`` calls it)
    or with ``captions``."""
    captions = captions or [p.name for p in paths]
    return Html(
        "".join(
            f'<figure><img src="{data_uri(p)}" alt="{escape(c)}">'
            f"<figcaption>{escape(c)}</figcaption></figure>"
            for p, c in zip(paths, captions, strict=True)
        )
    )


# ----------------------------------------------------------------------------- SVG curves

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


@dataclass(frozen=True)
class Frame:
    """Where the plot area lies in the SVG's coordinates, and the data range it shows."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: float = 480
    height: float = 270
    left: float = 62
    right: float = 14
    top: float = 10
    bottom: float = 42

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (
            self.width - self.left - self.right
        )

    def py(self, y: float) -> float:
        span = self.height - self.top - self.bottom
        return self.top + (self.y1 - y) / (self.y1 - self.y0) * span


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten)
    within [lo, hi], so the axis reads like a hand-drawn one."""
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    first = math.ceil(lo / step - 1e-9)
    n = math.floor(hi / step + 1e-9) - first + 1
    return [round((first + i) * step, 12) for i in range(n)]


def _padded_range(values: Sequence[float]) -> tuple[float, float]:
    """The data range with 5% to spare each side (a flat series gets a small band)."""
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or abs(lo) * 0.05 or 0.5
    return lo - pad, hi + pad


def _axes(frame: Frame, x_label: str) -> str:
    """Grid lines with their values, the x ticks and the x axis's label."""
    out = []
    for y in nice_ticks(frame.y0, frame.y1):
        py = frame.py(y)
        out.append(
            f'<line class="grid" x1="{frame.left}" x2="{frame.width - frame.right}" '
            f'y1="{py:.1f}" y2="{py:.1f}"/><text class="tick" x="{frame.left - 6}" '
            f'y="{py + 4:.1f}" text-anchor="end">{y:.6g}</text>'
        )
    base = frame.height - frame.bottom
    for x in nice_ticks(frame.x0, frame.x1, integer=True):
        px = frame.px(x)
        out.append(
            f'<line class="axis" x1="{px:.1f}" x2="{px:.1f}" y1="{base}" y2="{base + 4}"/>'
            f'<text class="tick" x="{px:.1f}" y="{base + 18}" text-anchor="middle">{x:g}</text>'
        )
    out.append(
        f'<line class="axis" x1="{frame.left}" x2="{frame.width - frame.right}" '
        f'y1="{base}" y2="{base}"/>'
        f'<text class="label" x="{(frame.left + frame.width - frame.right) / 2}" '
        f'y="{frame.height - 4}" text-anchor="middle">{escape(x_label)}</text>'
    )
    return "".join(out)


def _series(frame: Frame, name: str, points: Sequence[tuple[float, float]], colour: str) -> str:
    """A polyline and a dot per point whose <title> shows the value on hover (or tap)."""
    line = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in points)
    dots = "".join(
        f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="4" fill="{colour}">'
        f"<title>{escape(name)}, epoch {x:g}: {_number(y, 6)}</title></circle>"
        for x, y in points
    )
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>{dots}'


def _legend(names: Sequence[str], note: str) -> str:
    """One swatch and name per series under the chart, as HTML so that it wraps on a
    narrow screen, then the ``note``."""
    keys = " ".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>'
        f"{escape(name)}</span>"
        for name, colour in zip(names, COLOURS, strict=False)
    )
    return f"<figcaption>{keys} {escape(note)}</figcaption>"


def line_chart(
    series: dict[str, Sequence[tuple[float, float]]], x_label: str, title: str, note: str = ""
) -> Html:
    """Curves (name -> (x, y) points) as one inline SVG that scales with the page, with
    its legend and ``note`` below; points that are not finite are left out, and so is a
    series with none left."""
    kept = {
        name: [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
        for name, points in series.items()
    }
    kept = {name: points for name, points in kept.items() if points}
    if not kept:
        return Html("")
    xs = [x for points in kept.values() for x, _ in points]
    ys = [y for points in kept.values() for _, y in points]
    frame = Frame(*_padded_range(xs), *_padded_range(ys))
    curves = "".join(
        _series(frame, name, points, colour)
        for (name, points), colour in zip(kept.items(), COLOURS, strict=False)
    )
    return Html(
        f'<figure class="chart"><svg viewBox="0 0 {frame.width} {frame.height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f"{_axes(frame, x_label)}{curves}</svg>{_legend(list(kept), note)}</figure>"
    )


# ----------------------------------------------------------------------------- the run's parts


def _family(model_name: Any) -> Any:
    """The family's model class (for its declared labels), or None for a name genzoo
    does not know (the page still shows what the files hold)."""
    family = MODELS.get(model_name) if isinstance(model_name, str) else None
    return None if family is None else family.model


def _value_text(value: Any) -> str:
    """A config value as text: strings as they are, everything else as JSON (exact)."""
    return value if isinstance(value, str) else json.dumps(value)


def _plain(value: Any) -> str:
    """A value for a two-column key/value table: text, left-aligned like its neighbours
    (floats to 4 significant figures)."""
    return _number(value, 4) if isinstance(value, float) else _value_text(value)


def config_table(config: dict[str, Any]) -> Html:
    """config.json as one table: its model name, then every training and model setting."""
    groups = {"train": "training", "model_config": "model"}
    rows: list[list[Cell]] = []
    for key, value in config.items():
        if isinstance(value, dict):
            group = groups.get(key, key)
            rows += [[group, name, _value_text(v)] for name, v in value.items()]
        else:
            rows.append(["run", key, _value_text(value)])
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
    """'mean ± se' with three decimals, as ``genzoo eval`` prints it."""
    se = result.get(f"{key}_se")
    return f"{result[key]:.3f}" + (f" ± {se:.3f}" if _is_number(se) else "")


QUALITY_LABELS = {
    "fid": "FID (sample quality)",
    "inception_score": "Inception score",
    "precision": "precision",
    "recall": "recall",
    "parzen_ll": "Parzen log-likelihood (nats)",
}


def eval_rows(result: dict[str, Any]) -> list[list[Cell]]:
    """One row per measured figure: the family's terms with their labels (eval.json's
    ``terms``; without it, every figure that has a standard error), then sample quality."""
    terms = result.get("terms") or {k: k for k in result if f"{k}_se" in result}
    labels = {**terms, **{k: v for k, v in QUALITY_LABELS.items() if k not in terms}}
    return [
        [label, _mean_se(result, key)]
        for key, label in labels.items()
        if _is_number(result.get(key))
    ]


def eval_protocol(result: dict[str, Any]) -> list[list[Cell]]:
    """How the figures were measured, as far as eval.json says: the images, their
    binarization, the weights, and the importance samples K of the likelihood."""
    rows: list[list[Cell]] = []
    for key, label in (
        ("dataset", "dataset"),
        ("split", "split"),
        ("n_examples", "images"),
        ("binarize", "binarization"),
        ("checkpoint", "checkpoint"),
        ("epoch", "epoch of the weights"),
        ("iw_samples", "K (importance samples per image)"),
        ("estimator", "proposal"),
        ("n_samples", "samples scored (quality)"),
        ("seconds", "evaluation seconds"),
    ):
        if key in result:
            rows.append([label, _plain(result[key])])
    return rows


def eval_section(result: dict[str, Any] | None, run_dir: Path) -> Section:
    """eval.json's figures (mean ± standard error) in the family's units, and the protocol."""
    if result is None:
        return section("eval", "Test figures", f"Not evaluated yet: genzoo eval {run_dir}")
    units = result.get("units")
    return section(
        "eval",
        "Test figures",
        table(["figure", "mean ± standard error"], eval_rows(result)),
        f"Units: {units}." if units else "",
        table(["protocol", ""], eval_protocol(result)),
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
    """What a run's page shows, read once: a study page reads each of its runs this way."""

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
    """The run's sections in page order; a study page can reuse any of them."""
    figures = figure_files(run.run_dir / "figures")
    written = written or datetime.now().astimezone()
    metrics = metrics_table(run.metrics) if run.metrics else "None yet."
    return [
        eval_section(run.result, run.run_dir),
        curves_section(run),
        section("metrics", "Metrics per epoch", metrics),
        section("figures", "Figures", figure_gallery(figures) if figures else "None yet."),
        section("config", "Config", config_table(run.config)),
        section("environment", "Environment", table([], environment_rows(run, written))),
    ]


# ----------------------------------------------------------------------------- the page

STYLE = """
.side{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:8px}
.side figure{margin:0}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.85em;background:#f6f6f6;padding:8px}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222}
main{max-width:960px;margin:0 auto;padding:12px 14px 40px}
h1{font-size:1.4em;margin:.4em 0;overflow-wrap:anywhere}
h2{font-size:1.15em;margin:1.4em 0 .5em;border-bottom:1px solid #ddd}
nav a{margin-right:.8em;white-space:nowrap}
img{max-width:100%;height:auto}
figure{margin:14px 0}
figcaption{font-size:.85em;color:#555}
img.broken{outline:3px solid #d62728}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:.9em}
th,td{padding:4px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
th,.num,table.sortable td{white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none;background:#f4f4f4}
table.sortable th::after{content:" \\2195";color:#aaa}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2";color:#222}
table.sortable th[aria-sort=descending]::after{content:" \\25BC";color:#222}
figure.chart{max-width:600px}
figure.chart svg{width:100%;height:auto;display:block}
svg .grid{stroke:#e4e4e4}
svg .axis{stroke:#888}
svg .tick{font-size:14px;fill:#555}
svg .label{font-size:15px;fill:#222}
svg circle:hover{r:7}
.key{white-space:nowrap;margin-right:.8em;color:#222}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:-.05em}
"""

# Sorting: click (or Enter on) a header; numbers by their exact data-value. After load,
# images that did not decode are outlined and counted on <body data-images-loaded>, which
# the browser test reads.
SCRIPT = """
function sortBy(th) {
  const body = th.closest("table").tBodies[0], col = th.cellIndex;
  const up = th.getAttribute("aria-sort") !== "ascending";
  for (const other of th.parentNode.cells) other.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", up ? "ascending" : "descending");
  const key = row => {
    const cell = row.cells[col], n = parseFloat(cell.dataset.value);
    return isNaN(n) ? cell.textContent : n;
  };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(y);
    return up ? c : -c;
  });
  body.append(...rows);
}
for (const th of document.querySelectorAll("table.sortable th")) {
  th.tabIndex = 0;
  th.addEventListener("click", () => sortBy(th));
  th.addEventListener("keydown", e => { if (e.key === "Enter") sortBy(th); });
}
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(img => !img.naturalWidth);
  for (const img of broken) img.classList.add("broken");
  document.body.dataset.imagesLoaded = (images.length - broken.length) + "/" + images.length;
});
"""


def page(title: str, sections: Sequence[Section], lead: str = "") -> str:
    """A whole HTML document: the style, a contents line linking every section, the
    ``lead`` (Html) and the sections, and the inline script; nothing outside the file is
    referenced."""
    links = "\n".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1><nav>{links}</nav>{lead}"
        f"{''.join(s.html() for s in sections)}</main><script>{SCRIPT}</script></body></html>\n"
    )


def run_report_html(run_dir: Path, written: datetime | None = None) -> str:
    """The run's whole page as a string."""
    run = read_run_files(run_dir)
    return page(f"genzoo run {run.name}", run_sections(run, written), run_lead(run))


def study_table(study: dict[str, Any]) -> Html:
    """One row per arm: each column's mean and spread, minutes, parameters, protocol."""
    columns = study["columns"]
    headers = ["arm", "model"]
    for title in columns.values():
        headers += [title, "±"]
    headers += ["training minutes", "parameters", "units", "protocol"]
    keys = [k for key in columns for k in (key, f"{key}_spread")]
    keys += ["minutes", "parameters", "units", "protocol"]
    rows = [
        # "-" where an arm has no such figure (a FID has no standard error over images)
        [row["arm"], row["model"], *("-" if row.get(key) is None else row[key] for key in keys)]
        for row in study["rows"]
    ]
    seeds = study.get("seeds", 1)
    spread = "standard deviation over seeds" if seeds > 1 else "standard error over the images"
    return table(headers, rows, sortable=True, caption=f"{seeds} seed(s) per arm; ±: {spread}")


def side_by_side(study_dir: Path, study: dict[str, Any]) -> Html:
    """Each figure the study names, every arm's copy next to the others'."""
    parts = []
    for name in study["figures"]:
        pairs = [
            (study_dir / run / "figures" / name, f"{row['arm']}: {name}")
            for row in study["rows"]
            for run in row["runs"][:1]
        ]
        pairs = [(p, c) for p, c in pairs if p.is_file()]
        if pairs:
            gallery = figure_gallery([p for p, _ in pairs], [c for _, c in pairs])
            parts.append(f'<div class="side">{gallery}</div>')
    return Html("".join(parts))


def study_sections(study_dir: Path, study: dict[str, Any]) -> list[Section]:
    analysis = study.get("analysis") or {}
    own = figure_files(study_dir / "figures")
    links = "".join(
        f'<li><a href="{escape(run)}/report.html">{escape(run)}</a> ({escape(row["model"])})</li>'
        for row in study["rows"]
        for run in row["runs"]
    )
    commands = "\n".join(escape(c) for c in study.get("commands", []))
    analysis_parts = [figure_gallery(own) if own else ""]
    if analysis.get("table"):
        analysis_parts.append(table(analysis["table"]["headers"], analysis["table"]["rows"]))
    if analysis.get("note"):
        analysis_parts.append(analysis["note"])
    sections = [
        section("table", "The table", study_table(study)),
        section("figures", "Side by side", side_by_side(study_dir, study) or "No figures."),
    ]
    if any(analysis_parts):
        sections.append(section("analysis", "Analysis", *analysis_parts))
    sections += [
        section("arms", "Each arm's own page", Html(f"<ul>{links}</ul>")),
        section("commands", "Commands", Html(f"<pre>{commands}</pre>")),
        section(
            "environment",
            "Environment",
            table([], [["genzoo", genzoo.__version__], ["torch", torch.__version__]]),
        ),
    ]
    return sections


def write_study_report(study_dir: Path, output: Path | None = None) -> Path:
    """The page of a study (``genzoo study`` writes study.json): the question and its
    answer, the table, the arms' figures side by side, the analysis, links to every
    arm's page; to ``output`` (default STUDY/report.html)."""
    study = read_json_object(study_dir / "study.json")
    quick = " (--quick: a smoke run, not the protocol)" if study.get("quick") else ""
    lead = Html(
        f'<p class="lead">{escape(study["question"])}</p>'
        + (f"<p><strong>{escape(study['answer'])}</strong></p>" if study.get("answer") else "")
    )
    html = page(f"genzoo study {study['study']}{quick}", study_sections(study_dir, study), lead)
    path = output or study_dir / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return path


def write_report(folder: Path, output: Path | None = None) -> Path:
    """``genzoo report RUN|STUDY``: the page of a run or of a study folder."""
    if (folder / "study.json").is_file():
        return write_study_report(folder, output)
    return write_run_report(folder, output)


def write_run_report(run_dir: Path, output: Path | None = None) -> Path:
    """Write the run's page to ``output`` (default RUN/report.html), atomically, so a
    reader never opens half a page; returns the path written."""
    html = run_report_html(run_dir)
    path = output or run_dir / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return path
