"""How few labels does a generative model need? Kingma et al. (2014), table 1, M2.

The semi-supervised VAE (``vae --labels N``) trained with 100, 600, 1000 and 3000 of the
50,000 training labels, N/10 of each class chosen by the seed: the test error of its
classifier q(y|x) against the number of labels, beside the paper's M2 column, with each
arm's analogies (a test image's style z decoded with every label) and its curves.
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Any

import matplotlib.pyplot as plt

from genzoo import plots
from genzoo.files import read_json
from genzoo.pagekit import with_error
from genzoo.runs import load_run_config
from genzoo.studies.recipe import Arm, Study, StudyRun

# Kingma et al. (2014), table 1: M2's test error (%) and its spread, by labels.
PAPER_M2 = {100: (11.97, 1.71), 600: (4.94, 0.13), 1000: (3.60, 0.56), 3000: (3.92, 0.63)}
# --quick trains on 1,000 images: a tenth of the labels (at least one per class).
ARMS = tuple(
    Arm(f"labels={n}", "vae", ("--labels", str(n)), quick=("--labels", str(max(10, n // 10))))
    for n in PAPER_M2
)
PAPER = {arm.name: n for arm, n in zip(ARMS, PAPER_M2, strict=True)}  # the paper's labels
QUICK = " (--quick: a tenth of the labels)"


def labels_used(run: Path) -> int:
    """The number of labelled images the run trained with (--labels)."""
    return int(load_run_config(run).model_config.labels)


def errors(runs: list[Path]) -> list[float]:
    """The test error of q(y|x), in percent, of each run (one per seed)."""
    return [100 * read_json(run / "eval.json")["class_error"] for run in runs]


def analyse(state: StudyRun) -> dict[str, Any]:
    """Each arm's test errors (one per seed) beside the paper's, as a table and a figure."""
    measured, rows = {}, []
    for arm in ARMS:
        runs = state.runs.get(arm.name)
        if not runs:
            continue
        used, found = labels_used(runs[0]), errors(runs)
        measured[used] = found
        paper, spread = PAPER_M2[PAPER[arm.name]]
        shown = ", ".join(f"{e:.2f}" for e in found)
        rows.append([arm.name, used, shown, f"{paper:.2f} ± {spread:.2f}"])
    draw(measured, [PAPER[arm.name] for arm in ARMS if arm.name in state.runs], state)
    headers = ["arm", "labels used", "test error (%), each seed", "Kingma et al. M2 (%)"]
    return {
        "table": {"headers": headers, "rows": rows},
        "note": "Test error of q(y|x) on the 10,000 test images; the paper's figures are "
        "the mean ± spread of M2 over its label draws (table 1). --quick trains on 1,000 "
        "images with a tenth of the labels: its figures mean nothing.",
    }


def draw(measured: dict[int, list[float]], paper: list[int], state: StudyRun) -> None:
    """genzoo's errors (each seed, and their mean) and the paper's, against the labels."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.errorbar(
        paper,
        [PAPER_M2[n][0] for n in paper],
        yerr=[PAPER_M2[n][1] for n in paper],
        marker="s",
        capsize=3,
        label="Kingma et al. 2014, M2",
    )
    for n, errors_of_seeds in measured.items():
        ax.scatter([n] * len(errors_of_seeds), errors_of_seeds, color="C1", alpha=0.6)
    means = [fmean(found) for found in measured.values()]
    ax.plot(list(measured), means, color="C1", marker="o", label="genzoo" + QUICK * state.quick)
    ax.set(xscale="log", xlabel="labelled training images", ylabel="test error of q(y|x), %")
    ax.set_title("semi-supervised VAE (M2): error against labels")
    ax.legend()
    ax.grid(alpha=0.3)
    plots.save_figure(fig, state.figures / "error_vs_labels.png")


def answer(rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
    parts = []
    for row in rows:
        if "class_error" in row:
            paper, spread = PAPER_M2[PAPER[row["arm"]]]
            error, error_spread = 100 * row["class_error"], 100 * row["class_error_spread"]
            parts.append(
                f"{row['arm']} {with_error(error, error_spread)}% "
                f"(paper {paper:.2f} ± {spread:.2f})"
            )
    return "Test error of q(y|x): " + "; ".join(parts) + "."


STUDY = Study(
    name="few-labels",
    question="How low does the test error of a semi-supervised VAE (Kingma et al.'s M2) go "
    "with 100, 600, 1000 and 3000 labelled MNIST images, beside the paper's table 1?",
    arms=ARMS,
    # The paper's M2: 50 latent units; here each arm trains at most 30 minutes, in bf16
    # where the device has its kernels: M2's ten decoder passes an image took 42 s an
    # epoch against 65 s in fp32 here, with the same validation error epoch by epoch
    # (benchmarks/README.md).
    train=("--latent-dim", "50", "--epochs", "1000", "--max-minutes", "30", "--precision", "auto"),
    evaluate=("--iw-samples", "0"),
    columns={"class_error": "test error of q(y|x)", "neg_elbo": "-ELBO (-U)"},
    figures=("analogies.png", "classes.png", "curves.png"),
    analyse=analyse,
    answer=answer,
)
