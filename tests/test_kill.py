"""SIGKILL a small training at random instants, resume it each time, and compare the end
with an uninterrupted run: on CPU the weights must be equal, bit for bit.

Kills come from outside after a random delay (before the first checkpoint, within an
epoch, between epochs) and from inside a checkpoint write (the GENZOO_KILL_AT_WRITE hook
of files.py: after a temporary file is written, before it is renamed). GENZOO_KILLS sets
how many (default 3 here; benchmarks/README.md reports a run with 50).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import RUNNER
from genzoo.models.vae import VAE, VAEConfig
from genzoo.runs import checkpoint_files, load_checkpoint

KILLS = int(os.environ.get("GENZOO_KILLS", "3"))
FLAGS = [
    "--epochs", str(10 * KILLS), "--sample-every", "1000", "--batch-size", "16",
    "--val-size", "20", "--hidden", "16",
    "--latent-dim", "2", "--lr-schedule", "cosine", "--checkpoint-minutes", "1e-9",
    "--device", "cpu",
]  # fmt: skip


def genzoo(
    data_dir: Path, *argv: str, kill_at_write: int | None = None, delay: float | None = None
):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_at_write is not None:
        env["GENZOO_KILL_AT_WRITE"] = str(kill_at_write)
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(data_dir / "mnist"), *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
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
