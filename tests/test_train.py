"""The shared training loop: learning, checkpoints, exact resume, divergence, early stopping."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genzoo import plots
from genzoo import training as gtrain
from genzoo.api import run_config
from genzoo.config import TrainConfig
from genzoo.errors import GenzooError, TrainingDiverged
from genzoo.models import MODELS
from genzoo.models.gan import GAN, GANConfig
from genzoo.models.vae import VAE
from genzoo.runs import (
    Changes,
    RunConfig,
    build_model,
    checkpoint_files,
    load_checkpoint,
    load_run_config,
    read_metrics,
    resume_config,
)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_run_folder_is_complete(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig
) -> None:
    tiny_config.train.epochs = 6
    run = tmp_path / "run"
    summary = gtrain.train(run, tiny_config, device="cpu")
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    required = {"epoch", "train_neg_elbo", "val_neg_elbo", "val_recon", "val_kl", "seconds"}
    assert all(required <= r.keys() for r in rows)
    assert rows[-1]["val_neg_elbo"] < rows[0]["val_neg_elbo"] - 20
    assert rows[-1]["train_neg_elbo"] < rows[0]["train_neg_elbo"]
    assert summary["best_epoch"] == min(rows, key=lambda r: r["val_neg_elbo"])["epoch"]
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {
        "samples_epoch000.png",
        "samples_epoch001.png",
        "samples_epoch002.png",
        "curves.png",
        "reconstructions.png",
        "latents.png",
        "interpolation.png",
        "manifold.png",
    } <= figures
    assert load_run_config(run) == tiny_config


@pytest.mark.parametrize(
    ("ema", "minutes", "schedule"),
    [
        (0.0, 0.0, "constant"),  # checkpoints at the ends of epochs only
        (0.9, 0.0, "cosine"),  # with a weight average and a per-batch schedule
        (0.0, 1e-9, "step"),  # a checkpoint after every batch: resumed within the epoch
        (0.9, 1e-9, "cosine"),
    ],
)
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    data_dir: Path,
    tmp_path: Path,
    tiny_config: RunConfig,
    monkeypatch: pytest.MonkeyPatch,
    ema: float,
    minutes: float,
    schedule: str,
) -> None:
    tc = tiny_config.train
    tc.epochs, tc.ema, tc.checkpoint_minutes = 4, ema, minutes
    tc.lr_schedule, tc.lr_step_epochs, tc.warmup_epochs = schedule, 2, 1
    gtrain.train(tmp_path / "whole", tiny_config, device="cpu")

    original, calls = VAE.train_step, []

    def killed_in_epoch_3(self, x, optimizers, labels=None):
        calls.append(1)
        if len(calls) == 2 * 5 + 3:  # 5 batches an epoch: dies at the 3rd batch of epoch 3
            raise KeyboardInterrupt
        return original(self, x, optimizers)

    monkeypatch.setattr(VAE, "train_step", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        gtrain.train(tmp_path / "killed", tiny_config, device="cpu")
    monkeypatch.setattr(VAE, "train_step", original)
    assert [r["epoch"] for r in metrics(tmp_path / "killed")] == [1, 2]
    last = load_checkpoint(tmp_path / "killed", "last", VAE(tiny_config.model_config, (1, 28, 28)))
    assert (last["epoch"], last["step"]) == ((2, 2) if minutes else (2, 0))

    gtrain.train(tmp_path / "killed", load_run_config(tmp_path / "killed"), "cpu", resume=True)
    for tag in ("last", "best"):
        whole = load_file(checkpoint_files(tmp_path / "whole", tag)[0])
        resumed = load_file(checkpoint_files(tmp_path / "killed", tag)[0])
        assert whole.keys() == resumed.keys()
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), tag
    # The same per-epoch figures, the training means of the interrupted epoch included.
    timed = ("seconds", "wall_seconds")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timed} for r in rows]  # noqa: E731
    assert strip(metrics(tmp_path / "whole")) == strip(metrics(tmp_path / "killed"))


def test_a_run_killed_before_its_first_checkpoint_starts_again(
    data_dir: Path,
    tmp_path: Path,
    tiny_config: RunConfig,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    tiny_config.train.epochs = 2
    gtrain.train(tmp_path / "whole", tiny_config, device="cpu")

    def killed_at_once(self, x, optimizers, labels=None):
        raise KeyboardInterrupt

    original = VAE.train_step
    monkeypatch.setattr(VAE, "train_step", killed_at_once)
    with pytest.raises(KeyboardInterrupt):
        gtrain.train(tmp_path / "killed", tiny_config, device="cpu")
    monkeypatch.setattr(VAE, "train_step", original)
    assert not (tmp_path / "killed" / "checkpoints").exists()
    said = capsys.readouterr().out
    assert f"no checkpoint was written yet. Continue with: genzoo resume {tmp_path}" in said
    gtrain.train(tmp_path / "killed", load_run_config(tmp_path / "killed"), "cpu", resume=True)
    whole = load_file(checkpoint_files(tmp_path / "whole", "last")[0])
    resumed = load_file(checkpoint_files(tmp_path / "killed", "last")[0])
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_kill_between_the_best_and_the_last_checkpoint_changes_nothing(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an improving epoch ``best`` is written before ``last``; a kill between the two
    redoes the epoch from the previous ``last``, and the run still ends exactly so."""
    tiny_config.train.epochs = 3
    gtrain.train(tmp_path / "whole", tiny_config, device="cpu")
    original = gtrain.save_checkpoint

    def killed_before_the_last_of_epoch_3(run_dir, tag, model, state):
        if tag == "last" and state["epoch"] == 3:
            raise KeyboardInterrupt
        original(run_dir, tag, model, state)

    monkeypatch.setattr(gtrain, "save_checkpoint", killed_before_the_last_of_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        gtrain.train(tmp_path / "killed", tiny_config, device="cpu")
    monkeypatch.setattr(gtrain, "save_checkpoint", original)
    model = VAE(tiny_config.model_config, (1, 28, 28))
    assert load_checkpoint(tmp_path / "killed", "best", model)["epoch"] == 3
    assert load_checkpoint(tmp_path / "killed", "last", model)["epoch"] == 2
    gtrain.train(tmp_path / "killed", load_run_config(tmp_path / "killed"), "cpu", resume=True)
    for tag in ("last", "best"):
        whole = load_file(checkpoint_files(tmp_path / "whole", tag)[0])
        resumed = load_file(checkpoint_files(tmp_path / "killed", tag)[0])
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), tag
    assert [r["epoch"] for r in metrics(tmp_path / "killed")] == [1, 2, 3]


