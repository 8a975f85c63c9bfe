"""What `genzoo eval` measures against and what it keeps: --limit limits the model's side
only, Parzen's bandwidth never comes from the images it scores, the samples are scored
with the feature net of the run's dataset, and eval.json keeps each evaluation by its
protocol, showing the best (an older eval.json included; two evaluations at once keep
both)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import register, write_fake_idx_dataset
from genzoo import evaluation, quality
from genzoo.cli import main
from genzoo.data import Data, load_data
from genzoo.evaluation import evaluate_run, keep_evaluation
from genzoo.quality import FeatureNet
from genzoo.runs import load_run_config
from genzoo.training import watch_quality

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


def test_skip_evaluates_the_images_after_the_first_n(
    run: Path, grey: Data, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    seen: list[torch.Tensor] = []
    terms = evaluation.per_example_terms

    def spy(model, split, *args, **kwargs):
        seen.append(split.images)
        return terms(model, split, *args, **kwargs)

    monkeypatch.setattr(evaluation, "per_example_terms", spy)
    evaluate_run(run, iw_samples=0)
    (every,) = seen  # the whole test split, as the run sees it (binarized)
    assert len(every) == len(grey.test)
    result = evaluate_run(run, iw_samples=0, limit=5, skip=10)
    assert torch.equal(seen[1], every[10:15])
    assert result["n_examples"] == 5 and result["protocol"] == "test split, 5 images from #10"
    assert main(["eval", str(run), "--iw-samples", "0", "--skip", "25"]) == 0  # to the end
    assert torch.equal(seen[2], every[25:])
    assert main(["eval", str(run), "--iw-samples", "0", "--skip", "30"]) == 2  # none left
    assert capsys.readouterr().err.strip().endswith("leaves none of the 30 test images: skip fewer")


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


def test_a_runs_samples_are_scored_with_the_feature_net_of_its_dataset(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Fashion-MNIST run: `genzoo eval --quality` asks for the Fashion-MNIST feature net,
    as the training probe does (never MNIST's)."""
    write_fake_idx_dataset(data_dir / "fashion-mnist")
    register(monkeypatch, "fashion-mnist", data_dir / "fashion-mnist")
    run = tmp_path / "fashion"
    argv = ["train", "vae", "--dataset", "fashion-mnist", "--run-dir", str(run), *TINY_VAE]
    assert main(argv) == 0
    torch.manual_seed(0)
    net, asked = FeatureNet(feature_dim=16).eval(), []

    def loader(data_dir=None, device="cpu", cache_dir=None, dataset="mnist", **kwargs):
        asked.append(dataset)
        return net

    monkeypatch.setattr(quality, "load_or_train_feature_net", loader)
    evaluate_run(run, iw_samples=0, quality=True, n_samples=20)
    watch_quality(load_run_config(run), torch.device("cpu"), None)
    assert asked == ["fashion-mnist", "fashion-mnist"]


def test_quality_of_a_folder_dataset_is_refused_in_one_line(
    data_dir: Path, tmp_path: Path, net: FeatureNet, capsys
) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "own").mkdir()
    for i in range(20):
        pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "own" / f"{i}.png")
    run = tmp_path / "folder-run"
    flags = ["--dataset", f"folder:{tmp_path / 'own'}", "--epochs", "1", "--hidden", "8"]
    assert main(["train", "vae", *flags, "--latent-dim", "2", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--iw-samples", "0", "--quality"]) == 2
    err = capsys.readouterr().err
    assert "classifier of MNIST-like datasets" in err and "leave out --quality" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (run / "eval.json").exists()  # refused before any figure was measured


def figures_record(protocol: str) -> dict[str, Any]:
    return {"protocol": protocol, "split": "test", "n_examples": 10, "epoch": 1}


def test_two_evaluations_at_once_each_keep_the_others_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `genzoo eval` of one run finishing together: each reads eval.json, adds its
    record and writes it back. The reads are slowed down, so that without a lock both
    would read the file before either wrote, and the later write would drop the other's
    record."""
    read = evaluation.kept_evaluations

    def slow_read(path: Path) -> evaluation.Evaluations:
        kept = read(path)
        time.sleep(0.3)
        return kept

    monkeypatch.setattr(evaluation, "kept_evaluations", slow_read)
    output = tmp_path / "run" / "eval.json"
    start = threading.Barrier(2)

    def evaluate(protocol: str) -> None:
        start.wait()
        keep_evaluation(output, {"figures": figures_record(protocol)})

    threads = [threading.Thread(target=evaluate, args=(p,)) for p in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = json.loads(output.read_text())["evaluations"]["figures"]
    assert sorted(kept) == ["first", "second"]


def quality_record(sampling: dict[str, Any]) -> dict[str, Any]:
    steps = sampling.get("sample_steps", 1000)
    return {
        "fid": 5.0 if steps == 1000 else 40.0,
        "quality_protocol": f"10000 samples (ddpm, {steps} steps) against the test images",
        "sampling": sampling,
        "quality_split": "test",
        "n_test": 10000,
        "n_samples": 10000,
        "quality_epoch": 7,
    }


def test_a_sampler_other_than_the_runs_own_never_replaces_the_shown_quality(
    tmp_path: Path,
) -> None:
    """After the run's own 1000-step sampler scored 10k samples, a quick check of 10
    steps on as many samples is kept beside it, not shown in its place; with no record
    of the run's own sampler, the other sampler's is shown."""
    output = tmp_path / "eval.json"
    own, quick = quality_record({}), quality_record({"sample_steps": 10})
    keep_evaluation(output, {"figures": figures_record("f"), "quality": own})
    shown = keep_evaluation(output, {"figures": figures_record("f"), "quality": quick})
    assert shown["fid"] == 5.0 and shown["sampling"] == {}
    assert len(shown["evaluations"]["quality"]) == 2
    alone = keep_evaluation(tmp_path / "other.json", {"quality": quick})
    assert alone["fid"] == 40.0
