"""The run folder: config, checkpoints and metrics of one training run, written by
train.py and read by every other command.

    RUN/config.json          model name and every config value needed to rebuild it
    RUN/metrics.jsonl        one JSON object per epoch
    RUN/checkpoints/{last,best}.safetensors   weights (metadata: epoch and step)
    RUN/checkpoints/{last,best}.state.pt      optimizer, RNG and loop state (same point)
    RUN/figures/*.png

Every file is written to a temporary name and renamed, so a killed run never leaves a
half-written checkpoint; the epoch and step stored in both halves of a checkpoint must
agree. A ``last`` checkpoint may be written within an epoch (``step`` batches into the
epoch after ``epoch``), so a kill loses minutes, not an epoch.
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

from genzoo.config import TrainConfig, check_fields, config_from_dict
from genzoo.data import Data, load_data
from genzoo.errors import GenzooError
from genzoo.models import MODELS, GenerativeModel
from genzoo.rng import resolve_device


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


def save_weights(path: Path, module: nn.Module, metadata: dict[str, str]) -> None:
    """A module's state dict as a safetensors file (atomically), with string ``metadata``:
    the one weights writer, for checkpoints and the quality-net cache alike."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


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

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise GenzooError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        check_fields(self.train)
        check_fields(self.model_config)

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
    except GenzooError as err:
        raise GenzooError(f"{run_dir}/config.json holds a bad value: {err}") from None


def build_model(cfg: RunConfig, image_shape: tuple[int, ...]) -> GenerativeModel:
    return MODELS[cfg.model].model(cfg.model_config, image_shape)


def resume_config(run_dir: Path, epochs: int | None, lr: float | None = None) -> RunConfig:
    """The run's saved config; ``epochs`` may be raised to train a finished run further,
    and ``lr`` replaces the base learning rate from the next step on (metrics.jsonl
    records each epoch's rate). Written back by the training loop, once the checkpoint
    has loaded."""
    cfg = load_run_config(run_dir)
    if epochs is not None:
        cfg.train.epochs = epochs
    if lr is not None:
        cfg.train.lr = lr
    check_fields(cfg.train)
    return cfg


def load_data_of(cfg: RunConfig, device: torch.device, data_dir: str | Path | None) -> Data:
    """The run's dataset, split and binarized as it was trained, on ``device``."""
    tc = cfg.train
    return load_data(tc.dataset, tc.binarize, tc.val_size, data_dir, tc.train_size).to(device)


def load_trained(
    run_dir: Path,
    device: str = "auto",
    data_dir: str | Path | None = None,
    checkpoint: str = "best",
) -> tuple[RunConfig, GenerativeModel, Data, int]:
    """The run's config, its model with ``checkpoint`` weights (in eval mode), its data and
    the epoch of those weights."""
    cfg = load_run_config(run_dir)
    dev = resolve_device(device)
    data = load_data_of(cfg, dev, data_dir)
    model = build_model(cfg, data.image_shape)
    epoch = load_checkpoint(run_dir, checkpoint, model, with_state=False)["epoch"]
    return cfg, model.to(dev).eval(), data, epoch


# ----------------------------------------------------------------------------- metrics


def read_metrics(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl, one dict per epoch ([] before the first epoch ends)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    except json.JSONDecodeError as err:
        raise GenzooError(f"{path} is corrupt ({err}); remove its broken line") from None


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def trim_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop metric lines of epochs after ``last_epoch`` (a run killed between writing its
    metrics and its checkpoint), so the file and the checkpoint agree on a resume."""
    path = run_dir / "metrics.jsonl"
    if path.exists():
        kept = [m for m in read_metrics(run_dir) if m["epoch"] <= last_epoch]
        write_text = "".join(json.dumps(m) + "\n" for m in kept)
        atomic_write(path, lambda tmp: tmp.write_text(write_text))


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_paths(run_dir: Path, tag: str) -> tuple[Path, Path]:
    folder = run_dir / "checkpoints"
    return folder / f"{tag}.safetensors", folder / f"{tag}.state.pt"


def save_checkpoint(run_dir: Path, tag: str, model: nn.Module, state: dict[str, Any]) -> None:
    """Weights as safetensors, the rest (optimizers, RNG, loop counters) as a torch file;
    both name the point of training they hold: ``epoch`` finished epochs and ``step``
    batches into the next one."""
    weights, rest = checkpoint_paths(run_dir, tag)
    save_weights(weights, model, {"epoch": str(state["epoch"]), "step": str(state.get("step", 0))})
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
            meta = f.metadata()
        epoch, step = int(meta["epoch"]), int(meta.get("step", 0))
        model.load_state_dict(tensors)
        state = torch.load(rest, weights_only=True) if with_state else {"epoch": epoch}
        state.setdefault("step", step)  # checkpoints of earlier versions: ends of epochs
    except (SafetensorError, OSError, RuntimeError, KeyError, ValueError, EOFError) as err:
        raise GenzooError(
            f"checkpoint {weights} is corrupt or does not fit this model "
            f"({type(err).__name__}: {str(err)[:200]}); delete it or retrain"
        ) from None
    if (state["epoch"], state["step"]) != (epoch, step):
        raise GenzooError(
            f"checkpoint '{tag}' in {run_dir} is inconsistent (weights of epoch "
            f"{epoch} step {step}, state of epoch {state['epoch']} step {state['step']}); "
            "delete it or retrain"
        )
    return state
