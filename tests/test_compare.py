"""What `genzoo compare` and `genzoo eval` tell about the protocol behind a number: the K
and images behind each NLL, rows that cannot be compared, the units, the running NLL
while importance sampling, and eval's -o."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from genzoo import evaluation as evaluate
from genzoo.cli import main
from genzoo.comparison import (
    comparability,
    figures_table,
    n_images,
    nll_samples,
    quality_table,
    settings_column,
    units_note,
)
from genzoo.config import TrainConfig
from genzoo.data import Split
from genzoo.models import MODELS
from genzoo.models.base import Likelihood
from genzoo.models.gan import GANConfig
from genzoo.models.latent import IMPORTANCE_SAMPLING
from genzoo.models.vae import VAEConfig
from genzoo.runs import RunConfig

TINY_VAE = [
    "--epochs", "2", "--hidden", "8", "--latent-dim", "2", "--batch-size", "16",
    "--val-size", "20", "--device", "cpu",
]  # fmt: skip


def row(run: str, **changes: Any) -> dict[str, Any]:
    """A table row as compare_runs makes it for a VAE evaluated with K=5000."""
    evaluated = {
        "neg_elbo": 97.0,
        "neg_elbo_se": 0.3,
        "nll": 92.5,
        "nll_se": 0.2,
        "iw_samples": 5000,
        "estimator": "posterior",
        "n_examples": 10000,
        "split": "test",
        "dataset": "mnist",
        "binarize": "dynamic (evaluation set drawn once, seed 1)",
        "units": "nats per image",
    }
    return {"run": run, "model": "vae", "epochs": 40, **evaluated, **changes}


def test_rows_of_one_protocol_are_not_marked() -> None:
    assert comparability([row("a"), row("b"), row("c")]) == ["", "", ""]


def test_a_different_k_is_named() -> None:
    reasons = comparability([row("a"), row("b", iw_samples=100), row("c")])
    assert reasons[0] == reasons[2] == ""
    assert reasons[1] == "not comparable with a: K 100 vs 5000"


def test_a_different_binarization_and_image_count_are_named() -> None:
    reasons = comparability([row("a"), row("b", binarize="static", n_examples=2000)])
    assert reasons[1].startswith("not comparable with a: ")
    assert "binarize static vs dynamic" in reasons[1] and "images 2000 vs 10000" in reasons[1]


def test_k_matters_only_where_both_rows_have_an_nll() -> None:
    # A flow's exact NLL beside a VAE's estimate: K differs in kind; without an NLL
    # (a VAE evaluated with --iw-samples 0) only the images behind its -ELBO count.
    flow = {k: v for k, v in row("flow").items() if k not in ("iw_samples", "estimator")}
    no_nll = {k: v for k, v in row("elbo").items() if k not in ("nll", "iw_samples")}
    reasons = comparability([row("a"), flow, no_nll])
    assert reasons[1] == "not comparable with a: K exact vs 5000, proposal - vs posterior"
    assert reasons[2] == ""
    assert [nll_samples(r) for r in (row("a"), flow, no_nll)] == ["5000", "exact", "-"]


def test_rows_without_figures_are_dashes_and_never_the_reference() -> None:
    gan = {"run": "gan", "model": "gan", "epochs": 20, "d_real": 0.6, "n_examples": 30}
    gan["units"] = "D: probability that an image is real"
    reasons = comparability([gan, row("a"), row("b", dataset="fashion-mnist")])
    assert reasons == ["", "", "not comparable with a: dataset fashion-mnist vs mnist"]
    assert nll_samples(gan) == n_images(gan) == "-" and n_images(row("a")) == "10000"


def test_units_are_read_from_the_rows() -> None:
    assert units_note([row("a"), row("b")]) == "nats per image"
    bits = row("b", units="bits per image")
    assert units_note([row("a"), bits]) == "a: nats per image; b: bits per image"
    assert "units bits per image vs nats per image" in comparability([row("a"), bits])[1]


def vae(**train: Any) -> RunConfig:
    """A VAE's config as `genzoo train vae` makes it with these training flags."""
    defaults = MODELS["vae"].training_defaults()
    return RunConfig("vae", TrainConfig(**{**defaults, **train}), VAEConfig())


