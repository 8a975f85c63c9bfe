"""Binary latents: what the gradient estimator costs (Mnih & Gregor 2014; Jang et al. 2017).

A Gaussian VAE against VAEs with 200 Bernoulli latents whose encoder learns by REINFORCE
without a baseline, REINFORCE with the running-average baseline, or the Gumbel-softmax
relaxation: the variance of the encoder's gradient estimate per epoch, the ELBO curves,
the test figures.
"""

from __future__ import annotations

from typing import Any

from genzoo.studies.recipe import Arm, Study, StudyRun, draw_arm_curves, ranked

ARMS = (
    Arm("gaussian", "vae", ("--latent-dim", "20")),
    Arm("reinforce", "bvae", ("--estimator", "reinforce", "--baseline", "none")),
    Arm("reinforce+baseline", "bvae", ("--estimator", "reinforce", "--baseline", "ema")),
    Arm("gumbel", "bvae", ("--estimator", "gumbel")),
)


def analyse(state: StudyRun) -> dict[str, Any]:
    draw_arm_curves(
        state,
        {"encoder gradient variance": "encoder_grad_var", "validation -ELBO": "val_neg_elbo"},
        state.figures / "estimators.png",
        log_scale=("encoder gradient variance",),
    )
    return {
        "note": "Gradient variance: over repeated estimates on one fixed training batch, "
        "averaged over the encoder's parameters (the Gaussian VAE has none to show)."
    }


def answer(rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
    return f"Test -ELBO in nats, lowest first: {ranked(rows, 'neg_elbo')}."


STUDY = Study(
    name="discrete-latents",
    question="How much does a discrete latent cost, and which gradient estimator pays it "
    "best: REINFORCE, REINFORCE with a baseline, or the Gumbel-softmax relaxation?",
    arms=ARMS,
    train=("--epochs", "30"),
    evaluate=("--iw-samples", "5000", "--limit", "2000"),
    columns={"neg_elbo": "-ELBO", "recon": "reconstruction", "kl": "KL", "nll": "NLL"},
    figures=("curves.png", "samples.png"),
    analyse=analyse,
    answer=answer,
)
