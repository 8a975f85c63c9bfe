"""The contract every model family follows, so one training loop trains them all.

Each model is an ``nn.Module`` that owns its loss (the wrapper-owns-the-loss pattern).
Families add what they have on top of this: ``prior`` and ``decode`` (latent-variable
models), ``encode`` and ``reconstruct`` (models with an encoder), ``log_likelihood``
(importance-sampled, latent-variable models), ``log_prob`` (exact, flows). The training
loop also calls two optional hooks: ``epoch_diagnostics(x) -> dict[str, float]`` on a
fixed training batch after every epoch (the binary VAE's gradient variance), and
``after_training(data)`` once on the best weights (the autoencoder's mixture fit).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch.optim import Optimizer


class GenerativeModel(Protocol):
    # Name of the ``evaluate_batch`` term that early stopping and the "best" checkpoint
    # minimise (e.g. "neg_elbo"); None where there is none (a GAN: the last epoch is kept).
    val_metric: str | None

    def configure_optimizers(self, lr: float) -> list[Optimizer]: ...

    def train_step(self, x: torch.Tensor, optimizers: list[Optimizer]) -> dict[str, float]:
        """One optimisation step on batch ``x`` (B, C, H, W); returns its scalar statistics."""
        ...

    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example terms, each of shape (B,), for validation and test."""
        ...

    def sample(self, n: int) -> torch.Tensor:
        """``n`` samples in image space, (n, C, H, W)."""
        ...


def step_single_loss(
    loss: torch.Tensor, optimizers: list[Optimizer], max_grad_norm: float | None = None
) -> None:
    """The whole update of a one-loss model: clear gradients, backpropagate, optionally
    clip the gradient's global norm to ``max_grad_norm``, step."""
    (optimizer,) = optimizers
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
