"""Data-parallel training: torch.distributed's DistributedDataParallel, started by torchrun.

``torchrun --nproc-per-node N -m genzoo train MODEL ...`` (or ``genzoo train --nproc N``,
which starts torchrun) runs N copies of the one training loop, one per process (a
*rank*), gloo between CPU processes and NCCL between GPUs. What stays the same whatever N:

- The global batch is ``--batch-size``. Every rank draws the same global batch (the
  shuffle and the dynamic binarization come from a data generator seeded alike on every
  rank) and takes its contiguous share (``World.share``).
- The gradient. DDP averages the ranks' gradients; each rank weights its loss by
  N x (its rows / the global rows), so the average is the gradient of the mean over the
  global batch also when a batch does not split evenly. The training statistics are
  averaged the same way. A deterministic model takes the very steps of one process.
- The noise inside the models (the reparameterization, the GAN's z) is each rank's own:
  rank r seeds torch's generator from (seed, r), rank 0 with the seed itself, and a
  checkpoint keeps every rank's generator, so a resumed run draws what it would have.
- Validation: each rank scores its share of the split and the sums are added up.
- Rank 0 alone writes (config, metrics, checkpoints, figures, the report) and prints;
  a checkpoint of a DDP run is an ordinary one, which ``eval``, ``sample`` and a resume
  with any N read.

BatchNorm layers (the GAN's generator) normalise over each rank's share, not the global
batch, unless the device supports SyncBatchNorm (CUDA): on the CPU a DDP GAN is a
slightly different estimator from the one-process GAN, as in every DDP code without
synchronised statistics. Likewise BatchNorm's running statistics follow rank 0's share:
DDP copies rank 0's buffers to the others before every forward pass. The binary VAE's
running baseline moves after the step by the step's statistics, which are averaged over
the ranks: by the whole batch.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from genzoo.errors import GenzooError
from genzoo.interrupts import on_stop_signals
from genzoo.models.base import GenerativeModel
from genzoo.rng import resolve_device

# How long a rank waits for the others at a collective before it gives up: long enough
# for rank 0's figures at the end of an epoch, short enough that a job whose peer died
# does not hang for the default half hour.
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; one process: rank 0 of 1."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def share(self, rows: int) -> slice:
        """This rank's contiguous share of ``rows`` (sizes differ by at most one)."""
        base, extra = divmod(rows, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (every rank gets the sum)."""
        if self.parallel:
            values = values.clone()
            dist.all_reduce(values)
        return values

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.parallel:
            dist.barrier()

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank: decisions taken on a clock must be shared."""
        if not self.parallel:
            return flag
        decided = torch.tensor([int(flag)], device=_collective_device())
        dist.broadcast(decided, 0)
        return bool(decided.item())

    def any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank, on every rank: a stop that reached one rank
        stops them all at the same batch."""
        if not self.parallel:
            return flag
        count = torch.tensor([int(flag)], device=_collective_device())
        return bool(self.sum(count).item())

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.parallel:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def noise_seed(self, seed: int) -> int:
        """The seed of this rank's own generator: ``seed`` on rank 0, a distinct stream
        from (seed, rank) on the others."""
        if self.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])


ONE_PROCESS = World()


def _collective_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: str | torch.device | None) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (a no-op for one process) and pick this
    rank's device: ``cuda:LOCAL_RANK`` on GPUs. Ranks other than 0 print nothing."""
    if not launched_by_torchrun():
        return ONE_PROCESS, resolve_device(device)
    dev = _rank_device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT, device_id=dev if dev.type == "cuda" else None)
    world = World(dist.get_rank(), dist.get_world_size())
    if not world.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    return world, dev


def _rank_device(device: str | torch.device | None) -> torch.device:
    dev = resolve_device(device)
    if dev.type != "cuda":
        return dev
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise GenzooError(
            f"process {local} of this machine has no GPU of its own ({torch.cuda.device_count()} "
            "found); start at most one process per GPU (--nproc)"
        )
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class DataParallel:
    """Routes a model's objectives through DistributedDataParallel.

    ``model.objective(x, name)`` calls this (``GenerativeModel.parallel``), which calls
    the DDP wrapper, whose forward calls ``model.forward(x, name)``: DDP then averages
    the gradients of the next backward pass. Not an ``nn.Module``, so that the model
    holding it does not count the wrapper (and so itself) among its submodules.
    """

    def __init__(self, model: GenerativeModel, world: World, device: torch.device) -> None:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.ddp = DistributedDataParallel(model, find_unused_parameters=len(model.objectives) > 1)
        self.world = world
        self.weight = 1.0  # this rank's rows / the global batch's rows

    def share(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's share of the global batch ``x``, remembering its weight."""
        local = x[self.world.share(x.shape[0])]
        self.weight = local.shape[0] / x.shape[0]
        return local

    def __call__(
        self, x: torch.Tensor, name: str, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        loss, stats = self.ddp(x, name, labels)
        return loss * (self.world.size * self.weight), self.mean_stats(stats)

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Each statistic averaged over the global batch (ranks weighted by their rows)."""
        names = sorted(stats)
        local = torch.tensor([stats[k] * self.weight for k in names], dtype=torch.float64)
        total = self.world.sum(local.to(_collective_device())).cpu()
        return dict(zip(names, total.tolist(), strict=True))


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The torchrun command that runs ``genzoo ARGV`` in ``nproc`` processes on this
    machine (a local rendezvous on a free port)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "genzoo",
        *argv,
    ]


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``genzoo ARGV`` under torchrun in ``nproc`` processes; its exit status.

    Ctrl-C and SIGTERM are passed on to torchrun, which passes them on to every process;
    they stop at their next batch boundary with a checkpoint (rank 0 says how to continue),
    and the launch then ends in KeyboardInterrupt, as the one process would.
    """
    # The cores shared out among the processes (torchrun would set 1 and warn).
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    # A session of its own: a terminal's Ctrl-C, or a signal to this process group, then
    # reaches torchrun once, from here (a second one cuts its wait for its processes short).
    torchrun = subprocess.Popen(torchrun_command(nproc, argv), env=env, start_new_session=True)
    passed_on: list[int] = []

    def pass_on(signum: int, frame: FrameType | None) -> None:
        passed_on.append(signum)
        torchrun.send_signal(signum)

    with on_stop_signals(pass_on):
        status = torchrun.wait()
    if passed_on and status:
        raise KeyboardInterrupt
    return status
