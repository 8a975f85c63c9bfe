"""Learning-rate schedules as pure functions of the step count.

The rate of optimizer step ``step`` (0-based, counted over the whole run) is

    constant      lr
    cosine        lr_min + (lr - lr_min) (1 + cos(pi t)) / 2,  t = the fraction of the
                  steps after warm-up already taken (per batch; Loshchilov & Hutter 2017)
    step          lr * lr_decay ** floor(epoch / lr_step_epochs)         (per epoch)
    exponential   lr * lr_decay ** epoch                                 (per epoch)
    burda         lr * 10 ** (-i / 7) in stage i, which lasts 3 ** i epochs  (per epoch)
                  (Burda et al. 2016: i = 0 .. 7, 3280 epochs in all; the last stage's
                  rate after them)

times a linear warm-up (step + 1) / warmup_steps over the first ``warmup_epochs``. A pure
function, not torch's chained schedulers, because a resumed run then needs nothing but
the step count to continue exactly, and ``genzoo resume RUN --lr LR`` (a new base rate)
or ``--epochs N`` (a new horizon) take effect from the next step without a hidden state
that disagrees with config.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer

SCHEDULES = ("constant", "cosine", "step", "exponential", "burda")
BURDA_STAGES = 8  # i = 0 .. 7: 3 ** i epochs each, (3 ** 8 - 1) / 2 = 3280 in all


def burda_stage(epoch: int) -> int:
    """The stage i of 0-based ``epoch`` in Burda et al.'s schedule: stage i holds epochs
    (3 ** i - 1) / 2 .. (3 ** (i + 1) - 1) / 2 - 1; capped at the last stage."""
    stage = 0
    while stage < BURDA_STAGES - 1 and epoch >= (3 ** (stage + 1) - 1) // 2:
        stage += 1
    return stage


@dataclass(frozen=True)
class LRSchedule:
    kind: str
    lr: float
    steps_per_epoch: int
    epochs: int
    lr_min: float = 0.0
    lr_decay: float = 0.1
    lr_step_epochs: int = 10
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {SCHEDULES}")

    def rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based over the whole run)."""
        epoch = step // self.steps_per_epoch
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        if self.kind == "cosine":
            total = max(1, self.epochs * self.steps_per_epoch - warmup_steps)
            t = min(1.0, max(0, step - warmup_steps) / total)
            lr = self.lr_min + (self.lr - self.lr_min) * (1 + math.cos(math.pi * t)) / 2
        elif self.kind == "step":
            lr = self.lr * self.lr_decay ** (epoch // self.lr_step_epochs)
        elif self.kind == "exponential":
            lr = self.lr * self.lr_decay**epoch
        elif self.kind == "burda":
            lr = self.lr * 10 ** (-burda_stage(epoch) / 7)
        else:
            lr = self.lr
        if step < warmup_steps:
            lr *= (step + 1) / warmup_steps
        return lr

    def apply(self, optimizers: list[Optimizer], step: int) -> float:
        """Set every parameter group of ``optimizers`` to the rate of ``step``; return it."""
        lr = self.rate(step)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr
