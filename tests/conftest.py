"""Tiny synthetic datasets, written by the tests in the real file formats."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from genzoo import data as gdata
from genzoo.config import TrainConfig
from genzoo.models.vae import VAEConfig
from genzoo.runs import RunConfig

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker: the workers share the machine's cores (pyproject: -n 2), and
    # two threads each would only contend.
    torch.set_num_threads(1)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped idx file (magic 0x0000080N, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_amat(path: Path, binary: np.ndarray) -> None:
    """Write (N, 784) 0/1 values in the binarized-MNIST text format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(map(str, row)) + "\n" for row in binary.astype(int)))


def fake_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 images and (n,) labels: class c is a cross at offset 2c, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 40, size=(n, 28, 28))
    for i, c in enumerate(labels):
        images[i, 4 + 2 * c, 3:25] = 255
        images[i, 3:25, 4 + 2 * c] = 200
    return images.astype(np.uint8), labels.astype(np.uint8)


def register(monkeypatch: pytest.MonkeyPatch, name: str, folder: Path, mirrors=()) -> None:
    """Make genzoo expect the files in ``folder`` (their sizes and MD5s) for dataset ``name``."""
    files = tuple(
        gdata.RemoteFile(
            f.name,
            (folder / f.name).stat().st_size,
            hashlib.md5((folder / f.name).read_bytes()).hexdigest(),
        )
        for f in gdata.DATASETS[name].files
    )
    monkeypatch.setitem(gdata.DATASETS, name, gdata.DatasetSpec(files, tuple(mirrors)))


def write_fake_idx_dataset(folder: Path, n_train: int = 100, n_test: int = 30) -> None:
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = fake_digits(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder with a tiny fake MNIST (100 train, 30 test images) that genzoo accepts."""
    root = tmp_path / "data"
    write_fake_idx_dataset(root / "mnist")
    register(monkeypatch, "mnist", root / "mnist")
    monkeypatch.setenv("GENZOO_DATA", str(root))
    monkeypatch.setenv("GENZOO_CACHE", str(tmp_path / "cache"))  # never the user's cache
    return root


@pytest.fixture
def tiny_config() -> RunConfig:
    """A VAE small enough to train a few epochs on the fake data in well under a second."""
    return RunConfig(
        "vae",
        TrainConfig(epochs=3, batch_size=16, val_size=20, sample_every=2, patience=0),
        VAEConfig(latent_dim=2, hidden=(32,)),
    )


# Registers the tests' fake MNIST (folder in argv[1]) the way conftest.register does,
# then runs the CLI on the rest of argv: what the subprocess tests run (as
# `python -c RUNNER`, or as a script under torchrun).
RUNNER = """
import hashlib, sys
from pathlib import Path
from genzoo import data as gdata
from genzoo.cli import main
folder = Path(sys.argv[1])
files = tuple(
    gdata.RemoteFile(f.name, (folder / f.name).stat().st_size,
                     hashlib.md5((folder / f.name).read_bytes()).hexdigest())
    for f in gdata.DATASETS["mnist"].files
)
gdata.DATASETS["mnist"] = gdata.DatasetSpec(files, ())
sys.exit(main(sys.argv[2:]))
"""


LOCK_HOLDER = """
import sys
from pathlib import Path
from genzoo.runs import lock_run
lock_run(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.readline()
"""


@contextmanager
def _lock_held_by_another_process(run_dir: Path) -> Iterator[int]:
    """Another process holds ``run_dir``'s lock inside the block (its PID is yielded);
    it is killed after it, which must release the lock."""
    other = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout.readline().strip() == "locked"
        yield other.pid
    finally:
        other.kill()
        other.wait()


@pytest.fixture
def lock_held_elsewhere() -> Callable[[Path], AbstractContextManager[int]]:
    return _lock_held_by_another_process
