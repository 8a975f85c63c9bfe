"""The kit the pages are built from: HTML pieces and an SVG chart, apart from any page.

A page made here is one self-contained file that can be mailed or uploaded as it is and
read offline on a phone: images are embedded as base64 data URIs (``data_uri``,
``figure_gallery``, ``thumbnail``), curves are inline SVG (``line_chart``; a point's
value shows on hover), tables sort on a click and filter by a column through a few lines
of inline JavaScript, wide tables scroll inside their box, and nothing is fetched from a
network (no CDN, no web font). Every string put in goes through ``html.escape`` unless it
is already ``Html``, so a value read from a file cannot inject markup.

Numbers are written as a person writes them, on every page alike: a value with its
standard error to the error's precision (``with_error``: 92.47 ± 0.24), any other to
four significant figures (``significant``).

The pieces return HTML fragments (``table``, ``section``, ``line_chart``,
``figure_gallery``) and ``page`` makes a whole document of them, with one style for
every page: the run's page (report.py), a study's (studies/page.py) and the index of a
folder of runs (index.py).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from PIL import Image

# ----------------------------------------------------------------------------- numbers

SIGNIFICANT = 4  # figures of a number shown without its error
ERROR_FIGURES = 2  # significant figures of a standard error; its value is rounded to them


def significant(value: float, digits: int = SIGNIFICANT) -> str:
    """A number as a person writes it: ``digits`` significant figures (0.006582, 26.03),
    but every digit of a whole part longer than that (123457, not 1.235e+05)."""
    if not math.isfinite(value):
        return str(value)
    # On the rounded value: 9999.7 to four figures is 10000, not 1e+04.
    if 10**digits <= abs(float(f"{value:.{digits}g}")) and abs(value) < 1e15:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def with_error(value: float, error: float | None) -> str:
    """A value and its standard error as a person writes them: the error to two
    significant figures and the value to the same decimal place (92.47 ± 0.24, 1235 ± 34);
    a value without an error (None) to four significant figures. An error that is zero or
    not finite has no precision to give: both are then written to four figures."""
    if error is None:
        return significant(value)
    if not (math.isfinite(value) and math.isfinite(error) and error > 0):
        return f"{significant(value)} ± {significant(error)}"
    rounded = float(f"{error:.{ERROR_FIGURES}g}")  # 0.0996 -> 0.1, whose place counts
    places = ERROR_FIGURES - 1 - math.floor(math.log10(rounded))
    decimals = max(places, 0)
    return f"{round(value, places):.{decimals}f} ± {round(rounded, places):.{decimals}f}"


def duration(seconds: float) -> str:
    """A time as a person says it: seconds under a minute, else minutes (12.35 min)."""
    return f"{significant(seconds)} s" if seconds < 60 else f"{significant(seconds / 60)} min"


@dataclass(frozen=True)
class Sortable:
    """A table cell that shows ``text`` and sorts by the number ``key``: a measurement
    with its error sorts by its value, a range of shares by its width."""

    text: str
    key: float


def estimate(value: float, error: float | None = None, label: str = "") -> Sortable:
    """A value with its standard error (``with_error``), after ``label`` if one is given
    ("NLL 92.47 ± 0.24"), sorted by the value."""
    text = with_error(value, error)
    return Sortable(f"{label} {text}" if label else text, value)


# ----------------------------------------------------------------------------- HTML pieces


class Html(str):
    """A string that is already HTML (built here, its file data escaped), so ``table``
    and ``section`` put it in as it is instead of escaping it a second time."""


Cell = Html | Sortable | str | int | float | None
NONE = "-"  # a cell of a figure that a row does not have (centred; sorted after every number)
LONG_TEXT = 30  # characters of a cell's text beyond which it is kept at least 10em wide


def _cell(value: Cell) -> str:
    """One table cell. Numbers carry their exact value in ``data-value`` so that sorting
    uses it rather than the rounded text; anything else is escaped unless it is Html."""
    if isinstance(value, Html):
        return f"<td>{value}</td>"
    if value == NONE:
        return f'<td class="none">{NONE}</td>'
    if isinstance(value, bool) or value is None:
        return f"<td>{escape(json.dumps(value))}</td>"
    if isinstance(value, int | float):
        value = Sortable(str(value) if isinstance(value, int) else significant(value), value)
    if isinstance(value, Sortable):
        return f'<td class="num" data-value="{escape(repr(value.key))}">{escape(value.text)}</td>'
    text = str(value)
    # A sentence keeps a readable width where a narrow screen squeezes the table.
    cls = ' class="long"' if len(text) > LONG_TEXT else ""
    return f"<td{cls}>{escape(text)}</td>"


def _filter_menu(name: str, groups: Sequence[str]) -> str:
    """The menu that shows only the rows of one value of column ``name`` (the page's
    script hides the others), each value with its count of rows."""
    counts = {group: groups.count(group) for group in sorted(set(groups))}
    options = f'<option value="">all ({len(groups)})</option>' + "".join(
        f'<option value="{escape(group)}">{escape(group)} ({n})</option>'
        for group, n in counts.items()
    )
    return f'<label class="filter">{escape(name)}: <select>{options}</select></label>'


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    sortable: bool = False,
    caption: str | None = None,
    filter_by: str | None = None,
) -> Html:
    """A table in a horizontally scrolling box (a wide table scrolls inside it instead of
    running off the page), without a header row if ``headers`` is empty; ``sortable``
    makes its headers sort the rows on a click, ``filter_by`` (a header whose cells are
    plain text) puts a menu above it that shows the rows of one of that column's values
    (the page's inline script)."""
    cells = [list(row) for row in rows]
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    head = f"<thead><tr>{head}</tr></thead>" if headers else ""
    column = headers.index(filter_by) if filter_by else None
    groups = [str(row[column]) for row in cells] if column is not None else []
    body = "".join(
        (f'<tr data-group="{escape(groups[i])}">' if groups else "<tr>")
        + "".join(_cell(c) for c in row)
        + "</tr>"
        for i, row in enumerate(cells)
    )
    cls = ' class="sortable"' if sortable else ""
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    box = f'<div class="scroll"><table{cls}>{cap}{head}<tbody>{body}</tbody></table></div>'
    if column is None:
        return Html(box)
    return Html(f'<div class="filtered">{_filter_menu(filter_by or "", groups)}{box}</div>')


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


def thumbnail(path: Path, size: int = 80) -> Html:
    """A small copy of the image (at most ``size`` pixels a side), embedded: a page of a
    hundred runs' samples stays a few hundred kilobytes."""
    with Image.open(path) as image:
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return Html(f'<img class="thumb" src="data:image/png;base64,{data}" alt="{escape(path.name)}">')


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
        f"<title>{escape(name)}, epoch {x:g}: {significant(y)}</title></circle>"
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
main{max-width:1240px;margin:0 auto;padding:12px 14px 40px}
p{max-width:50em}
.lead{font-size:1.05em}
h1{font-size:1.4em;margin:.4em 0;overflow-wrap:anywhere}
h2{font-size:1.15em;margin:1.4em 0 .5em;border-bottom:1px solid #ddd}
nav{margin:10px 0}
nav a{margin-right:.8em;white-space:nowrap}
img{max-width:100%;height:auto}
figure{margin:14px 0}
figcaption{font-size:.85em;color:#555}
img.broken{outline:3px solid #d62728}
/* A wide table scrolls in its box; shadows at the sides say there is more (the white
   covers move with the content and uncover them only where it runs on). */
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%;background:
 linear-gradient(to right,#fff 30%,#fff0) left/32px 100% no-repeat local,
 linear-gradient(to left,#fff 30%,#fff0) right/32px 100% no-repeat local,
 radial-gradient(farthest-side at 0 50%,#0003,#0000) left/12px 100% no-repeat scroll,
 radial-gradient(farthest-side at 100% 50%,#0003,#0000) right/12px 100% no-repeat scroll}
caption{caption-side:bottom;text-align:left;font-size:.85em;color:#555;padding-top:4px}
.headline{display:flex;flex-wrap:wrap;gap:0 28px;align-items:flex-start}
.headline>.scroll{flex:0 1 auto}
.headline>figure{margin:0;flex:0 1 420px}
.headline td:first-child{white-space:nowrap}
.headline .value{font-weight:600;white-space:nowrap}
.how{font-size:.85em;color:#555}
.settings{display:inline-block;white-space:normal;min-width:10em;max-width:16em}
img.thumb{display:block;max-width:none}
.filter{display:inline-block;margin:2px 0 8px}
table{border-collapse:collapse;font-size:.9em}
th,td{padding:4px 7px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
table.sortable th,.num,.name>span{white-space:nowrap}
table.sortable{width:100%}
.num{text-align:right;font-variant-numeric:tabular-nums}
.none{text-align:center;color:#888}
td.long{min-width:10em}
table.sortable th{cursor:pointer;user-select:none;background:#f4f4f4}
table.sortable tr>:first-child{position:sticky;left:0;background:#fff}
table.sortable tr>th:first-child{background:#f4f4f4}
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

# Filtering: a menu above a table shows the rows of one group (data-group) alone.
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
    if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;  // "-" last either way
    const c = typeof x === "number" ? x - y : String(x).localeCompare(y);
    return up ? c : -c;
  });
  body.append(...rows);
}
function filterRows(menu) {
  const rows = menu.closest(".filtered").querySelector("tbody").rows;
  for (const row of rows) row.hidden = menu.value !== "" && row.dataset.group !== menu.value;
}
for (const menu of document.querySelectorAll(".filtered select")) {
  menu.addEventListener("change", () => filterRows(menu));
  filterRows(menu);  // a menu the browser restored on going back
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
    """A whole HTML document: the style, the ``lead`` (Html: the page's answer, first), a
    contents line linking every section (if more than one), the sections, and the inline
    script; nothing outside the file is referenced."""
    links = "\n".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in sections)
    contents = f"<nav>{links}</nav>" if len(sections) > 1 else ""  # one section needs none
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{lead}{contents}"
        f"{''.join(s.html() for s in sections)}</main><script>{SCRIPT}</script></body></html>\n"
    )
