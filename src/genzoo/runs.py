"""The run folder: config, checkpoints and metrics of one training run, written by
training.py and read by every other command.

    RUN/config.json          model name and every config value needed to rebuild it
    RUN/metrics.jsonl        one JSON object per epoch
    RUN/checkpoints/TAG.json                   manifest: the current and previous pair
    RUN/checkpoints/TAG-NNNNNN.safetensors     weights (metadata: epoch and step)
    RUN/checkpoints/TAG-NNNNNN.state.pt        optimizer, RNG and loop state (same point)
    RUN/figures/*.png
    RUN/.lock                the lock a training holds (flock), with its PID

TAG is ``last`` or ``best``. Every file is written to a temporary name and renamed, and a
checkpoint becomes current only when its manifest, written last, names its two files
and their checksums (see "checkpoints" below). A ``last`` checkpoint may be written
within an epoch (``step`` batches into the epoch after ``epoch``), so a kill loses
minutes, not an epoch. A write that fails (a full disk) removes its temporary file and
ends with one line naming the file system and the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import os
import pickle
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from genzoo.config import (
    Preset,
    TrainConfig,
    check_fields,
    sampling_field_names,
    saved_config,
)
from genzoo.data import Data, load_data
from genzoo.errors import GenzooError
from genzoo.files import (
    WriteFailed,
    atomic_write,
    file_digest,
    read_json,
    save_weights,
    write_bytes,
    write_json,
    write_problem,
)
from genzoo.models import MODELS, GenerativeModel, find_preset
from genzoo.rng import resolve_device


def new_run_dir(model_name: str, root: Path = Path("runs")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{model_name}-{stamp}", 1
    while path.exists():
        n += 1
        path = root / f"{model_name}-{stamp}-{n}"
    return path


# ----------------------------------------------------------------------------- the lock

_held_locks: dict[Path, Any] = {}  # run folder -> open lock file, held for the process's life


def lock_run(run_dir: Path) -> bool:
    """Take the run folder's lock, an OS advisory lock (flock) on RUN/.lock held until
    this process ends: a killed process releases it, so no stale lock is ever left. A
    second training of the same folder gets a clear error naming the first one's PID.
    Returns whether this call took it (False: this process held it already)."""
    key = run_dir.resolve()
    if key in _held_locks:
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 - kept open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        handle.close()
        raise GenzooError(
            f"{run_dir} is being trained by another genzoo process (PID {pid}); wait for it "
            "to end or stop it, or choose another --run-dir"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    _held_locks[key] = handle
    return True


def unlock_run(run_dir: Path) -> None:
    """Release the lock early (tests, and a library caller that trains many runs)."""
    handle = _held_locks.pop(run_dir.resolve(), None)
    if handle is not None:
        handle.close()


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
        if self.train.preset is not None:
            self.preset()  # one of the family's

    def to_dict(self) -> dict[str, Any]:
        config = {
            "model": self.model,
            "train": dataclasses.asdict(self.train),
            "model_config": dataclasses.asdict(self.model_config),
        }
        if self.train.preset is not None:  # its settings, notes and the deviations from it
            config["preset"] = self.preset().record(self.train.preset, self.values())
        return config

    def values(self) -> dict[str, Any]:
        """Every setting, training and model ones alike, by field name."""
        return {**dataclasses.asdict(self.train), **dataclasses.asdict(self.model_config)}

    def preset(self) -> Preset:
        """The preset the run was made with (``train.preset`` is set)."""
        return find_preset(self.model, self.train.preset)

    def preset_lines(self) -> list[str]:
        """The preset's settings, notes and the run's deviations from it, as printed
        when training starts; [] without a preset."""
        if self.train.preset is None:
            return []
        return self.preset().lines(self.train.preset, self.values())


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
            saved_config(TrainConfig, raw["train"]),
            saved_config(family.config, raw["model_config"]),
        )
    except (KeyError, TypeError) as err:
        raise GenzooError(f"{run_dir}/config.json is not a genzoo config ({err})") from None
    except GenzooError as err:
        raise GenzooError(f"{run_dir}/config.json holds a bad value: {err}") from None


def build_model(cfg: RunConfig, image_shape: tuple[int, ...]) -> GenerativeModel:
    return MODELS[cfg.model].model(cfg.model_config, image_shape)


class Changes(NamedTuple):
    """What a resume may change; None keeps the run's own."""

    epochs: int | None = None  # raised: a finished run trains further
    lr: float | None = None  # the base rate from the next step on (metrics.jsonl: each epoch's)
    max_minutes: float | None = None  # a new budget for all its passes; 0: none


def resume_config(run_dir: Path, changes: Changes) -> RunConfig:
    """The run's saved config with a resume's ``changes``; written back by the training
    loop once the checkpoint has loaded."""
    cfg = load_run_config(run_dir)
    for name, value in changes._asdict().items():
        if value is not None:
            setattr(cfg.train, name, value)
    check_fields(cfg.train)
    return cfg


