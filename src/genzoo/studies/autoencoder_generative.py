"""Can an autoencoder generate? A Gaussian mixture on its codes (the lecture's recipe).

A deterministic autoencoder, a sparse one (L1 on the code) and a VAE: decoded samples
from N(0, I) against samples from the Gaussian mixture fitted to the training codes
(scikit-learn's GaussianMixture), the codes with the mixture's ellipses, and the
sample quality of both kinds of sample.
"""

from __future__ import annotations

from typing import Any

from genzoo import quality
from genzoo.evaluation import grey_data, run_feature_net
from genzoo.models.base import MixtureSampler
from genzoo.rng import EVAL_SEED, isolated_rng
from genzoo.runs import load_trained
from genzoo.studies.recipe import QUICK_SAMPLES, Arm, Study, StudyRun

ARMS = (
    Arm("autoencoder", "ae"),
    Arm("sparse-autoencoder", "ae", ("--sparsity", "0.5")),
    Arm("vae", "vae", ("--latent-dim", "16")),
)


def analyse(state: StudyRun) -> dict[str, Any]:
    """FID of decoded N(0, I) codes against FID of mixture samples, per autoencoder."""
    n = QUICK_SAMPLES if state.quick else 10000
    rows, probe = [], None
    for arm in ARMS:
        cfg, model, _, _ = load_trained(state.runs[arm.name][0], state.device, state.data_dir)
        if not isinstance(model, MixtureSampler):
            continue
        device = next(model.parameters()).device
        if probe is None:  # one feature net and one set of grey test images for every arm
            real = grey_data(cfg, device, state.data_dir).test.images[:n]
            net = run_feature_net(cfg, device, state.data_dir)
            probe = quality.QualityProbe(net, real)
        with isolated_rng(EVAL_SEED, device):
            normal = probe(model.sample_standard_normal(n))["quality_fid"]
            mixture = probe(model.sample(n))["quality_fid"]
        rows.append([arm.name, normal, mixture])
    return {
        "table": {"headers": ["arm", "FID, z ~ N(0, I)", "FID, z ~ mixture"], "rows": rows},
        "note": f"{n} decoded samples of each kind against {n} grey test images.",
    }


def answer(rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
    parts = [
        f"{name}: FID {normal:.1f} from N(0, I), {mixture:.1f} from the mixture"
        for name, normal, mixture in analysis["table"]["rows"]
    ]
    vae = next((r for r in rows if r["model"] == "vae" and "fid" in r), None)
    tail = f"; the VAE's own samples: {vae['fid']:.1f}" if vae else ""
    return "; ".join(parts) + tail + "."


STUDY = Study(
    name="autoencoder-generative",
    question="Does a plain or sparse autoencoder become a generative model once a Gaussian "
    "mixture is fitted to its codes, and how close does it come to a VAE?",
    arms=ARMS,
    train=("--epochs", "30"),
    evaluate=("--iw-samples", "0"),
    columns={"fid": "FID", "inception_score": "Inception score", "recall": "recall"},
    figures=("mixture.png", "samples.png", "latents.png"),
    quality=True,
    analyse=analyse,
    answer=answer,
)
