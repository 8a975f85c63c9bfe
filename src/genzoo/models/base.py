"""The contract every model family follows, so one training loop trains them all.

The hierarchy is at most two levels deep: a family subclasses ``GenerativeModel``
directly, or through one shared intermediate (``LatentVariableModel``, latent.py, for
the VAEs with Bernoulli pixels); no deeper. Each family is an ``nn.Module`` that owns
its loss, the wrapper-owns-the-loss pattern of nanoGPT and the Flax examples:

- ``loss(x) -> (loss, stats)`` (abstract): the one name for the objective on a batch x
  (B, C, H, W). ``loss`` is the scalar tensor to minimise; ``stats`` holds plain floats
  for the metrics, among them ``"loss"`` (the figure the progress bar shows and the loop
  checks for divergence).
- ``configure_optimizers(lr)`` and ``train_step(x, optimizers)``: the defaults build one
  Adam and take one backward pass of ``loss`` (clipped to ``max_grad_norm`` if set); a
  family with several players (the GAN) overrides both. ``train_step`` computes every
  objective it backpropagates through ``self.objective(x, name)``, which goes through
  DistributedDataParallel when the run is data-parallel (distributed.py); ``objectives``
  names them (with more than one, each leaves some parameters out of its graph, which DDP
  must be told).
- ``evaluate_batch(x) -> {name: (B,) tensor}`` (abstract): per-example terms for
  validation and test, named in ``eval_terms`` with their labels and ``units``.
- ``sample(n, temperature=1.0)`` (abstract): n images (n, C, H, W) in [0, 1].
- Hooks with defaults: ``ready_to_sample()`` (False where the sampler is made when
  training ends, so no grids are drawn while training), ``epoch_diagnostics(x)`` on a fixed
  training batch after every epoch, ``before_training(data, seed)`` once before training
  (fresh or resumed), ``after_training(data)`` once on the best weights,
  and ``figures(context)``: the family's own figures, beyond the common ones of plots.py.

Generic presentation facts stay declared data: ``val_metric`` (the ``evaluate_batch``
term that early stopping and the ``best`` checkpoint minimise; None: the last epoch is
kept), ``curve_panels`` and ``reference_lines`` (the training-curve figure's panels and
labelled horizontal lines), ``compare_metrics`` (the curves ``genzoo compare`` draws).

What other code calls beyond that is a small declared interface, an abstract class the
family inherits beside ``GenerativeModel``; the type is the one source of truth
(``isinstance(model, Encodes)``), and a family cannot declare an ability without
defining its methods (it fails when instantiated):

- ``Encodes``: ``encode(x) -> z`` and ``decode(z) -> images`` (interpolations, the
  latent scatter);
- ``Reconstructs``: ``reconstruct(x)``;
- ``HasPrior``: ``prior()``, the distribution of the latent or noise z (with ``Encodes``,
  a 2-D Gaussian prior gives the manifold figure);
- ``PixelMeans``: ``sample_means(n)``, the Bernoulli means of p(x|z), z ~ p(z), whose
  0/1 draws ``sample`` gives (the figures show both; the quality scores see the means);
- ``Likelihood``: ``log_likelihood(x, samples, proposal)``, log p(x) per example by the
  family's ``likelihood_estimator``, which says what it is (an importance-sampled
  estimate, a bound, an exact value), what ``samples`` counts and its units;
- ``MixtureSampler``: ``mixture()`` and ``sample_standard_normal(n)`` (the autoencoder);
- ``Conditional``: ``takes_labels()`` (as configured: trained on the labels; the loop
  then passes each batch's labels to ``train_step`` and its objectives unless
  ``batch_labels()`` says no: a semi-supervised model holds its own few labelled images),
  ``sample_classes(labels)``, samples of chosen classes, ``class_count()`` and
  ``evaluate_labelled(x, labels)``, the per-example terms of labelled images (diffusion,
  vae and gan with ``--conditional``, vae with ``--labels``: then the figures get a row
  per class and the quality scores the accuracy per class);
- ``Tempered``: ``sample`` honours its ``temperature``, and ``figure_temperatures()``
  are the ones the figures show (the flow).

Settings of ``sample`` that a user may change on a trained model (a sampler, its steps,
guidance) are fields of the family's config marked ``"sampling": True`` in their
metadata: ``genzoo sample`` and ``genzoo eval`` take them as flags and rebuild the model
with them (``sampling_note()`` says what was used).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution, MixtureSameFamily
from torch.optim import Adam, Optimizer

from genzoo.data import Data, Split
from genzoo.errors import GenzooError

# A figure of a family: writes its file at the path it is given.
Figure = Callable[[Path], None]


@dataclass(frozen=True)
class FigureContext:
    """What a family's ``figures`` may draw from: the run's test images (with their
    labels where the dataset has them)."""

    test: Split


class GenerativeModel(nn.Module, ABC):
    val_metric: ClassVar[str | None] = "loss"
    # name -> printed label, for the terms of evaluate_batch (and of evaluation, e.g. nll)
    eval_terms: ClassVar[dict[str, str]] = {"loss": "loss"}
    units: ClassVar[str] = "nats per image"
    loss_label: ClassVar[str] = "loss"  # what stats["loss"] is, as the epoch line prints it
    # The objective methods train_step runs through ``self.objective``.
    objectives: ClassVar[tuple[str, ...]] = ("loss",)
    # torch.compile with dynamic shapes (one compile serves every batch size); False where
    # inductor cannot compile the model over symbolic sizes.
    compile_dynamic: ClassVar[bool] = True
    curve_panels: ClassVar[dict[str, list[str]] | None] = None
    reference_lines: ClassVar[dict[str, tuple[float, str]]] = {}
    compare_metrics: ClassVar[dict[str, tuple[float, str] | None]] = {}
    max_grad_norm: float | None = None  # clip the gradient's global norm in train_step
    # Set by the loop for a data-parallel run: a distributed.DataParallel.
    parallel: Any = None

    # ------------------------------------------------------------------ objective

    def forward(
        self, x: torch.Tensor, objective: str = "loss", labels: torch.Tensor | None = None
    ) -> Any:
        """The objective method ``objective`` on batch x (and its labels, for a model that
        takes them): what DistributedDataParallel calls (through ``self.objective``)."""
        method = getattr(self, objective)
        return method(x) if labels is None else method(x, labels)

    def objective(
        self, x: torch.Tensor, name: str = "loss", labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective method ``name`` on batch ``x`` (with ``labels`` (B,) where the
        model takes them): (loss, stats). In a data-parallel run through DDP, so that the
        next backward pass averages the gradients over the processes, with the stats
        averaged over the global batch."""
        if self.parallel is None:
            return self(x, name, labels)
        return self.parallel(x, name, labels)

    @abstractmethod
    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar objective on batch ``x`` (B, C, H, W) and its statistics (floats,
        ``"loss"`` among them)."""

    def configure_optimizers(self, lr: float) -> list[Optimizer]:
        # fused: one kernel for the whole update, on the CPU as on CUDA; the unfused
        # update costs as much as the forward and backward products of a small MLP.
        return [Adam(trainable(self), lr=lr, fused=fused_adam_available(self))]

    def train_step(
        self, x: torch.Tensor, optimizers: list[Optimizer], labels: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One optimisation step on batch ``x`` (with its ``labels`` (B,) for a model that
        takes them: ``Conditional``); returns its statistics."""
        loss, stats = self.objective(x, labels=labels)
        check_stats(stats)
        step_single_loss(loss, optimizers, self.max_grad_norm)
        return stats

    @abstractmethod
    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example terms, each of shape (B,), for validation and test."""

    @abstractmethod
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``n`` samples in image space, (n, C, H, W) in [0, 1]."""

    # ------------------------------------------------------------------ hooks

    def sampling_note(self) -> str:
        """How ``sample`` draws, where it has settings (a sampler and its steps), for the
        protocol lines of eval.json and the pages; empty where it has none."""
        return ""

    def ready_to_sample(self) -> bool:
        """Whether ``sample`` works in the model's present state: the grids drawn while
        training skip the epochs where it does not (the autoencoder's mixture is fitted
        when training ends)."""
        return True

    def epoch_diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        """Figures measured on a fixed training batch after every epoch (none here)."""
        return {}

    def before_training(self, data: Data, seed: int) -> None:
        """Runs once before training, fresh or resumed, with the run's data and seed
        (nothing here; M2 takes its labelled images from the data)."""

    def after_epoch(self, epoch: int) -> None:
        """Runs after each epoch's validation, on the weights it saw (the average, if
        any) (nothing here; diffusion keeps an early epoch's as its guide)."""

    def after_training(self, data: Data) -> None:
        """Runs once on the best weights when training ends (nothing here)."""

    def figures(self, context: FigureContext) -> dict[str, Figure]:
        """The family's own figures, file name -> drawing function, drawn after the common
        ones of plots.py from the same weights (none here)."""
        return {}