def load_data_of(cfg: RunConfig, device: torch.device, data_dir: str | Path | None) -> Data:
    """The run's dataset, split and binarized as it was trained, on ``device``."""
    tc = cfg.train
    return load_data(
        tc.dataset,
        tc.binarize,
        tc.val_size,
        data_dir,
        tc.train_size,
        tc.channels,
        tc.image_size,
        tc.train_on_val,
    ).to(device)


def load_trained(
    run_dir: Path,
    device: str = "auto",
    data_dir: str | Path | None = None,
    checkpoint: str = "best",
    sampling: dict[str, Any] | None = None,
) -> tuple[RunConfig, GenerativeModel, Data, int]:
    """The run's config, its model with ``checkpoint`` weights (in eval mode), its data and
    the epoch of those weights; ``sampling`` replaces settings of ``sample`` in the model's
    config (fields marked "sampling", which the weights do not depend on)."""
    cfg = load_run_config(run_dir)
    if sampling:
        settings = sampling_field_names(cfg.model_config)
        if not sampling.keys() <= settings:
            unknown = ", ".join(sorted(sampling.keys() - settings))
            raise GenzooError(
                f"{unknown}: not a sampling setting of {cfg.model} (those are: "
                f"{', '.join(sorted(settings)) or 'none'})"
            )
        cfg = dataclasses.replace(
            cfg, model_config=dataclasses.replace(cfg.model_config, **sampling)
        )
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
    lines = path.read_text().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # half a line: a write cut off by a kill; the epoch is redone on resume
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as err:
        raise GenzooError(f"{path} is corrupt ({err}); remove its broken line") from None


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one line to metrics.jsonl; a failed write (a full disk) is undone, so the file
    never ends in half a line."""
    path = run_dir / "metrics.jsonl"
    size = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as err:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise WriteFailed(write_problem(path, err)) from None


def trim_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop metric lines of epochs after ``last_epoch`` (a run killed between writing its
    metrics and its checkpoint), so the file and the checkpoint agree on a resume."""
    path = run_dir / "metrics.jsonl"
    if path.exists():
        kept = [m for m in read_metrics(run_dir) if m["epoch"] <= last_epoch]
        write_text = "".join(json.dumps(m) + "\n" for m in kept)
        atomic_write(path, lambda tmp: tmp.write_text(write_text))


# ----------------------------------------------------------------------------- checkpoints
#
# A checkpoint TAG (last, best) is two files, the weights (safetensors) and the rest of
# the state (optimizers, RNG, loop counters: a torch file read with weights_only=True),
# named by a sequence number (TAG-000017.safetensors, TAG-000017.state.pt), and a manifest
# TAG.json written last, atomically, that names both with their SHA-256. A kill at any
# instant leaves the manifest naming a complete pair; the manifest keeps the previous pair
# too, and a pair that does not match its checksums (torn, truncated, tampered) falls back
# to the previous one with a warning.

MANIFEST_VERSION = 1


def _manifest_path(run_dir: Path, tag: str) -> Path:
    return run_dir / "checkpoints" / f"{tag}.json"


def _legacy_paths(run_dir: Path, tag: str) -> tuple[Path, Path]:
    """The two files of a checkpoint written before manifests (no checksums)."""
    folder = run_dir / "checkpoints"
    return folder / f"{tag}.safetensors", folder / f"{tag}.state.pt"


def _manifest_entries(run_dir: Path, tag: str) -> list[dict[str, Any]]:
    path = _manifest_path(run_dir, tag)
    if not path.exists():
        return []
    manifest = read_json(path)
    if manifest.get("version") != MANIFEST_VERSION:
        raise GenzooError(f"{path} is not a genzoo checkpoint manifest (or a newer one)")
    return manifest["entries"]


def has_checkpoint(run_dir: Path, tag: str) -> bool:
    return bool(_manifest_path(run_dir, tag).exists() or _legacy_paths(run_dir, tag)[0].exists())


def checkpoint_files(run_dir: Path, tag: str) -> tuple[Path, Path]:
    """The weights and state files of the newest ``tag`` checkpoint."""
    entries = _manifest_entries(run_dir, tag)
    if not entries:
        return _legacy_paths(run_dir, tag)
    folder = run_dir / "checkpoints"
    return folder / entries[0]["weights"], folder / entries[0]["state"]


