"""The page of a study: ``genzoo study NAME`` (or ``genzoo report STUDY``) ->
STUDY/report.html, from the study.json that recipe.py writes.

The question and its answer, the table of the arms, each arm's figures side by side, the
analysis, and links to every arm's own page, built from the pieces of pagekit.py.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import torch

import genzoo
from genzoo.files import atomic_write, read_json_object
from genzoo.pagekit import (
    NONE,
    Cell,
    Html,
    Section,
    estimate,
    figure_files,
    figure_gallery,
    page,
    section,
    table,
)


def figure_cell(row: dict[str, Any], key: str) -> Cell:
    """An arm's figure with its spread, to the spread's precision; "-" where the arm has
    no such figure (an autoencoder has no likelihood)."""
    if row.get(key) is None:
        return NONE
    return estimate(row[key], row.get(f"{key}_spread"))


# What the table says of each arm after its figures: study.json key -> column title.
ARM_FACTS = {
    "minutes": "minutes (training command)",
    "pass_minutes": "of them training passes",
    "parameters": "parameters",
    "units": "units",
    "protocol": "protocol",
}


def with_minutes_named(row: dict[str, Any]) -> dict[str, Any]:
    """A study.json row from before the command's minutes were kept says its ``minutes``
    are the training passes': they go to that column, the command's unknown."""
    if "pass_minutes" in row or "minutes" not in row:
        return row
    return {**row, "minutes": None, "pass_minutes": row["minutes"]}


def study_table(study: dict[str, Any]) -> Html:
    """One row per arm: each column's mean ± spread, minutes, parameters, protocol."""
    columns = study["columns"]
    headers = ["arm", "model", *columns.values(), *ARM_FACTS.values()]
    rows = [
        [
            row["arm"],
            row["model"],
            *(figure_cell(row, key) for key in columns),
            *(NONE if row.get(key) is None else row[key] for key in ARM_FACTS),
        ]
        for row in map(with_minutes_named, study["rows"])
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
