"""Folder datasets (--dataset folder:PATH): the user's own PNG/JPEG images, grey or RGB,
written here by the tests; and the families trained on them through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genzoo import data as gdata
from genzoo import folders
from genzoo.cli import main
from genzoo.errors import GenzooError


def write_images(
    folder: Path, n: int, size: int = 28, mode: str = "L", suffix: str = ".png", seed: int = 0
) -> list[np.ndarray]:
    """n random images of size x size in ``mode`` (L or RGB); their pixels, as written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (size, size) if mode == "L" else (size, size, 3)
    written = []
    for i in range(n):
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        Image.fromarray(pixels, mode).save(folder / f"img{i:03d}{suffix}")
        written.append(pixels)
    return written


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENZOO_CACHE", str(tmp_path / "cache"))


def test_grey_images_are_read_exactly_and_unlabelled(tmp_path: Path) -> None:
    written = write_images(tmp_path / "faces", 5)
    images, labels, classes = folders.read_folder(tmp_path / "faces")
    assert images.shape == (5, 1, 28, 28) and labels is None and classes == []
    expected = torch.from_numpy(np.stack(written)).float()[:, None] / 255
    torch.testing.assert_close(images, expected)


def test_class_subfolders_give_labels_in_sorted_order(tmp_path: Path) -> None:
    write_images(tmp_path / "pets" / "dog", 2, seed=1)
    write_images(tmp_path / "pets" / "cat", 3, seed=2)
    _, labels, classes = folders.read_folder(tmp_path / "pets")
    assert classes == ["cat", "dog"]
    assert labels.tolist() == [0, 0, 0, 1, 1]


def test_rgb_is_kept_and_resized_on_request(tmp_path: Path) -> None:
    written = write_images(tmp_path / "rgb", 2, size=32, mode="RGB")
    images, _, _ = folders.read_folder(tmp_path / "rgb", channels=3)
    assert images.shape == (2, 3, 32, 32)
    torch.testing.assert_close(images[0, :, 5, 7] * 255, torch.tensor(written[0][5, 7]).float())
    grey, _, _ = folders.read_folder(tmp_path / "rgb", channels=1, image_size=16)
    assert grey.shape == (2, 1, 16, 16)


def test_the_conversion_is_cached_by_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_images(tmp_path / "f", 3)
    first, _, _ = folders.read_folder(tmp_path / "f")

    def no_decoding(*args):
        raise AssertionError("decoded again although the folder did not change")

    monkeypatch.setattr(folders, "read_image", no_decoding)
    torch.testing.assert_close(folders.read_folder(tmp_path / "f")[0], first)
    write_images(tmp_path / "f", 1, seed=9)  # img000.png now holds other pixels
    with pytest.raises(AssertionError, match="decoded again"):
        folders.read_folder(tmp_path / "f")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.mkdir(), "holds no PNG or JPEG images"),
        (lambda d: None, "is not a folder"),
        (
            lambda d: (write_images(d, 2), write_images(d / "x", 1, size=20, suffix=".jpg")),
            "lies beside class subfolders",
        ),
        (
            lambda d: (write_images(d, 2), write_images(d, 1, size=20, suffix=".jpg")),
            r"img000.png is 28x28 but .*img000.jpg is 20x20: give --image-size",
        ),
        (
            lambda d: (write_images(d, 2), (d / "bad.png").write_bytes(b"not a png")),
            r"cannot read the image .*bad.png",
        ),
    ],
)
def test_bad_folders_name_the_problem(tmp_path: Path, make, message: str) -> None:
    folder = tmp_path / "images"
    make(folder)
    with pytest.raises(GenzooError, match=message):
        folders.read_folder(folder)


def test_splits_are_a_tenth_each_and_the_same_every_time(tmp_path: Path) -> None:
    write_images(tmp_path / "f", 40)
    data = gdata.load_data(f"folder:{tmp_path / 'f'}", "none")
    assert (len(data.train), len(data.val), len(data.test)) == (32, 4, 4)
    again = gdata.load_data(f"folder:{tmp_path / 'f'}", "none", val_size=2)
    torch.testing.assert_close(again.test.images, data.test.images)
    assert len(again.val) == 2


