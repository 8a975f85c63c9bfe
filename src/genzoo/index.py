"""The index of a folder of runs: ``genzoo report FOLDER`` -> FOLDER/index.html.

FOLDER is any folder holding run folders, at any depth (runs/, with studies in it): one
row per run with its family, the settings that differ from its family's defaults, how
far it has trained (runs being trained and runs stopped short say so), its training
minutes, its best validation figure, its test figures if evaluated (NLL or bits/dim with
its ± and K, FID, the spread of the classes) and a thumbnail of its samples; sortable,
filterable by family, each row linking to the run's page. A table of the studies links to
their pages. The run and study pages are written too where they are missing or older than
their files (a page of an unfinished run every time: its state changes without a file
changing), so running it again refreshes everything.

``write_report`` chooses the page ``genzoo report`` writes (a run's, a study's or the
index): it sits here, above the three.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from genzoo.comparison import MOVED_ON, nll_samples, settings_column, table_row
from genzoo.errors import GenzooError
from genzoo.files import atomic_write, read_json_object
from genzoo.pagekit import (
    NONE,
    Cell,
    Html,
    Sortable,
    estimate,
    page,
    section,
    table,
    thumbnail,
)
from genzoo.report import (
    RunFiles,
    best_validation,
    class_spread,
    headline_terms,
    read_run_files,
    run_state,
    samples_figure,
    train_settings,
    wall_seconds,
    write_run_report,
)
from genzoo.runs import load_run_config
from genzoo.studies.page import write_study_report

# ----------------------------------------------------------------------------- the folders


def folders_below(folder: Path) -> Iterator[Path]:
    """Every folder below ``folder`` in name order, each once (a link back up is not
    followed round), except hidden ones and what lies inside a run folder."""
    seen = {folder.resolve()}

    def walk(parent: Path) -> Iterator[Path]:
        for path in sorted(parent.iterdir()):
            if not path.is_dir() or path.name.startswith(".") or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            yield path
            if not (path / "config.json").is_file():
                yield from walk(path)

    return walk(folder)


def is_stale(page_path: Path, sources: list[Path]) -> bool:
    """Whether the page is missing or older than one of the files it is made from."""
    if not page_path.is_file():
        return True
    made = page_path.stat().st_mtime
    return any(p.stat().st_mtime > made for p in sources if p.is_file())


def page_sources(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The files ``names`` of a folder and its figures: what its page shows."""
    figures = folder / "figures"
    drawn = sorted(figures.iterdir()) if figures.is_dir() else []
    return [folder / name for name in names] + drawn


RUN_FILES = ("config.json", "metrics.jsonl", "eval.json", "summary.json")


def refresh_run_page(run: RunFiles, state: str) -> None:
    """Rewrite the run's page if it is stale, or every time while the run is not done:
    its state (training, stopped) changes without a file changing."""
    sources = page_sources(run.run_dir, RUN_FILES)
    if state != "done" or is_stale(run.run_dir / "report.html", sources):
        write_run_report(run.run_dir)


def refreshed_study(study_dir: Path) -> dict[str, Any]:
    """The study's study.json, its page rewritten first if stale."""
    study = read_json_object(study_dir / "study.json")
    if is_stale(study_dir / "report.html", page_sources(study_dir, ("study.json",))):
        write_study_report(study_dir)
    return study


# ----------------------------------------------------------------------------- the rows

RUN_HEADERS = [
    "run",
    "samples",
    "family",
    "state",
    "epochs",
    "minutes",
    "validation",
    "test figure",
    "K",
    "FID",
    "classes",
    "settings",
]


def link(target: Path, inner: Html, base: Path) -> Html:
    """A link to ``target`` relative to the folder ``base`` the index lies in."""
    href = Path(os.path.relpath(target.resolve(), base.resolve())).as_posix()
    return Html(f'<a href="{escape(href)}">{inner}</a>')


def marked(cell: Sortable, moved_on: Any) -> Sortable:
    """The cell marked (comparison.MOVED_ON) when its figure predates the run's last epoch."""
    return Sortable(cell.text + MOVED_ON, cell.key) if moved_on else cell


def headline_test_figure(shown: dict[str, Any]) -> Cell:
    """The run's headline test figure with its standard error and label ("NLL 92.47 ±
    0.24", "bits/dim 1.06 ± 0.01"), marked if the run has moved on; "-" before any."""
    terms = headline_terms(shown["model"], shown)
    if not terms:
        return NONE
    key = terms[0]
    label = (shown.get("terms") or {}).get(key, key)
    return marked(estimate(shown[key], shown.get(f"{key}_se"), label), shown["figures_moved_on"])


def samples_cell(shown: dict[str, Any]) -> Cell:
    """The samples per image behind the run's NLL (comparison.nll_samples: K, "exact", or
    steps of a bound), sorted by their number (an exact likelihood above any)."""
    text = nll_samples(shown)
    if text == NONE:
        return NONE
    samples = shown.get("iw_samples")
    return Sortable(text, samples if isinstance(samples, int) else math.inf)


def epochs_cell(run: RunFiles, state: str, shown: dict[str, Any]) -> Sortable:
    """The epochs trained, "3 of 10" while the run is unfinished."""
    done = shown["epochs"]
    planned = train_settings(run.config).get("epochs")
    return Sortable(str(done) if state == "done" else f"{done} of {planned}", done)


def page_link(item_dir: Path, folder: Path, base: Path) -> Html:
    """A link to the page of a run or study, named by its path below ``folder``."""
    parts = item_dir.relative_to(folder).parts
    # Each folder's name whole (a phone breaks the path after a "/", never at a "-").
    name = "".join(f"<span>{escape(part)}/</span><wbr>" for part in parts[:-1])
    name += f"<span>{escape(parts[-1])}</span>"
    return link(item_dir / "report.html", Html(f'<span class="name">{name}</span>'), base)


