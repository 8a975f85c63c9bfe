"""Speed of the Gaussian VAE against the machine's floor.

Times, in one run:
  1. one training epoch of the 784-500-20 (relu) VAE on the 50k training images,
     batch 128, Adam, dynamic binarization, the weights' moving average: the project's
     own training loop (``Trainer.train_epoch``);
  2. the importance-sampled log-likelihood, K=5000, of 1,000 test images: the
     project's own ``negative_log_likelihood``;
  3. for each, its floor: the bare matrix multiplications that job needs (same shapes,
     same count, nothing else), which is as fast as this machine can go with dense
     layers, and for training the optimizer's update alone after every step;
  4. the same training epoch as a minimal hand-written PyTorch loop (the yardstick: what
     the library's layers cost over code with none), and that loop with its loss
     compiled by inductor (what fusing the element-wise work leaves above the floor).
It prints each time and its ratio to its floor.

    GENZOO_DATA=../shared/data python benchmarks/bench_vae.py
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.config import TrainConfig
from genzoo.cpu import tune_process
from genzoo.data import Data, load_data
from genzoo.evaluation import negative_log_likelihood
from genzoo.models import MODELS
from genzoo.models.latent import MAX_DECODER_ROWS
from genzoo.models.vae import VAEConfig
from genzoo.runs import RunConfig
from genzoo.training import EpochProgress, Trainer


def interleaved_best(
    jobs: dict[str, Callable[[], object]], rounds: int, warm_up: bool = True
) -> dict[str, float]:
    """Smallest wall time (s) of each job over ``rounds`` rounds that run every job once in
    turn (after one warm-up call each): a slow drift of a shared machine then reaches a
    job and its floor alike, instead of whichever happened to run second."""
    for job in jobs.values() if warm_up else ():
        job()
    best = dict.fromkeys(jobs, math.inf)
    for _ in range(rounds):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def linear_layer_matmuls(
    rows: int, n_in: int, n_out: int, input_grad: bool, backward: bool, weight_grad: bool = True
) -> list[tuple[int, int, int]]:
    """(m, k, n) of the products of one linear layer on ``rows`` rows.

    Forward: (rows, n_in) @ (n_in, n_out). Backward: the weight gradient (n_in, rows) @
    (rows, n_out) where the weight needs one, and the input gradient (rows, n_out) @
    (n_out, n_in) where the input needs one.
    """
    shapes = [(rows, n_in, n_out)]
    if backward:
        if weight_grad:
            shapes.append((n_in, rows, n_out))
        if input_grad:
            shapes.append((rows, n_out, n_in))
    return shapes


def linear_matmuls(rows: int, sizes: list[int], backward: bool) -> list[tuple[int, int, int]]:
    """(m, k, n) of every product in a forward (and backward) pass through linear layers
    of ``sizes``; every layer's input but the first needs a gradient (the data needs none).
    """
    return [
        shape
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
        for shape in linear_layer_matmuls(rows, n_in, n_out, i > 0, backward)
    ]


def matmuls(shapes: list[tuple[int, int, int]], times: int) -> Callable[[], None]:
    """A job that runs ``times`` times the products of ``shapes`` on random matrices."""
    pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]

    def run() -> None:
        for _ in range(times):
            for a, b in pairs:
                torch.mm(a, b)

    return run


def update_alone(optimizers: list[torch.optim.Optimizer]) -> Callable[[], None]:
    """A job: the optimizers' update alone, on copies of their parameters and state with
    random gradients in place (part of a training step's floor)."""
    updates = []
    for optimizer in optimizers:
        twin = copy.deepcopy(optimizer)  # its parameters, gradients and state copied
        for group in twin.param_groups:
            for p in group["params"]:
                p.grad = torch.randn_like(p)
        updates.append(twin.step)

    def run() -> None:
        for update in updates:
            update()

    return run


def loop_epoch(cfg: RunConfig, data: Data) -> tuple[Trainer, Callable[[], object]]:
    """The project's training loop for ``cfg`` (no checkpoint within the epoch, nothing
    written) and a job that runs one epoch of it."""
    trainer = Trainer(Path(tempfile.mkdtemp()), cfg, torch.device("cpu"), data)

    def run() -> object:
        trainer.progress = EpochProgress()
        return trainer.train_epoch(1)

    return trainer, run


def plain_loop_epoch(
    images: torch.Tensor, batch: int, latent: int, compiled: bool = False
) -> Callable[[], None]:
    """A job: one epoch of the same VAE written as a bare PyTorch loop, with nothing of the
    library (layers, Gaussian KL written out, binary cross-entropy with logits, fused Adam,
    one uniform draw per pixel for the dynamic binarization); with ``compiled``, its loss
    (forward, and so backward) compiled by inductor, which fuses the element-wise work."""
    encoder = nn.Sequential(nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 2 * latent))
    decoder = nn.Sequential(nn.Linear(latent, 500), nn.ReLU(), nn.Linear(500, 784))
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
    flat = images.flatten(1)  # (N, 784)

    def negative_elbo(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        mu, logvar = encoder(x).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * noise
        recon = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (recon + kl) / len(x)

    # dynamic: the epoch's short last batch does not compile a second graph
    objective = torch.compile(negative_elbo, dynamic=True) if compiled else negative_elbo

    def run() -> None:
        order = torch.randperm(len(flat))
        for start in range(0, len(flat), batch):
            x = flat[order[start : start + batch]]
            x = (torch.rand_like(x) < x).float()
            loss = objective(x, torch.randn(len(x), latent))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()  # what a loop that logs its loss pays

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds for the epoch")
    parser.add_argument("--eval-repeats", type=int, default=1, help="rounds for the likelihood")
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5000)
    args = parser.parse_args()

    tune_process()  # as the genzoo command does
    data = load_data("mnist", "dynamic")
    cfg = VAEConfig(latent_dim=20, hidden=(500,), activation="relu")
    batch = 128
    # As `genzoo train vae` trains: with the moving average of the weights.
    ema = MODELS["vae"].training_defaults()["ema"]
    run = RunConfig("vae", TrainConfig(batch_size=batch, ema=ema, checkpoint_minutes=0), cfg)
    trainer, epoch = loop_epoch(run, data)
    model = trainer.model
    n_train = len(data.train)
    steps = math.ceil(n_train / batch)
    encoder_sizes = [784, 500, 2 * cfg.latent_dim]
    decoder_sizes = [cfg.latent_dim, 500, 784]

    # Full batches plus the one short last batch, forward and backward through both MLPs.
    last = n_train - (steps - 1) * batch
    train_floor = [
        matmuls(
            linear_matmuls(rows, encoder_sizes, True) + linear_matmuls(rows, decoder_sizes, True),
            times,
        )
        for rows, times in ((batch, steps - 1), (last, 1))
    ]
    update = update_alone(trainer.optimizers)
    train_floor.append(lambda: [update() for _ in range(steps)])
    train = interleaved_best(
        {
            "job": epoch,
            "floor": lambda: [run() for run in train_floor],
            "plain": plain_loop_epoch(data.train.images, batch, cfg.latent_dim),
            "compiled": plain_loop_epoch(data.train.images, batch, cfg.latent_dim, True),
        },
        args.repeats,
    )

    model.eval()
    test = data.test
    test.images = test.images[: args.eval_images]
    per_batch = 100  # what negative_log_likelihood uses
    chunk = max(1, MAX_DECODER_ROWS // per_batch)
    n_batches = math.ceil(args.eval_images / per_batch)
    full_chunks, tail = divmod(args.k, chunk)
    # Per batch of test images: the encoder once, the decoder on every chunk of samples.
    eval_floor = [
        matmuls(linear_matmuls(per_batch, encoder_sizes, False), n_batches),
        matmuls(linear_matmuls(chunk * per_batch, decoder_sizes, False), n_batches * full_chunks),
        matmuls(linear_matmuls(tail * per_batch, decoder_sizes, False), n_batches * bool(tail)),
    ]
    evaluation = interleaved_best(
        {
            "job": lambda: negative_log_likelihood(model, test, args.k),
            "floor": lambda: [run() for run in eval_floor],
        },
        args.eval_repeats,
        warm_up=False,  # a long job: its first-call costs are a negligible share
    )

    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"{'job':<44}{'time (s)':>10}{'floor (s)':>11}{'ratio':>8}")
    for name, seconds, floor in (
        (f"train epoch ({n_train} images, batch {batch})", train["job"], train["floor"]),
        ("  the same epoch, plain PyTorch loop", train["plain"], train["floor"]),
        ("  the plain loop, its loss compiled", train["compiled"], train["floor"]),
        (
            f"IS log-likelihood ({args.eval_images} images, K={args.k})",
            evaluation["job"],
            evaluation["floor"],
        ),
    ):
        print(f"{name:<44}{seconds:>10.2f}{floor:>11.2f}{seconds / floor:>8.2f}")


if __name__ == "__main__":
    main()
