"""The contract every model family follows, so one training loop trains them all.

Each family is an ``nn.Module`` subclass of ``GenerativeModel`` (one level, no deeper)
that owns its loss, the wrapper-owns-the-loss pattern of nanoGPT and the Flax examples:

- ``loss(x) -> (loss, stats)``: the one name for the objective on a batch x (B, C, H, W).
  ``loss`` is the scalar tensor to minimise; ``stats`` holds plain floats for the
  metrics, among them ``"loss"`` (the figure the progress bar shows and the loop checks
  for divergence).
- ``configure_optimizers(lr)`` and ``train_step(x, optimizers)``: the defaults build one
  Adam and take one backward pass of ``loss`` (clipped to ``max_grad_norm`` if set); a
  family with several players (the GAN) overrides both. ``train_step`` computes every
  objective it backpropagates through ``self.objective(x, name)``, which goes through
  DistributedDataParallel when the run is data-parallel (distributed.py).
- ``evaluate_batch(x) -> {name: (B,) tensor}``: per-example terms for validation and
  test, named in ``eval_terms`` with their labels and ``units``.
- ``sample(n, temperature=1.0)``: n images (n, C, H, W) in [0, 1].
- Hooks the loop calls, no-ops by default: ``epoch_diagnostics(x)`` on a fixed training
  batch after every epoch (the binary VAE's gradient variance), ``after_training(data)``
  once on the best weights (the autoencoder's mixture fit).

What a family can do beyond that is declared here as class attributes, so the loop,
the figures and the CLI read a flag instead of probing with ``hasattr``:

- ``can_encode``: ``encode(x) -> z`` and ``decode(z) -> images`` (interpolations, the
  latent scatter);
- ``can_reconstruct``: ``reconstruct(x)``;
- ``has_prior``: ``prior()``, the distribution of the latent or noise z (with
  ``can_encode``, a 2-D Gaussian prior gives the manifold figure through ``decode``);
- ``bernoulli_pixels``: ``decode`` gives Bernoulli means, ``sample`` draws 0/1 pixels;
- ``has_likelihood``: ``log_likelihood(x, k, proposal)``, importance sampled;
- ``has_mixture``: ``mixture()`` and ``sample_standard_normal(n)`` (the autoencoder);
- ``sample_temperatures``: temperatures at which ``sample`` is meaningful and drawn in
  the figures (the flow); empty where ``temperature`` is ignored;
- ``samples_while_training``: sample grids during training make sense;
- ``draws_on_canvas``: ``sample_sequence`` and ``reconstruct_sequence``, the canvas
  step by step with its attention windows (DRAW's drawing figures);
- ``leaves_parameters_unused``: some objective of ``train_step`` leaves parameters out
  of its graph (the GAN's discriminator step, the generator): DDP must look for them;
- ``val_metric``: the ``evaluate_batch`` term that early stopping and the ``best``
  checkpoint minimise (None: none, the last epoch is kept);
- ``curve_panels`` and ``reference_lines``: the training-curve figure's panels (None:
  made from the metrics) and labelled horizontal lines on some panels;
- ``compare_metrics``: the curves ``genzoo compare`` draws for this family beyond its
  validation metric, each with a labelled horizontal line or None.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution
from torch.optim import Adam, Optimizer

from genzoo.data import Data


class GenerativeModel(nn.Module):
    val_metric: ClassVar[str | None] = "loss"
    # name -> printed label, for the terms of evaluate_batch (and of evaluation, e.g. nll)
    eval_terms: ClassVar[dict[str, str]] = {"loss": "loss"}
    units: ClassVar[str] = "nats per image"
    loss_label: ClassVar[str] = "loss"  # what stats["loss"] is, as the epoch line prints it
    can_encode: ClassVar[bool] = False
    can_reconstruct: ClassVar[bool] = False
    has_prior: ClassVar[bool] = False
    bernoulli_pixels: ClassVar[bool] = False
    has_likelihood: ClassVar[bool] = False
    has_mixture: ClassVar[bool] = False
    sample_temperatures: ClassVar[tuple[float, ...]] = ()
    samples_while_training: ClassVar[bool] = True
    draws_on_canvas: ClassVar[bool] = False
    leaves_parameters_unused: ClassVar[bool] = False
    curve_panels: ClassVar[dict[str, list[str]] | None] = None
    reference_lines: ClassVar[dict[str, tuple[float, str]]] = {}
    compare_metrics: ClassVar[dict[str, tuple[float, str] | None]] = {}
    max_grad_norm: float | None = None  # clip the gradient's global norm in train_step
    # Set by the loop for a data-parallel run: a distributed.DataParallel.
    parallel: Any = None

    # ------------------------------------------------------------------ objective

    def forward(self, x: torch.Tensor, objective: str = "loss") -> Any:
        """The objective method ``objective`` on batch x: what DistributedDataParallel
        calls (through ``self.objective``)."""
        return getattr(self, objective)(x)

    def objective(
        self, x: torch.Tensor, name: str = "loss"
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective method ``name`` on batch ``x``: (loss, stats). In a data-parallel
        run through DDP, so that the next backward pass averages the gradients over the
        processes, with the stats averaged over the global batch."""
        if self.parallel is None:
            return self(x, name)
        return self.parallel(x, name)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar objective on batch ``x`` (B, C, H, W) and its statistics (floats,
        ``"loss"`` among them)."""
        raise NotImplementedError

    def configure_optimizers(self, lr: float) -> list[Optimizer]:
        # fused: one kernel for the whole update, on the CPU as on CUDA; the unfused
        # update costs as much as the forward and backward products of a small MLP.
        return [Adam(self.parameters(), lr=lr, fused=fused_adam_available(self))]

    def train_step(self, x: torch.Tensor, optimizers: list[Optimizer]) -> dict[str, float]:
        """One optimisation step on batch ``x``; returns its statistics."""
        loss, stats = self.objective(x)
        check_stats(stats)
        step_single_loss(loss, optimizers, self.max_grad_norm)
        return stats

    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example terms, each of shape (B,), for validation and test."""
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``n`` samples in image space, (n, C, H, W) in [0, 1]."""
        raise NotImplementedError

    # ------------------------------------------------------------------ loop hooks

    def epoch_diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        """Figures measured on a fixed training batch after every epoch (none here)."""
        return {}

    def after_training(self, data: Data) -> None:
        """Runs once on the best weights when training ends (nothing here)."""

    # ------------------------------------------------------------------ capabilities

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not encode (can_encode)")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not decode (can_encode)")

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not reconstruct")

    def prior(self) -> Distribution:
        raise NotImplementedError(f"{type(self).__name__} has no prior (has_prior)")

    def log_likelihood(self, x: torch.Tensor, k: int, proposal: str = "posterior") -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no likelihood (has_likelihood)")


def fused_adam_available(model: nn.Module) -> bool:
    """Fused Adam runs on the CPU and CUDA (torch >= 2.4), not on every other device."""
    return next(model.parameters()).device.type in ("cpu", "cuda")


def check_values(name: str, values: torch.Tensor, positive: bool = False) -> torch.Tensor:
    """Return ``values`` if finite (and > 0 with ``positive``), else raise
    FloatingPointError, which the loop reports as divergence. Called by the families
    before a network's output parameterizes a distribution, whose own check would
    otherwise end a diverged run in a ValueError traceback."""
    bad = ~torch.isfinite(values)
    if positive:
        bad |= values <= 0
    if bad.any():
        raise FloatingPointError(f"{name} became {values[bad].flatten()[0].item()}")
    return values


def check_stats(stats: dict[str, Any]) -> None:
    """The loop needs a float ``"loss"`` among a family's statistics."""
    if not isinstance(stats.get("loss"), float):
        raise TypeError(
            f"a model's loss() must return stats with a float 'loss'; got keys {sorted(stats)}"
        )


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
