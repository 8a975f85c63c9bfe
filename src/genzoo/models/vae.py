"""Variational autoencoder with a Gaussian latent and Bernoulli pixels; with labels, M2.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes", and Burda, Grosse &
Salakhutdinov (2016), "Importance Weighted Autoencoders"; with labels, Sohn, Lee & Yan
(2015), "Learning Structured Output Representation using Deep Conditional Generative
Models", and Kingma, Rezende, Mohamed & Welling (2014), "Semi-Supervised Learning with
Deep Generative Models" (M2).

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

With labels (``--conditional``, ``--labels N|all``) the model is M2: p(y) = Cat(1/K),
p(x|y, z) and q(z|x, y) take the one-hot label beside z and beside the pixels (Sohn et
al.'s conditional VAE), and a classifier q(y|x) = Cat(pi(x)) completes the encoder. In
Kingma et al.'s notation (eqs. 6-9), with L and U the negative bounds:

    -L(x, y) = E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z)) <= log p(x, y)
    -U(x)    = sum_y q(y|x) (-L(x, y)) + H(q(y|x))                        <= log p(x)
    J^a      = sum_labelled L(x, y) + sum_unlabelled U(x) + a E_labelled[-log q(y|x)]

minimised with a = 0.1 N over the N training images (the paper's choice). Divided by N
(``--weighting paper``), per image: the labelled share N_l / N of the mean L, the
unlabelled share (N - N_l) / N of the mean U, and ``alpha`` = 0.1 times the mean
cross-entropy of q(y|x) on the labelled images. The default, ``oversampled``, weighs the
labelled batch's mean L as much as the unlabelled batch's mean U, as if the labelled images
were as many, and keeps the paper's weight of the cross-entropy per labelled image,
alpha N / N_l. Measured on MNIST with 100 labels and z of 50: with the paper's shares the
labelled bound, of weight N_l / N = 0.002, did not teach the decoder to use y in 12
epochs (its samples ignored the label; test error 48%, rising), oversampled it did (24%
after 9 epochs, falling). q(y|x) drops half its pixels and half its hidden units while
training (dropout, ``--classifier-input-dropout``, ``--classifier-dropout``): without
it the classifier learns the 100 labels by heart (their cross-entropy 0.001 in the
second epoch), the unlabelled bound only confirms its guesses, and the validation error
stalls near 23%; with it the error falls every epoch (16.5% after 10 epochs, against
23.1% after 9; 9.27% test error after two hours, the mean of 3 seeds, Kingma et al.'s M2
11.97%).
``--labels N`` keeps N_l = N labels, N / K of each class chosen with the run's seed, and
sees every training image unlabelled (the labelled ones too: the loop's batches do not
say which they are); ``--labels all`` or ``--conditional`` is the fully supervised
conditional VAE (N_l = N: no U, and q(y|x) a classifier trained beside it).
Validation and test report -U(x), a bound on log p(x) comparable with the unconditional
VAE's, and the error of q(y|x); log p(x) sums p(y) p(x|y) over the classes, each
p(x|y) by importance sampling from q(z|x, y).

Samples of a class y take their style z, by default, from a Gaussian mixture fitted to
the codes q(z|x, y) of that class's training images when training ends (``--class-prior
fitted``; the ex-post density of Ghosh et al. 2020, as the autoencoder's): z ~ p(z) lands
where no image of class y put its code often enough that, at z of 20, 12.8% of the
samples were classified as another digit (0.9% from the fitted mixtures, whose FID was
25.1 against 144.8: benchmarks/README.md). The bound and the likelihood keep p(z), the
prior the model was trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from genzoo import plots
from genzoo.data import Data, Split, balanced_subset, batches
from genzoo.errors import GenzooError
from genzoo.models.base import (
    Conditional,
    Figure,
    FigureContext,
    LikelihoodEstimator,
    check_classes,
    check_values,
)
from genzoo.models.latent import IMPORTANCE_SAMPLING, MAX_DECODER_ROWS, LatentVariableModel
from genzoo.models.mixture import fit_gaussian_mixture, gaussian_mixture
from genzoo.nets import activation_field, mlp
from genzoo.stats import importance_sampled_log_mean

# log p(x) = log sum_y p(y) p(x|y): K importance samples of z for each class; by default
# 500, ten classes costing the decoder as much as the unconditional VAE's K = 5000.
PER_CLASS_SAMPLING = LikelihoodEstimator(
    "importance sampling of z per class, summed over the classes",
    "estimate",
    "K per class",
    default_samples=500,
)
ANALOGY_ROWS = 8  # test images in analogies.png
CONDITIONAL_PANELS = {
    "-ELBO (unlabelled bound -U)": ["train_neg_elbo", "val_neg_elbo"],
    "labelled bound -L(x, y)": ["train_labelled_neg_elbo"],
    "error of q(y|x)": ["val_class_error"],
    "cross-entropy of q(y|x), labelled images": ["train_class_loss"],
}


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
    conditional: bool = field(
        default=False,
        metadata={
            "help": "condition encoder and decoder on the class label (Sohn et al. 2015), "
            "with a classifier q(y|x) beside them: the same as --labels all"
        },
    )
    labels: str | None = field(
        default=None,
        metadata={
            "help": "M2 (Kingma et al. 2014): N labelled training images, N/10 of each "
            "class chosen by --seed, every image also unlabelled; all: every label "
            "(default: none, the unconditional VAE)"
        },
    )
    weighting: str = field(
        default="oversampled",
        metadata={
            "help": "M2's weights: paper (eq. 9 per image: N_l/N of the labelled bound, "
            "(N - N_l)/N of the unlabelled one, alpha on the cross-entropy) or oversampled "
            "(both bounds alike, as if the labelled images were as many; alpha N/N_l on "
            "the cross-entropy, the paper's weight per labelled image)",
            "choices": ("oversampled", "paper"),
        },
    )
    alpha: float = field(
        default=0.1,
        metadata={
            "help": "weight of q(y|x)'s cross-entropy on the labelled images, per image of "
            "the objective (Kingma et al.'s alpha = 0.1 N over its sum over N images); "
            "N/N_l times it with --weighting oversampled",
            "min": 0.0,
            "max": 1e6,
        },
    )
    classifier_dropout: float = field(
        default=0.5,
        metadata={
            "help": "dropout on the hidden layers of q(y|x) (with labels): the 100 labels "
            "of --labels 100 are otherwise learned by heart",
            "min": 0.0,
            "max": 0.95,
        },
    )
    classifier_input_dropout: float = field(
        default=0.5,
        metadata={
            "help": "dropout on the pixels q(y|x) reads (with labels)",
            "min": 0.0,
            "max": 0.95,
        },
    )
    num_classes: int = field(default=10, metadata={"help": "classes of the labels"})
    class_prior: str = field(
        default="fitted",
        metadata={
            "help": "where samples of a class take z from: fitted, a Gaussian mixture of "
            "each class fitted to the codes q(z|x, y) of its training images when training "
            "ends (samples of their class, and varied); standard, the prior p(z) the bound "
            "is trained with (where conditional)",
            "choices": ("fitted", "standard"),
            "sampling": True,
        },
    )
    # 20 against 5: on two seeds' weights every figure better, the lowest class (eights)
    # 97.7-97.9% against 96.9-97.0%, FID 23.5-25.0 against 29.3-30.9 (benchmarks/README.md).
    class_prior_components: int = field(
        default=20,
        metadata={"help": "components of each class's mixture (--class-prior fitted)", "min": 1},
    )


def labelled_count(cfg: VAEConfig) -> int | None:
    """N of ``--labels N``; None for all labels (``--labels all``, ``--conditional``) or
    none."""
    if cfg.labels is None or cfg.labels == "all":
        return None
    text = str(cfg.labels)
    if not text.isdigit() or int(text) < 1:
        raise GenzooError(
            f"--labels must be a number of labelled images or all, got {cfg.labels!r}"
        )
    if int(text) % cfg.num_classes:
        raise GenzooError(
            f"--labels {text} does not divide among the {cfg.num_classes} classes: give a "
            f"multiple of {cfg.num_classes} (the same number of labelled images of each class)"
        )
    return int(text)


class VAE(LatentVariableModel, Conditional):
    eval_terms: ClassVar[dict[str, str]] = {
        **LatentVariableModel.eval_terms,
        "class_error": "error of q(y|x)",
    }

    def __init__(self, cfg: VAEConfig, image_shape: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        data_dim = math.prod(image_shape)
        self.labelled_count = labelled_count(cfg)
        self.conditional = cfg.conditional or cfg.labels is not None
        if self.conditional and cfg.objective == "iwae":
            raise GenzooError("--objective iwae is for the VAE without labels: drop it")
        k = cfg.num_classes if self.conditional else 0  # one-hot inputs beside x and z
        self.encoder = mlp([data_dim + k, *cfg.hidden, 2 * cfg.latent_dim], cfg.activation)
        self.decoder = mlp([cfg.latent_dim + k, *reversed(cfg.hidden), data_dim], cfg.activation)
        if self.conditional:
            self.classifier = mlp(  # q(y|x)
                [data_dim, *cfg.hidden, k],
                cfg.activation,
                cfg.classifier_input_dropout,
                cfg.classifier_dropout,
            )
            self.curve_panels = CONDITIONAL_PANELS
            self.add_class_mixtures()
        if self.labelled_count:  # which training images are labelled, in the checkpoints
            self.register_buffer("labelled_indices", torch.zeros(self.labelled_count).long())
        # M2's labelled images (grey levels where binarized dynamically) and their share of
        # the objective, N_l / N: set by before_training.
        self.labelled: Split | None = None
        self.dynamic = False
        self.labelled_share = 1.0
        # Buffers, so the prior follows the model to its device.
        self.register_buffer("prior_loc", torch.zeros(cfg.latent_dim))
        self.register_buffer("prior_scale", torch.ones(cfg.latent_dim))

    def prior(self) -> Independent:
        return Independent(Normal(self.prior_loc, self.prior_scale), 1)

    # ------------------------------------------------------------------ the class mixtures

    def add_class_mixtures(self) -> None:
        """Buffers for a mixture of the style z of each class, fitted when training ends
        (``after_training``). A checkpoint saved before they existed loads with them
        unfitted: its samples take z from p(z)."""
        k, c, d = self.cfg.num_classes, self.cfg.class_prior_components, self.cfg.latent_dim
        self.register_buffer("class_mixture_weights", torch.full((k, c), 1.0 / c))
        self.register_buffer("class_mixture_means", torch.zeros(k, c, d))
        self.register_buffer("class_mixture_covariances", torch.eye(d).repeat(k, c, 1, 1))
        self.register_buffer("class_mixture_fitted", torch.tensor(False))
        self.register_load_state_dict_pre_hook(unfitted_where_missing)

    @torch.no_grad()
    def fit_class_mixtures(self, codes: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> None:
        """Fit each class's mixture to the codes (N, L) of its images (labels (N,)): as
        many components as it has images, at most ``class_prior_components``; a class
        with fewer than two (too few for a fit) keeps p(z) = N(0, I)."""
        most = self.cfg.class_prior_components
        self.class_mixture_weights.fill_(1.0 / most)  # every class p(z) = N(0, I) first
        self.class_mixture_means.zero_()
        self.class_mixture_covariances.copy_(torch.eye(self.cfg.latent_dim))
        for y in range(self.cfg.num_classes):
            own = codes[labels == y]
            if len(own) < 2:
                continue
            c = min(most, len(own))
            weights, means, covariances = fit_gaussian_mixture(own, c, seed)
            self.class_mixture_weights[y] = 0.0
            self.class_mixture_weights[y, :c] = weights
            self.class_mixture_means[y, :c] = means
            self.class_mixture_covariances[y, :c] = covariances
        self.class_mixture_fitted.fill_(True)

    def class_mixture(self, y: int) -> MixtureSameFamily:
        """Class y's fitted mixture over z (L,)."""
        return gaussian_mixture(
            self.class_mixture_weights[y],
            self.class_mixture_means[y],
            self.class_mixture_covariances[y],
        )

    def styles_from_mixtures(self) -> bool:
        return self.cfg.class_prior == "fitted" and bool(self.class_mixture_fitted)

    def styles(self, labels: torch.Tensor) -> torch.Tensor:
        """z (n, L) for samples of the classes ``labels`` (n,): from each class's fitted
        mixture (``--class-prior fitted``, once fitted), else from p(z)."""
        if not self.styles_from_mixtures():
            return self.prior().sample((len(labels),))
        z = self.class_mixture_means.new_empty(len(labels), self.cfg.latent_dim)
        for y in labels.unique().tolist():  # each class's z from its own mixture only
            chosen = labels == y
            z[chosen] = self.class_mixture(y).sample((int(chosen.sum()),))
        return z

    def sampling_note(self) -> str:
        if not self.conditional:
            return ""
        if self.styles_from_mixtures():
            return (
                f"z of class y from a mixture of {self.cfg.class_prior_components} Gaussians "
                "fitted to the codes q(z|x, y) of the class's training images"
            )
        if self.cfg.class_prior == "fitted":
            return "z ~ p(z): this checkpoint has no fitted class mixtures (made before them)"
        return "z ~ p(z)"

    def posterior(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Independent:
        """q(z|x); where conditional q(z|x, y) for labels (B,) (None: q(y|x)'s most
        probable class), or (m B,): each of m sets of labels for the B images, class-major,
        batch shape (m B,)."""
        pixels = x.flatten(1)  # (B, D)
        if not self.conditional:
            out = self.encoder(pixels)
        else:
            labels = self.predict(x) if labels is None else labels
            # The first layer on [x, one-hot y] is W_x x + b + W_y[:, y]: W_x x once for
            # all m labels of an image (the unlabelled bound takes every class).
            first, d = self.encoder[0], pixels.shape[1]
            h = F.linear(pixels, first.weight[:, :d], first.bias).repeat(len(labels) // len(x), 1)
            out = self.encoder[1:](h + first.weight[:, d:].T[labels])  # (m B, 2 L)
        mu, logvar = out.chunk(2, dim=-1)  # (m B, L) each
        scale = check_values("the posterior's scale", torch.exp(0.5 * logvar), positive=True)
        return Independent(Normal(check_values("the posterior's mean", mu), scale), 1)

    def loss(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if self.conditional:
            return self.semi_supervised_loss(x, labels)
        if self.cfg.objective == "iwae":
            log_w = self.log_weights(x, self.cfg.k)  # (k, B)
            bound = torch.logsumexp(log_w, 0) - math.log(self.cfg.k)  # (B,)
            loss = -bound.mean()
            with torch.no_grad():
                recon, kl = self.elbo_terms(x)
        else:
            recon, kl = self.elbo_terms(x, self.cfg.mc_samples)
            loss = (recon + kl).mean()
        return loss, bound_stats(loss, recon, kl)

    # ------------------------------------------------------------------ labels (M2)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.cfg.num_classes).float()  # (B, K)

    def code(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's input: z (..., B, L), with the one-hot labels (B,) appended where
        conditional: (..., B, L + K)."""
        if not self.conditional:
            return z
        if labels is None:
            raise TypeError("a conditional VAE decodes z together with a label")
        return torch.cat([z, self.one_hot(labels).expand(*z.shape[:-1], -1)], -1)

    def classify(self, x: torch.Tensor) -> Categorical:
        """q(y|x) for images x (B, C, H, W); batch shape (B,)."""
        return Categorical(logits=check_values("q(y|x)", self.classifier(x.flatten(1))))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class of q(y|x): (B,)."""
        return self.classifier(x.flatten(1)).argmax(-1)

    def label_prior(self) -> Categorical:
        return Categorical(logits=self.prior_loc.new_zeros(self.cfg.num_classes))  # uniform

    def labelled_terms(
        self, x: torch.Tensor, labels: torch.Tensor, n_samples: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-E_q log p(x|y, z) and KL(q(z|x, y) || p(z)) of images x (B, ...) with labels
        (B,), or (m B,) as ``posterior`` takes them: (m B,) each."""
        q = self.posterior(x, labels)
        return self.bound_terms(q, repeated(x, len(labels) // len(x)), n_samples, labels)

    def every_class(self, x: torch.Tensor) -> torch.Tensor:
        """Each class for each of the images x (B, ...), class-major: (K B,)."""
        return torch.arange(self.cfg.num_classes, device=x.device).repeat_interleave(len(x))

    def unlabelled_terms(
        self, x: torch.Tensor, n_samples: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """U(x) in two parts, each (B,): the reconstruction term sum_y q(y|x) (-E_q log
        p(x|y, z)), and the KL terms sum_y q(y|x) KL(q(z|x, y) || p(z)) + KL(q(y|x) ||
        p(y)); together -sum_y q(y|x) (-L(x, y)) - H(q(y|x)), each class summed exactly."""
        k, b = self.cfg.num_classes, len(x)
        recon, kl = self.labelled_terms(x, self.every_class(x), n_samples)  # (K B,) each
        q_y = self.classify(x)
        weights = q_y.probs.T  # (K, B)
        kl_y = kl_divergence(q_y, self.label_prior().expand((b,)))  # (B,)
        return (weights * recon.view(k, b)).sum(0), (weights * kl.view(k, b)).sum(0) + kl_y

    def draw_labelled(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n of the labelled images (binarized afresh where dynamic), drawn with
        replacement, and their labels."""
        if self.labelled is None:
            raise GenzooError("vae --labels N trains on the labelled images before_training sets")
        rows = torch.randint(len(self.labelled), (n,), device=self.labelled.images.device)
        images = self.labelled.images[rows]
        return torch.bernoulli(images) if self.dynamic else images, self.labelled.labels[rows]

    def semi_supervised_loss(
        self, x: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """J^alpha per image on batch x (see the module's docstring).

        The labelled images come with the batch where every image is labelled (the loop
        passes them: ``batch_labels``); with --labels N the model draws a batch of its N
        labelled images beside the loop's batch, which it treats as unlabelled. That keeps
        the loop the one of every family and shows the few labels every step (instead of
        once an epoch in a shuffled mixture); ``objective_weights`` weighs the two.
        """
        if self.labelled_count is None:
            if labels is None:
                raise GenzooError("vae --conditional is trained on labelled batches")
            x_l, y_l = x, labels
        else:
            x_l, y_l = self.draw_labelled(len(x))
        labelled, unlabelled, classifier = self.objective_weights()
        recon_l, kl_l = self.labelled_terms(x_l, y_l, self.cfg.mc_samples)
        bound_l = recon_l + kl_l - self.label_prior().log_prob(y_l)  # L(x, y), (B,)
        class_loss = -self.classify(x_l).log_prob(y_l).mean()
        loss = labelled * bound_l.mean() + classifier * class_loss
        stats = {"labelled_neg_elbo": bound_l.mean().item(), "class_loss": class_loss.item()}
        if unlabelled:
            recon, kl = self.unlabelled_terms(x, self.cfg.mc_samples)
            loss = loss + unlabelled * (recon + kl).mean()
            stats |= bound_stats(loss, recon, kl)
        return loss, {"loss": loss.item(), **stats}

    def objective_weights(self) -> tuple[float, float, float]:
        """The weights of the labelled batch's mean L(x, y), the unlabelled batch's mean
        U(x) and the mean cross-entropy of q(y|x) on the labelled batch (``--weighting``)."""
        share, alpha = self.labelled_share, self.cfg.alpha  # share: N_l / N
        if share == 1:  # every image labelled
            return 1.0, 0.0, alpha
        if self.cfg.weighting == "paper":
            return share, 1 - share, alpha
        return 1.0, 1.0, alpha / share

    # ------------------------------------------------------------------ model contract

    def before_training(self, data: Data, seed: int) -> None:
        """With --labels N: its N labelled training images, N / K of each class chosen
        by ``seed``, and their share of the objective."""
        if self.labelled_count is None or data.train.labels is None:
            return
        chosen = balanced_subset(data.train.labels, self.labelled_count, self.cfg.num_classes, seed)
        self.labelled_indices.copy_(chosen)
        chosen = chosen.to(data.train.images.device)
        self.labelled = Split(data.train.images[chosen], data.train.labels[chosen])
        self.dynamic = data.binarize == "dynamic"
        self.labelled_share = self.labelled_count / len(data.train)

    @torch.no_grad()
    def after_training(self, data: Data) -> None:
        """Where conditional, fit each class's mixture to the codes of its training images
        (one binarized draw): their labels where every one is known, q(y|x)'s classes
        with --labels N (M2 knows only N of them)."""
        if not self.conditional:
            return
        self.eval()
        known = self.labelled_count is None and data.train.labels is not None
        codes, labels = [], []
        for x, y in batches(data.train, 1000, data.binarize, labels=True):
            y = y if known else self.predict(x)
            codes.append(self.posterior(x, y).mean)
            labels.append(y)
        self.fit_class_mixtures(torch.cat(codes), torch.cat(labels))

    def takes_labels(self) -> bool:
        return self.conditional

    def batch_labels(self) -> bool:
        return self.conditional and self.labelled_count is None

    def class_count(self) -> int:
        return self.cfg.num_classes

    @torch.no_grad()
    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.conditional:
            return super().evaluate_batch(x)
        recon, kl = self.unlabelled_terms(x)
        return {"neg_elbo": recon + kl, "recon": recon, "kl": kl}

    @torch.no_grad()
    def evaluate_labelled(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The terms of x, and where conditional whether q(y|x) gets its label wrong."""
        terms = self.evaluate_batch(x)
        if self.conditional:
            terms["class_error"] = (self.predict(x) != labels).float()
        return terms

    @property
    def likelihood_estimator(self) -> LikelihoodEstimator:
        return PER_CLASS_SAMPLING if self.conditional else IMPORTANCE_SAMPLING

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, samples: int, proposal: str = "posterior"
    ) -> torch.Tensor:
        """log p(x), (B,) float64; where conditional log sum_y p(y) p(x|y), each p(x|y)
        importance-sampled with K = ``samples`` draws from q(z|x, y) (or p(z))."""
        if not self.conditional:
            return super().log_likelihood(x, samples, proposal)
        labels = self.every_class(x)  # (K B,)
        q, xs = self.posterior(x, labels), repeated(x, self.cfg.num_classes)
        log_px_y = importance_sampled_log_mean(
            lambda n: self.proposal_weights(q, xs, n, proposal, labels),
            samples,
            MAX_DECODER_ROWS,
            len(xs),
        ).view(self.cfg.num_classes, len(x))  # (K, B)
        log_py = self.label_prior().logits.double()[:, None]  # (K, 1)
        return torch.logsumexp(log_px_y + log_py, 0)

    # ------------------------------------------------------------------ images

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means (B, L); where conditional the code is the decoder's input, the
        mean of q(z|x, y) with the one-hot y of q(y|x)'s most probable class: (B, L + K)."""
        if not self.conditional:
            return super().encode(x)
        labels = self.predict(x)
        return self.code(self.posterior(x, labels).mean, labels)

    def prior_codes(self, n: int) -> torch.Tensor:
        """z ~ p(z) (n, L); where conditional y ~ p(y), its z (``styles``) and y
        appended: (n, L + K)."""
        if not self.conditional:
            return self.prior().sample((n,))
        labels = torch.randint(self.cfg.num_classes, (n,), device=self.prior_loc.device)
        return self.code(self.styles(labels), labels)

    @torch.no_grad()
    def sample_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """Pixel means (n, C, H, W) of p(x|y, z), z from ``styles``, for labels y (n,): the
        means, as the quality scores see a VAE's samples (a 0/1 draw of them is pixel
        noise)."""
        check_classes(labels, self.cfg.num_classes, self.conditional, "--conditional or --labels")
        return self.decode(self.code(self.styles(labels), labels))

    def figures(self, context: FigureContext) -> dict[str, Figure]:
        if not self.conditional:
            return {}
        return {"analogies.png": partial(self.draw_analogies, context.test)}

    @torch.no_grad()
    def draw_analogies(self, test: Split, path: Path) -> None:
        """Kingma et al.'s figure 1: each row a test image's style z, inferred with its
        label (q(y|x)'s class where the split has none), decoded with each label in turn."""
        x = test.images[:ANALOGY_ROWS]
        labels = self.predict(x) if test.labels is None else test.labels[: len(x)]
        style = self.posterior(x, labels).mean  # (R, L)
        k = self.cfg.num_classes
        classes = torch.arange(k, device=x.device).repeat(len(x))  # (R K,)
        fantasies = self.decode(self.code(style.repeat_interleave(k, 0), classes))
        rows = torch.cat([x[:, None], fantasies.view(len(x), k, *x.shape[1:])], 1)
        fig, ax = plt.subplots(figsize=((k + 1) * 0.6 + 0.5, len(x) * 0.6 + 0.9))
        plots.show(ax, plots.image_grid(rows.flatten(0, 1), k + 1))
        ax.set_title("a test image (left), its style z with each label 0..9", fontsize=9)
        plots.save_figure(fig, path)


def unfitted_where_missing(
    model: VAE, state: dict[str, torch.Tensor], prefix: str, *_: Any
) -> None:
    """A checkpoint without the class mixtures (saved before they existed) loads with the
    model's own, unfitted."""
    for name, buffer in model.named_buffers(recurse=False):
        if name.startswith("class_mixture_"):
            state.setdefault(prefix + name, buffer)


def repeated(x: torch.Tensor, m: int) -> torch.Tensor:
    """The images x (B, ...) m times over: (m B, ...)."""
    return x.repeat(m, *([1] * (x.dim() - 1)))


def bound_stats(loss: torch.Tensor, recon: torch.Tensor, kl: torch.Tensor) -> dict[str, Any]:
    """A batch's figures: the loss, the -ELBO and its reconstruction and KL parts."""
    return {
        "loss": loss.item(),
        "neg_elbo": (recon + kl).mean().item(),
        "recon": recon.mean().item(),
        "kl": kl.mean().item(),
    }
