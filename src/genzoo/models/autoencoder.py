"""Deterministic and sparse autoencoders, made generative by a Gaussian mixture on the codes.

Hinton & Salakhutdinov (2006), "Reducing the Dimensionality of Data with Neural
Networks"; the L1 penalty is the usual convex relaxation of a sparsity (L0) count on the
code; fitting a density to the codes after training ("ex-post density estimation")
follows Ghosh et al. (2020), "From Variational to Deterministic Autoencoders".

    z = g(x),   x_hat = sigmoid(f(z)),
    loss = -log p(x | x_hat) + sparsity * ||z||_1,

with -log p the Bernoulli cross-entropy (``bce``) or half the squared error (``mse``, a
unit-variance Gaussian up to a constant), summed over pixels. An autoencoder alone
defines no distribution over z, so decoding z ~ N(0, I) gives poor images; after
training a Gaussian mixture (scikit-learn, full covariances) is fitted to the training
codes and stored in the model's buffers, and ``sample`` draws z from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Ellipse
from torch.distributions import MixtureSameFamily

from genzoo import plots
from genzoo.data import Data, Split, batches
from genzoo.errors import GenzooError
from genzoo.models.base import (
    Encodes,
    Figure,
    FigureContext,
    GenerativeModel,
    MixtureSampler,
    Reconstructs,
)
from genzoo.models.mixture import fit_gaussian_mixture, gaussian_mixture
from genzoo.nets import activation_field, mlp


@dataclass
class AutoencoderConfig:
    latent_dim: int = field(default=16, metadata={"help": "size of the code z"})
    hidden: tuple[int, ...] = field(
        default=(500,), metadata={"help": "hidden layer sizes of encoder (decoder mirrored)"}
    )
    activation: str = activation_field()
    recon: str = field(
        default="bce",
        metadata={
            "help": "reconstruction loss: Bernoulli (bce) or Gaussian (mse)",
            "choices": ("bce", "mse"),
        },
    )
    sparsity: float = field(
        default=0.0,
        metadata={"help": "weight of the L1 penalty on the code", "min": 0.0, "max": 1e6},
    )
    gmm_components: int = field(
        default=10, metadata={"help": "components of the Gaussian mixture on the codes"}
    )


class Autoencoder(GenerativeModel, Encodes, Reconstructs, MixtureSampler):
    val_metric = "loss"
    eval_terms: ClassVar[dict[str, str]] = {
        "loss": "loss",
        "recon": "reconstruction",
        "l1": "L1 of the code",
    }

    def __init__(self, cfg: AutoencoderConfig, image_shape: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        data_dim = math.prod(image_shape)
        self.encoder = mlp([data_dim, *cfg.hidden, cfg.latent_dim], cfg.activation)
        self.decoder = mlp([cfg.latent_dim, *reversed(cfg.hidden), data_dim], cfg.activation)
        c, d = cfg.gmm_components, cfg.latent_dim
        # The mixture lives in buffers, so it is saved and loaded with the weights.
        self.register_buffer("gmm_weights", torch.full((c,), 1.0 / c))
        self.register_buffer("gmm_means", torch.zeros(c, d))
        self.register_buffer("gmm_covariances", torch.eye(d).repeat(c, 1, 1))
        self.register_buffer("gmm_fitted", torch.tensor(False))

    # ------------------------------------------------------------------ loss

    def per_example_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example reconstruction loss, L1 norm of the code and their sum: each (B,)."""
        z = self.encoder(x.flatten(1))  # (B, L)
        logits = self.decoder(z)  # (B, D)
        target = x.flatten(1)
        if self.cfg.recon == "bce":
            recon = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
        else:
            recon = 0.5 * (torch.sigmoid(logits) - target).pow(2).sum(-1)
        l1 = z.abs().sum(-1)
        return {"loss": recon + self.cfg.sparsity * l1, "recon": recon, "l1": l1}

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        terms = self.per_example_terms(x)
        return terms["loss"].mean(), {name: value.mean().item() for name, value in terms.items()}

    @torch.no_grad()
    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.per_example_terms(x)

    # ------------------------------------------------------------------ the mixture

    @torch.no_grad()
    def fit_mixture(self, codes: torch.Tensor, seed: int = 0) -> None:
        """Fit the mixture to codes (N, L) and store it in the buffers."""
        fitted = fit_gaussian_mixture(codes, self.cfg.gmm_components, seed)
        for name, value in zip(
            ("gmm_weights", "gmm_means", "gmm_covariances"), fitted, strict=True
        ):
            getattr(self, name).copy_(value)
        self.gmm_fitted.fill_(True)

    def after_training(self, data: Data) -> None:
        """Fit the mixture to the codes of the training images (one binarized draw)."""
        self.eval()
        codes = torch.cat([self.encode(x) for x in batches(data.train, 1000, data.binarize)])
        self.fit_mixture(codes)

    def ready_to_sample(self) -> bool:
        """Once the sampler, the mixture, is fitted, when training ends."""
        return bool(self.gmm_fitted)

    def figures(self, context: FigureContext) -> dict[str, Figure]:
        return {"mixture.png": lambda path: draw_mixture(self, context.test, path)}

    def mixture(self) -> MixtureSameFamily:
        if not self.gmm_fitted:
            raise GenzooError(
                "the Gaussian mixture is fitted when training ends; this "
                "checkpoint has none yet (finish training, or --resume it)"
            )
        return gaussian_mixture(self.gmm_weights, self.gmm_means, self.gmm_covariances)

    # ------------------------------------------------------------------ images

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))  # (B, L)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z)).view(-1, *self.image_shape)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """Decoded images of codes drawn from the fitted mixture: (n, C, H, W)
        (``temperature`` unused)."""
        return self.decode(self.mixture().sample((n,)))

    @torch.no_grad()
    def sample_standard_normal(self, n: int) -> torch.Tensor:
        """Decoded images of z ~ N(0, I): what a plain autoencoder gives without a density."""
        return self.decode(torch.randn(n, self.cfg.latent_dim, device=self.gmm_means.device))


def draw_mixture(model: Autoencoder, split: Split, path: Path, n: int = 5000) -> None:
    """Codes of test images by class with the fitted mixture's 2-sigma ellipses on top;
    beside them, decoded samples from the mixture and from N(0, I)."""
    codes = plots.encode_split(model.encode, split, n)
    points, pca, axis_name = plots.codes_in_2d(codes)
    mixture = model.mixture()
    means = mixture.component_distribution.mean.cpu().numpy()  # (C, L)
    covs = mixture.component_distribution.covariance_matrix.cpu().numpy()  # (C, L, L)
    if pca is not None:  # project the components the same way as the codes
        means, covs = pca.transform(means), pca.components_ @ covs @ pca.components_.T
    elif codes.shape[1] == 1:
        means = np.hstack([means, np.zeros_like(means)])
        covs = np.pad(covs, ((0, 0), (0, 1), (0, 1)), constant_values=1e-6)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), width_ratios=[1.25, 1, 1])
    labels = None if split.labels is None else split.labels[:n].cpu().numpy()
    plots.scatter_by_class(fig, axes[0], points, labels)
    for weight, mean, cov in zip(
        mixture.mixture_distribution.probs.tolist(), means, covs, strict=True
    ):
        eigvals, eigvecs = np.linalg.eigh(cov)
        angle = np.degrees(np.arctan2(eigvecs[1, 1], eigvecs[0, 1]))
        width, height = 4 * np.sqrt(np.maximum(eigvals[::-1], 0))  # 2 sigma each side
        axes[0].add_patch(Ellipse(mean, width, height, angle=angle, fill=False, lw=1 + 6 * weight))
    axes[0].set(title=f"codes of test images and the mixture ({axis_name})")
    plots.show(axes[1], plots.image_grid(model.sample(plots.N_GRID), 8), "z from the mixture")
    plots.show(
        axes[2], plots.image_grid(model.sample_standard_normal(plots.N_GRID), 8), "z from N(0, I)"
    )
    plots.save_figure(fig, path)
