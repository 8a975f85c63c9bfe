"""SIGKILL a small training at random instants, resume it each time, and compare the end
with an uninterrupted run: on CPU the weights must be equal, bit for bit.

Kills come from outside after a random delay (before the first checkpoint, within an
epoch, between epochs) and from inside a checkpoint write (the GENZOO_KILL_AT_WRITE hook
of files.py: after a temporary file is written, before it is renamed). GENZOO_KILLS sets
how many (default 3 here; benchmarks/README.md reports a run with 50).

SIGTERM (a job scheduler's stop) and Ctrl-C stop a training at the next batch boundary
with a checkpoint and the command that continues it, a study with the command that
continues it; the continued run ends as the uninterrupted one (the data-parallel run:
test_distributed.py).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest
import torch
from safetensors.torch import load_file

from conftest import RUNNER, register, write_fake_idx_dataset
from genzoo import cli, interrupts, training
from genzoo.cli import main
from genzoo.interrupts import INTERRUPTED
from genzoo.models.vae import VAE, VAEConfig
from genzoo.runs import (
    RunConfig,
    checkpoint_files,
    load_checkpoint,
    load_run_config,
    read_metrics,
)
from genzoo.studies import STUDIES, recipe
from genzoo.training import train

KILLS = int(os.environ.get("GENZOO_KILLS", "3"))
FLAGS = [
    "--epochs", str(10 * KILLS), "--sample-every", "1000", "--batch-size", "16",
    "--val-size", "20", "--hidden", "16",
    "--latent-dim", "2", "--lr-schedule", "cosine", "--checkpoint-minutes", "1e-9",
    "--device", "cpu",
]  # fmt: skip


def start(data_dir: Path, *argv: str, **env: str) -> subprocess.Popen:
    """``genzoo ARGV`` on the fake MNIST in ``data_dir``, in a process of its own (``env``
    added to its environment)."""
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(data_dir / "mnist"), *argv],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def genzoo(
    data_dir: Path, *argv: str, kill_at_write: int | None = None, delay: float | None = None
):
    hook = {} if kill_at_write is None else {"GENZOO_KILL_AT_WRITE": str(kill_at_write)}
    process = start(data_dir, *argv, **hook)
    try:
        _, err = process.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return process.returncode, err


def test_kills_at_random_instants_change_nothing(data_dir: Path, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    code, err = genzoo(data_dir, "train", "vae", "--run-dir", str(whole), *FLAGS)
    assert code == 0, err
    rng = random.Random(0)
    planned, kills, damaged = KILLS, 0, 0
    for attempt in range(planned + 10):
        command = ["resume", str(killed)] if (killed / "config.json").exists() else [
            "train", "vae", "--run-dir", str(killed), *FLAGS,
        ]  # fmt: skip
        inside_a_write = attempt % 2 == 1
        code, err = genzoo(
            data_dir,
            *command,
            kill_at_write=rng.randint(1, 12) if kills < planned and inside_a_write else None,
            delay=rng.uniform(0.5, 4.0) if kills < planned and not inside_a_write else None,
        )
        damaged += "damaged" in err
        if code == 0:
            break
        assert code == -9, err  # killed, and by nothing but SIGKILL
        kills += 1
    assert code == 0 and kills >= 1, (kills, err)
    for tag in ("last", "best"):
        a, b = (load_file(checkpoint_files(run, tag)[0]) for run in (whole, killed))
        assert a.keys() == b.keys()
        gap = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
        print(f"{tag}: {kills} kills, {damaged} damaged checkpoints seen, max |difference| {gap}")
        assert all(torch.equal(a[k], b[k]) for k in a), tag


def test_readers_see_a_whole_checkpoint_while_a_training_writes(
    data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    command = ["train", "vae", "--run-dir", str(run), *FLAGS]
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(data_dir / "mnist"), *command],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    model, reads = VAE(VAEConfig(latent_dim=2, hidden=(16,)), (1, 28, 28)), 0
    while process.poll() is None:
        if (run / "checkpoints" / "last.json").exists():
            state = load_checkpoint(run, "last", model)  # raises on a torn pair
            assert state["step"] >= 0 and all(torch.isfinite(p).all() for p in model.parameters())
            reads += 1
    assert process.returncode == 0, process.stderr.read()
    assert reads > 10


def same_weights(a: Path, b: Path, tags: tuple[str, ...] = ("last", "best")) -> bool:
    """Whether two runs' checkpoints hold equal weights, bit for bit."""
    for tag in tags:
        x, y = (load_file(checkpoint_files(run, tag)[0]) for run in (a, b))
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def sigterm_once_there(process: subprocess.Popen, path: Path) -> tuple[str, str]:
    """SIGTERM to ``process`` as soon as ``path`` exists (it must still run then), as a
    job scheduler stops a job; its stdout and stderr."""
    while not path.exists() and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    return process.communicate()


