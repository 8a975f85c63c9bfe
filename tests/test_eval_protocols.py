"""What `genzoo eval` measures against and what it keeps: --limit limits the model's side
only, Parzen's bandwidth never comes from the images it scores, and eval.json keeps each
evaluation by its protocol, showing the best (an older eval.json included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from genzoo import quality
from genzoo.cli import main
from genzoo.data import Data, load_data
from genzoo.evaluation import evaluate_run
from genzoo.quality import FeatureNet

TINY_VAE = [
    "--epochs", "2", "--hidden", "8", "--latent-dim", "2", "--batch-size", "16",
    "--val-size", "20", "--device", "cpu",
]  # fmt: skip
K20 = "test split, 30 images, importance sampling, K=20, proposal q(z|x)"


class QualitySpy:
    """Stands in for ``quality.quality_scores``: records what it was given, then scores."""

    def __init__(self) -> None:
        self.calls: list[dict[str, torch.Tensor]] = []
        self.real_scores = quality.quality_scores

    def __call__(self, samples, real_test, real_val, net, **kwargs: Any) -> dict[str, Any]:
        self.calls.append({"samples": samples, "real_test": real_test, "real_val": real_val})
        return self.real_scores(samples, real_test, real_val, net, **kwargs)


@pytest.fixture
def run(data_dir: Path, tmp_path: Path) -> Path:
    run = tmp_path / "vae"
    assert main(["train", "vae", "--run-dir", str(run), *TINY_VAE]) == 0
    return run


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> FeatureNet:
    """An untrained feature net in place of the cached one (no training in the tests)."""
    torch.manual_seed(0)
    net = FeatureNet(feature_dim=16).eval()
    monkeypatch.setattr(quality, "load_or_train_feature_net", lambda *_, **__: net)
    return net


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> QualitySpy:
    spy = QualitySpy()
    monkeypatch.setattr(quality, "quality_scores", spy)
    return spy


@pytest.fixture
def grey(data_dir: Path) -> Data:
    """The run's images in grey levels, loaded apart from genzoo eval: 30 test images,
    20 validation ones."""
    return load_data("mnist", "none", 20, data_dir)


def test_limit_limits_the_model_side_never_the_real_images(
    run: Path, net: FeatureNet, spy: QualitySpy, grey: Data
) -> None:
    result = evaluate_run(run, iw_samples=0, limit=12, quality=True)
    (call,) = spy.calls
    assert call["samples"].shape[0] == 12 and result["n_examples"] == 12
    assert torch.equal(call["real_test"], grey.test.images)  # all 30, not the first 12
    assert torch.equal(call["real_val"], grey.val.images)  # the bandwidth's: validation
    assert (result["n_samples"], result["n_test"]) == (12, 30)
    fake_feats, _ = quality.features_and_probs(net, call["samples"])
    real_feats, _ = quality.features_and_probs(net, grey.test.images)
    expected = quality.frechet_distance(real_feats, fake_feats)
    assert result["fid"] == pytest.approx(expected, rel=1e-12)
    asked = evaluate_run(run, iw_samples=0, limit=12, quality=True, n_samples=40)
    assert asked["n_samples"] == 40 and asked["n_examples"] == 12  # as many as asked for
    spy.calls.clear()  # the command line alike
    assert main(["eval", str(run), "--iw-samples", "0", "--limit", "7", "--quality"]) == 0
    assert spy.calls[0]["samples"].shape[0] == 7
    assert torch.equal(spy.calls[0]["real_test"], grey.test.images)


def test_the_validation_split_holds_out_the_bandwidths_images(
    run: Path, net: FeatureNet, spy: QualitySpy, grey: Data
) -> None:
    """Scoring the validation split: Parzen's bandwidth is chosen on its first half (at
    most 1000 images) and every score is against the other half, never the same images."""
    result = evaluate_run(run, iw_samples=0, split="val", quality=True, n_samples=30)
    (call,) = spy.calls
    assert torch.equal(call["real_val"], grey.val.images[:10])
    assert torch.equal(call["real_test"], grey.val.images[10:])
    chosen = quality.select_parzen_sigma(call["samples"], grey.val.images[:10])
    assert result["parzen_sigma"] == chosen and result["n_test"] == 10


def _evaluate(run: Path, *flags: str) -> None:
    assert main(["eval", str(run), *flags]) == 0


def test_a_cheaper_evaluation_never_replaces_a_better_one(run: Path, capsys) -> None:
    _evaluate(run, "--iw-samples", "20")
    best = json.loads((run / "eval.json").read_text())
    capsys.readouterr()

    _evaluate(run, "--iw-samples", "0", "--limit", "10")  # a quick check
    out = capsys.readouterr().out
    assert f"it goes on showing the test figures of {K20} (epoch 2), a better protocol" in out
    shown = json.loads((run / "eval.json").read_text())
    assert {k: shown[k] for k in ("nll", "nll_se", "iw_samples", "n_examples", "protocol")} == {
        k: best[k] for k in ("nll", "nll_se", "iw_samples", "n_examples", "protocol")
    }
    kept = shown["evaluations"]["figures"]
    assert list(kept) == [K20, "test split, 10 images"]
    assert (
        kept["test split, 10 images"]["n_examples"] == 10
        and "nll" not in kept["test split, 10 images"]
    )

    _evaluate(run, "--iw-samples", "5")  # fewer samples per image: cheaper too
    assert json.loads((run / "eval.json").read_text())["iw_samples"] == 20
    capsys.readouterr()
    _evaluate(run, "--iw-samples", "50")  # a better protocol takes over, without a note
    assert "goes on showing" not in capsys.readouterr().out
    shown = json.loads((run / "eval.json").read_text())
    assert shown["iw_samples"] == 50 and len(shown["evaluations"]["figures"]) == 4


def test_sample_quality_of_fewer_samples_is_kept_beside_the_better(
    run: Path, net: FeatureNet
) -> None:
    full = evaluate_run(run, iw_samples=0, quality=True, n_samples=40)
    quick = evaluate_run(run, iw_samples=0, limit=12, quality=True)  # 12 samples
    shown = json.loads((run / "eval.json").read_text())
    assert shown["fid"] == full["fid"] != quick["fid"] and shown["n_samples"] == 40
    assert quick["better_shown"] == [
        "test figures of test split, 30 images (epoch 2)",
        f"sample quality of {full['quality_protocol']} (epoch 2)",
    ]
    assert list(shown["evaluations"]["quality"]) == [
        full["quality_protocol"],
        quick["quality_protocol"],
    ]
    assert shown["quality_epoch"] == 2 and shown["quality_run_epochs"] == 2


def legacy_eval_json() -> dict[str, Any]:
    """An eval.json as genzoo wrote it before it kept evaluations by protocol: one flat
    result, K=5000 on all 30 test images, with sample-quality scores (one-split IS)."""
    return {
        "neg_elbo": 101.0, "neg_elbo_se": 1.0, "recon": 90.0, "recon_se": 1.0,
        "kl": 11.0, "kl_se": 0.1, "nll": 97.0, "nll_se": 0.9, "iw_samples": 5000,
        "estimator": "posterior",
        "likelihood": {
            "estimator": "importance sampling", "kind": "estimate", "samples": "K",
            "protocol": "importance sampling, K=5000, proposal q(z|x)",
        },
        "fid": 9.5, "inception_score": 7.0, "precision": 0.8, "recall": 0.6,
        "parzen_ll": 200.0, "parzen_ll_se": 2.0, "parzen_sigma": 0.2, "n_samples": 10000,
        "n_test": 30, "k": 3, "class_histogram": [1000] * 10,
        "quality_protocol": "10000 pixel means of p(x|z), z ~ p(z) against the grey-level "
        "test images",
        "sampling": {}, "n_examples": 30, "split": "test", "dataset": "mnist",
        "binarize": "dynamic", "units": "nats per image",
        "terms": {"neg_elbo": "-ELBO", "recon": "reconstruction", "kl": "KL", "nll": "NLL"},
        "checkpoint": "best", "epoch": 2, "seconds": 1200.0,
    }  # fmt: skip


def test_an_older_eval_json_is_kept_as_one_evaluation(run: Path, net: FeatureNet) -> None:
    legacy = legacy_eval_json()
    (run / "eval.json").write_text(json.dumps(legacy))
    result = evaluate_run(run, iw_samples=0, limit=10, quality=True, n_samples=12)
    shown = json.loads((run / "eval.json").read_text())
    for key in ("nll", "iw_samples", "n_examples", "fid", "inception_score", "n_samples"):
        assert shown[key] == legacy[key], key
    assert len(result["better_shown"]) == 2
    figures, scores = shown["evaluations"]["figures"], shown["evaluations"]["quality"]
    legacy_figures = figures["test split, 30 images, importance sampling, K=5000, proposal q(z|x)"]
    assert "fid" not in legacy_figures and legacy_figures["nll"] == 97.0
    assert scores[legacy["quality_protocol"]]["quality_epoch"] == 2
    assert list(figures)[1] == "test split, 10 images" and len(scores) == 2
