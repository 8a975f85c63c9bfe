"""The run folder: config, checkpoints and metrics of one training run.

    RUN/config.json          model name and every config value needed to rebuild it
    RUN/metrics.jsonl        one JSON object per epoch
    RUN/checkpoints/{last,best}.safetensors   weights (metadata: epoch)
    RUN/checkpoints/{last,best}.state.pt      optimizer, RNG and loop state (same epoch)
    RUN/figures/*.png

Every file is written to a temporary name and renamed, so a killed run never leaves a
half-written checkpoint; the epoch stored in both halves of a checkpoint must agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from genzoo.config import TrainConfig, config_from_dict
from genzoo.errors import GenzooError
from genzoo.models import MODELS


def new_run_dir(model_name: str, root: Path = Path("runs")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{model_name}-{stamp}", 1
    while path.exists():
        n += 1
        path = root / f"{model_name}-{stamp}-{n}"
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename tmp to ``path`` (atomic on POSIX and Windows)."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise GenzooError(f"cannot read {path}: {err}") from None


@dataclasses.dataclass
class RunConfig:
    model: str
    train: TrainConfig
    model_config: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "train": dataclasses.asdict(self.train),
            "model_config": dataclasses.asdict(self.model_config),
        }


def check_run_dir(run_dir: Path) -> Path:
    if not (run_dir / "config.json").is_file():
        raise GenzooError(
            f"{run_dir} is not a run folder (no config.json); give a folder made by `genzoo train`"
        )
    return run_dir


def save_run_config(run_dir: Path, cfg: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", cfg.to_dict())


def load_run_config(run_dir: Path) -> RunConfig:
    raw = read_json(check_run_dir(run_dir) / "config.json")
    try:
        family = MODELS[raw["model"]]
        return RunConfig(
            raw["model"],
            config_from_dict(TrainConfig, raw["train"]),
            config_from_dict(family.config, raw["model_config"]),
        )
    except (KeyError, TypeError) as err:
        raise GenzooError(f"{run_dir}/config.json is not a genzoo config ({err})") from None


def build_model(cfg: RunConfig, image_shape: tuple[int, ...]) -> nn.Module:
    return MODELS[cfg.model].model(cfg.model_config, image_shape)


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_paths(run_dir: Path, tag: str) -> tuple[Path, Path]:
    folder = run_dir / "checkpoints"
    return folder / f"{tag}.safetensors", folder / f"{tag}.state.pt"


def save_checkpoint(run_dir: Path, tag: str, model: nn.Module, state: dict[str, Any]) -> None:
    """Weights as safetensors, the rest (optimizers, RNG, loop counters) as a torch file."""
    weights, rest = checkpoint_paths(run_dir, tag)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"epoch": str(state["epoch"])}
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    atomic_write(rest, lambda tmp: torch.save(state, tmp))


def load_checkpoint(
    run_dir: Path, tag: str, model: nn.Module, with_state: bool = True
) -> dict[str, Any]:
    """Load weights into ``model``; return the saved state (epoch, optimizers, RNG, ...)."""
    weights, rest = checkpoint_paths(run_dir, tag)
    if not weights.is_file():
        raise GenzooError(
            f"{run_dir} has no '{tag}' checkpoint ({weights} is missing); "
            "train it first or resume with `genzoo train --resume`"
        )
    try:
        tensors = load_file(str(weights), device="cpu")
        with safe_open(str(weights), "pt") as f:
            epoch = int(f.metadata()["epoch"])
        model.load_state_dict(tensors)
        state = torch.load(rest, weights_only=True) if with_state else {"epoch": epoch}
    except (SafetensorError, OSError, RuntimeError, KeyError, ValueError, EOFError) as err:
        raise GenzooError(
            f"checkpoint {weights} is corrupt or does not fit this model "
            f"({type(err).__name__}: {str(err)[:200]}); delete it or retrain"
        ) from None
    if state["epoch"] != epoch:
        raise GenzooError(
            f"checkpoint '{tag}' in {run_dir} is inconsistent (weights of epoch "
            f"{epoch}, state of epoch {state['epoch']}); delete it or retrain"
        )
    return state