# ---------------------------------------------------------------------- abilities


class Encodes(ABC):
    """An encoder to a latent code and a decoder back to images."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (B, L) of images x (B, C, H, W)."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] of codes z (N, L)."""


class Reconstructs(ABC):
    @abstractmethod
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions (B, C, H, W) in [0, 1] of images x."""


class HasPrior(ABC):
    @abstractmethod
    def prior(self) -> Distribution:
        """p(z), the distribution of the latent or noise z; event shape (L,)."""


class PixelMeans(ABC):
    """Bernoulli pixels: ``sample`` gives 0/1 draws of the means this returns."""

    @abstractmethod
    def sample_means(self, n: int) -> torch.Tensor:
        """Pixel means (n, C, H, W) of p(x|z), z ~ p(z)."""


@dataclass(frozen=True)
class LikelihoodEstimator:
    """What a family's ``log_likelihood`` returns, as eval.json and the pages state it.

    ``kind``: "estimate" (converges to log p(x) as ``samples`` grows: importance
    sampling), "lower bound" (its NLL is an upper bound: a variational bound), or "exact".
    ``samples``: what the ``samples`` argument counts, None where it is unused.
    ``eight_bit``: the likelihood is of 8-bit images (grey levels 0..255), so bits per
    dimension, NLL / (D ln 2), are reported beside it.
    ``default_samples``: what ``genzoo eval`` uses unless told (the protocol of the
    figures this family reports: K = 5000 for importance sampling).
    """

    name: str
    kind: str
    samples: str | None = None
    eight_bit: bool = False
    default_samples: int = 5000


class Likelihood(ABC):
    """log p(x) per example, by the family's own estimator."""

    # Where the estimator may draw its samples from, where it has a choice (evaluation.py's
    # PROPOSALS: "posterior" q(z|x), "prior" p(z)); empty where it has none.
    proposals: ClassVar[tuple[str, ...]] = ()

    @property
    @abstractmethod
    def likelihood_estimator(self) -> LikelihoodEstimator:
        """What ``log_likelihood`` is (a class attribute will do where it is fixed)."""

    @abstractmethod
    def log_likelihood(
        self, x: torch.Tensor, samples: int, proposal: str = "posterior"
    ) -> torch.Tensor:
        """log p(x) (or its bound) for images x (B, C, H, W): (B,) float64, nats."""


