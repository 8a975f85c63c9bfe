"""Readers, checksums, downloads, splits and binarization, on files the tests write."""

from __future__ import annotations

import gzip
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fake_digits, register, write_amat, write_fake_idx_dataset, write_idx
from genzoo import data as gdata
from genzoo.errors import GenzooError


def test_idx_round_trip(tmp_path: Path) -> None:
    images, labels = fake_digits(7, seed=3)
    write_idx(tmp_path / "x.gz", images)
    write_idx(tmp_path / "y.gz", labels)
    np.testing.assert_array_equal(gdata.read_idx(tmp_path / "x.gz"), images)
    np.testing.assert_array_equal(gdata.read_idx(tmp_path / "y.gz"), labels)


def test_idx_truncated_or_short_payload_raises_naming_the_file(tmp_path: Path) -> None:
    images, _ = fake_digits(5, seed=0)
    path = tmp_path / "x.gz"
    write_idx(path, images)
    path.write_bytes(path.read_bytes()[:-40])  # cut the gzip stream
    with pytest.raises(GenzooError, match=r"x\.gz"):
        gdata.read_idx(path)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (5, 28, 28))
    with gzip.open(path, "wb") as f:  # a valid gzip whose payload is shorter than its header says
        f.write(header + images.tobytes()[:-10])
    with pytest.raises(GenzooError, match="truncated"):
        gdata.read_idx(path)


def test_amat_round_trip_and_corruption(tmp_path: Path) -> None:
    binary = (np.random.default_rng(0).random((4, 784)) > 0.5).astype(np.uint8)
    path = tmp_path / "b.amat"
    write_amat(path, binary)
    np.testing.assert_array_equal(gdata.read_amat(path), binary)
    text = path.read_bytes()
    path.write_bytes(text[:-6])
    with pytest.raises(GenzooError, match="truncated"):
        gdata.read_amat(path)
    path.write_bytes(text.replace(b"1", b"2", 1))
    with pytest.raises(GenzooError, match="corrupt"):
        gdata.read_amat(path)


def test_size_and_md5_mismatch_raise_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    spec = gdata.RemoteFile("f.bin", 3, "900150983cd24fb0d6963f7d28e17f72")  # md5("abc")
    gdata.verify_file(path, spec)
    with pytest.raises(GenzooError, match=r"f\.bin has MD5"):
        gdata.verify_file(path, gdata.RemoteFile("f.bin", 3, "0" * 32))
    with pytest.raises(GenzooError, match="truncated"):
        gdata.verify_file(path, gdata.RemoteFile("f.bin", 4, spec.md5))


def test_load_splits_shapes_and_labels(data_dir: Path) -> None:
    data = gdata.load_data("mnist", "none", val_size=20)
    assert data.train.images.shape == (80, 1, 28, 28)
    assert data.val.images.shape == (20, 1, 28, 28) and data.test.images.shape == (30, 1, 28, 28)
    assert data.train.images.dtype == torch.float32
    assert data.train.images.min() >= 0 and data.train.images.max() == 1
    assert data.val.labels.tolist() == [i % 10 for i in range(80, 100)]  # the last 20 of 100
    with pytest.raises(GenzooError, match="val-size"):
        gdata.load_data("mnist", "none", val_size=100)


def test_dynamic_binarization_fresh_per_draw_and_seeded(data_dir: Path) -> None:
    data = gdata.load_data("mnist", "dynamic", val_size=20)
    # Evaluation sets are drawn once, with a fixed seed: identical across loads.
    assert torch.equal(data.val.images, gdata.load_data("mnist", "dynamic", val_size=20).val.images)
    assert set(data.test.images.unique().tolist()) == {0.0, 1.0}

    def draw(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return next(gdata.batches(data.train, 80, "dynamic"))

    first, second = draw(0), draw(1)
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)  # a fresh Bernoulli draw each time
    assert torch.equal(first, draw(0))  # and reproducible under a seed
    # Each pixel is on with probability equal to its grey level.
    grey = data.train.images.mean()
    assert abs(first.mean() - grey) < 0.02


def test_bernoulli_draw_frequencies_match_grey_levels() -> None:
    levels = torch.tensor([0.0, 1.0, 0.1, 0.5, 0.9, 1 / 255])
    split = gdata.Split(levels.repeat(3, 1).view(3, 1, 2, 3), None)  # (3, 1, 2, 3)
    torch.manual_seed(0)
    draws = torch.stack([split.bernoulli_draw() for _ in range(20000)]).float()
    assert draws.shape == (20000, 3, 1, 2, 3)
    freq = draws.mean(0).view(3, 6)
    assert torch.all(freq[:, :2] == levels[:2])  # black and white pixels never flip
    # Binomial standard error is at most 0.5 / sqrt(20000) = 0.0035: allow 5 of them.
    assert torch.allclose(freq, levels.expand(3, 6), atol=0.018)
    # New images (the benchmark trims a split in place) are drawn from, not stale pixels.
    split.images = torch.ones(1, 1, 2, 3)
    assert split.bernoulli_draw().all()


def test_threshold_and_batches_cover_every_example_once(data_dir: Path) -> None:
    data = gdata.load_data("mnist", "threshold", val_size=20)
    assert set(data.train.images.unique().tolist()) == {0.0, 1.0}
    torch.manual_seed(0)
    seen = torch.cat(list(gdata.batches(data.train, 7, data.binarize, shuffle=True)))
    assert seen.shape == data.train.images.shape
    flat = lambda t: sorted(map(tuple, t.flatten(1).tolist()))  # noqa: E731
    assert flat(seen) == flat(data.train.images)


def test_fashion_mnist_reads_like_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_idx_dataset(tmp_path / "fashion-mnist", n_train=50, n_test=10)
    register(monkeypatch, "fashion-mnist", tmp_path / "fashion-mnist")
    data = gdata.load_data("fashion-mnist", "none", val_size=10, data_dir=tmp_path)
    assert len(data.train) == 40 and len(data.test) == 10


def test_static_binarized_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "binarized-mnist"
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("valid", 3), ("test", 2)):
        write_amat(folder / f"binarized_mnist_{split}.amat", rng.random((n, 784)) > 0.5)
    register(monkeypatch, "binarized-mnist", folder)
    data = gdata.load_data("mnist", "static", data_dir=tmp_path)
    assert [len(s) for s in (data.train, data.val, data.test)] == [6, 3, 2]
    assert data.train.labels is None and data.image_shape == (1, 28, 28)


def test_download_is_verified_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    write_fake_idx_dataset(mirror, n_train=20, n_test=10)
    register(monkeypatch, "mnist", mirror, mirrors=("file:///nowhere/", mirror.as_uri() + "/"))
    target = tmp_path / "cache"
    paths = gdata.dataset_paths("mnist", target)  # first mirror fails, second works
    assert sorted(p.name for p in (target / "mnist").iterdir()) == sorted(paths)
    assert not list(target.rglob("*.part"))
    # A mirror serving a wrong file leaves nothing behind and says so.
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    (target / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(GenzooError, match="GENZOO_DATA"):
        gdata.dataset_paths("mnist", target)
    assert not (target / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_offline_message_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(gdata.urllib.request, "urlopen", offline)
    with pytest.raises(GenzooError, match="--data-dir"):
        gdata.load_data("mnist", data_dir=tmp_path)
