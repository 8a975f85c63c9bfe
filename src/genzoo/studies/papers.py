"""genzoo's figures beside a paper's table, for the studies that re-run one on its own
protocol (burda, vampprior): each cell of the paper's table, the arm that trains it,
genzoo's test NLL with its standard error, and the difference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from genzoo.files import read_json
from genzoo.pagekit import with_error
from genzoo.report import training_seconds
from genzoo.runs import read_metrics
from genzoo.studies.recipe import Arm, Study, StudyRun

BUDGET_MINUTES = 120  # training per arm, unless --max-minutes says otherwise
REST_HEADER = "hours the rest of the schedule takes, at that pace"


@dataclass(frozen=True)
class PaperCell:
    """One figure of a paper's table: what the row is (``name`` in the answer; ``labels``,
    one per column of ``label_headers``), the paper's test NLL, and the study's arm that
    measures it."""

    name: str
    labels: tuple[Any, ...]
    paper: float
    arm: str


def measured(state: StudyRun, arm: str) -> dict[str, Any] | None:
    """An arm's test NLL over its seeds (mean; standard error: the evaluation's with one
    seed, else the seeds' standard deviation over the square root of their number), with
    its K, the epochs and minutes it trained and the epochs its schedule has; None where
    the arm was not run."""
    results = [read_json(run / "eval.json") for run in state.runs.get(arm, [])]
    values = [r["nll"] for r in results if "nll" in r]
    if not values:
        return None
    mean = sum(values) / len(values)
    if len(values) > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        se = sd / math.sqrt(len(values))
    else:
        se = results[0]["nll_se"]
    metrics = [read_metrics(run) for run in state.runs[arm]]
    return {
        "nll": mean,
        "se": se,
        "k_test": results[0].get("iw_samples"),
        "epochs": metrics[0][-1]["epoch"] if metrics[0] else 0,
        # What --max-minutes budgets: the training passes (mean over seeds).
        "minutes": fmean(training_seconds(m) for m in metrics) / 60,
        "schedule": read_json(state.runs[arm][0] / "config.json")["train"]["epochs"],
    }


def hours_to_finish(found: dict[str, Any]) -> float:
    """The rest of an arm's schedule in hours, at the pace of its training passes so far
    (the load on the machine when it trained sets that pace)."""
    if not found["epochs"]:
        return math.nan
    left = max(0, found["schedule"] - found["epochs"])
    return left * found["minutes"] / found["epochs"] / 60


def beside_paper(
    state: StudyRun,
    cells: Sequence[PaperCell],
    label_headers: Sequence[str],
    protocol: str,
    fixed_schedule: bool = False,
) -> dict[str, Any]:
    """The analysis of such a study: every cell whose arm was run, genzoo's figure beside
    the paper's with the difference (genzoo - paper) and its standard error (genzoo's
    over the test images: papers state none), as a table and as data for the answer;
    with a ``fixed_schedule`` (a set number of passes, no early stopping) also the hours
    the rest of it would take."""
    found_cells, rows = [], []
    for cell in cells:
        found = measured(state, cell.arm)
        if found is None:
            continue
        difference = found["nll"] - cell.paper
        found_cells.append({"name": cell.name, "paper": cell.paper, "difference": difference})
        found_cells[-1].update(arm=cell.arm, **found)
        genzoo = with_error(found["nll"], found["se"])
        gap = ("+" if difference >= 0 else "") + with_error(difference, found["se"])
        trained = [found["k_test"], found["epochs"], round(found["minutes"], 1)]
        trained += [round(hours_to_finish(found), 1)] if fixed_schedule else []
        rows.append([*cell.labels, cell.paper, genzoo, gap, *trained, cell.arm])
    headers = [*label_headers, "paper NLL", "genzoo NLL", "genzoo - paper", "test K"]
    headers += ["epochs trained", "training-pass minutes"]
    headers += [REST_HEADER] if fixed_schedule else []
    budget = state.max_minutes or BUDGET_MINUTES
    trained = f"at most {budget:g} minutes (--max-minutes) of {protocol}"
    if state.quick:
        trained = "one epoch on 1,000 images (--quick: a smoke run, not the protocol)"
    return {
        "cells": found_cells,
        "table": {
            "headers": [*headers, "arm"],
            "rows": rows,
        },
        "note": f"Each arm trained {trained}; ±: the standard error of genzoo's estimate "
        "over the test images (the paper states none); the test NLL by importance sampling "
        "with the K shown (the papers': 5000).",
    }


def answer_line(analysis: dict[str, Any], whose: str) -> str:
    """The answer: each cell's figure and its distance from the paper's."""
    cells = analysis["cells"]
    if not cells:
        return "No cell of the paper's table was measured."
    parts = [f"{c['name']} {c['nll']:.2f} ({c['difference']:+.2f})" for c in cells]
    return f"genzoo's test NLL (and its distance from {whose}): " + "; ".join(parts)


def paper_study(
    name: str,
    question: str,
    arms: tuple[Arm, ...],
    cells: Sequence[PaperCell],
    label_headers: Sequence[str],
    protocol: str,
    whose: str,
    figures: tuple[str, ...] = ("samples.png", "curves.png"),
    fixed_schedule: bool = False,
) -> Study:
    """A study that re-runs a paper's table: every arm trained at most BUDGET_MINUTES
    (``--max-minutes`` replaces it) of the paper's ``protocol``, its test NLL importance
    sampled with K = 5000, the page setting each of ``cells`` beside ``whose`` figure
    (and, for a ``fixed_schedule``, the hours the rest of it would take)."""

    def analyse(state: StudyRun) -> dict[str, Any]:
        return beside_paper(state, cells, label_headers, protocol, fixed_schedule)

    def answer(rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
        return answer_line(analysis, whose)

    return Study(
        name=name,
        question=question,
        arms=arms,
        train=("--max-minutes", str(BUDGET_MINUTES)),
        evaluate=("--iw-samples", "5000"),
        columns={"neg_elbo": "-ELBO", "kl": "KL", "nll": "NLL"},
        figures=figures,
        analyse=analyse,
        answer=answer,
    )
