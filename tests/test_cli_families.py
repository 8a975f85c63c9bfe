"""Each model family through the CLI on tiny data: train, eval, sample, plot; then
compare, the sample-quality scores and the reference row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genzoo import quality
from genzoo.cli import main
from genzoo.evaluation import grey_data
from genzoo.index import write_index
from genzoo.pagekit import with_error
from genzoo.runs import checkpoint_files, load_run_config
from test_index import index_rows

COMMON = ["--epochs", "2", "--batch-size", "16", "--val-size", "20", "--device", "cpu"]
FAMILIES = {
    "vae": ["--hidden", "16", "--latent-dim", "2"],
    "bvae": ["--hidden", "16", "--latent-dim", "8"],
    "ae": ["--hidden", "16", "--latent-dim", "2", "--gmm-components", "2"],
    "realnvp": [
        *("--width", "4", "--depth", "1", "--n-couplings", "1", "--n-scales", "2"),
        "--no-compile",  # compiled by default; a tiny run is faster without
    ],
    "gan": ["--noise-dim", "4", "--gen-hidden", "8,8", "--disc-hidden", "8", "--d-steps", "2"],
    "diffusion": [
        *("--base-channels", "8", "--channel-mults", "1,2", "--sample-steps", "3"),
        *("--quality-every", "0"),  # the probe's own tests are in test_train.py
    ],
}


def train(model: str, run: Path, *extra: str) -> Path:
    assert main(["train", model, "--run-dir", str(run), *COMMON, *FAMILIES[model], *extra]) == 0
    return run


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model", FAMILIES)
def test_every_family_trains_evaluates_samples_and_plots(
    model: str, data_dir: Path, tmp_path: Path, capsys
) -> None:
    run = train(model, tmp_path / model)
    assert [m["epoch"] for m in metrics(run)] == [1, 2]
    capsys.readouterr()
    assert main(["eval", str(run), "--iw-samples", "20", "--limit", "10"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["n_examples"] == 10
    printed = capsys.readouterr().out
    # Every family prints its own measurements under its own labels, with their units.
    assert result["terms"] and all(label in printed for label in result["terms"].values())
    assert result["units"] in printed
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0
    assert main(["plot", str(run)]) == 0
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"curves.png", "samples.png"} <= figures
    expected = {
        "vae": ({"nll", "neg_elbo", "kl"}, {"manifold.png", "latents.png"}),
        "bvae": ({"nll", "neg_elbo", "kl"}, {"latents.png", "interpolation.png"}),
        "ae": ({"loss", "recon", "l1"}, {"mixture.png", "latents.png"}),
        "realnvp": ({"bpd", "nll"}, {"temperatures.png", "interpolation.png"}),
        "gan": ({"d_real", "d_fake", "value"}, set()),
        "diffusion": ({"loss", "nll", "bpd"}, {"denoising_chain.png", "sample_steps.png"}),
    }[model]
    assert expected[0] <= result.keys() and expected[1] <= figures

    # Its row in the index of the folder: the family's own headline figure, with its label
    # and standard error, and the samples behind it.
    row = index_rows(write_index(tmp_path))[model]
    assert (row["family"], row["state"], row["epochs"]) == (model, "done", "2")
    headline, samples = {
        "vae": ("nll", "20"),
        "bvae": ("nll", "20"),
        "ae": ("loss", "-"),
        "realnvp": ("bpd", "exact"),
        "gan": (None, "-"),
        "diffusion": ("bpd", "20 bound"),  # uniform dequantization: a bound on P(x)
    }[model]
    if headline is None:  # a GAN's answer is its sample quality
        assert row["test figure"] == "-"
    else:
        figure = with_error(result[headline], result.get(f"{headline}_se"))
        assert row["test figure"] == f"{result['terms'][headline]} {figure}"
    assert row["K"] == samples


@pytest.mark.parametrize("model", ["gan", "realnvp"])
def test_averaged_weights_with_buffers_evaluate_and_sample(
    model: str, data_dir: Path, tmp_path: Path
) -> None:
    # BatchNorm statistics (gan) and ActNorm's data-dependent start (realnvp) are buffers:
    # the average leaves them to the model, and the averaged weights still work with them.
    run = train(model, tmp_path / model, "--ema", "0.5")
    last = load_file(checkpoint_files(run, "last")[0])
    best = load_file(checkpoint_files(run, "best")[0])
    assert any(not torch.equal(last[k], best[k]) for k in last)
    assert main(["eval", str(run), "--iw-samples", "20", "--limit", "10"]) == 0
    values = json.loads((run / "eval.json").read_text())
    assert all(math.isfinite(v) for v in values.values() if isinstance(v, float))
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0


def test_a_family_trains_with_its_own_defaults_unless_told(data_dir: Path, tmp_path: Path) -> None:
    tiny = ["--epochs", "1", "--val-size", "20", *FAMILIES["realnvp"]]
    assert main(["train", "realnvp", "--run-dir", str(tmp_path / "a"), *tiny]) == 0
    train_cfg = json.loads((tmp_path / "a" / "config.json").read_text())["train"]
    assert train_cfg["batch_size"] == 32 and train_cfg["binarize"] == "none"
    assert (
        main(["train", "realnvp", "--run-dir", str(tmp_path / "b"), "--batch-size", "8", *tiny])
        == 0
    )
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["batch_size"] == 8


def test_family_specific_behaviour(data_dir: Path, tmp_path: Path) -> None:
    bvae = train("bvae", tmp_path / "bvae", "--baseline", "none")
    assert all(m["encoder_grad_var"] > 0 for m in metrics(bvae))

    ae = train("ae", tmp_path / "ae")
    assert (
        main(["sample", str(ae), "-n", "3", "--standard-normal", "-o", str(tmp_path / "n.png")])
        == 0
    )

    flow = train("realnvp", tmp_path / "flow")
    assert (
        main(
            ["sample", str(flow), "-n", "3", "--temperature", "0.7", "-o", str(tmp_path / "t.png")]
        )
        == 0
    )
    assert main(["eval", str(flow), "--limit", "10"]) == 0
    result = json.loads((flow / "eval.json").read_text())
    assert result["nll"] == pytest.approx(result["bpd"] * 784 * 0.6931471805599453, rel=1e-6)

    gan = train("gan", tmp_path / "gan")
    rows = metrics(gan)
    assert {"train_d_loss", "train_g_loss", "train_d_real", "train_d_fake", "val_value"} <= rows[
        0
    ].keys()
    assert main(["train", "--resume", str(gan), "--epochs", "3"]) == 0
    assert [m["epoch"] for m in metrics(gan)] == [1, 2, 3]


@pytest.mark.parametrize(
    "options",
    [
        ["--gen-loss", "hinge", "--d-norm", "spectral"],
        ["--arch", "conv", "--conv-width", "2", "--d-norm", "batch", "--d-dropout", "0.2"],
    ],
)
def test_gan_discriminator_options_train_resume_evaluate_and_sample(
    options: list[str], data_dir: Path, tmp_path: Path
) -> None:
    # Spectral normalization keeps its power iteration's vectors, BatchNorm its statistics,
    # as buffers: the checkpoints must carry them for a resumed run and for eval.
    gan = train("gan", tmp_path / "gan", *options)
    assert main(["train", "--resume", str(gan), "--epochs", "3"]) == 0
    assert [m["epoch"] for m in metrics(gan)] == [1, 2, 3]
    assert main(["eval", str(gan), "--limit", "10"]) == 0
    values = json.loads((gan / "eval.json").read_text())
    assert all(math.isfinite(v) for v in values.values() if isinstance(v, float))
    assert main(["sample", str(gan), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "realnvp", "--binarize", "dynamic"], "--binarize none"),
        (["sample", "RUN", "--temperature", "0.5"], "flows"),
        (["sample", "RUN", "--standard-normal"], "autoencoders"),
        (["eval"], "give a RUN or --reference"),
    ],
)
def test_family_mismatches_are_clear_errors(
    data_dir: Path, tmp_path: Path, capsys, argv, message
) -> None:
    run = train("vae", tmp_path / "vae") if "RUN" in argv else None
    argv = [str(run) if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_compare_quality_and_reference(data_dir: Path, tmp_path: Path, capsys) -> None:
    runs = [train("bvae", tmp_path / name, "--baseline", name) for name in ("none", "ema")]
    for run in runs:
        assert main(["eval", str(run), "--iw-samples", "10"]) == 0
    figure = tmp_path / "compare.png"
    assert main(["compare", *map(str, runs), "-o", str(figure)]) == 0
    out = capsys.readouterr().out
    assert figure.stat().st_size > 0 and "baseline=none" in out and "NLL" in out

    # A feature net trained (briefly) on the tiny data is cached; eval reuses it.
    quality.load_or_train_feature_net(epochs=1, val_size=20)
    gan = train("gan", tmp_path / "gan")
    assert main(["eval", str(gan), "--quality", "--n-samples", "30"]) == 0
    result = json.loads((gan / "eval.json").read_text())
    keys = {
        "fid",
        "inception_score",
        "precision",
        "recall",
        "parzen_ll",
        "parzen_ll_se",
        "n_samples",
    }
    assert keys <= result.keys() and result["n_samples"] == 30
    # drawing and scoring timed apart: what 10,000 samples cost is a figure of its own
    assert result["sampling_seconds"] > 0 and result["scoring_seconds"] > 0
    assert "drawn in" in capsys.readouterr().out
    assert (gan / "figures" / "class_histogram.png").exists()

    # K=0 adds the scores of a model with a likelihood without recomputing (or losing) it.
    before = json.loads((runs[0] / "eval.json").read_text())
    assert main(["eval", str(runs[0]), "--quality", "--iw-samples", "0", "--n-samples", "30"]) == 0
    after = json.loads((runs[0] / "eval.json").read_text())
    assert after["nll"] == before["nll"] and after["iw_samples"] == 10 and "fid" in after
    # Bernoulli pixels: their means are scored, against grey images, and eval.json says so.
    assert after["quality_protocol"] == (
        "30 pixel means of p(x|z), z ~ p(z) against the grey-level test images"
    )
    assert result["quality_protocol"] == "30 samples against the grey-level test images"
    grey = grey_data(load_run_config(runs[0]), torch.device("cpu"), None)
    assert ((grey.test.images > 0) & (grey.test.images < 1)).any()  # not binarized

    reference = tmp_path / "reference.json"
    assert (
        main(
            [
                "eval",
                "--reference",
                "test",
                "--n-samples",
                "30",
                "--val-size",
                "20",
                "--output",
                str(reference),
            ]
        )
        == 0
    )
    assert json.loads(reference.read_text())["n_samples"] == 30
