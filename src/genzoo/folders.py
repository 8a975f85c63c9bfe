"""A folder of the user's own images as a dataset: ``--dataset folder:PATH``.

The images (PNG or JPEG) lie directly in the folder (no labels) or in one subfolder per
class (labels in the order of the subfolders' sorted names). They are converted once to
grey (C = 1) or RGB (C = 3), resized if asked, and cached as one tensor file in the cache
folder, keyed by the folder's content; ``folder_splits`` cuts them into train,
validation and test with one fixed shuffle. data.py's ``load_data`` makes its splits of
them (this module knows nothing of data.py).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm  # widgets in a notebook, text in a terminal

from genzoo.errors import GenzooError
from genzoo.files import atomic_write, cache_root

FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_SEED = 0  # the one shuffle that splits a folder into train / validation / test
DECOMPRESSION_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def is_folder_dataset(dataset: str) -> bool:
    return dataset.startswith(FOLDER_PREFIX)


def image_files(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """The images of a folder: directly in it (no labels), or in one subfolder per class
    (labels 0, 1, ... in the order of the subfolders' sorted names, which are returned)."""
    if not root.is_dir():
        raise GenzooError(f"{root} is not a folder; --dataset folder:PATH needs a folder of images")

    def images_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    classes = sorted(p for p in root.iterdir() if p.is_dir() and images_in(p))
    top = images_in(root)
    if classes and top:
        raise GenzooError(
            f"{top[0]} lies beside class subfolders in {root}: put every image in the "
            "subfolder of its class, or none in subfolders"
        )
    if classes:
        files = [(f, label) for label, c in enumerate(classes) for f in images_in(c)]
        return [f for f, _ in files], [label for _, label in files], [c.name for c in classes]
    if not top:
        raise GenzooError(f"{root} holds no PNG or JPEG images (nor subfolders with any)")
    return top, None, []


@contextmanager
def refusing_decompression_bombs() -> Iterator[None]:
    """Pillow warns of an image whose header claims more than MAX_IMAGE_PIXELS and refuses
    one above twice that, before it decodes a pixel; inside the block both raise (a
    decompression bomb: a few KB on disk that would take GBs of memory)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def read_image(path: Path, channels: int, image_size: int | None) -> np.ndarray:
    """One image as uint8 (C, H, W), grey (C = 1) or RGB (C = 3), resized to
    image_size x image_size if given."""
    try:
        with refusing_decompression_bombs(), Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if image_size is not None and img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, *DECOMPRESSION_BOMB) as err:
        raise GenzooError(f"cannot read the image {path} ({err}); fix or remove it") from None
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def folder_key(files: list[Path], root: Path, channels: int, image_size: int | None) -> str:
    """SHA-256 of the folder's content (every file's name and bytes) and the conversion."""
    digest = hashlib.sha256(f"channels={channels} size={image_size}".encode())
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def read_folder(
    root: Path, channels: int = 1, image_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """A folder's images (N, C, H, W) float in [0, 1], labels (N,) or None, class names.

    Converted once and cached as a tensor file in the cache folder, keyed by the
    folder's content: a changed, added or removed image makes a new conversion.
    """
    files, labels, classes = image_files(root)
    key = folder_key(files, root, channels, image_size)
    cache = cache_root() / "folders" / f"{key}.safetensors"
    try:
        tensors = load_file(cache)
        return tensors["images"].float() / 255, tensors.get("labels"), classes
    except (FileNotFoundError, SafetensorError):  # not converted yet, or a damaged file
        pass
    pixels = []
    for path in tqdm(files, desc=f"reading {root.name}", leave=False, disable=None):
        image = read_image(path, channels, image_size)
        if pixels and image.shape != pixels[0].shape:
            raise GenzooError(
                f"{path} is {image.shape[2]}x{image.shape[1]} but {files[0]} is "
                f"{pixels[0].shape[2]}x{pixels[0].shape[1]}: give --image-size N to resize "
                "every image to N x N"
            )
        pixels.append(image)
    tensors = {"images": torch.from_numpy(np.stack(pixels))}  # (N, C, H, W) uint8
    if labels is not None:
        tensors["labels"] = torch.tensor(labels, dtype=torch.int64)
    metadata = {"folder": str(root), "classes": json.dumps(classes)}
    atomic_write(cache, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return tensors["images"].float() / 255, tensors.get("labels"), classes


ImagesLabels = tuple[torch.Tensor, torch.Tensor | None]  # images (N, C, H, W), labels (N,)


def folder_splits(
    root: Path, channels: int, image_size: int | None, val_size: int
) -> tuple[ImagesLabels, ImagesLabels, ImagesLabels]:
    """A folder split at random (seed FOLDER_SEED) into validation and test, a tenth each
    (at least one image; fewer validation images if ``val_size`` is smaller), and train:
    the (images, labels) of train, validation and test, in that order."""
    images, labels, _ = read_folder(root, channels, image_size)
    n = len(images)
    tenth = max(1, n // 10)
    n_val = min(val_size, tenth)
    if n - n_val - tenth < 1:
        raise GenzooError(f"{root} holds {n} images: too few to split (at least 3 needed)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(FOLDER_SEED))

    def split(index: torch.Tensor) -> ImagesLabels:
        return images[index], None if labels is None else labels[index]

    test, val, train = order[:tenth], order[tenth : tenth + n_val], order[tenth + n_val :]
    return split(train), split(val), split(test)
