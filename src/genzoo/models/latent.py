"""What every latent-variable model with Bernoulli pixels shares.

A subclass defines the prior p(z), the encoder q(z|x) (``posterior``) and a ``decoder``
network giving pixel logits; this class turns them into the ELBO terms, importance
weights, the importance-sampled log-likelihood and the image-space helpers, the same
for a Gaussian latent (vae.py) and a Bernoulli latent (binary_vae.py):

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))
    log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / r(z_k),  z_k ~ r = q(z|x) or p(z).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, kl_divergence

from genzoo.models.base import (
    Encodes,
    GenerativeModel,
    HasPrior,
    Likelihood,
    LikelihoodEstimator,
    PixelMeans,
    Reconstructs,
)
from genzoo.stats import importance_sampled_log_mean

# What ``log_likelihood`` is, for every latent-variable family (DRAW's too).
IMPORTANCE_SAMPLING = LikelihoodEstimator("importance sampling", "estimate", "K")

# The one place where the number of (latent-sample x example) rows pushed through the
# decoder at once is set: bounds the memory of the importance-sampled likelihood. At 4096
# rows the logits stay in the CPU's cache between the product that makes them and the
# softplus that reads them: K = 1000 for 100 images took 885 ms in chunks of 4096 rows
# against 1022 ms in chunks of 16384 (one thread; the products alone 640-680 ms).
MAX_DECODER_ROWS = 4096


class LatentVariableModel(GenerativeModel, Encodes, Reconstructs, HasPrior, PixelMeans, Likelihood):
    val_metric = "neg_elbo"
    eval_terms: ClassVar[dict[str, str]] = {
        "neg_elbo": "-ELBO",
        "recon": "reconstruction",
        "kl": "KL",
        "nll": "NLL",
    }
    likelihood_estimator = IMPORTANCE_SAMPLING
    proposals = ("posterior", "prior")
    image_shape: tuple[int, ...]
    decoder: nn.Module

    @abstractmethod
    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for images x (B, C, H, W); batch shape (B,), event shape (L,)."""

    def likelihood(self, z: torch.Tensor) -> Independent:
        """p(x|z) for z (..., L); event shape (D,), over flattened pixels."""
        # validate_args=False: grey-level targets (--binarize none) use the same
        # cross-entropy, and the support check costs a pass over every pixel.
        return Independent(Bernoulli(logits=self.decoder(z), validate_args=False), 1)

    def log_px_given_z(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) of ``likelihood(z)`` for z (..., B, L) and targets x (B, D): (..., B).

        The same value as ``self.likelihood(z).log_prob(x)`` (a test checks it), written
        as sum_d x_d l_d - softplus(l_d) for logits l, valid for any x in [0, 1]: x . l
        becomes a batched matrix product instead of a copy of x per latent sample, which
        halves the cost of the importance-sampled likelihood.
        """
        logits = self.decoder(z)  # (..., B, D)
        samples_per_example = logits.numel() // x.numel()
        # Measured on a CPU: for many samples per example a batched matrix product is 5x
        # faster than multiply-and-sum; for one it is 5x slower (per-example overhead).
        if samples_per_example > 8:
            x_dot_l = torch.einsum("...bd,bd->...b", logits, x)
        else:
            x_dot_l = (logits * x).sum(-1)
        return x_dot_l - F.softplus(logits).sum(-1)

    # ------------------------------------------------------------------ objectives

    def kl(self, q: Distribution) -> torch.Tensor:
        """KL(q || p(z)) in closed form, (B,); the prior is expanded to q's batch because
        torch's Bernoulli-Bernoulli KL does not broadcast."""
        return kl_divergence(q, self.prior().expand(q.batch_shape))

    def code(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's input for z (..., B, L): z itself here; a conditional model
        appends its labels (B,), one-hot."""
        return z

    def elbo_terms(self, x: torch.Tensor, n_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction term -E_q log p(x|z) and KL(q||p), each (B,), in nats."""
        return self.bound_terms(self.posterior(x), x, n_samples)

    def bound_terms(
        self,
        q: Distribution,
        x: torch.Tensor,
        n_samples: int = 1,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-E_q log p(x|z) (given ``labels`` where conditional) and KL(q||p), each (B,),
        for the encoder's q of images x.

        The expectation uses ``n_samples`` reparameterized draws where q has them, so it
        can be differentiated; the KL is in closed form.
        """
        z = q.rsample((n_samples,)) if q.has_rsample else q.sample((n_samples,))  # (S, B, L)
        recon = -self.log_px_given_z(self.code(z, labels), x.flatten(1)).mean(0)  # (B,)
        return recon, self.kl(q)

    def log_weights(self, x: torch.Tensor, k: int, proposal: str = "posterior") -> torch.Tensor:
        """log p(x, z_i) - log r(z_i), z_i ~ r, for r = q(z|x) or p(z); shape (k, B)."""
        return self.proposal_weights(self.posterior(x), x, k, proposal)

    def proposal_weights(
        self,
        q: Distribution,
        x: torch.Tensor,
        k: int,
        proposal: str = "posterior",
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log p(x, z_i) - log r(z_i) (given ``labels`` where conditional), z_i ~ r, for
        r = the encoder's q or p(z); shape (k, B)."""
        prior = self.prior()
        if proposal == "posterior":
            r = q
        elif proposal == "prior":
            r = prior.expand((x.shape[0],))
        else:
            raise ValueError(f"unknown proposal {proposal!r}")
        z = r.rsample((k,)) if r.has_rsample else r.sample((k,))  # (k, B, L)
        log_px_z = self.log_px_given_z(self.code(z, labels), x.flatten(1))  # (k, B)
        return log_px_z + prior.log_prob(z) - r.log_prob(z)

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, samples: int, proposal: str = "posterior"
    ) -> torch.Tensor:
        """Importance-sampled log p(x) with K = ``samples`` draws, (B,) float64, nats.

        The k weights are drawn in chunks so that at most MAX_DECODER_ROWS rows pass the
        decoder at once, and combined by log-mean-exp in float64.
        """
        return importance_sampled_log_mean(
            lambda n: self.log_weights(x, n, proposal), samples, MAX_DECODER_ROWS, x.shape[0]
        )

    # ------------------------------------------------------------------ model contract

    @torch.no_grad()
    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        recon, kl = self.elbo_terms(x)
        return {"neg_elbo": recon + kl, "recon": recon, "kl": kl}

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

    def prior_codes(self, n: int) -> torch.Tensor:
        """n decoder inputs drawn from the generative model: z ~ p(z) here (n, L)."""
        return self.prior().sample((n,))

    @torch.no_grad()
    def sample_means(self, n: int) -> torch.Tensor:
        """Bernoulli means of p(x|z), z ~ p(z): (n, C, H, W)."""
        return self.decode(self.prior_codes(n))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """Pixels drawn from p(x|z), z ~ p(z): (n, C, H, W) of 0/1 (``temperature`` unused)."""
        return self.likelihood(self.prior_codes(n)).sample().view(-1, *self.image_shape)
