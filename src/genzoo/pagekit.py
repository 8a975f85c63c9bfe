"""The kit the pages are built from: HTML pieces and an SVG chart, apart from any page.

A page made here is one self-contained file that can be mailed or uploaded as it is and
read offline on a phone: images are embedded as base64 data URIs (``data_uri``,
``figure_gallery``), curves are inline SVG (``line_chart``; a point's value shows on
hover), tables sort on a click through a few lines of inline JavaScript, and nothing is
fetched from a network (no CDN, no web font). Every string put in goes through
``html.escape`` unless it is already ``Html``, so a value read from a file cannot inject
markup.

The pieces return HTML fragments (``table``, ``section``, ``line_chart``,
``figure_gallery``) and ``page`` makes a whole document of them, with one style for
every page: the run's page (report.py) and a study's (studies/page.py).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

# ----------------------------------------------------------------------------- HTML pieces


class Html(str):
    """A string that is already HTML (built here, its file data escaped), so ``table``
    and ``section`` put it in as it is instead of escaping it a second time."""


Cell = Html | str | int | float | None


def significant(value: float, digits: int = 5) -> str:
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
        text = str(value) if isinstance(value, int) else significant(value)
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

# Series beyond these come round again in the same order.
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
        f"<title>{escape(name)}, epoch {x:g}: {significant(y, 6)}</title></circle>"
        for x, y in points
    )
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>{dots}'


def _legend(names: Sequence[str], note: str) -> str:
    """One swatch and name per series under the chart, as HTML so that it wraps on a
    narrow screen, then the ``note``."""
    keys = " ".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>'
        f"{escape(name)}</span>"
        for name, colour in zip(names, itertools.cycle(COLOURS))
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
        for (name, points), colour in zip(kept.items(), itertools.cycle(COLOURS))
    )
    return Html(
        f'<figure class="chart"><svg viewBox="0 0 {frame.width} {frame.height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f"{_axes(frame, x_label)}{curves}</svg>{_legend(list(kept), note)}</figure>"
    )


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
