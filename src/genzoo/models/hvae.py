"""Hierarchical VAE: one or two stochastic layers, a N(0, I) prior or the VampPrior.

Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders": the
architectures of their Table 1 (appendix C); Tomczak & Welling (2018), "VAE with a
VampPrior".

    one layer:   p(x, z1) = p(z1) p(x|z1),                 q(z1|x)
    two layers:  p(x, z1, z2) = p(z2) p(z1|z2) p(x|z1),   q(z1, z2|x) = q(z1|x) q(z2|z1)

Every conditional of a z is a diagonal Gaussian whose mean and log-variance an MLP gives
(Burda's 1-layer model: 784-200-200-50, tanh; 2-layer: 784-200-200-100 to z1, then
100-100-50 to z2, the generative side mirrored); the pixels are Bernoulli. The prior of
the top layer is N(0, I) or the VampPrior, a mixture of the recognition model's
posteriors at N learned pseudo-inputs u_n (pixels in [0, 1]):

    p(z_top) = (1/N) sum_n q(z_top | u_n)

(with two layers q(z2 | u_n) is q(z2 | z1 = the mean of q(z1 | u_n)): the chain's mean
path, which keeps the prior's density a closed-form mixture; Tomczak & Welling's own
two-layer model has another inference structure, q(z2|x) q(z1|x, z2)).

Objectives (maximised; the loss is their negative), from the log weights
log w_i = log p(x, z_i) - log q(z_i|x), z_i ~ q, k per image:

- ``elbo``: (1/k) sum_i log w_i, the ELBO averaged over k draws (Burda's "VAE" with k);
- ``iwae``: log (1/k) sum_i w_i, the importance-weighted bound, equal to it at k = 1.

With ``kl_warmup_steps`` the log p(z) - log q(z|x) part of each weight is multiplied by
a factor rising linearly from 0 to 1 over those steps (Tomczak & Welling's warm-up). The
validation and test -ELBO split into -E log p(x|z1) and a KL part: in closed form for one
layer with the standard prior, otherwise estimated by sampling (one draw per image), as
eval.json's label of the term says. log p(x) is estimated by importance sampling with K
draws of every layer from q (or from the prior, ancestrally).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal
from torch.optim import Adam, Optimizer

from genzoo import plots
from genzoo.config import Preset
from genzoo.data import Data
from genzoo.models.base import FigureContext, check_values, fused_adam_available
from genzoo.models.latent import LatentVariableModel
from genzoo.nets import ACTIVATIONS, mlp

MAX_LAYERS = 2
PIXEL_MEAN_CLIP = 1e-3  # Burda et al.'s code: a pixel's mean clipped to [0.001, 0.999]
ACTIVE_UNIT_VARIANCE = 0.01  # Burda et al.'s threshold on Cov_x(E_q[u]) of an active unit
# Tomczak & Welling's start for MNIST's pseudo-inputs: near-empty grey images.
PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD = 0.05, 0.01
SAMPLED_KL = "KL by sampling"  # one draw per image: no closed form


@dataclass
class HVAEConfig:
    latent_dims: tuple[int, ...] = field(
        default=(50,),
        metadata={
            "help": "sizes of the stochastic layers, bottom first: 50 (one layer) or 100,50 (two)",
            "length": (1, MAX_LAYERS),
        },
    )
    hidden: tuple[int, ...] = field(
        default=(200, 200),
        metadata={"help": "hidden layers between x and z1 (mirrored in p(x|z1))"},
    )
    hidden_top: tuple[int, ...] = field(
        default=(100, 100),
        metadata={"help": "hidden layers between z1 and z2, with two stochastic layers"},
    )
    activation: str = field(
        default="tanh",
        metadata={
            "help": "hidden units: tanh (Burda et al.), relu, or gated (h = a * sigmoid(b), "
            "Dauphin et al. 2017, as in Tomczak & Welling)",
            "choices": (*ACTIVATIONS, "gated"),
        },
    )
    prior: str = field(
        default="standard",
        metadata={
            "help": "prior of the top layer: N(0, I) or the VampPrior",
            "choices": ("standard", "vamp"),
        },
    )
    pseudo_inputs: int = field(
        default=500, metadata={"help": "learned pseudo-inputs of --prior vamp", "max": 100000}
    )
    objective: str = field(
        default="elbo", metadata={"help": "training objective", "choices": ("elbo", "iwae")}
    )
    k: int = field(
        default=1,
        metadata={"help": "samples per image: the ELBO averaged over k, or the IWAE bound of k"},
    )
    kl_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "steps over which the weight of log p(z) - log q(z|x) rises from 0 to 1 "
            "(0: none)",
            "min": 0,
        },
    )
    adam_eps: float = field(default=1e-8, metadata={"help": "Adam's epsilon", "max": 1.0})
    pixel_bias: str = field(
        default="data",
        metadata={
            "help": "the start of p(x|z1)'s output bias: each pixel's log-odds over the "
            "training images (Burda et al.'s code) or zero",
            "choices": ("data", "zero"),
            "absent": "zero",  # runs saved before the choice existed started at zero
        },
    )


def network(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """An MLP of the given sizes; "gated" hidden units are a linear map to twice the size
    and a GLU, h = a * sigmoid(b) (Dauphin et al. 2017)."""
    if activation != "gated":
        return mlp(sizes, activation)
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes[:-1]):
        layers += [nn.Linear(n_in, 2 * n_out), nn.GLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def diagonal_gaussian(params: torch.Tensor) -> Independent:
    """N(mu, diag exp(logvar)) from params (..., 2L) = [mu, logvar]; event shape (L,)."""
    mu, logvar = params.chunk(2, dim=-1)  # (..., L) each
    scale = check_values("a latent layer's scale", torch.exp(0.5 * logvar), positive=True)
    mu = check_values("a latent layer's mean", mu)
    # Checked above: torch's own checks of the arguments cost a sixth of a step of 20 images.
    return Independent(Normal(mu, scale, validate_args=False), 1, validate_args=False)


def mixture_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log (1/N) sum_n N(z; loc_n, diag scale_n^2) for z (..., L) and loc, scale (N, L): (...).

    The squared distances are matrix products, (..., N) without a (..., N, L) tensor (which
    at K = 5000 would take gigabytes), in float64: the expanded square cancels terms of the
    size of z^2 / scale^2.
    """
    z64, loc64, precision = z.double(), loc.double(), scale.double().pow(-2)  # (N, L)
    squared = (
        (z64 * z64) @ precision.T
        - 2 * z64 @ (loc64 * precision).T
        + (loc64 * loc64 * precision).sum(-1)
    )  # (..., N)
    log_norm = scale.double().log().sum(-1) + 0.5 * z.shape[-1] * math.log(2 * math.pi)  # (N,)
    log_mix = torch.logsumexp(-0.5 * squared - log_norm, -1) - math.log(loc.shape[0])
    return log_mix.to(z.dtype)


