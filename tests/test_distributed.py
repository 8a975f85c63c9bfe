"""Data-parallel training: two CPU processes under torchrun (gloo) on the tests' fake MNIST.

A deterministic model (the autoencoder on thresholded pixels) must take the very steps
of one process on the same global batches: the same losses epoch by epoch, the same
weights at the end, to float tolerance (the gradients are summed in another order).
SIGTERM to ``genzoo train --nproc 2`` stops every rank at the same batch with a
checkpoint, and the continued run ends as the uninterrupted one.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import RUNNER
from genzoo import cli, distributed
from genzoo.cli import without_nproc
from genzoo.distributed import World, torchrun_command
from genzoo.interrupts import INTERRUPTED
from genzoo.models.autoencoder import Autoencoder, AutoencoderConfig
from genzoo.runs import checkpoint_files, load_checkpoint
from test_folder import write_images
from test_kill import same_weights, sigterm_once_there

# 80 training images in batches of 12: six of 12 and a last one of 8, so the shares are
# uneven only if the split were, and a batch of 3 would split 2 + 1 (see test_share).
FLAGS = [
    "--epochs", "3", "--batch-size", "12", "--val-size", "20", "--hidden", "32",
    "--latent-dim", "4", "--binarize", "threshold", "--sample-every", "1000",
    "--device", "cpu",
]  # fmt: skip


def start(runner: Path, data_dir: Path, *argv: str, nproc: int = 1) -> subprocess.Popen:
    """The CLI on the fake data, in one process or under torchrun in ``nproc``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(runner), str(data_dir / "mnist"), *argv]
    if nproc > 1:
        # torchrun_command runs `-m genzoo`; the tests run their runner script instead.
        command = [*torchrun_command(nproc, [])[:-2], *command[1:]]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def genzoo(runner: Path, data_dir: Path, *argv: str, nproc: int = 1) -> tuple[int, str, str]:
    process = start(runner, data_dir, *argv, nproc=nproc)
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


@pytest.fixture
def runner(tmp_path: Path) -> Path:
    path = tmp_path / "runner.py"
    path.write_text(RUNNER)
    return path


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_share_splits_a_batch_into_contiguous_parts() -> None:
    shares = [World(rank, 2).share(3) for rank in range(2)]
    assert shares == [slice(0, 2), slice(2, 3)]
    rows = [World(rank, 3).share(10) for rank in range(3)]
    assert [s.stop - s.start for s in rows] == [4, 3, 3]
    assert rows[0].start == 0 and rows[-1].stop == 10
    assert all(a.stop == b.start for a, b in itertools.pairwise(rows))


def test_nproc_is_taken_out_of_the_command_line() -> None:
    argv = ["train", "vae", "--nproc", "2", "--epochs", "3", "--nproc=4"]
    assert without_nproc(argv) == ["train", "vae", "--epochs", "3"]


def test_two_processes_take_the_steps_of_one(data_dir: Path, tmp_path: Path, runner: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    code, _, err = genzoo(runner, data_dir, "train", "ae", "--run-dir", str(one), *FLAGS)
    assert code == 0, err
    code, out, err = genzoo(runner, data_dir, "train", "ae", "--run-dir", str(two), *FLAGS, nproc=2)
    assert code == 0, err
    for a, b in zip(metrics(one), metrics(two), strict=True):
        for name in ("train_loss", "val_loss"):
            assert b[name] == pytest.approx(a[name], rel=1e-5), name
    weights = [load_file(checkpoint_files(run, "last")[0]) for run in (one, two)]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=1e-4, atol=1e-6)
    # Rank 0 alone writes and prints: one line per epoch in each.
    assert len(metrics(two)) == 3
    assert "on 2 processes (cpu)" in out
    assert sum(line.startswith("epoch ") for line in out.splitlines()) == 3


