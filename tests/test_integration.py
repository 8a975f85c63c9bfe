"""The real dataset files, read through GENZOO_DATA (``.ci/run`` points it at ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from genzoo import data as gdata

pytestmark = pytest.mark.integration

ROOT = Path(os.environ.get("GENZOO_DATA", "/nonexistent"))
needs = lambda name: pytest.mark.skipif(  # noqa: E731
    not (ROOT / name).is_dir(), reason=f"no {name}/ under GENZOO_DATA"
)

# Per-class counts of the MNIST training and test labels (LeCun et al.).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs("mnist")
def test_mnist_shapes_dtypes_checksums_and_label_counts() -> None:
    gdata.dataset_paths("mnist", ROOT, download=False)  # sizes and MD5s of all four files
    data = gdata.load_data("mnist", "none", val_size=10000, data_dir=ROOT)
    assert data.train.images.shape == (50000, 1, 28, 28)
    assert data.val.images.shape == (10000, 1, 28, 28)
    assert data.test.images.shape == (10000, 1, 28, 28)
    assert data.train.images.dtype == torch.float32 and data.train.labels.dtype == torch.int64
    assert data.train.images.min() == 0 and data.train.images.max() == 1
    train_and_val = torch.cat([data.train.labels, data.val.labels])
    assert torch.bincount(train_and_val).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(data.test.labels).tolist() == MNIST_TEST_COUNTS
    # Mean grey level of MNIST training images, a widely quoted constant (0.1307).
    assert abs(torch.cat([data.train.images, data.val.images]).mean().item() - 0.1307) < 1e-4


@needs("binarized-mnist")
def test_static_binarized_mnist_splits() -> None:
    data = gdata.load_data("mnist", "static", data_dir=ROOT)
    assert [len(s) for s in (data.train, data.val, data.test)] == [50000, 10000, 10000]
    assert set(data.test.images.unique().tolist()) == {0.0, 1.0}
    # Larochelle & Murray's test set is the MNIST test set, binarized: about 13% of pixels on.
    assert 0.12 < data.test.images.mean().item() < 0.14
