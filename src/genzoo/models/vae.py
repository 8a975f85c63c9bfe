"""Variational autoencoder with a Gaussian latent and Bernoulli pixels.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes", and Burda, Grosse &
Salakhutdinov (2016), "Importance Weighted Autoencoders".

    p(z) = N(0, I),   p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z))_d),
    q(z|x) = N(mu(x), diag sigma^2(x)).

Objectives (maximised; the loss is their negative):

- ``elbo``: E_q[log p(x|z)] - KL(q(z|x) || p(z)), the expectation estimated with
  ``mc_samples`` reparameterized draws z = mu + sigma * eps and the KL in closed form
  (the SGVB estimator of Kingma & Welling, eq. 7);
- ``iwae``: E[log (1/k) sum_i p(x, z_i) / q(z_i|x)], z_i ~ q(z|x), which is >= the ELBO
  and tightens as k grows.

The marginal log-likelihood log p(x) is estimated by importance sampling with K draws
from q(z|x) (or, to show how much worse it is, from the prior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence
from torch.optim import Adam, Optimizer

from genzoo.models.base import step_single_loss
from genzoo.nets import ACTIVATIONS, mlp

# The one place where the number of (latent-sample x example) rows pushed through the
# decoder at once is set: bounds memory of the importance-sampled likelihood.
MAX_DECODER_ROWS = 16384


@dataclass
class VAEConfig:
    latent_dim: int = field(default=20, metadata={"help": "size of the Gaussian latent z"})
    hidden: tuple[int, ...] = field(
        default=(500,), metadata={"help": "hidden layer sizes of encoder (decoder mirrored)"}
    )
    activation: str = field(
        default="relu", metadata={"help": "hidden activation", "choices": tuple(ACTIVATIONS)}
    )
    objective: str = field(
        default="elbo", metadata={"help": "training objective", "choices": ("elbo", "iwae")}
    )
    mc_samples: int = field(
        default=1, metadata={"help": "reparameterized samples per example for the ELBO"}
    )
    k: int = field(default=5, metadata={"help": "importance samples for --objective iwae"})


class VAE(nn.Module):
    val_metric = "neg_elbo"

    def __init__(self, cfg: VAEConfig, image_shape: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        data_dim = math.prod(image_shape)
        self.encoder = mlp([data_dim, *cfg.hidden, 2 * cfg.latent_dim], cfg.activation)
        self.decoder = mlp([cfg.latent_dim, *reversed(cfg.hidden), data_dim], cfg.activation)
        # Buffers, so the prior follows the model to its device.
        self.register_buffer("prior_loc", torch.zeros(cfg.latent_dim))
        self.register_buffer("prior_scale", torch.ones(cfg.latent_dim))

    # ------------------------------------------------------------------ distributions

    def prior(self) -> Independent:
        return Independent(Normal(self.prior_loc, self.prior_scale), 1)

    def posterior(self, x: torch.Tensor) -> Independent:
        """q(z|x) for images x (B, C, H, W); batch shape (B,), event shape (L,)."""
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=-1)  # (B, L) each
        return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)

    def likelihood(self, z: torch.Tensor) -> Independent:
        """p(x|z) for z (..., L); event shape (D,), over flattened pixels."""
        # validate_args=False: grey-level targets (--binarize none) use the same
        # cross-entropy, and the support check costs a pass over every pixel.
        return Independent(Bernoulli(logits=self.decoder(z), validate_args=False), 1)

    # ------------------------------------------------------------------ objectives

    def elbo_terms(self, x: torch.Tensor, n_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction term -E_q log p(x|z) and KL(q||p), each (B,), in nats."""
        q = self.posterior(x)
        z = q.rsample((n_samples,))  # (S, B, L)
        recon = -self.likelihood(z).log_prob(x.flatten(1)).mean(0)  # (B,)
        return recon, kl_divergence(q, self.prior())

    def log_weights(self, x: torch.Tensor, k: int, proposal: str = "posterior") -> torch.Tensor:
        """log p(x, z_i) - log r(z_i), z_i ~ r, for r = q(z|x) or p(z); shape (k, B)."""
        prior = self.prior()
        if proposal == "posterior":
            r = self.posterior(x)
        elif proposal == "prior":
            r = prior.expand((x.shape[0],))
        else:
            raise ValueError(f"unknown proposal {proposal!r}")
        z = r.rsample((k,))  # (k, B, L)
        log_px_z = self.likelihood(z).log_prob(x.flatten(1))  # (k, B)
        return log_px_z + prior.log_prob(z) - r.log_prob(z)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if self.cfg.objective == "iwae":
            log_w = self.log_weights(x, self.cfg.k)  # (k, B)
            bound = torch.logsumexp(log_w, 0) - math.log(self.cfg.k)  # (B,)
            loss = -bound.mean()
            with torch.no_grad():
                recon, kl = self.elbo_terms(x)
        else:
            recon, kl = self.elbo_terms(x, self.cfg.mc_samples)
            loss = (recon + kl).mean()
        stats = {
            "loss": loss.item(),
            "neg_elbo": (recon + kl).mean().item(),
            "recon": recon.mean().item(),
            "kl": kl.mean().item(),
        }
        return loss, stats

    # ------------------------------------------------------------------ model contract

    def configure_optimizers(self, lr: float) -> list[Optimizer]:
        return [Adam(self.parameters(), lr=lr)]

    def train_step(self, x: torch.Tensor, optimizers: list[Optimizer]) -> dict[str, float]:
        loss, stats = self.loss(x)
        step_single_loss(loss, optimizers)
        return stats

    @torch.no_grad()
    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        recon, kl = self.elbo_terms(x)
        return {"neg_elbo": recon + kl, "recon": recon, "kl": kl}

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int, proposal: str = "posterior") -> torch.Tensor:
        """Importance-sampled log p(x) with ``k`` samples, (B,) float64, nats.

        log p(x) ~= log (1/k) sum_i w_i; the k weights are drawn in chunks so at most
        MAX_DECODER_ROWS rows pass the decoder at once, and combined in float64.
        """
        chunk = max(1, MAX_DECODER_ROWS // x.shape[0])
        log_w = torch.cat(
            [
                self.log_weights(x, min(chunk, k - start), proposal).double()
                for start in range(0, k, chunk)
            ]
        )  # (k, B)
        return torch.logsumexp(log_w, 0) - math.log(k)

    # ------------------------------------------------------------------ images

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel means (Bernoulli probabilities) for z (N, L): (N, C, H, W)."""
        return torch.sigmoid(self.decoder(z)).view(-1, *self.image_shape)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means (B, L)."""
        return self.posterior(x).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return torch.bernoulli(self.decode(self.prior().sample((n,))))