def test_a_killed_rank_ends_the_job_and_the_run_resumes_with_any_count(
    data_dir: Path, tmp_path: Path, runner: Path
) -> None:
    run = tmp_path / "run"
    flags = [f if f != "3" else "1000" for f in FLAGS]  # long enough to be killed within
    job = start(runner, data_dir, "train", "ae", "--run-dir", str(run), *flags, nproc=2)
    manifest = run / "checkpoints" / "last.json"
    while not manifest.exists() and job.poll() is None:
        time.sleep(0.1)
    assert job.poll() is None, job.communicate()[1]
    workers = subprocess.run(
        ["pgrep", "-f", f"{runner} .*--run-dir {run}"], capture_output=True, text=True
    ).stdout.split()
    rank_pids = [int(p) for p in workers if int(p) != job.pid]
    assert rank_pids, "no worker processes found"
    os.kill(max(rank_pids), signal.SIGKILL)  # the later-started worker: rank 1
    _, err = job.communicate(timeout=300)
    assert job.returncode != 0, "the job went on without a rank"
    epoch = load_checkpoint(run, "last", Autoencoder(AutoencoderConfig(4, (32,)), (1, 28, 28)))[
        "epoch"
    ]
    assert epoch < 1000
    # The same number of processes, then one: both continue the run.
    code, _, err = genzoo(runner, data_dir, "resume", str(run), "--epochs", str(epoch + 1), nproc=2)
    assert code == 0, err
    code, _, err = genzoo(runner, data_dir, "resume", str(run), "--epochs", str(epoch + 2))
    assert code == 0, err
    assert [m["epoch"] for m in metrics(run)] == list(range(1, epoch + 3))


def test_a_gan_trains_its_two_players_in_two_processes(
    data_dir: Path, tmp_path: Path, runner: Path
) -> None:
    run = tmp_path / "gan"
    flags = ["--epochs", "2", "--batch-size", "16", "--val-size", "20", "--d-steps", "2"]
    sizes = ["--gen-hidden", "16,32", "--disc-hidden", "32", "--noise-dim", "4"]
    code, _, err = genzoo(
        runner, data_dir, "train", "gan", "--run-dir", str(run), *flags, *sizes, nproc=2
    )
    assert code == 0, err
    lines = metrics(run)
    assert len(lines) == 2 and all("train_g_loss" in line for line in lines)


def test_a_failed_launch_says_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    launched = []
    monkeypatch.setattr(distributed, "launch", lambda n, argv: launched.append(argv) or 1)
    run = tmp_path / "run"
    code = cli.main(["train", "vae", "--nproc", "2", "--epochs", "1", "--run-dir", str(run)])
    assert code == 1
    assert launched == [["train", "vae", "--epochs", "1", "--run-dir", str(run)]]
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"continue with genzoo resume {run} --nproc 2")
    assert len(err.splitlines()) == 1


def test_sigterm_stops_every_rank_with_a_checkpoint_and_the_run_continues_exactly(
    tmp_path: Path,
) -> None:
    # Through the launcher a user runs (python -m genzoo: a folder dataset needs no
    # registering), which passes the signal on to torchrun and so to every rank.
    write_images(tmp_path / "images", 40)
    flags = [
        "--dataset", f"folder:{tmp_path / 'images'}", "--batch-size", "4", "--hidden", "32",
        "--latent-dim", "4", "--binarize", "threshold", "--sample-every", "1000",
        "--device", "cpu", "--nproc", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENZOO_CACHE": str(tmp_path / "cache")}

    def genzoo_m(*argv: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "genzoo", *argv], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def succeeds(*argv: str) -> None:
        process = genzoo_m(*argv)
        _, err = process.communicate()
        assert process.returncode == 0, err

    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    job = genzoo_m("train", "ae", "--run-dir", str(stopped), "--epochs", "1000", *flags)
    out, err = sigterm_once_there(job, stopped / "checkpoints" / "last.json")
    assert job.returncode == INTERRUPTED, err
    assert not re.search(r'File ".*genzoo', err), err  # torchrun's report only, no rank's
    said = re.search(
        r"after epoch (\d+)(?: and (\d+) batches of the next)?\. "
        r"Continue with: genzoo resume (\S+) --nproc 2$",
        out,
        re.MULTILINE,
    )
    assert said and said[3] == str(stopped), out
    model = Autoencoder(AutoencoderConfig(4, (32,)), (1, 28, 28))
    state = load_checkpoint(stopped, "last", model)  # the checkpoint the stop wrote
    assert (state["epoch"], state["step"]) == (int(said[1]), int(said[2] or 0))
    epochs = str(state["epoch"] + 2)
    succeeds("resume", str(stopped), "--epochs", epochs, "--nproc", "2")
    succeeds("train", "ae", "--run-dir", str(whole), "--epochs", epochs, *flags)
    assert same_weights(stopped, whole)
