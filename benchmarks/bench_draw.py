"""Speed of DRAW against the bare recurrent work of the same shapes, and its Python share.

Times, in one run (static binarized MNIST, batch 128, T steps, the project's own loop):
  1. one training epoch of DRAW (``Trainer.train_epoch``), for each attention;
  2. its floor: the matrix products that epoch needs and nothing else (per step the two
     LSTM cells' gate products, q's parameters, the write and, with attention, the
     window parameters and the filterbank products; forward and backward);
  3. the Python and dispatch overhead: the same steps at batch 1, where the arithmetic
     is nearly nothing, as a share of a step at batch 128.

    GENZOO_DATA=../shared/data python benchmarks/bench_draw.py
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable

import torch
from bench_vae import interleaved_best, loop_epoch, matmuls

from genzoo.config import TrainConfig
from genzoo.cpu import tune_process
from genzoo.data import load_data
from genzoo.models.draw import DRAW, DRAWConfig
from genzoo.runs import RunConfig


def step_matmuls(cfg: DRAWConfig, rows: int, pixels: int, side: int) -> list[tuple[int, ...]]:
    """(m, k, n) of the forward products of one drawing step for ``rows`` images; the
    filterbank products as (batch, m, k, n) batched ones."""
    h_enc, h_dec, latent = cfg.enc_hidden, cfg.dec_hidden, cfg.latent_dim
    gaussian = cfg.attention == "gaussian"
    read = 2 * cfg.read_size**2 if gaussian else 2 * pixels
    shapes: list[tuple[int, ...]] = [
        (rows, read + h_dec, 4 * h_enc),  # encoder LSTM: input part
        (rows, h_enc, 4 * h_enc),  # encoder LSTM: recurrent part
        (rows, h_enc, 2 * latent),  # q(z_t | h_enc)
        (rows, latent, 4 * h_dec),  # decoder LSTM: input part
        (rows, h_dec, 4 * h_dec),  # decoder LSTM: recurrent part
    ]
    if not gaussian:
        return [*shapes, (rows, h_dec, pixels)]  # write every pixel
    n_read, n_write = cfg.read_size, cfg.write_size
    return [
        *shapes,
        (rows, h_dec, 5),  # read window
        (rows, h_dec, 5),  # write window
        (rows, h_dec, n_write**2),  # the patch
        # read: F_Y x F_X^T for x and x_hat, (N, H) (H, W) then (N, W) (W, N)
        (2 * rows, n_read, side, side),
        (2 * rows, n_read, side, n_read),
        # write: F_Y^T patch F_X, (H, N) (N, N) then (H, N) (N, W)
        (rows, side, n_write, n_write),
        (rows, side, n_write, side),
    ]


def floor_job(cfg: DRAWConfig, rows: int, steps: int, side: int) -> Callable[[], None]:
    """Every product of ``steps`` training steps (T drawing steps each, forward and the
    two backward products per forward one, as for a linear layer)."""
    plain, batched = [], []
    for shape in step_matmuls(cfg, rows, side * side, side):
        if len(shape) == 3:
            m, k, n = shape
            plain += [(m, k, n), (k, m, n), (m, n, k)]
        else:
            b, m, k, n = shape
            batched += [(torch.randn(b, m, k), torch.randn(b, k, n))] * 3
    products = matmuls(plain, steps * cfg.steps)

    def run() -> None:
        products()
        for _ in range(steps * cfg.steps):
            for a, c in batched:
                torch.bmm(a, c)

    return run


def seconds_per_step(model: DRAW, x: torch.Tensor, repeats: int = 20) -> float:
    optimizers = model.configure_optimizers(1e-3)
    model.train_step(x, optimizers)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        model.train_step(x, optimizers)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=16, help="drawing steps T")
    parser.add_argument("--repeats", type=int, default=2, help="rounds for the epoch")
    parser.add_argument("--train-size", type=int, default=10000, help="images in the epoch")
    args = parser.parse_args()

    tune_process()
    data = load_data("mnist", "static", train_size=args.train_size)
    batch, side = 128, 28
    n_steps = math.ceil(len(data.train) / batch)
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{len(data.train)} images, batch {batch}, T={args.steps}"
    )
    print(f"{'attention':<10}{'epoch (s)':>10}{'floor (s)':>10}{'ratio':>7}{'python share':>14}")
    for attention in ("gaussian", "none"):
        cfg = DRAWConfig(steps=args.steps, attention=attention)
        train = TrainConfig(batch_size=batch, checkpoint_minutes=0, binarize="static")
        trainer, epoch = loop_epoch(RunConfig("draw", train, cfg), data)
        times = interleaved_best(
            {"job": epoch, "floor": floor_job(cfg, batch, n_steps, side)}, args.repeats
        )
        one = seconds_per_step(trainer.model, data.train.images[:1])
        full = seconds_per_step(trainer.model, data.train.images[:batch])
        print(
            f"{attention:<10}{times['job']:>10.2f}{times['floor']:>10.2f}"
            f"{times['job'] / times['floor']:>7.2f}{one / full:>13.0%}"
        )


if __name__ == "__main__":
    main()
