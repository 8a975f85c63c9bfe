"""Naive Monte Carlo against importance sampling for log p(x) (the lecture's question).

On one trained Gaussian VAE and the same test images, log p(x) = log E_z p(x|z) is
estimated with K samples from the prior (naive Monte Carlo) and with K samples from
q(z|x) (importance sampling, Burda et al. 2016), for K = 1 ... 5000, each a few times
over: the estimate and its spread against K, with the ELBO as the line that importance
sampling rises from (at K = 1 its expectation is the ELBO) and that the naive estimate
creeps up to from far below.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from genzoo import plots
from genzoo.rng import EVAL_SEED, isolated_rng
from genzoo.runs import load_trained
from genzoo.studies.recipe import Arm, Study, StudyRun

FULL_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
QUICK_KS = (1, 10, 100)
PROPOSALS = {"posterior": "importance sampling, z ~ q(z|x)", "prior": "naive MC, z ~ p(z)"}
REPEATS = 3  # independent estimates per image and K, for the spread
REFERENCE_K = 100  # the importance-sampling figure the naive one is held against


def estimates(model: Any, x: torch.Tensor, ks: tuple[int, ...]) -> dict[str, list[dict]]:
    """Per proposal and K: the mean over images of -log p(x) (mean of the repeats) and
    the spread (mean over images of the standard deviation over repeats)."""
    curves: dict[str, list[dict]] = {}
    for proposal in PROPOSALS:
        for k in ks:
            runs = torch.stack([-model.log_likelihood(x, k, proposal) for _ in range(REPEATS)])
            curves.setdefault(proposal, []).append(
                {"k": k, "nll": runs.mean().item(), "spread": runs.std(0).mean().item()}
            )
    return curves


def analyse(state: StudyRun) -> dict[str, Any]:
    _, model, data, _ = load_trained(state.runs["vae"][0], state.device, state.data_dir)
    x = data.test.images[: 50 if state.quick else 500]
    ks = QUICK_KS if state.quick else FULL_KS
    with isolated_rng(EVAL_SEED, x.device):
        neg_elbo = model.evaluate_batch(x)["neg_elbo"].double().mean().item()
        curves = estimates(model, x, ks)
    draw(curves, neg_elbo, len(x), state.figures / "estimators.png")
    rows = [
        [point["k"], *(c[i][key] for c in curves.values() for key in ("nll", "spread"))]
        for i, point in enumerate(curves["posterior"])
    ]
    headers = ["K"] + [f"{p} {what}" for p in PROPOSALS for what in ("NLL", "spread")]
    return {
        "images": len(x),
        "neg_elbo": neg_elbo,
        "curves": curves,
        "table": {"headers": headers, "rows": rows},
        "note": f"-ELBO on the same {len(x)} images: {neg_elbo:.2f} nats; {REPEATS} "
        "estimates per image and K; spread: their standard deviation, averaged over images.",
    }


def draw(curves: dict[str, list[dict]], neg_elbo: float, n: int, path: Any) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for proposal, points in curves.items():
        k = np.array([p["k"] for p in points])
        nll = np.array([p["nll"] for p in points])
        spread = np.array([p["spread"] for p in points])
        ax.plot(k, nll, marker="o", label=PROPOSALS[proposal])
        ax.fill_between(k, nll - spread, nll + spread, alpha=0.2)
    ax.axhline(neg_elbo, color="gray", ls="--", label="-ELBO")
    ax.set(xscale="log", xlabel="K (samples per image)", ylabel="estimated -log p(x), nats")
    ax.set_title(f"two estimators of -log p(x) on {n} test images")
    ax.legend()
    ax.grid(alpha=0.3)
    plots.save_figure(fig, path)


def answer(rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
    curves = analysis["curves"]
    importance = {p["k"]: p["nll"] for p in curves["posterior"]}
    k_ref = max((k for k in importance if k <= REFERENCE_K), default=min(importance))
    target = importance[k_ref]
    close = [p["k"] for p in curves["prior"] if p["nll"] <= target + 1.0]
    naive = curves["prior"][-1]
    verdict = (
        f"Naive Monte Carlo needs K = {close[0]} to come within 1 nat of importance "
        f"sampling at K = {k_ref} ({target:.2f} nats)"
        if close
        else f"Naive Monte Carlo does not come within 1 nat of importance sampling at "
        f"K = {k_ref} ({target:.2f} nats) even at K = {naive['k']} ({naive['nll']:.2f})"
    )
    k_max = max(importance)
    gap = analysis["neg_elbo"] - importance[k_max]
    return f"{verdict}; importance sampling lies {gap:.2f} nats below the -ELBO at K = {k_max}."


STUDY = Study(
    name="likelihood-estimators",
    question="How many samples does a log-likelihood estimate need, drawn from the prior "
    "(naive Monte Carlo) or from the encoder (importance sampling)?",
    arms=(Arm("vae", "vae", ("--latent-dim", "20")),),
    train=("--epochs", "40"),
    evaluate=("--iw-samples", "5000"),
    columns={"neg_elbo": "-ELBO", "nll": "NLL (K=5000)"},
    figures=("samples.png",),
    analyse=analyse,
    answer=answer,
)