def run_cells(run_dir: Path, folder: Path, base: Path) -> list[Cell]:
    """The index's row of a run (its page refreshed first)."""
    name = page_link(run_dir, folder, base)
    try:
        run = read_run_files(run_dir)
        state = run_state(run)
        refresh_run_page(run, state)
        cfg = load_run_config(run_dir)
    except GenzooError as err:
        return [name, NONE, NONE, "unreadable", *[NONE] * 7, f"unreadable: {err}"]
    shown = table_row(run_dir, cfg, settings_column([cfg])[0])
    best = best_validation(cfg.model, run.metrics)
    return [
        name,
        samples_thumbnail(run_dir, base),
        cfg.model,
        state,
        epochs_cell(run, state, shown),
        wall_seconds(run.metrics, run.summary) / 60,
        estimate(best.value, label=best.name) if best else NONE,
        headline_test_figure(shown),
        samples_cell(shown),
        marked(estimate(shown["fid"]), shown["quality_moved_on"]) if "fid" in shown else NONE,
        class_spread(shown) or NONE,
        Html(f'<span class="settings">{escape(shown["settings"])}</span>'),
    ]


def samples_thumbnail(run_dir: Path, base: Path) -> Cell:
    """A small copy of the run's samples linking to its page, "-" before any; a file
    that is no image (cut short by a crash) is said so, and the rest of the page stands."""
    samples = samples_figure(run_dir)
    if not samples:
        return NONE
    try:
        image = thumbnail(samples)
    except OSError:  # PIL's errors for a truncated or unrecognised file are OSErrors
        return f"unreadable {samples.name}"
    return link(run_dir / "report.html", image, base)


STUDY_HEADERS = ["study", "question", "answer", "arms"]


def study_cells(study_dir: Path, folder: Path, base: Path) -> list[Cell]:
    """The index's row of a study (its page refreshed first)."""
    name = page_link(study_dir, folder, base)
    try:
        study = refreshed_study(study_dir)
    except GenzooError as err:
        return [name, f"unreadable: {err}", NONE, NONE]
    quick = " (--quick: a smoke run)" if study.get("quick") else ""
    answer = study.get("answer") or NONE
    return [name, study.get("question", NONE) + quick, answer, len(study.get("rows", []))]


# ----------------------------------------------------------------------------- the page

COLUMNS_NOTE = (
    "state: done, training (a process holds the run's lock now) or stopped (killed, or "
    "not trained to its end: genzoo resume RUN continues it); minutes: of the training "
    "command (its passes, validation, quality probes and figures); validation: the best "
    "validation figure (what picks the best checkpoint); "
    "test figure: the likelihood's, mean ± standard error, with K its samples per image; "
    "classes: the fewest to the most of the samples the classifier calls each class; "
    "settings: those that differ from the family's defaults; "
    f"{MOVED_ON} measured before the run's last epoch (genzoo eval it again)."
)


def how_many(n: int, noun: str) -> str:
    """'1 run', '3 runs', '2 studies'."""
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {noun if n == 1 else plural}"


def index_html(folder: Path, base: Path) -> str:
    """The index of every run and study below ``folder`` as a page that lies in ``base``
    (its links are relative to it)."""
    below = list(folders_below(folder))
    runs = [f for f in below if (f / "config.json").is_file()]
    studies = [f for f in below if (f / "study.json").is_file()]
    if not runs and not studies:
        raise GenzooError(
            f"{folder} holds no run folder (config.json) nor study (study.json) at any "
            "depth; give a run, a study or a folder of runs"
        )
    rows = [run_cells(run, folder, base) for run in runs]
    states = [row[RUN_HEADERS.index("state")] for row in rows]
    counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
    written = datetime.now().astimezone().isoformat(sep=" ", timespec="minutes")
    lead = (
        f"{how_many(len(runs), 'run')}{f' ({counts})' if counts else ''} and "
        f"{how_many(len(studies), 'study')} in {folder}, as of {written}; genzoo report "
        f"{folder} again refreshes the page. A click on a header sorts the runs, the menu "
        "shows one family."
    )
    runs_part = [table(RUN_HEADERS, rows, sortable=True, filter_by="family"), COLUMNS_NOTE]
    sections = [section("runs", "Runs", *(runs_part if runs else ["None."]))]
    if studies:
        study_rows = [study_cells(study, folder, base) for study in studies]
        sections.append(section("studies", "Studies", table(STUDY_HEADERS, study_rows)))
    title = f"genzoo runs in {folder.resolve().name}"
    return page(title, sections, Html(f'<p class="lead">{escape(lead)}</p>'))


def write_index(folder: Path, output: Path | None = None) -> Path:
    """Write the index of ``folder`` to ``output`` (default FOLDER/index.html),
    atomically, refreshing the run and study pages it links to; returns its path."""
    path = output or folder / "index.html"
    html = index_html(folder, path.parent)
    atomic_write(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return path


def write_report(folder: Path, output: Path | None = None) -> Path:
    """``genzoo report RUN|STUDY|FOLDER``: the page of a run (a folder with config.json,
    or a missing one, which check_run_dir names), of a study (study.json), else the
    index of a folder of runs."""
    if (folder / "study.json").is_file():
        return write_study_report(folder, output)
    if folder.is_dir() and not (folder / "config.json").exists():
        return write_index(folder, output)
    return write_run_report(folder, output)
