"""TensorBoard event files beside metrics.jsonl (``--tensorboard``), for users who watch
their runs there: every number of an epoch's metrics line (the learning rate among them)
as a scalar, and the sample grids as images, through ``torch.utils.tensorboard``.
metrics.jsonl stays the record; these files are a copy for the viewer, in RUN/tensorboard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genzoo.errors import GenzooError
from genzoo.plots import image_grid


class Board:
    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's module needs the tensorboard package
            raise GenzooError(
                "--tensorboard needs the tensorboard package: pip install 'genzoo[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def epoch(self, record: dict[str, Any]) -> None:
        """Every number of one metrics.jsonl line, at its epoch."""
        for name, value in record.items():
            if name != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(name, value, record["epoch"])
        self.writer.flush()

    def samples(self, images: torch.Tensor, epoch: int) -> None:
        """A grid of samples (N, C, H, W) in [0, 1] as the image of ``epoch``."""
        grid = torch.from_numpy(image_grid(images, 8))
        self.writer.add_image("samples", grid, epoch, dataformats="HW" if grid.ndim == 2 else "HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