class HVAE(LatentVariableModel):
    def __init__(self, cfg: HVAEConfig, image_shape: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        data_dim = math.prod(image_shape)
        dims, act = cfg.latent_dims, cfg.activation
        blocks = (cfg.hidden, cfg.hidden_top)[: len(dims)]
        # q(z_l | z_{l-1}) bottom up, z_0 = x; p(z_l | z_{l+1}) top down; p(x | z1).
        self.up = nn.ModuleList(
            network([n_in, *hidden, 2 * n_out], act)
            for n_in, hidden, n_out in zip((data_dim, *dims[:-1]), blocks, dims, strict=True)
        )
        self.down = nn.ModuleList(
            network([dims[i + 1], *reversed(blocks[i + 1]), 2 * dims[i]], act)
            for i in range(len(dims) - 1)
        )
        self.decoder = network([dims[0], *reversed(cfg.hidden), data_dim], act)
        for module in self.modules():  # Glorot & Bengio's initialisation, as Burda et al.
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if cfg.prior == "vamp":
            start = torch.randn(cfg.pseudo_inputs, data_dim) * PSEUDO_INPUT_STD
            self.pseudo = nn.Parameter(start + PSEUDO_INPUT_MEAN)  # (N, D)
        else:  # buffers, so that the prior follows the model to its device
            self.register_buffer("prior_loc", torch.zeros(dims[-1]))
            self.register_buffer("prior_scale", torch.ones(dims[-1]))
        # Optimizer steps taken, for the warm-up; a buffer, so checkpoints carry it.
        self.register_buffer("steps_taken", torch.zeros((), dtype=torch.long))
        if not self.closed_form_kl():
            self.eval_terms = {**LatentVariableModel.eval_terms, "kl": SAMPLED_KL}

    @torch.no_grad()
    def before_training(self, data: Data, seed: int) -> None:
        """With ``pixel_bias="data"``, p(x|z1) starts at the training images' mean: its
        output bias is each pixel's log-odds. From a zero bias every pixel starts at 1/2,
        the first passes spend the codes on the mean image, and most units never recover
        (preset burda-2l: validation -ELBO 109.53 after 20 passes from zero, 99.38 from the
        data; benchmarks/README.md). A resumed run's checkpoint replaces it."""
        if self.cfg.pixel_bias == "data":
            mean = data.train.images.flatten(1).mean(0)  # (D,): P(pixel = 1), either binarization
            self.decoder[-1].bias.copy_(torch.logit(mean, eps=PIXEL_MEAN_CLIP))  # clipped first

    @torch.no_grad()
    def epoch_diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        """Each stochastic layer's active units on the fixed training batch, Burda et al.'s
        measure: units whose posterior mean varies over the images, Cov_x(E_q[u]) above
        0.01 (a layer's q given one draw of the layer below, as their code). Units that
        fall below it carry nothing of x: the prior's, not the data's."""
        h, active = x.flatten(1), {}
        for layer, net in enumerate(self.up, start=1):
            q = diagonal_gaussian(net(h))  # batch (B,), event (L_l,)
            spread = q.mean.var(0, correction=0)  # (L_l,), as numpy's var in their code
            active[f"active_units_z{layer}"] = float((spread > ACTIVE_UNIT_VARIANCE).sum())
            h = q.sample()
        return active

    def closed_form_kl(self) -> bool:
        return len(self.cfg.latent_dims) == 1 and self.cfg.prior == "standard"

    def configure_optimizers(self, lr: float) -> list[Optimizer]:
        fused = fused_adam_available(self)
        return [Adam(self.parameters(), lr=lr, eps=self.cfg.adam_eps, fused=fused)]

    # ------------------------------------------------------------------ the prior

    def pseudo_images(self) -> torch.Tensor:
        """The pseudo-inputs u_n (N, D), pixels in [0, 1] (a hard clip, as in the paper)."""
        return F.hardtanh(self.pseudo, 0.0, 1.0)

    def vamp_components(self) -> Independent:
        """q(z_top | u_n) for every pseudo-input, along the mean path below the top: batch (N,)."""
        h = self.pseudo_images()
        for net in self.up[:-1]:
            h = diagonal_gaussian(net(h)).mean
        return diagonal_gaussian(self.up[-1](h))

    def prior(self) -> Independent | MixtureSameFamily:
        """p(z_top): N(0, I), or the VampPrior as a mixture of N equal components."""
        if self.cfg.prior == "standard":
            return Independent(Normal(self.prior_loc, self.prior_scale), 1)
        weights = Categorical(logits=torch.zeros(self.cfg.pseudo_inputs, device=self.pseudo.device))
        return MixtureSameFamily(weights, self.vamp_components())

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z_top) for z (..., L): (...); the VampPrior's by ``mixture_log_prob``,
        the same value as ``self.prior().log_prob(z)`` without its (..., N, L) tensor."""
        if self.cfg.prior == "standard":
            return self.prior().log_prob(z)
        components = self.vamp_components().base_dist
        return mixture_log_prob(z, components.loc, components.scale)

    # ------------------------------------------------------------------ the layers

    def posterior(self, x: torch.Tensor) -> Independent:
        """q(z1|x) for images x (B, C, H, W): batch (B,), event (L1,)."""
        return diagonal_gaussian(self.up[0](x.flatten(1)))

    def upward(self, x: torch.Tensor, k: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """k draws per image of every layer from q, bottom first: the draws, each
        (k, B, L_l), and log q(z|x) (k, B)."""
        q = self.posterior(x)
        z = q.rsample((k,))  # (k, B, L1)
        draws, log_q = [z], q.log_prob(z)
        for net in self.up[1:]:
            q = diagonal_gaussian(net(z))
            z = q.rsample()  # (k, B, L_l)
            draws.append(z)
            log_q = log_q + q.log_prob(z)
        return draws, log_q

    def log_joint_prior(self, draws: list[torch.Tensor]) -> torch.Tensor:
        """log p(z_top) + sum_l log p(z_l | z_{l+1}) of draws bottom first: (k, B)."""
        log_p = self.log_prior(draws[-1])
        for i, net in enumerate(self.down):
            log_p = log_p + diagonal_gaussian(net(draws[i + 1])).log_prob(draws[i])
        return log_p

    def weight_parts(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two parts of the log weights of k draws per image from q: log p(x|z1) and
        log p(z) - log q(z|x), each (k, B)."""
        draws, log_q = self.upward(x, k)
        return self.log_px_given_z(draws[0], x.flatten(1)), self.log_joint_prior(draws) - log_q

    def ancestral_z1(self, shape: tuple[int, ...]) -> torch.Tensor:
        """z1 drawn from the generative model, z_top ~ p(z_top) then down: (*shape, L1)."""
        z = self.prior().sample(shape)
        for net in reversed(self.down):
            z = diagonal_gaussian(net(z)).sample()
        return z

    def log_weights(self, x: torch.Tensor, k: int, proposal: str = "posterior") -> torch.Tensor:
        """log p(x, z_i) - log r(z_i), z_i ~ r for r = q(z|x) or the prior: (k, B)."""
        if proposal == "prior":  # every layer drawn from p: the weight is p(x|z1)
            return self.log_px_given_z(self.ancestral_z1((k, x.shape[0])), x.flatten(1))
        if proposal != "posterior":
            raise ValueError(f"unknown proposal {proposal!r}")
        log_px_z, log_ratio = self.weight_parts(x, k)
        return log_px_z + log_ratio

    # ------------------------------------------------------------------ objectives

    def kl_weight(self) -> float:
        """The warm-up's factor on log p(z) - log q(z|x) for the next step (1: none)."""
        steps = self.cfg.kl_warmup_steps
        return min(1.0, (int(self.steps_taken) + 1) / steps) if steps else 1.0

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        k = self.cfg.k
        log_px_z, log_ratio = self.weight_parts(x, k)  # (k, B) each
        log_w = log_px_z + self.kl_weight() * log_ratio
        if self.cfg.objective == "iwae":
            bound = torch.logsumexp(log_w, 0) - math.log(k)  # (B,)
        else:
            bound = log_w.mean(0)
        loss = -bound.mean()
        terms = torch.stack([loss, -log_px_z.mean(), -log_ratio.mean()]).detach()
        value, recon, kl = terms.tolist()  # one read of the three, not three
        stats = {"loss": value, "neg_elbo": recon + kl, "recon": recon, "kl": kl}
        if self.cfg.kl_warmup_steps:
            stats["kl_weight"] = self.kl_weight()
        return loss, stats

    def train_step(
        self, x: torch.Tensor, optimizers: list[Optimizer], labels: torch.Tensor | None = None
    ) -> dict[str, float]:
        stats = super().train_step(x, optimizers, labels)
        self.steps_taken += 1
        return stats

    def elbo_terms(self, x: torch.Tensor, n_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """-E_q log p(x|z1) and the KL part, each (B,): the KL in closed form where there
        is one (one layer, standard prior), else estimated from the same draws."""
        if self.closed_form_kl():
            return super().elbo_terms(x, n_samples)
        log_px_z, log_ratio = self.weight_parts(x, n_samples)
        return -log_px_z.mean(0), -log_ratio.mean(0)

    # ------------------------------------------------------------------ images

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The top layer's code along the mean path: (B, L_top)."""
        h = x.flatten(1)
        for net in self.up:
            h = diagonal_gaussian(net(h)).mean
        return h

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel means (N, C, H, W) of top-layer codes z (N, L_top), along the mean path."""
        for net in reversed(self.down):
            z = diagonal_gaussian(net(z)).mean
        return torch.sigmoid(self.decoder(z)).view(-1, *self.image_shape)

    @torch.no_grad()
    def sample_means(self, n: int) -> torch.Tensor:
        """Bernoulli means of p(x|z1), every layer drawn from the model: (n, C, H, W)."""
        return torch.sigmoid(self.decoder(self.ancestral_z1((n,)))).view(-1, *self.image_shape)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """Pixels drawn from p(x|z1), every layer drawn from the model: (n, C, H, W) of 0/1."""
        return self.likelihood(self.ancestral_z1((n,))).sample().view(-1, *self.image_shape)

    def figures(self, context: FigureContext) -> dict[str, Any]:
        """The VampPrior's learned pseudo-inputs (its first 100)."""
        if self.cfg.prior != "vamp":
            return {}
        return {"pseudo_inputs.png": self.draw_pseudo_inputs}

    @torch.no_grad()
    def draw_pseudo_inputs(self, path: Path) -> None:
        images = self.pseudo_images()[:100].view(-1, *self.image_shape).cpu()
        plots.save_image_grid(images, path, f"pseudo-inputs (first {len(images)})")


# ---------------------------------------------------------------------- presets

TEST_PROTOCOL = "test NLL by importance sampling with K = 5000 (genzoo eval's default)"
BURDA = "Burda, Grosse & Salakhutdinov 2016 (IWAE), Table 1 and appendix C"
BURDA_TRAINING: dict[str, Any] = {
    "binarize": "dynamic",
    "train_on_val": True,  # all 60,000 training images, as the paper
    "batch_size": 20,
    "lr": 1e-3,
    "lr_schedule": "burda",  # 3^i passes at 1e-3 * 10^(-i/7), i = 0..7
    "epochs": 3280,
    "patience": 0,
    "ema": 0.0,
    "warmup_epochs": 0,
    "adam_eps": 1e-4,
    "activation": "tanh",
    "hidden": (200, 200),
    "prior": "standard",
    "pixel_bias": "data",
}
BURDA_NOTES = (
    "the objective and k are the cell of Table 1: --objective elbo|iwae --k 1|5|50",
    "Adam with beta1 0.9, beta2 0.999 (torch's defaults), epsilon 1e-4",
    "p(x|z1)'s output bias starts at each pixel's log-odds over the training images, as "
    "their code (github.com/yburda/iwae)",
    "the validation images are 10,000 of the 60,000 trained on (the paper holds none out)",
    TEST_PROTOCOL,
)
PRESETS: dict[str, Preset] = {
    "burda-1l": Preset(BURDA, {**BURDA_TRAINING, "latent_dims": (50,)}, BURDA_NOTES),
    "burda-2l": Preset(
        BURDA,
        {**BURDA_TRAINING, "latent_dims": (100, 50), "hidden_top": (100, 100)},
        BURDA_NOTES,
    ),
    # Their code's defaults (github.com/jmtomczak/vae_vampprior): 300 gated units twice,
    # z of 40, 500 pseudo-inputs, Adam 5e-4, batches of 100, up to 2000 epochs with early
    # stopping after 50, the KL warmed up over 100 epochs (500 steps each), p(x|z)'s output
    # bias started at zero.
    "vampprior": Preset(
        "Tomczak & Welling 2018 (VampPrior), static MNIST",
        {
            "binarize": "static",
            "train_on_val": False,
            "batch_size": 100,
            "lr": 5e-4,
            "lr_schedule": "constant",
            "epochs": 2000,
            "patience": 50,
            "ema": 0.0,
            "warmup_epochs": 0,
            "adam_eps": 1e-8,
            "pixel_bias": "zero",
            "activation": "gated",
            "hidden": (300, 300),
            "latent_dims": (40,),
            "prior": "vamp",
            "pseudo_inputs": 500,
            "objective": "elbo",
            "k": 1,
            "kl_warmup_steps": 50000,
        },
        (
            "Larochelle & Murray's binarized MNIST: 50,000 train, 10,000 validation (early "
            "stopping), 10,000 test",
            "the warm-up rises per step, the paper's per epoch",
            "plain Adam; the paper's code normalises the gradient (AdamNormGrad)",
            TEST_PROTOCOL,
        ),
    ),
}
