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
from typing import ClassVar

import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from genzoo.data import Data, batches
from genzoo.errors import GenzooError
from genzoo.models.base import GenerativeModel
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


class Autoencoder(GenerativeModel):
    val_metric = "loss"
    eval_terms: ClassVar[dict[str, str]] = {
        "loss": "loss",
        "recon": "reconstruction",
        "l1": "L1 of the code",
    }
    can_encode = can_reconstruct = has_mixture = True
    samples_while_training = False  # sampling needs the mixture, fitted at the end

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
    def fit_mixture(self, codes: torch.Tensor, seed: int = 0) -> GaussianMixture:
        """Fit the mixture to codes (N, L) and store it in the buffers."""
        gmm = GaussianMixture(self.cfg.gmm_components, covariance_type="full", random_state=seed)
        gmm.fit(codes.double().cpu().numpy())
        for name, value in (
            ("gmm_weights", gmm.weights_),
            ("gmm_means", gmm.means_),
            ("gmm_covariances", gmm.covariances_),
        ):
            getattr(self, name).copy_(torch.from_numpy(value))
        self.gmm_fitted.fill_(True)
        return gmm

    def after_training(self, data: Data) -> None:
        """Fit the mixture to the codes of the training images (one binarized draw)."""
        self.eval()
        codes = torch.cat([self.encode(x) for x in batches(data.train, 1000, data.binarize)])
        self.fit_mixture(codes)

    def mixture(self) -> MixtureSameFamily:
        if not self.gmm_fitted:
            raise GenzooError(
                "the Gaussian mixture is fitted when training ends; this "
                "checkpoint has none yet (finish training, or --resume it)"
            )
        components = MultivariateNormal(self.gmm_means, covariance_matrix=self.gmm_covariances)
        return MixtureSameFamily(Categorical(probs=self.gmm_weights), components)

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
