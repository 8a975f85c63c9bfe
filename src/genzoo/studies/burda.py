"""Burda, Grosse & Salakhutdinov (2016), Table 1, on its own protocol.

The VAE (the ELBO averaged over k draws) and the IWAE (the bound of k importance
weights) with one and two stochastic layers, trained with k = 1, 5 and 50 on dynamically
binarized MNIST (all 60,000 training images), with the paper's networks, Adam and its
schedule of 3^i passes at 1e-3 * 10^(-i/7): ``genzoo train hvae --preset burda-1l`` or
``burda-2l``. At k = 1 the two objectives are one and the same, so a layer has five arms
for the table's six cells. Each arm trains within a time budget (``--max-minutes``, 120
by default: the paper's 3280 passes take days on a CPU); the test NLL is importance
sampled with K = 5000, and the page sets each cell beside the paper's, with the
difference and its standard error, and says how many hours the rest of the schedule
would take at the pace of the arm's passes.
"""

from __future__ import annotations

from collections.abc import Iterator

from genzoo.studies.papers import PaperCell, paper_study
from genzoo.studies.recipe import Arm

# Table 1 of the paper, test NLL in nats: (objective, stochastic layers, k) -> NLL.
PAPER: dict[tuple[str, int, int], float] = {
    ("VAE", 1, 1): 86.76,
    ("VAE", 1, 5): 86.47,
    ("VAE", 1, 50): 86.35,
    ("IWAE", 1, 1): 86.76,
    ("IWAE", 1, 5): 85.54,
    ("IWAE", 1, 50): 84.78,
    ("VAE", 2, 1): 85.33,
    ("VAE", 2, 5): 85.01,
    ("VAE", 2, 50): 84.78,
    ("IWAE", 2, 1): 85.33,
    ("IWAE", 2, 5): 83.89,
    ("IWAE", 2, 50): 82.90,
}
OBJECTIVES = {"VAE": "elbo", "IWAE": "iwae"}


def arm_name(objective: str, layers: int, k: int) -> str:
    """The arm that trains a cell: "1l-k1" (both objectives: the same at k = 1), "2l-iwae-k5"."""
    return f"{layers}l-k1" if k == 1 else f"{layers}l-{objective.lower()}-k{k}"


QUICK = ("--batch-size", "100")  # --quick: 10 steps of its 1,000 images, not 50


def build_arms() -> Iterator[Arm]:
    for layers in (1, 2):
        preset = ("--preset", f"burda-{layers}l")
        yield Arm(arm_name("VAE", layers, 1), "hvae", (*preset, "--k", "1"), QUICK)
        for k in (5, 50):
            for objective, flag in OBJECTIVES.items():
                flags = (*preset, "--objective", flag, "--k", str(k))
                yield Arm(arm_name(objective, layers, k), "hvae", flags, QUICK)


CELLS = tuple(
    PaperCell(f"{objective} {layers}L k={k}", (objective, layers, k), nll, arm_name(*cell))
    for cell, nll in PAPER.items()
    for objective, layers, k in (cell,)
)


STUDY = paper_study(
    name="burda",
    question="How close does genzoo come to Burda et al.'s Table 1 (VAE and IWAE, one and "
    "two stochastic layers, k = 1, 5, 50) on the paper's own protocol, in a fixed time?",
    arms=tuple(build_arms()),
    cells=CELLS,
    label_headers=("model", "layers", "k"),
    protocol="the paper's 3280 passes",
    whose="Burda et al.'s Table 1",
    fixed_schedule=True,
)
