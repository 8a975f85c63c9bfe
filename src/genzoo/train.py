"""The one training loop, shared by every model family (see models/base.py).

Per epoch: a pass over the shuffled training set (each model's own ``train_step``),
validation terms averaged over the validation set, a line in metrics.jsonl, the ``last``
checkpoint (and ``best`` when validation improved), sample grids every few epochs, and
early stopping after ``patience`` epochs without improvement. With ``ema`` set, a
moving average of the weights (averaging.py) is what validation, the grids and the
``best`` checkpoint see; ``last`` keeps the weights themselves. Checkpoints carry the
optimizer, average and random-generator states, so a resumed run continues exactly
where the killed one stopped: on CPU it ends with the very weights of an uninterrupted
run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from genzoo import plots
from genzoo.averaging import WeightAverage
from genzoo.data import Data, Split, batches, load_data
from genzoo.errors import GenzooError, TrainingDiverged
from genzoo.models import MODELS
from genzoo.runs import (
    RunConfig,
    build_model,
    load_checkpoint,
    load_run_config,
    save_checkpoint,
    save_run_config,
    write_json,
)

EVAL_SEED = 2024  # validation and figures draw from their own generator, never training's


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenzooError(
            "--device cuda was asked for but no CUDA device is visible; use --device cpu or auto"
        )
    return torch.device(name)


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


@torch.no_grad()
def per_example_terms(
    model: nn.Module, split: Split, batch_size: int = 1000
) -> dict[str, torch.Tensor]:
    """``evaluate_batch`` over a whole split, concatenated: each term (N,) on the CPU."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for x in batches(split, batch_size):
        for name, value in model.evaluate_batch(x).items():
            parts.setdefault(name, []).append(value.double().cpu())
    return {name: torch.cat(values) for name, values in parts.items()}


def validate(model: nn.Module, split: Split, device: torch.device) -> dict[str, float]:
    with isolated_rng(EVAL_SEED, device):
        terms = per_example_terms(model, split)
    return {name: values.mean().item() for name, values in terms.items()}


@dataclass
class LoopState:
    epoch: int = 0  # last finished epoch
    best: float = math.inf  # best validation value so far
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one


def train_epoch(
    model: nn.Module,
    optimizers: list,
    data: Data,
    batch_size: int,
    epoch: int,
    average: WeightAverage | None = None,
) -> dict[str, float]:
    """One pass over the training set; returns the mean of each ``train_step`` statistic.
    ``average``, if given, takes in the weights after every step."""
    model.train()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}  # some statistics come from some steps only (a GAN's g_loss)
    n_batches = math.ceil(len(data.train) / batch_size)
    bar = tqdm(
        batches(data.train, batch_size, data.binarize, shuffle=True),
        total=n_batches,
        desc=f"epoch {epoch}",
        leave=False,
        disable=None,
    )
    for step, x in enumerate(bar):
        stats = model.train_step(x, optimizers)
        if average is not None:
            average.update()
        if not math.isfinite(stats["loss"]):
            raise TrainingDiverged(
                f"loss became {stats['loss']} at epoch {epoch}, step {step}; the last good "
                "checkpoint is kept (continue from it with a lower rate: genzoo train --resume RUN "
                "--lr LR)"
            )
        for name, value in stats.items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
        if step % 20 == 0:
            bar.set_postfix(loss=f"{stats['loss']:.2f}")
    return {name: total / counts[name] for name, total in sums.items()}


def _trim_metrics(path: Path, last_epoch: int) -> None:
    """Drop metric lines of epochs after the checkpoint (a run killed between the two)."""
    if path.exists():
        lines = [
            ln
            for ln in path.read_text().splitlines()
            if ln and json.loads(ln)["epoch"] <= last_epoch
        ]
        path.write_text("".join(ln + "\n" for ln in lines))


def _restore(
    run_dir: Path,
    model: nn.Module,
    optimizers: list,
    average: WeightAverage | None,
    dev: torch.device,
) -> LoopState:
    """Weights, optimizer, average and generator states and loop counters of the last
    checkpoint.

    The learning rates stay those the optimizers were just built with from the run's
    config, so ``genzoo train --resume RUN --lr LR`` continues with a new rate.
    """
    state = load_checkpoint(run_dir, "last", model)
    for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
        rates = [group["lr"] for group in opt.param_groups]
        opt.load_state_dict(opt_state)
        for group, lr in zip(opt.param_groups, rates, strict=True):
            group["lr"] = lr
    if average is not None:
        if "average" not in state:
            raise GenzooError(
                f"the last checkpoint in {run_dir} holds no weight average although the run's "
                "config.json sets ema: they do not belong together; delete the run or retrain"
            )
        average.load_state_dict(state["average"])
    set_rng_state(state["rng"], dev)
    return LoopState(**state["loop"])


def _diagnostics_batch(data: Data, dev: torch.device, size: int = 256) -> torch.Tensor:
    """A fixed batch of training images (one seeded binarization) for ``epoch_diagnostics``."""
    with isolated_rng(EVAL_SEED, dev):
        return next(batches(data.train, size, data.binarize))


def _draw_progress(
    model: nn.Module, run_dir: Path, epoch: int, seed: int, dev: torch.device
) -> None:
    if not getattr(model, "samples_while_training", True):  # the autoencoder's mixture
        return
    # The same noise every time (seeded), so the grids show the model changing, not the draw.
    with isolated_rng(seed, dev):
        plots.draw_progress_samples(model, run_dir, epoch)