# A small VAE at a constant rate: --epochs changes nothing but where it ends. No
# checkpoints within an epoch but the one a stop writes.
STOPPABLE = [
    "--sample-every", "1000", "--batch-size", "4", "--val-size", "20", "--hidden", "16",
    "--latent-dim", "2", "--lr-schedule", "constant", "--device", "cpu",
]  # fmt: skip
CONTINUE = re.compile(
    r"^interrupted; the last good checkpoint is after epoch (\d+)"
    r"(?: and (\d+) batches of the next)?\. Continue with: genzoo resume (\S+)$",
    re.MULTILINE,
)


def test_sigterm_checkpoints_says_how_to_continue_and_the_run_continues_exactly(
    data_dir: Path, tmp_path: Path
) -> None:
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    argv = ["train", "vae", "--run-dir", str(stopped), "--epochs", "1000", *STOPPABLE]
    training = start(data_dir, *argv)
    out, err = sigterm_once_there(training, stopped / "checkpoints" / "last.json")
    assert training.returncode == INTERRUPTED, err
    assert "Traceback" not in err
    said = CONTINUE.search(out)
    assert said and said[3] == str(stopped), out
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,)), (1, 28, 28))
    state = load_checkpoint(stopped, "last", model)
    assert (state["epoch"], state["step"]) == (int(said[1]), int(said[2] or 0))

    epochs = str(state["epoch"] + 2)
    code, err = genzoo(data_dir, "resume", str(stopped), "--epochs", epochs)
    assert code == 0, err
    code, err = genzoo(
        data_dir, "train", "vae", "--run-dir", str(whole), "--epochs", epochs, *STOPPABLE
    )
    assert code == 0, err
    assert same_weights(stopped, whole)


