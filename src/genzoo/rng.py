"""Devices and random streams: where to compute, and generators that never disturb training.

Training draws from torch's global generator (shuffling, dynamic binarization, latent
samples), which checkpoints save and restore, so a resumed run sees the same numbers.
Validation, figures and evaluation draw from their own seeded generator inside
``isolated_rng``, so they neither change nor depend on the training stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from genzoo.errors import GenzooError

EVAL_SEED = 2024  # validation, figures and evaluation draw from this seed


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` (or None) is CUDA where a device is visible, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenzooError(
            "--device cuda was asked for but no CUDA device is visible; use --device cpu or auto"
        )
    return torch.device(name)


def has_bf16_kernels(device: torch.device) -> bool:
    """Whether bf16 autocast runs on the device's own bfloat16 kernels: a CUDA GPU that
    supports bfloat16 natively, or a CPU whose oneDNN has them (AVX-512 and later)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@contextmanager
def isolated_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block on a freshly seeded generator and restore the training generator after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
