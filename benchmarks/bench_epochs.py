"""What an epoch of every family costs: ``genzoo train NAME --epochs 1`` at its defaults.

For each arm of bench_families.py (every family at its defaults, the conv GAN, Burda et
al.'s presets at their batch of 20) it runs the command as a user would, in a fresh
folder, and prints from its metrics.jsonl the last epoch's training passes (``seconds``)
and the whole epoch with its validation, probes and figures (``wall_seconds``), and the
command's wall time. A family compiled by default trains two epochs, the first of which
compiles (its passes printed too). The threads are the command's own (set
``OMP_NUM_THREADS`` to choose).

    cd benchmarks && GENZOO_DATA=../../shared/data python bench_epochs.py [--families vae draw]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from bench_families import ARMS

from genzoo.api import run_config


def train_flags(name: str) -> list[str]:
    """The ``genzoo train`` arguments of an arm: its family, then its settings as flags."""
    family, settings = ARMS[name]
    flags = [family]
    for field, value in settings.items():
        flags += [f"--{field.replace('_', '-')}", str(value)]
    return flags


def timed_epochs(name: str, epochs: int) -> tuple[list[dict], float]:
    """The metrics of ``epochs`` epochs of the arm's command, and its wall seconds."""
    with tempfile.TemporaryDirectory() as run_dir:
        command = ["genzoo", "train", *train_flags(name), "--epochs", str(epochs)]
        start = time.perf_counter()
        subprocess.run(
            [*command, "--run-dir", run_dir], check=True, stdout=subprocess.DEVNULL, env=os.environ
        )
        seconds = time.perf_counter() - start
        lines = Path(run_dir, "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="*", choices=tuple(ARMS), default=tuple(ARMS))
    args = parser.parse_args()
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{threads} threads; seconds"
    )
    print(f"{'arm':<10}{'passes':>9}{'epoch':>9}{'1st passes':>12}{'command':>10}")
    for name in args.families:
        compiled = run_config(*ARMS[name]).train.compile
        metrics, command = timed_epochs(name, 2 if compiled else 1)
        last = metrics[-1]
        first = f"{metrics[0]['seconds']:.1f}" if compiled else ""
        print(
            f"{name:<10}{last['seconds']:>9.1f}{last['wall_seconds']:>9.1f}"
            f"{first:>12}{command:>10.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