@pytest.fixture
def ctrl_c_live() -> Iterator[None]:
    """Ctrl-C handled as in a terminal for the test. A pytest-xdist worker may start with
    SIGINT ignored, as a background job does, and genzoo rightly leaves an ignored signal
    ignored: a Ctrl-C test there would otherwise depend on which tests ran before it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_live")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_checkpoints_after_the_batch_it_came_in(
    signum: int,
    data_dir: Path,
    tmp_path: Path,
    tiny_config: RunConfig,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """SIGTERM and Ctrl-C alike: the batch it came in is finished, a checkpoint is written
    after it (none would be: --checkpoint-minutes 0), the handlers are given back."""
    tiny_config.train.checkpoint_minutes = 0
    train(tmp_path / "whole", tiny_config, device="cpu")
    original, calls = VAE.train_step, []

    def signalled_in_epoch_2(self, x, optimizers, labels=None):
        calls.append(1)
        if len(calls) == 5 + 3:  # 5 batches an epoch: the 3rd batch of epoch 2
            os.kill(os.getpid(), signum)
        return original(self, x, optimizers)

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(VAE, "train_step", signalled_in_epoch_2)
    run = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train(run, tiny_config, device="cpu")
    monkeypatch.setattr(VAE, "train_step", original)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert len(calls) == 5 + 3
    state = load_checkpoint(run, "last", VAE(tiny_config.model_config, (1, 28, 28)))
    assert (state["epoch"], state["step"]) == (1, 3)
    said = capsys.readouterr().out
    assert f"after epoch 1 and 3 batches of the next. Continue with: genzoo resume {run}\n" in said
    train(run, load_run_config(run), "cpu", resume=True)
    assert same_weights(run, tmp_path / "whole")


@pytest.mark.parametrize("where", ["validation", "the last batch"])
def test_a_stop_abandons_the_epochs_validation_and_the_resume_redoes_it(
    where: str,
    data_dir: Path,
    tmp_path: Path,
    tiny_config: RunConfig,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """SIGTERM inside epoch 2's validation (or its last batch, just before it): not
    waited for, a checkpoint of the finished pass (epoch 1 and all 5 batches of epoch
    2), no metrics of epoch 2 yet; the resume validates epoch 2 and ends as the whole run.
    With averaged weights, which validation swaps in and the stop must swap back out."""
    tiny_config.train.checkpoint_minutes, tiny_config.train.ema = 0, 0.9
    train(tmp_path / "whole", tiny_config, device="cpu")
    validations, steps = [], []
    original_validate, original_step = training.validate, VAE.train_step

    def signalled_validation(*args, **kwargs):
        validations.append(1)
        if where == "validation" and len(validations) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            validations.append("finished")  # never: the stop comes before this line
        return original_validate(*args, **kwargs)

    def signalled_step(self, x, optimizers, labels=None):
        steps.append(1)
        if where == "the last batch" and len(steps) == 10:  # epoch 2's last
            os.kill(os.getpid(), signal.SIGTERM)
        return original_step(self, x, optimizers)

    monkeypatch.setattr(training, "validate", signalled_validation)
    monkeypatch.setattr(VAE, "train_step", signalled_step)
    run = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train(run, tiny_config, device="cpu")
    assert "finished" not in validations and len(validations) == (2 if where == "validation" else 1)
    state = load_checkpoint(run, "last", VAE(tiny_config.model_config, (1, 28, 28)))
    assert (state["epoch"], state["step"]) == (1, 5)
    assert [m["epoch"] for m in read_metrics(run)] == [1]
    assert "after epoch 1 and 5 batches of the next. Continue with" in capsys.readouterr().out
    monkeypatch.setattr(training, "validate", original_validate)
    monkeypatch.setattr(VAE, "train_step", original_step)
    train(run, load_run_config(run), "cpu", resume=True)
    assert same_weights(run, tmp_path / "whole")
    assert read_metrics(run) == [
        {**m, "seconds": ANY, "wall_seconds": ANY} for m in read_metrics(tmp_path / "whole")
    ]


def test_sigterm_stops_a_study_which_then_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    write_fake_idx_dataset(data / "mnist", n_train=1600, n_test=300)  # --quick takes 1,500
    register(monkeypatch, "mnist", data / "mnist")
    monkeypatch.setenv("GENZOO_DATA", str(data))
    monkeypatch.setenv("GENZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    study, out = STUDIES["latent-size"], tmp_path / "study"
    first = recipe.run_dir(out, study.arms[0], 0, 1)
    argv = ["study", study.name, "--quick", "--out", str(out), "--device", "cpu"]
    running = start(data, *argv)
    said, err = sigterm_once_there(running, first / "config.json")
    assert running.returncode == INTERRUPTED, err
    assert "Traceback" not in err
    again = f"genzoo study {study.name} --out {out} --quick --device cpu"
    assert said.endswith(f"\nthe study was interrupted; continue it with: {again}\n"), said

    assert main(again.split()[1:]) == 0  # the line as printed
    assert (out / "study.json").exists()
    alone = tmp_path / "alone"
    uninterrupted = recipe.train_command(study, study.arms[0], alone, 0, quick=True)
    assert main([*uninterrupted, "--device", "cpu"]) == 0
    assert same_weights(first, alone)


def stop_surfacing_as_a_type_error(*args: object) -> None:
    """SIGTERM in code that a C extension called back, whose KeyboardInterrupt comes out
    as a TypeError: what pybind11's argument conversion makes of it in matplotlib."""
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # never ends: the handler raises at the next bytecode
    except KeyboardInterrupt as err:
        raise TypeError("incompatible function arguments") from err


def test_a_stop_that_surfaces_as_another_exception_still_ends_the_command_as_stopped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(cli, "cmd_report", stop_surfacing_as_a_type_error)
    assert main(["report", "runs"]) == INTERRUPTED
    assert capsys.readouterr().err == ""


def test_an_error_without_a_stop_keeps_its_type_and_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def bug(*args: object) -> None:
        raise TypeError("a bug")

    with interrupts.sigterm_as_ctrl_c(), pytest.raises(TypeError, match="a bug"):
        bug()
    # a stop in an earlier block does not make a later bug a stop
    with pytest.raises(KeyboardInterrupt), interrupts.sigterm_as_ctrl_c():
        stop_surfacing_as_a_type_error()
    monkeypatch.setattr(cli, "cmd_report", bug)
    with pytest.raises(TypeError, match="a bug"):
        main(["report", "runs"])