def train(
    run_dir: Path,
    cfg: RunConfig,
    device: str = "auto",
    data_dir: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train (or, with ``resume``, continue) the run in ``run_dir``; returns a summary.

    Optional model hooks: ``epoch_diagnostics(x)`` adds figures measured on a fixed
    training batch to each epoch's metrics; ``after_training(data)`` runs once on the
    best weights at the end (the autoencoder fits its mixture there).
    """
    dev = resolve_device(device)
    tc = cfg.train
    allowed = MODELS[cfg.model].binarize
    if tc.binarize not in allowed:
        raise GenzooError(
            f"model {cfg.model} is defined for --binarize {' or '.join(allowed)}, not {tc.binarize}"
        )
    data = load_data(tc.dataset, tc.binarize, tc.val_size, data_dir).to(dev)
    torch.manual_seed(tc.seed)
    model = build_model(cfg, data.image_shape).to(dev)
    optimizers = model.configure_optimizers(tc.lr)
    average = WeightAverage(model, tc.ema) if tc.ema else None
    # What validation, the grids and the best checkpoint see: the average, if there is one.
    evaluated = average.swapped_in if average else nullcontext
    metrics_path = run_dir / "metrics.jsonl"
    if resume:
        loop = _restore(run_dir, model, optimizers, average, dev)
        _trim_metrics(metrics_path, loop.epoch)
    else:
        loop = LoopState()
        save_run_config(run_dir, cfg)
        metrics_path.unlink(missing_ok=True)
        _draw_progress(model, run_dir, 0, tc.seed, dev)
    probe = _diagnostics_batch(data, dev)
    metric = model.val_metric

    print(
        f"training {cfg.model} in {run_dir} on {dev}: {len(data.train)} train / "
        f"{len(data.val)} validation images, binarize={tc.binarize}"
    )
    stopped_early = tc.patience and loop.bad_epochs >= tc.patience
    try:
        for epoch in range(loop.epoch + 1, tc.epochs + 1):
            if stopped_early:
                break
            start = time.perf_counter()
            train_stats = train_epoch(model, optimizers, data, tc.batch_size, epoch, average)
            seconds = time.perf_counter() - start  # the training pass alone
            with evaluated():
                val = validate(model, data.val, dev)
            record = {
                "epoch": epoch,
                **{f"train_{k}": v for k, v in train_stats.items()},
                **{f"val_{k}": v for k, v in val.items()},
                "seconds": seconds,
                "lr": optimizers[0].param_groups[0]["lr"],
            }
            if hasattr(model, "epoch_diagnostics"):
                with isolated_rng(EVAL_SEED, dev):
                    record.update(model.epoch_diagnostics(probe))
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            # Without a validation metric (a GAN) the latest weights count as the best.
            score = val[metric] if metric else -epoch
            improved = score < loop.best
            loop = LoopState(
                epoch=epoch,
                best=score if improved else loop.best,
                best_epoch=epoch if improved else loop.best_epoch,
                bad_epochs=0 if improved else loop.bad_epochs + 1,
            )
            state = {
                "epoch": epoch,
                "loop": asdict(loop),
                "rng": rng_state(dev),
                "optimizers": [opt.state_dict() for opt in optimizers],
            }
            if average is not None:
                state["average"] = average.state_dict()
            save_checkpoint(run_dir, "last", model, state)
            with evaluated():
                if improved:
                    save_checkpoint(run_dir, "best", model, state)
                if epoch == 1 or epoch % tc.sample_every == 0:
                    _draw_progress(model, run_dir, epoch, tc.seed, dev)
            shown = f"val {metric} {val[metric]:8.2f}  " if metric else ""
            print(
                f"epoch {epoch:3d}  train loss {train_stats['loss']:8.2f}  {shown}"
                f"({seconds:.1f} s)" + ("  *" if improved else "")
            )
            stopped_early = tc.patience and loop.bad_epochs >= tc.patience
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; checkpoint of epoch {loop.epoch} is kept. Continue with: "
            f"genzoo train --resume {run_dir}"
        )
        raise
    if stopped_early:
        print(f"stopped early: no better validation for {tc.patience} epochs")
    best_state = load_checkpoint(run_dir, "best", model)
    with isolated_rng(EVAL_SEED, dev):
        if hasattr(model, "after_training"):
            model.after_training(data)
            save_checkpoint(run_dir, "best", model, best_state)
        plots.draw_run_figures(model, data, run_dir)
    summary = {"run_dir": str(run_dir), "epochs": loop.epoch, "best_epoch": loop.best_epoch}
    if metric:
        summary[f"best_val_{metric}"] = loop.best
    write_json(run_dir / "summary.json", summary)
    return summary


def resume_config(run_dir: Path, epochs: int | None, lr: float | None = None) -> RunConfig:
    """The run's saved config; ``epochs`` may be raised to train a finished run further,
    and ``lr`` replaces the learning rate from the next epoch on (metrics.jsonl records
    each epoch's rate)."""
    cfg = load_run_config(run_dir)
    if epochs is not None:
        cfg.train.epochs = epochs
    if lr is not None:
        cfg.train.lr = lr
    if epochs is not None or lr is not None:
        save_run_config(run_dir, cfg)
    return cfg