def test_folder_only_flags_and_unknown_datasets_are_refused(data_dir: Path) -> None:
    with pytest.raises(GenzooError, match="apply to --dataset folder:PATH only"):
        gdata.load_data("mnist", "none", val_size=20, channels=3)
    with pytest.raises(GenzooError, match="unknown dataset 'cifar'"):
        gdata.load_data("cifar", "none")


FOLDER_RUNS = {
    "vae": ["--hidden", "16", "--latent-dim", "2"],
    "realnvp": [
        *("--width", "4", "--depth", "1", "--n-couplings", "1", "--n-scales", "2"),
        "--no-compile",
    ],
    "gan": ["--noise-dim", "4", "--gen-hidden", "8,8", "--disc-hidden", "8"],
    "gan-conv": ["--arch", "conv", "--conv-width", "4", "--noise-dim", "4"],
}


@pytest.mark.parametrize("model", FOLDER_RUNS)
def test_families_train_on_a_folder_of_rgb_images(model: str, tmp_path: Path) -> None:
    write_images(tmp_path / "rgb" / "a", 12, size=32, mode="RGB", seed=3)
    write_images(tmp_path / "rgb" / "b", 12, size=32, mode="RGB", seed=4)
    run = tmp_path / model
    family = model.split("-")[0]
    argv = ["train", family, "--dataset", f"folder:{tmp_path / 'rgb'}", "--channels", "3"]
    common = ["--epochs", "1", "--batch-size", "8", "--device", "cpu", "--run-dir", str(run)]
    assert main([*argv, *common, *FOLDER_RUNS[model]]) == 0
    assert main(["sample", str(run), "-n", "2", "-o", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (2, 3, 32, 32)
    assert (run / "figures" / "samples.png").exists()
    assert json.loads((run / "config.json").read_text())["train"]["channels"] == 3


def test_nproc_launches_two_processes_on_a_folder(tmp_path: Path) -> None:
    write_images(tmp_path / "grey", 40)
    run = tmp_path / "run"
    argv = ["train", "vae", "--dataset", f"folder:{tmp_path / 'grey'}", "--nproc", "2"]
    flags = ["--epochs", "2", "--batch-size", "8", "--hidden", "16", "--latent-dim", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "genzoo", *argv, *flags, "--device", "cpu", "--run-dir", str(run)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "on 2 processes (cpu)" in result.stdout
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def write_decompression_bomb(path: Path, side: int) -> None:
    """A PNG of a few bytes whose header claims side x side pixels: a 1 x 1 image with its
    IHDR chunk's width and height (and so its CRC) rewritten."""
    Image.new("L", (1, 1)).save(path)
    png = bytearray(path.read_bytes())
    # The signature (8 bytes), then IHDR: length (4), type (4), width and height (4 each).
    png[16:24] = side.to_bytes(4, "big") * 2
    png[29:33] = zlib.crc32(png[12:29]).to_bytes(4, "big")  # over the type and the data
    path.write_bytes(png)


@pytest.mark.parametrize("side", [10_000, 30_000])  # Pillow's warning, then its refusal
def test_a_decompression_bomb_is_one_line_naming_it(
    side: int, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_images(tmp_path / "f", 10)
    bomb = tmp_path / "f" / "bomb.png"
    write_decompression_bomb(bomb, side)
    assert bomb.stat().st_size < 100
    argv = ["train", "vae", "--dataset", f"folder:{tmp_path / 'f'}", "--device", "cpu"]
    assert main([*argv, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"genzoo: error: cannot read the image {bomb} (")
    assert f"({side * side} pixels) exceeds limit" in err  # Pillow read the header's size
    assert err.endswith("; fix or remove it\n") and err.count("\n") == 1