def test_settings_list_every_setting_that_differs_between_the_runs() -> None:
    """Training size, epochs, schedule and seed are settings like any other: a run at its
    defaults beside one that is not shows the differing values too, not "defaults"."""
    runs = [
        vae(),
        vae(train_size=1000, epochs=5),
        vae(lr_schedule="cosine", seed=3),
        dataclasses.replace(vae(), model_config=VAEConfig(latent_dim=2)),
    ]
    assert settings_column(runs) == [
        "train_size=null epochs=40 lr_schedule=constant seed=0 latent_dim=20",
        "train_size=1000 epochs=5 lr_schedule=constant seed=0 latent_dim=20",
        "train_size=null epochs=40 lr_schedule=cosine seed=3 latent_dim=20",
        "train_size=null epochs=40 lr_schedule=constant seed=0 latent_dim=2",
    ]
    assert settings_column([vae(), vae()]) == ["defaults", "defaults"]  # the family's own
    assert settings_column([vae(ema=0.0)]) == ["ema=0.0"]  # ... which a flag changed
    # Runs of another family are compared with their own family's defaults, which differ
    # (the model column tells them apart): only what was changed from them is listed.
    gan = RunConfig("gan", TrainConfig(**MODELS["gan"].training_defaults()), GANConfig())
    assert settings_column([vae(seed=1), gan, vae()]) == ["seed=1", "defaults", "seed=0"]


def test_figures_show_their_epoch_and_mark_a_run_that_moved_on() -> None:
    moved = row("b", epoch=2, epochs=15, figures_moved_on=15)
    rows = [row("a", epoch=40, figures_moved_on=None, settings="defaults")]
    rows.append({**moved, "settings": "epochs=15"})
    lines = figures_table(rows, Path("c.png"))
    assert lines[0].split()[-3:] == ["at", "epoch", "settings"]
    assert lines[1].split()[-2:] == ["40", "defaults"]
    assert lines[2].split()[-2:] == ["2†", "epochs=15"]
    assert lines[3] == (
        "† b: test figures of epoch 2; the run has trained to epoch 15 since (genzoo eval it again)"
    )


def test_quality_table_shows_the_splits_density_coverage_and_epoch() -> None:
    scores = {"fid": 3.0, "inception_score": 9.1, "precision": 0.9, "recall": 0.8}
    scores |= {"parzen_ll": 200.0, "parzen_ll_se": 1.0, "quality_protocol": "p"}
    new = {**scores, "inception_score_std": 0.05, "density": 1.02, "coverage": 0.95}
    new |= {"quality_epoch": 3, "quality_run_epochs": 3, "quality_moved_on": 7}
    old = {**scores, "epoch": 5, "quality_moved_on": None}  # an eval.json of before
    lines = quality_table([{"run": "new", **new}, {"run": "old", **old}])
    assert lines[1].split() == [
        "new", "3.00", "9.10", "±", "0.05", "0.900", "0.800", "1.020", "0.950", "200.0", "±",
        "1.0", "3†", "p",
    ]  # fmt: skip
    assert lines[2].split()[2:4] == ["9.10", "(1"] and lines[2].split()[7:9] == ["-", "-"]
    assert lines[2].split()[-2:] == ["5", "p"]
    assert lines[3].startswith("† new: sample quality of epoch 3; the run has trained to epoch 7")


def train_vae(run: Path) -> Path:
    assert main(["train", "vae", "--run-dir", str(run), *TINY_VAE]) == 0
    return run