def save_checkpoint(run_dir: Path, tag: str, model: nn.Module, state: dict[str, Any]) -> None:
    """Write the weights and the state of one point of training (``epoch`` finished
    epochs, ``step`` batches into the next) as a new pair, then the manifest that makes it
    the current one; the pair before it stays as the fallback, older ones are removed."""
    folder = run_dir / "checkpoints"
    previous = _manifest_entries(run_dir, tag)
    number = previous[0]["number"] + 1 if previous else 1
    weights, rest = (
        folder / f"{tag}-{number:06d}.safetensors",
        folder / f"{tag}-{number:06d}.state.pt",
    )
    point = {"epoch": state["epoch"], "step": state.get("step", 0)}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory first, as in save_weights
    try:
        digests = {
            weights.name: save_weights(weights, model, {k: str(v) for k, v in point.items()}),
            rest.name: write_bytes(rest, buffer.getvalue()),
        }
    except WriteFailed:
        for path in (weights, rest):  # half a pair, that no manifest will ever name
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise
    entry = {
        "number": number,
        **point,
        "weights": weights.name,
        "state": rest.name,
        "sha256": digests,
    }
    entries = [entry, *previous[:1]]
    write_json(_manifest_path(run_dir, tag), {"version": MANIFEST_VERSION, "entries": entries})
    kept = {name for e in entries for name in (e["weights"], e["state"])}
    for path in [*folder.glob(f"{tag}-*.safetensors"), *folder.glob(f"{tag}-*.state.pt")]:
        if path.name not in kept:
            path.unlink(missing_ok=True)
    for path in _legacy_paths(run_dir, tag):
        path.unlink(missing_ok=True)


def load_checkpoint(
    run_dir: Path, tag: str, model: nn.Module, with_state: bool = True
) -> dict[str, Any]:
    """Load the newest intact ``tag`` checkpoint's weights into ``model``; return its
    state (epoch, step, optimizers, RNG, ...), or with ``with_state=False`` its point.
    A damaged newest pair falls back to the previous one, with a warning on stderr."""
    entries = _manifest_entries(run_dir, tag)
    if not entries:
        if not _legacy_paths(run_dir, tag)[0].is_file():
            raise GenzooError(
                f"{run_dir} has no '{tag}' checkpoint yet; train it first, or continue it "
                f"with `genzoo resume {run_dir}`"
            )
        return _load_pair(*_legacy_paths(run_dir, tag), model, with_state)
    # A training may replace the pairs while this reads them: if the manifest changed
    # meanwhile, the failure was that race, not damage, and the newer manifest is read.
    for _ in range(3):
        state, problems = _load_intact(run_dir / "checkpoints", tag, entries, model, with_state)
        if state is not None:
            return state
        newer = _manifest_entries(run_dir, tag)
        if newer == entries:
            break
        entries = newer
    raise GenzooError(
        f"every '{tag}' checkpoint in {run_dir / 'checkpoints'} is corrupt "
        f"({'; '.join(problems)}); delete the run or retrain"
    )


def _load_intact(
    folder: Path, tag: str, entries: list[dict[str, Any]], model: nn.Module, with_state: bool
) -> tuple[dict[str, Any] | None, list[str]]:
    """The state of the first entry whose files match their checksums and load (None if
    none does), and what was wrong with those before it."""
    problems = []
    for entry in entries:
        weights, rest = folder / entry["weights"], folder / entry["state"]
        try:
            for path in (weights, rest):
                digest = file_digest(path, "sha256") if path.is_file() else "missing"
                if digest != entry["sha256"][path.name]:
                    raise GenzooError(
                        f"{path} does not match its checksum (torn, truncated or tampered)"
                    )
            state = _load_pair(weights, rest, model, with_state)
        except GenzooError as err:
            problems.append(str(err))
            continue
        if problems:
            print(
                f"genzoo: warning: the newest '{tag}' checkpoint is damaged ({problems[0]}); "
                f"using the previous one, after epoch {entry['epoch']}",
                file=sys.stderr,
            )
        return state, problems
    return None, problems


def _load_pair(weights: Path, rest: Path, model: nn.Module, with_state: bool) -> dict[str, Any]:
    try:
        tensors = load_file(str(weights), device="cpu")
        with safe_open(str(weights), "pt") as f:
            meta = f.metadata()
        epoch, step = int(meta["epoch"]), int(meta.get("step", 0))
        model.load_state_dict(tensors)
        state = torch.load(rest, weights_only=True) if with_state else {"epoch": epoch}
        state.setdefault("step", step)  # checkpoints of earlier versions: ends of epochs
    except (
        SafetensorError,
        OSError,
        RuntimeError,
        KeyError,
        ValueError,
        EOFError,
        pickle.UnpicklingError,
    ) as err:
        raise GenzooError(
            f"checkpoint {weights.parent / weights.stem} is corrupt or does not fit this model "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
            "delete it or retrain"
        ) from None
    if (state["epoch"], state["step"]) != (epoch, step):
        raise GenzooError(
            f"checkpoint {weights} is inconsistent (weights of epoch {epoch} step {step}, "
            f"state of epoch {state['epoch']} step {state['step']}); delete it or retrain"
        )
    return state
