"""Tomczak & Welling (2018), the VampPrior against N(0, I), on the paper's protocol.

One stochastic layer (300 gated units twice, z of 40) and two (genzoo's: Burda et al.'s
chain with 300 gated units and z1, z2 of 40, the VampPrior on z2), each with the
standard prior and with a VampPrior of 500 pseudo-inputs, trained on Larochelle &
Murray's statically binarized MNIST with the paper's Adam, batches, warm-up and early
stopping (``genzoo train hvae --preset vampprior``), each within a time budget
(``--max-minutes``, 120 by default: the paper trains up to 2000 epochs). The test NLL is
importance sampled with K = 5000 and set beside the paper's figure, with the difference
and its standard error.
"""

from __future__ import annotations

from genzoo.studies.papers import PaperCell, paper_study
from genzoo.studies.recipe import Arm

PRESET = ("--preset", "vampprior")
TWO_LAYERS = ("--latent-dims", "40,40", "--hidden-top", "300,300")
STANDARD = ("--prior", "standard")
# Test NLL in nats on static MNIST, Tomczak & Welling (2018). Their two-layer model is
# their own HVAE, q(z2|x) q(z1|x, z2), not the chain genzoo trains: a looser comparison.
ARMS: dict[str, tuple[tuple[str, ...], str, float]] = {
    "vae-standard": ((*PRESET, *STANDARD), "VAE (L=1), N(0, I)", 88.56),
    "vae-vamp": (PRESET, "VAE (L=1), VampPrior (pythae's re-run: 85.79)", 85.57),
    "hvae-standard": ((*PRESET, *TWO_LAYERS, *STANDARD), "HVAE (L=2), N(0, I)", 86.05),
    "hvae-vamp": ((*PRESET, *TWO_LAYERS), "HVAE (L=2), VampPrior", 83.19),
}
CELLS = tuple(PaperCell(arm, (what,), nll, arm) for arm, (_, what, nll) in ARMS.items())
# --quick: a smoke run on MNIST's own images (the static files need not be there).
QUICK = ("--binarize", "dynamic")


STUDY = paper_study(
    name="vampprior",
    question="Does the VampPrior beat N(0, I) by what Tomczak & Welling report, with one "
    "and two stochastic layers, on their protocol in a fixed time?",
    arms=tuple(Arm(name, "hvae", flags, QUICK) for name, (flags, _, _) in ARMS.items()),
    cells=CELLS,
    label_headers=("model (paper's row)",),
    protocol="the paper's up to 2000 epochs (genzoo's two-layer model is Burda et al.'s chain)",
    whose="Tomczak & Welling's",
    figures=("samples.png", "pseudo_inputs.png", "curves.png"),
)
