"""How many steps does a good sample need? FID against the number of sampler steps.

Two diffusion models trained on the same images, one by noise prediction (Ho et al.
2020) and one by flow matching (Lipman et al. 2023; Liu et al. 2023), are sampled from
the same noise with each of their samplers (ancestral DDPM and deterministic DDIM for the
first, Euler and Heun on the ODE for the second) at S = 5 ... 250 steps (and all 1000 for
DDPM), and each set of samples is scored by FID against the grey test images with the
project's feature net; the minutes of each set are timed. Heun takes two network
evaluations a step, the others one; each model samples as its run does by default
(autoguided by its early weights where the run kept them, which doubles a step's passes).
"""

from __future__ import annotations

import time
from typing import Any

import matplotlib.pyplot as plt

from genzoo import plots, quality
from genzoo.evaluation import draw_many, grey_data, run_feature_net
from genzoo.models.diffusion import SAMPLERS
from genzoo.rng import EVAL_SEED, isolated_rng
from genzoo.runs import load_trained
from genzoo.studies.recipe import Arm, Study, StudyRun

FULL_STEPS = (5, 10, 25, 50, 100, 250)
QUICK_STEPS = (2, 5)
# Per point: 25 sets of samples at up to 1000 steps each, 39.5 minutes at 500 (with the
# scoring) on one thread of this 2-core CPU beside another job (FID of 500 samples is
# biased upwards, by the same for every point from the same noise, so the curve's shape
# is what it shows).
FULL_SAMPLES = 500
QUICK_SAMPLES = 20
# --quick: a tiny net without attention, no quality probe while training (the analysis
# scores the samples), its figures' samples in 5 steps.
TINY_NET = (
    *("--base-channels", "8", "--channel-mults", "1,2", "--no-attention"),
    *("--quality-every", "0", "--sample-steps", "5"),
)

ARMS = (
    Arm("eps", "diffusion", ("--objective", "eps"), TINY_NET),
    Arm("flow-matching", "diffusion", ("--objective", "flow-matching"), TINY_NET),
)


def step_counts(sampler: str, timesteps: int, quick: bool) -> list[int]:
    """The S of a sampler: DDPM also with every step of the schedule, none above T."""
    counts = list(QUICK_STEPS if quick else FULL_STEPS)
    if sampler == "ddpm" and not quick:
        counts.append(timesteps)
    return [s for s in counts if s <= timesteps or sampler in SAMPLERS["flow-matching"]]


def analyse(state: StudyRun) -> dict[str, Any]:
    """FID and minutes of every (arm, sampler, steps) from the same seeded noise."""
    n = QUICK_SAMPLES if state.quick else FULL_SAMPLES
    curves: dict[str, list[dict[str, float]]] = {}
    probe = None
    for arm in ARMS:
        run = state.runs[arm.name][0]
        cfg, _, _, _ = load_trained(run, state.device, state.data_dir)
        objective = cfg.model_config.objective
        for sampler in SAMPLERS[objective]:
            for steps in step_counts(sampler, cfg.model_config.timesteps, state.quick):
                settings = {"sampler": sampler, "sample_steps": steps}
                _, model, _, _ = load_trained(run, state.device, state.data_dir, sampling=settings)
                device = next(model.parameters()).device
                if probe is None:  # one feature net and one set of real images for all
                    real = grey_data(cfg, device, state.data_dir).test.images
                    net = run_feature_net(cfg, device, state.data_dir)
                    probe = quality.QualityProbe(net, real)
                start = time.perf_counter()
                with isolated_rng(EVAL_SEED, device):
                    samples = draw_many(model, n)
                minutes = (time.perf_counter() - start) / 60
                fid = probe(samples)["quality_fid"]
                curves.setdefault(f"{arm.name} {sampler}", []).append(
                    {"steps": steps, "fid": fid, "minutes": minutes}
                )
    draw(curves, n, state.figures / "fid_by_steps.png")
    rows = [
        [name, p["steps"], p["fid"], p["minutes"]]
        for name, points in curves.items()
        for p in points
    ]
    return {
        "samples": n,
        "curves": curves,
        "table": {"headers": ["model and sampler", "steps", "FID", "minutes"], "rows": rows},
        "note": f"{n} samples per point from the same seeded noise, scored against the grey "
        "test images with the project's feature net (FID of fewer than 10,000 samples is "
        "biased upwards: compare the points with each other, not with 10,000-sample FIDs); "
        "minutes: the sampling alone, on this machine.",
    }


def draw(curves: dict[str, list[dict[str, float]]], n: int, path: Any) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, points in curves.items():
        steps = [p["steps"] for p in points]
        axes[0].plot(steps, [p["fid"] for p in points], marker="o", label=name)
        axes[1].plot(steps, [p["minutes"] for p in points], marker="o", label=name)
    axes[0].set(xscale="log", xlabel="sampler steps S", ylabel="FID", title=f"FID of {n} samples")
    axes[1].set(xscale="log", xlabel="sampler steps S", ylabel="minutes", title="sampling time")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    plots.save_figure(fig, path)


def answer(rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
    """For each model and sampler: the fewest steps within 10% of its best FID."""
    parts = []
    for name, points in analysis["curves"].items():
        best = min(p["fid"] for p in points)
        enough = min(p["steps"] for p in points if p["fid"] <= 1.1 * best)
        parts.append(f"{name} {enough} (best FID {best:.1f})")
    return "Steps within 10% of each sampler's best FID: " + "; ".join(parts) + "."


STUDY = Study(
    name="sampling-steps",
    question="How many sampler steps does a good diffusion or flow-matching sample need, "
    "and what do they cost?",
    arms=ARMS,
    # At most 45 minutes of training each: the samplers are compared on the same weights.
    train=("--epochs", "5", "--max-minutes", "45", "--quality-every", "0", "--guide-epoch", "0"),
    evaluate=("--iw-samples", "0"),
    columns={"loss": "validation MSE"},
    figures=("samples.png", "sample_steps.png"),
    analyse=analyse,
    answer=answer,
)