class MixtureSampler(ABC):
    """A Gaussian mixture fitted to the codes, from which ``sample`` draws."""

    @abstractmethod
    def mixture(self) -> MixtureSameFamily:
        """The fitted mixture over codes; event shape (L,)."""

    @abstractmethod
    def sample_standard_normal(self, n: int) -> torch.Tensor:
        """Decoded images (n, C, H, W) of z ~ N(0, I), for comparison with the mixture."""


class Conditional(ABC):
    """Trained on the class labels (where ``takes_labels()``: the loop then passes them
    to ``train_step`` and its objectives), and so samples of chosen classes."""

    @abstractmethod
    def takes_labels(self) -> bool:
        """Whether this model, as configured, is trained on labels."""

    @abstractmethod
    def sample_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """One image (n, C, H, W) in [0, 1] of each label of ``labels`` (n,)."""

    @abstractmethod
    def class_count(self) -> int:
        """The number of classes, labelled 0 .. class_count() - 1."""

    def sample_uniform_classes(self, n: int, device: torch.device) -> torch.Tensor:
        """n images (n, C, H, W) of classes drawn uniformly: a conditional model's
        ``sample``."""
        return self.sample_classes(torch.randint(self.class_count(), (n,), device=device))

    def batch_labels(self) -> bool:
        """Whether the loop passes each training batch's labels (where ``takes_labels()``);
        no for a semi-supervised model, which draws its labelled images from the few it
        holds and sees the loop's batches as unlabelled."""
        return self.takes_labels()

    def evaluate_labelled(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``evaluate_batch``'s per-example terms (B,) of images x with their labels (B,),
        which a model trained on labels may use (the discriminator's verdict on x as its
        class, a classifier's error); by default the terms of x alone."""
        return self.evaluate_batch(x)  # the GenerativeModel's method


def check_classes(
    labels: torch.Tensor, classes: int, conditional: bool, flags: str = "--conditional"
) -> None:
    """Refuse, in one line, samples of given classes from a model trained without labels
    (``conditional`` False; ``flags`` name what would have trained it on them) or labels
    outside 0 .. classes - 1."""
    if not conditional:
        raise GenzooError(f"sampling given classes needs a model trained with {flags}")
    if labels.min() < 0 or labels.max() >= classes:
        raise GenzooError(f"--class must be a class of the run, 0 to {classes - 1}")


def trained_on_labels(model: object) -> bool:
    """A ``Conditional`` model that, as configured, is trained on labels and samples
    chosen classes."""
    return isinstance(model, Conditional) and model.takes_labels()


class Tempered(ABC):
    """``sample(n, temperature)`` honours the temperature (z ~ N(0, T^2 I))."""

    @abstractmethod
    def figure_temperatures(self) -> tuple[float, ...]:
        """The temperatures the figures show."""


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer updates (not a frozen copy such as diffusion's guide)."""
    return [p for p in model.parameters() if p.requires_grad]


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
