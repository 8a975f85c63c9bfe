"""Variational autoencoder with binary (Bernoulli) latents, trained by the score function.

Williams (1992), REINFORCE; Mnih & Gregor (2014), "Neural Variational Inference and
Learning in Belief Networks" (baselines for variance reduction); Jang, Gu & Poole (2017)
and Maddison, Mnih & Teh (2017), the Gumbel-softmax / Concrete relaxation, used here
with the straight-through forward pass of Bengio, Léonard & Courville (2013).

    p(z) = prod_j Bernoulli(z_j; 1/2),  z in {0, 1}^K
    p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z))_d)   (f linear: a sigmoid belief network)
    q(z|x) = prod_j Bernoulli(z_j; mu_j(x))

    ELBO = E_q[log p(x|z)] - KL(q || p),
    KL = sum_j mu_j log mu_j + (1 - mu_j) log(1 - mu_j) + log 2   (closed form).

z is discrete, so the reparameterization trick does not apply to the encoder. Its
gradient comes from one of two estimators (``estimator``):

- ``reinforce``: grad E_q[log p(x|z)] = E_q[(log p(x|z) - b) grad log q(z|x)], with b = 0
  (``baseline none``) or a running average of log p(x|z) (``baseline ema``). Unbiased
  for any b that does not depend on z, since E_q[grad log q] = 0; a good b cuts the
  variance. The decoder is trained on the same samples by the ordinary gradient.
- ``gumbel``: the forward pass uses hard z = 1[y > 1/2] and the backward pass the
  gradient of the relaxed sample y = sigmoid((logit mu + logistic noise) / temperature):
  biased, lower variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.distributions import Bernoulli, Independent, RelaxedBernoulli
from torch.optim import Optimizer

from genzoo.models.base import check_values
from genzoo.models.latent import LatentVariableModel
from genzoo.nets import activation_field, mlp

GRAD_VAR_REPEATS = 20  # encoder-gradient estimates whose spread measures the variance


@dataclass
class BinaryVAEConfig:
    latent_dim: int = field(default=200, metadata={"help": "number of binary latents"})
    hidden: tuple[int, ...] = field(
        default=(500,), metadata={"help": "hidden layer sizes of encoder (and MLP decoder)"}
    )
    activation: str = activation_field()
    decoder: str = field(
        default="mlp",
        metadata={
            "help": "decoder network; linear gives a sigmoid belief network",
            "choices": ("mlp", "linear"),
        },
    )
    estimator: str = field(
        default="reinforce",
        metadata={"help": "encoder gradient estimator", "choices": ("reinforce", "gumbel")},
    )
    baseline: str = field(
        default="ema",
        metadata={
            "help": "REINFORCE baseline: none, or a running average of log p(x|z)",
            "choices": ("none", "ema"),
        },
    )
    ema_decay: float = field(
        default=0.9, metadata={"help": "decay of the running average", "below": 1}
    )
    temperature: float = field(
        default=1.0,
        metadata={"help": "temperature of the relaxed Bernoulli (gumbel)", "max": 1e3},
    )


class BinaryVAE(LatentVariableModel):
    def __init__(self, cfg: BinaryVAEConfig, image_shape: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        data_dim = math.prod(image_shape)
        self.encoder = mlp([data_dim, *cfg.hidden, cfg.latent_dim], cfg.activation)
        decoder_sizes = [cfg.latent_dim, *reversed(cfg.hidden), data_dim]
        if cfg.decoder == "linear":
            decoder_sizes = [cfg.latent_dim, data_dim]
        self.decoder = mlp(decoder_sizes, cfg.activation)
        self.register_buffer("prior_probs", torch.full((cfg.latent_dim,), 0.5))
        # The running average of log p(x|z); NaN until the first batch sets it, so the
        # first steps are not scaled by a baseline that starts hundreds of nats off.
        self.register_buffer("baseline", torch.tensor(math.nan))

    # validate_args=False: the parameters are checked here, and the values scored are the
    # model's own 0/1 draws; torch's support checks cost a twentieth of a step.
    def prior(self) -> Independent:
        return Independent(Bernoulli(probs=self.prior_probs, validate_args=False), 1)

    def posterior(self, x: torch.Tensor) -> Independent:
        logits = check_values("the posterior's logits", self.encoder(x.flatten(1)))  # (B, L)
        q = Bernoulli(logits=logits, validate_args=False)
        return Independent(q, 1, validate_args=False)  # batch (B,), event (L,)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """A surrogate loss whose gradient is the chosen estimate of -grad ELBO (its value
        is not the -ELBO); and the batch's terms, the -ELBO as ``"loss"``. It reads the
        running baseline; ``train_step`` moves it."""
        q = self.posterior(x)
        kl = self.kl(q)  # (B,), closed form, differentiated exactly
        if self.cfg.estimator == "gumbel":
            y = RelaxedBernoulli(
                torch.tensor(self.cfg.temperature, device=x.device), logits=q.base_dist.logits
            ).rsample()  # (B, L) in (0, 1)
            z = y + ((y > 0.5).float() - y).detach()  # hard forward, relaxed backward
            log_px = self.log_px_given_z(z, x.flatten(1))  # (B,)
            loss = (kl - log_px).mean()
        else:
            # z ~ q by comparison with uniform noise: torch.bernoulli took 11 ns a draw, the
            # noise and the comparison 1-2. No gradient path through the draw.
            probs = q.base_dist.probs.detach()  # (B, L)
            z = (torch.rand_like(probs) < probs).to(probs.dtype)
            log_px = self.log_px_given_z(z, x.flatten(1))  # (B,)
            baseline = 0.0
            if self.cfg.baseline == "ema":  # the first batch is its own
                baseline = torch.where(self.baseline.isnan(), log_px.mean(), self.baseline)
            signal = (log_px - baseline).detach()  # (B,) the learning signal
            # -log_px trains the decoder; -signal * log q is the score-function term.
            loss = (kl - log_px - signal * q.log_prob(z)).mean()
        recon, mean_kl = torch.stack([-log_px.mean(), kl.mean()]).detach().tolist()
        neg_elbo = recon + mean_kl
        return loss, {"loss": neg_elbo, "neg_elbo": neg_elbo, "recon": recon, "kl": mean_kl}

    def train_step(
        self, x: torch.Tensor, optimizers: list[Optimizer], labels: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One step, then the running baseline moved toward the batch's mean log p(x|z)
        (outside the objective, which a compiled run traces: a buffer written there is
        one its backward may still read)."""
        stats = super().train_step(x, optimizers, labels)
        if self.cfg.estimator == "reinforce" and self.cfg.baseline == "ema":
            mean, d = -stats["recon"], self.cfg.ema_decay
            moved = d * self.baseline + (1 - d) * mean
            self.baseline.copy_(torch.where(self.baseline.isnan(), mean, moved))
        return stats

    def encoder_gradients(self, x: torch.Tensor, repeats: int) -> torch.Tensor:
        """``repeats`` independent estimates of the encoder gradient on batch x: (R, P)."""
        estimates = []
        for _ in range(repeats):
            self.zero_grad(set_to_none=True)
            self.loss(x)[0].backward()
            estimates.append(torch.cat([p.grad.flatten() for p in self.encoder.parameters()]))
        self.zero_grad(set_to_none=True)
        return torch.stack(estimates)

    def epoch_diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        """Variance of the encoder-gradient estimate on a fixed batch, averaged over the
        encoder's parameters: the figure that tells the estimators apart."""
        return {
            "encoder_grad_var": self.encoder_gradients(x, GRAD_VAR_REPEATS).var(0).mean().item()
        }
