"""Datasets: MNIST and Fashion-MNIST (idx, gzip), static binarized MNIST (amat), and a
folder of the user's own images (``folder:PATH``, read by folders.py).

Files live in a data folder with one subfolder per dataset and the original file
names (``mnist/train-images-idx3-ubyte.gz``, ``binarized-mnist/binarized_mnist_test.amat``,
...). The folder is ``--data-dir``, else ``$GENZOO_DATA``, else a cache folder; missing
files are downloaded into it from the public mirrors, atomically and checksum-verified.
Every file is checked (size, MD5, format) before a tensor is made from it.

All images are kept in memory as one float tensor per split, shape (N, C, H, W)
((N, 1, 28, 28) for the MNIST files), values in [0, 1]; batches are index slices
(``batches``). Binarization modes:

- ``dynamic``: a fresh Bernoulli(x) draw each time a training batch is formed
  (Burda et al. 2015); validation and test sets are binarized once with a fixed seed;
- ``static``: the fixed binarization of Larochelle & Murray (2011), 50k/10k/10k;
- ``threshold``: x > 0.5;
- ``none``: grey levels in [0, 1].
"""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm  # widgets in a notebook, text in a terminal

from genzoo.errors import GenzooError
from genzoo.files import cache_root, file_digest
from genzoo.folders import FOLDER_PREFIX, folder_splits, is_folder_dataset

BINARIZE_MODES = ("dynamic", "static", "threshold", "none")
# The fixed draws that binarize the evaluation sets once (dynamic binarization), and the
# training images that stand in as "samples" for the reference row of a quality table.
EVAL_BINARIZE_SEEDS = {"val": 1234, "test": 1235, "reference": 1236}


def binarization_note(binarize: str, split: str) -> str:
    """How the images of ``split`` were binarized, as results state it."""
    if binarize == "dynamic":
        seed = EVAL_BINARIZE_SEEDS[split]
        return f"dynamic (evaluation set drawn once, seed {seed})"
    return binarize


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int  # bytes
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]  # base URLs, tried in order


_IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_files(sizes: tuple[int, ...], md5s: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(n, s, m) for n, s, m in zip(_IDX_NAMES, sizes, md5s, strict=True))


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        files=_idx_files(
            (9912422, 28881, 1648877, 4542),
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": DatasetSpec(
        files=_idx_files(
            (26421880, 29515, 4422102, 5148),
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "binarized-mnist": DatasetSpec(
        files=(
            RemoteFile("binarized_mnist_train.amat", 78400000, "db28b1a6ae0fe70cbd3da91acf46e477"),
            RemoteFile("binarized_mnist_valid.amat", 15680000, "bf37822a04e94123630de6a7dfd9c9ef"),
            RemoteFile("binarized_mnist_test.amat", 15680000, "14e41ae11040adba6ab8cb291eda0dd8"),
        ),
        mirrors=("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",),
    ),
}

IMAGE_SHAPE = (1, 28, 28)


# ----------------------------------------------------------------------------- files


def default_data_dir() -> Path:
    """``$GENZOO_DATA`` if set, else the ``data`` folder of the cache."""
    if os.environ.get("GENZOO_DATA"):
        return Path(os.environ["GENZOO_DATA"]).expanduser()
    return cache_root() / "data"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def verify_file(path: Path, spec: RemoteFile) -> None:
    """Raise GenzooError unless ``path`` has the expected size and MD5."""
    if not path.is_file():
        raise GenzooError(f"{path} is missing; run `genzoo data download` or fix --data-dir")
    size = path.stat().st_size
    if size != spec.size:
        raise GenzooError(
            f"{path} has {size} bytes, expected {spec.size} (truncated or wrong file); "
            "delete it and run `genzoo data download`"
        )
    digest = file_digest(path)
    if digest != spec.md5:
        raise GenzooError(
            f"{path} has MD5 {digest}, expected {spec.md5} (corrupt or wrong file); "
            "delete it and run `genzoo data download`"
        )


def _download_one(spec: RemoteFile, mirrors: tuple[str, ...], target: Path) -> None:
    """Fetch ``spec`` from the first mirror that works; write to a temp file, verify, rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    failures = []
    for base in mirrors:
        url = base + spec.name
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
                bar = tqdm(total=spec.size, unit="B", unit_scale=True, desc=spec.name, leave=False)
                for block in iter(lambda r=response: r.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
                bar.close()
            verify_file(partial, spec)
        except (urllib.error.URLError, OSError, GenzooError) as err:
            failures.append(f"{url}: {err}")
            partial.unlink(missing_ok=True)
            continue
        os.replace(partial, target)  # atomic: a reader never sees a half-written file
        return
    raise GenzooError(
        f"could not download {spec.name} ({'; '.join(failures)}). Without internet, copy the "
        f"dataset files into a folder laid out like <dir>/{target.parent.name}/{spec.name} and "
        "point GENZOO_DATA or --data-dir at <dir>"
    )


def dataset_paths(name: str, data_dir: Path, download: bool = True) -> dict[str, Path]:
    """Checked paths of every file of dataset ``name``; missing files are downloaded first."""
    if name not in DATASETS:
        raise GenzooError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    paths = {}
    for f in spec.files:
        path = data_dir / name / f.name
        if not path.exists() and download:
            _download_one(f, spec.mirrors, path)
        verify_file(path, f)
        paths[f.name] = path
    return paths


@dataclass(frozen=True)
class DatasetState:
    """What a data folder holds of one dataset: its files missing, and its damaged ones
    (with the reason of each)."""

    name: str
    n_files: int
    missing: tuple[str, ...]
    damaged: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.damaged

    @property
    def absent(self) -> bool:
        return len(self.missing) == self.n_files

    def describe(self) -> str:
        """One line: ok, not downloaded, or what is wrong (each damaged file's reason on
        the lines below it)."""
        if self.complete:
            return f"{self.name}: ok ({self.n_files} files, sizes and MD5s checked)"
        if self.absent:
            return f"{self.name}: not downloaded"
        problems = [f"missing {', '.join(self.missing)}"] if self.missing else []
        problems += [f"{len(self.damaged)} damaged"] if self.damaged else []
        lines = [f"{self.name}: incomplete: {'; '.join(problems)}"]
        return "\n".join(lines + [f"  BAD: {reason}" for reason in self.damaged])


def dataset_state(name: str, data_dir: Path) -> DatasetState:
    """Check every file of dataset ``name`` in ``data_dir`` (size and MD5); download nothing."""
    missing, damaged = [], []
    files = DATASETS[name].files
    for spec in files:
        path = data_dir / name / spec.name
        if not path.exists():
            missing.append(spec.name)
            continue
        try:
            verify_file(path, spec)
        except GenzooError as err:
            damaged.append(str(err))
    return DatasetState(name, len(files), tuple(missing), tuple(damaged))


# ----------------------------------------------------------------------------- readers

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file (LeCun's format: big-endian header, then raw values)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise GenzooError(
            f"{path} is not a readable gzip file ({err}); delete it and re-download"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise GenzooError(f"{path} does not start with an idx header of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise GenzooError(
            f"{path} holds {len(raw)} bytes after decompression, its header {shape} says "
            f"{expected}: truncated or corrupt; delete it and re-download"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_amat(path: Path) -> np.ndarray:
    """Read a binarized-MNIST ``.amat`` file: one image a line, 784 '0'/'1' separated by spaces.

    Every value is one character followed by one separator, so the file is exactly
    2 bytes per pixel and the digits sit at the even offsets: parsed without a text loop.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    pixels = 28 * 28
    if raw.size % (2 * pixels):
        raise GenzooError(f"{path} is not a whole number of 784-value lines: truncated or corrupt")
    rows = raw.reshape(-1, pixels, 2)  # (N, 784, [digit, separator])
    separators = np.full(pixels, ord(" "), dtype=np.uint8)
    separators[-1] = ord("\n")
    digits = rows[..., 0] - ord("0")
    if (rows[..., 1] != separators).any() or (digits > 1).any():
        raise GenzooError(f"{path} has a line that is not 784 values of 0/1: corrupt file")
    return digits.astype(np.uint8)


# ----------------------------------------------------------------------------- splits


@dataclass
class Split:
    """One split in memory: images (N, 1, 28, 28) float in [0, 1], labels (N,) or None."""

    images: torch.Tensor
    labels: torch.Tensor | None
    # Found once for ``bernoulli_draw``: (the tensor they were found in, its pixels at 1
    # as a flat bool mask, the flat indices and values of its grey pixels, 0 < x < 1).
    _levels: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __len__(self) -> int:
        return self.images.shape[0]

    def window(self, start: int, n: int | None) -> Split:
        """Images start .. start + n - 1 and their labels (to the end for None)."""
        if start == 0 and n is None:
            return self  # the whole split, with what bernoulli_draw found in it
        end = None if n is None else start + n
        labels = None if self.labels is None else self.labels[start:end]
        return Split(self.images[start:end], labels)

    def head(self, n: int | None) -> Split:
        """The first ``n`` images and their labels (all of them for None)."""
        return self.window(0, n)

    def bernoulli_draw(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh binary copy of the images, each pixel ~ Bernoulli(x): bool (N, C, H, W),
        drawn from ``generator`` (torch's global one if None).

        Pixels at 0 or 1 are their own draw; only the grey ones (a fifth of MNIST's) take
        uniform noise, which halves the cost of a draw over noise for every pixel.
        """
        if self._levels is None or self._levels[0] is not self.images:
            flat = self.images.reshape(-1)
            index = ((flat > 0) & (flat < 1)).nonzero().squeeze(1)
            self._levels = (self.images, flat == 1, index, flat[index])
        _, ones, index, p = self._levels
        draw = ones.clone()
        draw[index] = torch.rand(p.shape, generator=generator, device=p.device) < p
        return draw.view_as(self.images)

    def to(self, device: torch.device) -> Split:
        labels = None if self.labels is None else self.labels.to(device)
        return Split(self.images.to(device), labels)


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    binarize: str  # how ``batches`` treats ``train``; val and test are already final

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])

    def to(self, device: torch.device) -> Data:
        return Data(self.train.to(device), self.val.to(device), self.test.to(device), self.binarize)


def _idx_split(paths: dict[str, Path], prefix: str) -> Split:
    images = read_idx(paths[f"{prefix}-images-idx3-ubyte.gz"])  # (N, 28, 28) uint8
    labels = read_idx(paths[f"{prefix}-labels-idx1-ubyte.gz"])  # (N,) uint8
    if images.shape[0] != labels.shape[0]:
        raise GenzooError(f"{prefix} images and labels disagree in count")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def _binarize_once(split: Split, mode: str, seed: int) -> Split:
    if mode == "dynamic":
        generator = torch.Generator().manual_seed(seed)
        return Split(torch.bernoulli(split.images, generator=generator), split.labels)
    if mode == "threshold":
        return Split((split.images > 0.5).float(), split.labels)
    return split


def check_dataset_name(dataset: str) -> None:
    """Raise GenzooError unless ``dataset`` is a known dataset or ``folder:PATH``."""
    known = [d for d in DATASETS if d != "binarized-mnist"]
    if dataset not in known and not (is_folder_dataset(dataset) and dataset[len(FOLDER_PREFIX) :]):
        raise GenzooError(
            f"unknown dataset {dataset!r}; choose {', '.join(known)} or folder:PATH "
            "(a folder of PNG/JPEG images)"
        )


def load_data(
    dataset: str = "mnist",
    binarize: str = "dynamic",
    val_size: int = 10000,
    data_dir: str | Path | None = None,
    train_size: int | None = None,
    channels: int = 1,
    image_size: int | None = None,
    train_on_val: bool = False,
) -> Data:
    """Load a dataset into memory as train / validation / test splits.

    MNIST-like idx datasets: the last ``val_size`` of the 60k training images are the
    validation split. ``binarize="static"`` reads the Larochelle & Murray files instead
    (their own 50k/10k/10k split, no labels). ``folder:PATH``: the images of PATH as
    ``channels`` (1 grey, 3 RGB), resized to ``image_size`` if given, split by
    ``folders.folder_splits``. ``train_size`` keeps only the first that many training images
    (validation and test stay whole). ``train_on_val``: the validation images are trained on
    too (after the others), as papers that held none out did.
    """
    check_dataset_name(dataset)
    if is_folder_dataset(dataset):
        if binarize == "static":
            raise GenzooError("--binarize static exists only for --dataset mnist")
        root = Path(dataset[len(FOLDER_PREFIX) :]).expanduser()
        splits = (Split(x, y) for x, y in folder_splits(root, channels, image_size, val_size))
        data = _binarized(_val_trained_on(Data(*splits, "none"), train_on_val), binarize)
    elif channels != 1 or image_size is not None:
        raise GenzooError("--channels and --image-size apply to --dataset folder:PATH only")
    else:
        data = _load_splits(dataset, binarize, val_size, resolve_data_dir(data_dir), train_on_val)
    if train_size is not None:
        if not 0 < train_size <= len(data.train):
            raise GenzooError(
                f"--train-size must be between 1 and {len(data.train)}, got {train_size}"
            )
        data = Data(data.train.head(train_size), data.val, data.test, binarize)
    return data


def _val_trained_on(data: Data, train_on_val: bool) -> Data:
    """With ``train_on_val``, the training split followed by the validation images (before
    any binarization: dynamic draws them afresh like the rest)."""
    if not train_on_val:
        return data
    val, train = data.val, data.train
    labels = None if train.labels is None else torch.cat([train.labels, val.labels])
    train = Split(torch.cat([train.images, val.images]), labels)
    return Data(train, val, data.test, data.binarize)


def _load_splits(
    dataset: str, binarize: str, val_size: int, root: Path, train_on_val: bool = False
) -> Data:
    if binarize not in BINARIZE_MODES:
        raise GenzooError(f"unknown binarization {binarize!r}; choose one of {BINARIZE_MODES}")
    if binarize == "static":
        if dataset != "mnist":
            raise GenzooError("--binarize static exists only for --dataset mnist")
        paths = dataset_paths("binarized-mnist", root)
        splits = [
            Split(
                torch.from_numpy(read_amat(paths[f"binarized_mnist_{s}.amat"]))
                .float()
                .view(-1, *IMAGE_SHAPE),
                None,
            )
            for s in ("train", "valid", "test")
        ]
        return _val_trained_on(Data(*splits, binarize=binarize), train_on_val)

    paths = dataset_paths(dataset, root)
    full, test = _idx_split(paths, "train"), _idx_split(paths, "t10k")
    if not 0 < val_size < len(full):
        raise GenzooError(f"--val-size must be between 1 and {len(full) - 1}, got {val_size}")
    cut = len(full) - val_size
    train = Split(full.images[:cut], full.labels[:cut])
    val = Split(full.images[cut:], full.labels[cut:])
    return _binarized(_val_trained_on(Data(train, val, test, "none"), train_on_val), binarize)


def _binarized(data: Data, binarize: str) -> Data:
    """Grey-level splits binarized as ``binarize`` says: training images now only when
    thresholded, evaluation images once, with their fixed seeds."""
    train = _binarize_once(data.train, binarize, 0) if binarize == "threshold" else data.train
    val = _binarize_once(data.val, binarize, EVAL_BINARIZE_SEEDS["val"])
    test = _binarize_once(data.test, binarize, EVAL_BINARIZE_SEEDS["test"])
    return Data(train, val, test, binarize)


def balanced_subset(labels: torch.Tensor, n: int, classes: int, seed: int) -> torch.Tensor:
    """The indices (n,), ascending, of ``n`` examples, ``n / classes`` of each class
    0 .. classes - 1, drawn from ``labels`` (N,) with a generator seeded by ``seed``: the
    labelled images of a semi-supervised run (``vae --labels N``), the same for a seed."""
    if n > len(labels):
        raise GenzooError(
            f"--labels {n} is more than the {len(labels)} training images: give at most "
            f"{len(labels)}, or --labels all"
        )
    if n % classes:
        raise GenzooError(
            f"--labels {n} does not divide among the {classes} classes: give a multiple of "
            f"{classes} (the same number of labelled images of each class)"
        )
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for c in range(classes):
        members = (labels == c).nonzero().squeeze(1)
        if len(members) < n // classes:
            raise GenzooError(
                f"--labels {n} needs {n // classes} images of each class, and the training "
                f"set has {len(members)} of class {c}: give fewer labels or more images"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[: n // classes]])
    return torch.cat(chosen).sort().values


def batches(
    split: Split,
    batch_size: int,
    binarize: str = "none",
    shuffle: bool = False,
    skip: int = 0,
    generator: torch.Generator | None = None,
    labels: bool = False,
) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Image batches (B, C, H, W) as index slices of the in-memory tensor; with
    ``labels``, (images, their labels (B,)) pairs.

    ``binarize="dynamic"`` draws the whole split once per call (one pass, one epoch), so
    every image is a fresh Bernoulli draw each time it is seen. Shuffling and that draw
    take ``generator`` (torch's global one if None, on the images' device) when this
    function is called, not when the first batch is taken, so a seeded run, and a
    resumed one that restores that generator, sees the same batches; ``skip`` leaves out
    the first batches of the pass (a resume within an epoch).
    """
    dynamic = binarize == "dynamic"
    images = split.bernoulli_draw(generator) if dynamic else split.images
    n = images.shape[0]
    order = torch.randperm(n, generator=generator, device=images.device) if shuffle else None

    if labels and split.labels is None:
        raise GenzooError("this split has no labels to give with its images")

    def rows(start: int) -> torch.Tensor | slice:
        return order[start : start + batch_size] if shuffle else slice(start, start + batch_size)

    def batch(start: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = images[rows(start)]
        x = x.float() if dynamic else x  # the draw is bool
        return (x, split.labels[rows(start)]) if labels else x

    return (batch(start) for start in range(skip * batch_size, n, batch_size))
