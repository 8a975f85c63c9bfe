"""The GAN's generator loss, its k, its networks (Goodfellow et al. 2014; Radford et al. 2016).

Minimax against non-saturating, k = 1 against 5 discriminator steps per generator step,
MLP against convolutional networks: D(G(z)) and V(D, G) against the equilibrium -log 4,
FID while training, and the class histogram of the samples (mode collapse shows as a
spike there and an entropy far below log 10).
"""

from __future__ import annotations

import math
from typing import Any

from genzoo.models.gan import EQUILIBRIUM_VALUE
from genzoo.runs import read_metrics
from genzoo.studies.recipe import Arm, Study, StudyRun, draw_arm_curves, ranked

SMALL_CONV = ("--conv-width", "16")  # --quick: a narrower DCGAN

ARMS = (
    Arm("mlp-minimax-k1", "gan", ("--gen-loss", "minimax")),
    Arm("mlp-nonsaturating-k1", "gan", ("--gen-loss", "nonsaturating")),
    Arm("mlp-nonsaturating-k5", "gan", ("--gen-loss", "nonsaturating", "--d-steps", "5")),
    Arm("conv-minimax-k1", "gan", ("--arch", "conv", "--gen-loss", "minimax"), SMALL_CONV),
    Arm(
        "conv-nonsaturating-k1",
        "gan",
        ("--arch", "conv", "--gen-loss", "nonsaturating"),
        SMALL_CONV,
    ),
)


def analyse(state: StudyRun) -> dict[str, Any]:
    draw_arm_curves(
        state,
        {
            "D(G(z)), training": "train_d_fake",
            "V(D, G), validation": "val_value",
            "FID while training": "quality_fid",
            "class entropy of the samples": "quality_class_entropy",
        },
        state.figures / "gan_curves.png",
        references={
            "V(D, G), validation": (EQUILIBRIUM_VALUE, "-log 4"),
            "class entropy of the samples": (math.log(10), "no collapse: log 10"),
        },
    )
    return {"lowest_d_fake": lowest_training_d_fake(state)}


def lowest_training_d_fake(state: StudyRun) -> dict[str, float]:
    """Each minimax arm's lowest epoch mean of D(G(z)) while it trained (its first seed):
    the D the generator learned against, dropout and all, not the evaluated one."""
    lowest = {}
    for arm, runs in state.runs.items():
        values = [m["train_d_fake"] for m in read_metrics(runs[0]) if "train_d_fake" in m]
        if "minimax" in arm and values:
            lowest[arm] = min(values)
    return lowest


# Below this D(G(z)) the minimax generator's gradient is under a ninth of the
# non-saturating one's: D rejects the fakes and the loss saturates, as Goodfellow et al.
# (2014, section 3) warn.
SATURATED_D_FAKE = 0.1


def saturation(lowest_d_fake: dict[str, float]) -> str:
    """Whether each minimax arm's generator loss saturated while it trained.

    At D's logit l, with D = sigmoid(l), d/dl log(1 - D) = -D while d/dl -log D = -(1 - D):
    per fake the minimax gradient is D(G(z)) / (1 - D(G(z))) times the non-saturating
    one's, and it vanishes only where D rejects the fakes confidently (D(G(z)) near 0).
    A value outside [0, 1) (a diverged arm's NaN) says nothing and is left out.
    """
    parts = []
    for arm, d_fake in lowest_d_fake.items():
        if not 0 <= d_fake < 1:
            continue
        verdict = "it saturated" if d_fake < SATURATED_D_FAKE else "it did not saturate"
        parts.append(
            f"{arm}: D(G(z)) at least {d_fake:.2f} in every epoch's mean, so its generator's "
            f"gradient was at least {d_fake / (1 - d_fake):.2f} of the non-saturating "
            f"loss's at the same D: {verdict}"
        )
    if not parts:
        return ""
    return (
        " The minimax loss stalls only where D rejects the fakes (D(G(z)) near 0): "
        + "; ".join(parts)
        + "."
    )


def answer(rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
    ranking = f"FID of the best checkpoint, lowest first: {ranked(rows, 'fid')}."
    return ranking + saturation(analysis.get("lowest_d_fake", {}))


STUDY = Study(
    name="gan-losses",
    question="Which generator loss, how many discriminator steps and which networks give "
    "a GAN that trains without collapsing?",
    arms=ARMS,
    # The same training time for every arm (a conv epoch costs ten MLP ones on a CPU).
    train=("--epochs", "30", "--max-minutes", "15"),
    evaluate=(),
    columns={
        "fid": "FID",
        "inception_score": "Inception score",
        "recall": "recall",
        "parzen_ll": "Parzen (nats)",
        "d_fake": "D(G(z))",
    },
    figures=("class_histogram.png", "samples.png"),
    quality=True,
    analyse=analyse,
    answer=answer,
)
