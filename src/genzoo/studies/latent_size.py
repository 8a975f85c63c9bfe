"""How big should the latent space be? Kingma & Welling (2014), figures 2 and 4.

A Gaussian VAE with z of 2, 3, 20 and 50 dimensions, everything else the same: the test
ELBO split into reconstruction and KL, the importance-sampled NLL, samples,
reconstructions of the same test digits, and the 2-D manifold for z = 2.
"""

from __future__ import annotations

from typing import Any

from genzoo.studies.recipe import Arm, Study


def answer(rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
    measured = [r for r in rows if "nll" in r]
    best = min(measured, key=lambda r: r["nll"])
    first, last = measured[0], measured[-1]
    return (
        f"The lowest test NLL is at {best['arm']} ({best['nll']:.2f} nats). From "
        f"{first['arm']} to {last['arm']} the KL goes from {first['kl']:.1f} to "
        f"{last['kl']:.1f} nats and the reconstruction term from {first['recon']:.1f} to "
        f"{last['recon']:.1f}."
    )


STUDY = Study(
    name="latent-size",
    question="How does the size of the latent space change what a Gaussian VAE learns: "
    "the ELBO's reconstruction and KL, the likelihood, the samples?",
    arms=tuple(Arm(f"z={z}", "vae", ("--latent-dim", str(z))) for z in (2, 3, 20, 50)),
    train=("--epochs", "40"),
    evaluate=("--iw-samples", "5000"),
    columns={"neg_elbo": "-ELBO", "recon": "reconstruction", "kl": "KL", "nll": "NLL"},
    figures=("samples.png", "reconstructions.png", "manifold.png", "curves.png"),
    answer=answer,
)