def test_compare_prints_k_and_images_and_marks_the_odd_row(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    runs = [train_vae(tmp_path / name) for name in ("five", "ten")]
    for run, k in zip(runs, ("5", "10"), strict=True):
        assert main(["eval", str(run), "--iw-samples", k]) == 0
        # The units printed are eval.json's own, not an assumption of the table's.
        result = json.loads((run / "eval.json").read_text())
        (run / "eval.json").write_text(json.dumps({**result, "units": "nats per toy image"}))
    capsys.readouterr()
    assert main(["compare", *map(str, runs), "-o", str(tmp_path / "compare.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["run", "model", "epochs", "K", "images"]
    five, ten = (line.split() for line in lines[1:3])
    assert five[:5] == ["five", "vae", "2", "5", "30"] and five[-1] != "*"
    assert ten[:5] == ["ten", "vae", "2", "10", "30"] and ten[-1] == "*"
    assert lines[3] == "* ten: not comparable with five: K 10 vs 5"
    assert lines[4].startswith("(units: nats per toy image;")


def test_eval_output_goes_where_it_is_told(data_dir: Path, tmp_path: Path, capsys) -> None:
    run = train_vae(tmp_path / "vae")
    output = tmp_path / "elsewhere" / "result.json"
    output.parent.mkdir()
    assert main(["eval", str(run), "--iw-samples", "5", "--limit", "10", "-o", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["iw_samples"] == 5 and result["n_examples"] == 10 and "nll" in result
    assert not (run / "eval.json").exists()
    assert str(output) in capsys.readouterr().out


class RecordingBar:
    """Stands in for tqdm: iterates like it and records the description and postfixes."""

    made: ClassVar[list[RecordingBar]] = []

    def __init__(self, iterable, desc: str = "", **_: Any) -> None:
        self.iterable, self.desc, self.postfixes = iterable, desc, []
        RecordingBar.made.append(self)

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, **values: Any) -> None:
        self.postfixes.append(values)


class ToyLikelihood(Likelihood):
    """log p(x) = -(sum of the image's pixels), so each NLL is known beforehand."""

    likelihood_estimator = IMPORTANCE_SAMPLING
    proposals = ("posterior", "prior")

    def log_likelihood(self, x: torch.Tensor, samples: int, proposal: str) -> torch.Tensor:
        return -x.double().flatten(1).sum(1)


def test_the_progress_bar_shows_the_running_nll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RecordingBar, "made", [])
    monkeypatch.setattr(evaluate, "tqdm", RecordingBar)
    nlls = torch.arange(1.0, 11.0, dtype=torch.float64) * 10  # 10, 20, ..., 100
    images = nlls.view(10, 1, 1, 1).expand(10, 1, 2, 5) / 10  # pixels summing to the NLL
    result = evaluate.negative_log_likelihood(ToyLikelihood(), Split(images, None), 7, "prior", 4)
    assert torch.allclose(result, nlls)
    (bar,) = RecordingBar.made
    assert "K=7" in bar.desc and "p(z)" in bar.desc
    # After each batch of 4: the mean of the images so far (10..40, 10..80, 10..100).
    assert [p["nll"] for p in bar.postfixes] == ["25.00", "45.00", "55.00"]


def test_gan_comparison_shows_d_of_g_fid_and_the_equilibrium_line(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from genzoo import plots
    from genzoo.models.gan import EQUILIBRIUM_VALUE

    gan = ["--noise-dim", "4", "--gen-hidden", "8", "--disc-hidden", "8", "--quality-every", "1"]
    runs = [tmp_path / loss for loss in ("minimax", "nonsaturating")]
    for run in runs:
        argv = ["train", "gan", "--run-dir", str(run), *TINY_VAE[:2], *TINY_VAE[6:], *gan]
        assert main([*argv, "--gen-loss", run.name]) == 0
    drawn = {}
    real = plots.draw_comparison
    monkeypatch.setattr(
        plots, "draw_comparison", lambda *a: drawn.update(metrics=a[3], lines=a[5]) or real(*a)
    )
    scores = {"fid": 12.5, "inception_score": 8.5, "inception_score_std": 0.25}
    scores |= {"precision": 0.75, "recall": 0.5, "density": 0.9, "coverage": 0.8}
    scores |= {"parzen_ll": 210.0, "parzen_ll_se": 2.0, "quality_protocol": "toy protocol"}
    scores |= {"quality_epoch": 2, "quality_run_epochs": 2}
    (runs[0] / "eval.json").write_text(json.dumps(scores))
    figure = tmp_path / "gans.png"
    capsys.readouterr()
    assert main(["compare", *map(str, runs), "-o", str(figure)]) == 0
    out = capsys.readouterr().out.splitlines()
    # the run with sample-quality scores gets a line of them; the other has none yet
    assert "sample quality below" in out[3]
    assert "gen_loss=minimax" in out[1].split()  # what tells the two runs apart
    assert "gen_loss=nonsaturating" in out[2].split()
    assert out[4].split() == [
        "run", "FID", "IS", "precision", "recall", "density", "coverage", "Parzen", "(nats)",
        "at", "epoch",
    ]  # fmt: skip
    assert out[5].split() == [
        "minimax", "12.50", "8.50", "±", "0.25", "0.750", "0.500", "0.900", "0.800", "210.0",
        "±", "2.0", "2", "toy", "protocol",
    ]  # fmt: skip
    assert len(out) == 6
    assert figure.stat().st_size > 0
    assert drawn["metrics"][:2] == ["train_d_fake", "val_value"]
    assert "quality_fid" in drawn["metrics"]
    assert drawn["lines"]["val_value"][0] == EQUILIBRIUM_VALUE
