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
from torch.distributions import Independent, Normal

from genzoo.models.base import check_values
from genzoo.models.latent import LatentVariableModel
from genzoo.nets import activation_field, mlp


@dataclass
class VAEConfig:
    latent_dim: int = field(default=20, metadata={"help": "size of the Gaussian latent z"})
    hidden: tuple[int, ...] = field(
        default=(500,), metadata={"help": "hidden layer sizes of encoder (decoder mirrored)"}
    )
    activation: str = activation_field()
    objective: str = field(
        default="elbo", metadata={"help": "training objective", "choices": ("elbo", "iwae")}
    )
    mc_samples: int = field(
        default=1, metadata={"help": "reparameterized samples per example for the ELBO"}
    )
    k: int = field(default=5, metadata={"help": "importance samples for --objective iwae"})


class VAE(LatentVariableModel):
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

    def prior(self) -> Independent:
        return Independent(Normal(self.prior_loc, self.prior_scale), 1)

    def posterior(self, x: torch.Tensor) -> Independent:
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=-1)  # (B, L) each
        scale = check_values("the posterior's scale", torch.exp(0.5 * logvar), positive=True)
        return Independent(Normal(check_values("the posterior's mean", mu), scale), 1)

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
