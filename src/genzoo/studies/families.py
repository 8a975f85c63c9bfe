"""Every family at its defaults, in one table of what each measures and at what cost."""

from __future__ import annotations

from typing import Any

from genzoo.studies.recipe import Arm, Study, ranked

ARMS = (
    Arm("vae", "vae", ("--latent-dim", "20")),
    Arm("bvae", "bvae"),
    Arm("ae", "ae"),
    Arm("gan", "gan"),
    Arm("gan-conv", "gan", ("--arch", "conv"), ("--conv-width", "16")),
    Arm("realnvp", "realnvp", (), ("--width", "8", "--n-couplings", "2")),
    Arm("draw", "draw", (), ("--steps", "4", "--enc-hidden", "64", "--dec-hidden", "64")),
    # The flow-matching ODE likelihood costs two network passes per step and image: 20
    # Heun steps (the study's 1000 on its 2000 images would take hours).
    Arm(
        "diffusion",
        "diffusion",
        (),
        (
            "--base-channels",
            "8",
            "--channel-mults",
            "1,2",
            "--no-attention",
            "--sample-steps",
            "5",
            "--quality-samples",
            "50",
        ),
        ("--iw-samples", "20"),
    ),
)


def answer(rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
    return (
        f"NLL, lowest first: {ranked(rows, 'nll')}; FID, lowest first: {ranked(rows, 'fid')} "
        "(nats per image on each family's own pixels: see the protocol column)."
    )


STUDY = Study(
    name="families",
    question="What does each family measure, how good is it and what does it cost, at its "
    "defaults on MNIST?",
    arms=ARMS,
    # At most 15 minutes of training each: RealNVP's or DRAW's 20 epochs take hours on a CPU.
    train=("--epochs", "20", "--max-minutes", "15"),
    evaluate=("--iw-samples", "1000", "--limit", "2000"),
    columns={"nll": "NLL (nats)", "bpd": "bits/dim", "neg_elbo": "-ELBO", "fid": "FID"},
    figures=("samples.png",),
    quality=True,
    answer=answer,
)