def test_a_failed_resume_leaves_config_json_alone(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig
) -> None:
    tiny_config.train.epochs = 1
    run = tmp_path / "run"
    gtrain.train(run, tiny_config, device="cpu")
    before = (run / "config.json").read_text()
    (checkpoint_files(run, "last")[0]).write_bytes(b"junk")
    with pytest.raises(GenzooError, match="corrupt"):
        gtrain.train(run, resume_config(run, Changes(epochs=5, lr=1e-4)), "cpu", resume=True)
    assert (run / "config.json").read_text() == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, calls = VAE.train_step, []

    def diverges_in_epoch_2(self, x, optimizers, labels=None):
        calls.append(1)
        stats = original(self, x, optimizers)
        return {**stats, "loss": math.nan} if len(calls) == 7 else stats

    monkeypatch.setattr(VAE, "train_step", diverges_in_epoch_2)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        gtrain.train(run, tiny_config, device="cpu")
    model = VAE(tiny_config.model_config, (1, 28, 28))
    assert load_checkpoint(run, "last", model)["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_early_stopping_after_patience(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = iter([5.0, 4.0, 4.5, 4.2, 4.1, 1.0])  # best at epoch 2, then 3 worse epochs

    def scripted_validation(model, split, device, world):
        return {"neg_elbo": next(scores), "recon": 0.0, "kl": 0.0}

    monkeypatch.setattr(gtrain, "validate", scripted_validation)
    tiny_config.train.epochs, tiny_config.train.patience = 6, 3
    summary = gtrain.train(tmp_path / "run", tiny_config, device="cpu")
    assert summary["epochs"] == 5 and summary["best_epoch"] == 2
    best = load_checkpoint(tmp_path / "run", "best", VAE(tiny_config.model_config, (1, 28, 28)))
    assert best["epoch"] == 2


def test_time_budget_stops_after_the_epoch_that_reaches_it(
    data_dir: Path,
    tmp_path: Path,
    tiny_config: RunConfig,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    timed_epoch = gtrain.Trainer.train_epoch

    def forty_second_epoch(self, epoch):
        stats = timed_epoch(self, epoch)
        self.progress.seconds = 40.0
        return stats

    monkeypatch.setattr(gtrain.Trainer, "train_epoch", forty_second_epoch)
    tiny_config.train.epochs, tiny_config.train.max_minutes = 6, 1.5
    summary = gtrain.train(tmp_path / "run", tiny_config, device="cpu")
    assert summary["epochs"] == 3  # 40, 80, then 120 s >= 90 s
    assert "the training passes took 2.0 of --max-minutes 1.5" in capsys.readouterr().out
    state = load_checkpoint(tmp_path / "run", "last", VAE(tiny_config.model_config, (1, 28, 28)))
    assert state["loop"]["seconds"] == 120.0  # kept for a resume


def test_bf16_autocast_changes_the_arithmetic_not_the_weights(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig
) -> None:
    tiny_config.train.epochs = 1
    fp32 = gtrain.train(tmp_path / "fp32", tiny_config, device="cpu")
    tiny_config.train.precision = "bf16"
    bf16 = gtrain.train(tmp_path / "bf16", tiny_config, device="cpu")
    losses = [read_metrics(tmp_path / r)[0]["train_loss"] for r in ("fp32", "bf16")]
    assert losses[0] != losses[1]  # the products were rounded to bfloat16
    assert losses[1] == pytest.approx(losses[0], rel=0.02)
    assert bf16["best_val_neg_elbo"] == pytest.approx(fp32["best_val_neg_elbo"], rel=0.02)
    state = load_file(checkpoint_files(tmp_path / "bf16", "last")[0])
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_validation_computes_in_the_arithmetic_of_training(
    data_dir: Path,
    tmp_path: Path,
    tiny_config: RunConfig,
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
) -> None:
    autocast = []

    def noting_validate(*args, **kwargs):
        autocast.append(torch.is_autocast_enabled("cpu"))
        return validate(*args, **kwargs)

    validate = gtrain.validate
    monkeypatch.setattr(gtrain, "validate", noting_validate)
    tiny_config.train.epochs, tiny_config.train.precision = 2, precision
    gtrain.train(tmp_path / "run", tiny_config, device="cpu")
    assert autocast == [precision == "bf16"] * 2


@pytest.mark.parametrize("kernels", [True, False])
def test_auto_precision_is_chosen_for_the_device_and_recorded(
    data_dir: Path,
    tmp_path: Path,
    tiny_config: RunConfig,
    monkeypatch: pytest.MonkeyPatch,
    kernels: bool,
) -> None:
    monkeypatch.setattr(gtrain, "has_bf16_kernels", lambda device: kernels)
    tiny_config.train.epochs, tiny_config.train.precision = 1, "auto"
    gtrain.train(tmp_path / "auto", tiny_config, device="cpu")
    chosen = load_run_config(tmp_path / "auto").train.precision
    assert chosen == ("bf16" if kernels else "fp32")
    monkeypatch.setattr(gtrain, "has_bf16_kernels", lambda device: not kernels)
    resumed = resume_config(tmp_path / "auto", Changes(epochs=2))  # elsewhere: the same arithmetic
    gtrain.train(tmp_path / "auto", resumed, "cpu", resume=True)
    assert load_run_config(tmp_path / "auto").train.precision == chosen


def test_compiled_objectives_take_the_same_steps(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig
) -> None:
    tiny_config.train.epochs = 1
    eager = gtrain.train(tmp_path / "eager", tiny_config, device="cpu")
    tiny_config.train.compile = True
    compiled = gtrain.train(tmp_path / "compiled", tiny_config, device="cpu")
    assert compiled["best_val_neg_elbo"] == pytest.approx(eager["best_val_neg_elbo"], rel=1e-4)


def test_without_a_cpp_compiler_a_compiled_run_trains_uncompiled(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig, monkeypatch, capsys
) -> None:
    # realnvp and draw compile by default: a CPU without the compiler inductor's code
    # needs still trains them, and says why it is slower.
    monkeypatch.setenv("CXX", "no-such-compiler")
    compiled = []
    monkeypatch.setattr(VAE, "compile", lambda self, **options: compiled.append(options))
    tiny_config.train.epochs = 1
    tiny_config.train.compile = True
    gtrain.train(tmp_path / "run", tiny_config, device="cpu")
    assert not compiled
    assert "torch.compile needs a C++ compiler (no-such-compiler)" in capsys.readouterr().out
    monkeypatch.setenv("CXX", sys.executable)  # any program found stands in for one
    gtrain.train(tmp_path / "with-compiler", tiny_config, device="cpu")
    assert compiled == [{"dynamic": True}]  # the last, smaller batch compiles nothing new


@pytest.mark.parametrize("family", MODELS)
def test_a_compiled_family_compiles_with_the_shapes_inductor_can_take(
    family: str, monkeypatch
) -> None:
    # Inductor (torch 2.13) fails on the U-Net's convolutions over symbolic sizes (a
    # traceback at the first step of `genzoo train diffusion --compile`): diffusion
    # compiles with static shapes, every other family with dynamic ones.
    monkeypatch.setenv("CXX", sys.executable)
    compiled = []
    model_class = MODELS[family].model
    monkeypatch.setattr(model_class, "compile", lambda self, **options: compiled.append(options))
    model = build_model(run_config(family, {}), (1, 28, 28))
    gtrain.compile_objectives(model, torch.device("cpu"))
    assert compiled == [{"dynamic": family != "diffusion"}]


def test_a_gan_keeps_the_epoch_of_the_lowest_probe_fid(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # epochs 1, 2, 4, 6, 7 (every 2nd, and the first and the last)
    fids = iter([50.0, 30.0, 40.0, 45.0, 35.0])
    probed = []

    def scripted_probe(samples):
        probed.append(samples.shape)
        fid = next(fids)
        return {"quality_fid": fid, "quality_inception_score": 3.0, "quality_class_entropy": 2.0}

    monkeypatch.setattr(gtrain, "watch_quality", lambda cfg, dev, data_dir: scripted_probe)
    train = TrainConfig(
        epochs=7, batch_size=16, val_size=20, quality_every=2, quality_samples=30, patience=0
    )
    cfg = RunConfig("gan", train, GANConfig(noise_dim=4, gen_hidden=(8,), disc_hidden=(8,)))
    summary = gtrain.train(tmp_path / "gan", cfg, device="cpu")
    assert probed == [(30, 1, 28, 28)] * 5
    records = read_metrics(tmp_path / "gan")
    panels = plots.quality_panels(records)
    assert panels["FID (30 samples vs validation)"] == ["quality_fid"]
    # The probe's Inception score is one split, never to be taken for the reported ten.
    assert panels["Inception score (one split)"] == ["quality_inception_score"]
    page = (tmp_path / "gan" / "report.html").read_text()
    assert "quality_inception_score (one split)" in page
    assert [r["epoch"] for r in records if "quality_fid" in r] == [1, 2, 4, 6, 7]
    assert summary["best_epoch"] == 2
    gan = GAN(cfg.model_config, (1, 28, 28))
    assert load_checkpoint(tmp_path / "gan", "best", gan)["epoch"] == 2


def test_samples_gone_to_nan_are_a_divergence_not_a_probe_error(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gtrain, "watch_quality", lambda cfg, dev, data_dir: lambda x: {})
    monkeypatch.setattr(
        gtrain, "quality_images", lambda model, n: (torch.full((n, 1, 28, 28), math.nan), None)
    )
    train = TrainConfig(epochs=2, batch_size=16, val_size=20, quality_every=1)
    cfg = RunConfig("gan", train, GANConfig(noise_dim=4, gen_hidden=(8,), disc_hidden=(8,)))
    with pytest.raises(TrainingDiverged, match="a sample became nan in epoch 1"):
        gtrain.train(tmp_path / "gan", cfg, device="cpu")


def test_tensorboard_gets_every_metric_and_the_sample_grids(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_config.train.tensorboard = True
    gtrain.train(tmp_path / "run", tiny_config, device="cpu")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    records = read_metrics(tmp_path / "run")
    for name in ("train_loss", "val_neg_elbo", "lr", "seconds"):
        logged = [(e.step, e.value) for e in events.Scalars(name)]
        assert logged == [(r["epoch"], pytest.approx(r[name])) for r in records]
    grids = events.Images("samples")
    assert [g.step for g in grids] == [0, 1, 2]  # before training, then as sample_every says


def test_tensorboard_missing_says_how_to_install(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    tiny_config.train.tensorboard = True
    with pytest.raises(GenzooError, match=r"pip install 'genzoo\[tensorboard\]'"):
        gtrain.train(tmp_path / "run", tiny_config, device="cpu")


def test_corrupt_checkpoint_is_a_clear_error(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig
) -> None:
    tiny_config.train.epochs = 1
    run = tmp_path / "run"
    gtrain.train(run, tiny_config, device="cpu")
    weights = checkpoint_files(run, "last")[0]
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(GenzooError, match="corrupt"):
        load_checkpoint(run, "last", VAE(tiny_config.model_config, (1, 28, 28)))


def test_sample_grids_at_chosen_epochs(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig
) -> None:
    tiny_config.train.sample_epochs = (0, 2)
    gtrain.train(tmp_path / "run", tiny_config, device="cpu")
    grids = sorted(p.name for p in (tmp_path / "run" / "figures").glob("samples_epoch*.png"))
    assert grids == ["samples_epoch000.png", "samples_epoch002.png"]
