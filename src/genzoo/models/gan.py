"""Generative adversarial network: MLP or convolutional generator and discriminator.

Goodfellow et al. (2014), "Generative Adversarial Nets"; the convolutional pair
(``--arch conv``) is DCGAN's (Radford, Metz & Chintala 2016, "Unsupervised
representation learning with deep convolutional generative adversarial networks"),
sized for 28 x 28 (any side divisible by 4, any number of channels).

    min_G max_D  V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))],   z ~ N(0, I).

The discriminator ascends V; the generator descends log(1 - D(G(z))) (``minimax``), or,
as the paper recommends because that loss saturates while D easily rejects the
generator's samples early on, descends -log D(G(z)) (``nonsaturating``). Each call of
``train_step`` takes one discriminator step and, every ``d_steps``-th call, one
generator step (Algorithm 1 with k = d_steps). D outputs a logit l, and every log D and
log(1 - D) is a softplus of l (log sigmoid(l) = -softplus(-l), log(1 - sigmoid(l)) =
-softplus(l)), so no loss turns into NaN when D saturates. At the equilibrium
D = 1/2 everywhere and V = -log 4.

The third pair of losses (``hinge``; Lim & Ye 2017, "Geometric GAN"; Miyato et al. 2018,
"Spectral normalization for generative adversarial networks") treats l as a score: D
descends max(0, 1 - l(x)) + max(0, 1 + l(G(z))), G descends -l(G(z)). V(D, G) is still
reported, for the D = sigmoid(l) that the scores define.

Class-conditional (``--conditional``; Mirza & Osindero 2014, "Conditional generative
adversarial nets"): G(z, y) takes the one-hot label beside z, every term above is taken
given y (fakes drawn with the labels of the real batch), and D sees the label by
projection (Miyato & Koyama 2018, "cGANs with projection discriminator"):
l(x, y) = psi(phi(x)) + embed(y) . phi(x), with phi(x) D's last hidden features and psi
its output layer; or by concatenation (``--d-conditioning concat``): the one-hot label as
extra inputs of the MLP D, as constant extra channels of the convolutional one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal
from torch.nn.utils.parametrizations import spectral_norm
from torch.optim import Adam, Optimizer

from genzoo.errors import GenzooError
from genzoo.models.base import (
    Conditional,
    GenerativeModel,
    HasPrior,
    check_classes,
    check_stats,
    fused_adam_available,
)

EQUILIBRIUM_VALUE = -math.log(4.0)
DEFAULT_D_DROPOUT = {"mlp": 0.3, "conv": 0.0}  # what --d-dropout unset means, per --arch
DEFAULT_GEN_LOSS = {"mlp": "minimax", "conv": "nonsaturating"}  # --gen-loss unset, per --arch
GEN_LOSSES = ("minimax", "nonsaturating", "hinge")
D_NORMS = ("none", "spectral", "batch")
D_CONDITIONINGS = ("projection", "concat")


@dataclass
class GANConfig:
    noise_dim: int = field(default=100, metadata={"help": "size of the generator's noise z"})
    gen_hidden: tuple[int, ...] = field(
        default=(128, 256, 512, 1024), metadata={"help": "generator hidden layer sizes"}
    )
    disc_hidden: tuple[int, ...] = field(
        default=(512, 256), metadata={"help": "discriminator hidden layer sizes"}
    )
    # The measured recipes (benchmarks/README.md): minimax for the MLP pair, whose D's
    # dropout keeps D(G(z)) above 0.2 while training, so log(1 - D(G(z))) never saturates
    # (FID over 3 seeds below); non-saturating for the conv pair, whose D has no dropout
    # and rejected the minimax generator's samples (the gan-losses study: FID 1179 against
    # 138 in 15 minutes).
    gen_loss: str | None = field(
        default=None,
        metadata={
            "help": "generator loss: log(1 - D(G(z))) or -log D(G(z)), D ascending V(D, G) "
            "for both; or the hinge pair (D: max(0, 1 - l(x)) + max(0, 1 + l(G(z))), "
            "G: -l(G(z)), l = D's logit); when unset minimax for mlp, nonsaturating for conv",
            "choices": GEN_LOSSES,
        },
    )
    d_steps: int = field(default=1, metadata={"help": "discriminator steps per generator step (k)"})
    arch: str = field(
        default="mlp",
        metadata={
            "help": "networks: mlp (the hidden sizes above) or conv (DCGAN: transposed "
            "convolutions in G, strided convolutions in D, widths from --conv-width)",
            "choices": ("mlp", "conv"),
        },
    )
    conv_width: int = field(
        default=64,
        metadata={"help": "conv: channels of D's first layer and G's last hidden one"},
    )
    # Part of the MLP's default recipe: dropout in D was the ablation's largest gain (probe
    # FID 346 against 425 after 8 epochs); in the conv D it changed little (169 against 175
    # after 8 epochs), so the conv pair keeps DCGAN's D (benchmarks/README.md).
    d_dropout: float | None = field(
        default=None,
        metadata={
            "help": "dropout after each of D's hidden layers; when unset 0.3 for mlp, 0 for conv",
            "min": 0.0,
            "max": 0.95,
        },
    )
    d_norm: str = field(
        default="none",
        metadata={
            "help": "normalization in D: spectral (Miyato et al. 2018: every layer's "
            "largest singular value held at 1) or batch (DCGAN's: BatchNorm after every "
            "hidden layer but the first)",
            "choices": D_NORMS,
        },
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "one-sided label smoothing: D's target for real images is 1 - this "
            "(Salimans et al. 2016); V(D, G) is still reported unsmoothed",
            "min": 0.0,
            "max": 0.5,
        },
    )
    conditional: bool = field(
        default=False,
        metadata={"help": "condition G and D on the class label (needs labels)"},
    )
    d_conditioning: str = field(
        default="projection",
        metadata={
            "help": "how D sees the label of --conditional: projection (Miyato & Koyama "
            "2018: a class embedding's inner product with D's features, added to its "
            "logit) or concat (the one-hot label as extra inputs, or constant channels)",
            "choices": D_CONDITIONINGS,
        },
    )
    num_classes: int = field(default=10, metadata={"help": "classes of --conditional"})


def generator_net(noise_dim: int, hidden: tuple[int, ...], data_dim: int) -> nn.Sequential:
    """z -> pixel logits: Linear + LeakyReLU layers, BatchNorm on all but the first."""
    layers: list[nn.Module] = []
    sizes = [noise_dim, *hidden]
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(nn.LeakyReLU(0.2))
    layers.append(nn.Linear(sizes[-1], data_dim))
    return nn.Sequential(*layers)


def normalized(layer: nn.Linear | nn.Conv2d, norm: str) -> nn.Module:
    """``layer`` with its weight spectrally normalized if ``norm`` says so."""
    return spectral_norm(layer) if norm == "spectral" else layer


def batch_norm_for(layer: nn.Linear | nn.Conv2d) -> nn.Module:
    """BatchNorm over ``layer``'s outputs: per feature after a Linear, per channel after a
    Conv2d."""
    if isinstance(layer, nn.Linear):
        return nn.BatchNorm1d(layer.out_features)
    return nn.BatchNorm2d(layer.out_channels)


def discriminator_blocks(
    layers: list[nn.Linear | nn.Conv2d], norm: str, dropout: float
) -> list[nn.Module]:
    """D's hidden layers, each followed by its normalization, LeakyReLU(0.2) and
    dropout."""
    blocks: list[nn.Module] = []
    for i, layer in enumerate(layers):
        blocks.append(normalized(layer, norm))
        if norm == "batch" and i:  # not on the first layer, which sees the images (DCGAN)
            blocks.append(batch_norm_for(layer))
        blocks.append(nn.LeakyReLU(0.2))
        if dropout:
            blocks.append(nn.Dropout(dropout))
    return blocks


def discriminator_head(n_in: int, norm: str) -> nn.Module:
    """The last layer of D: features -> one logit."""
    return normalized(nn.Linear(n_in, 1), norm)


@contextmanager
def frozen(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Within: ``params`` need no gradient (autograd skips their weight-gradient products);
    after: they need one again."""
    params = list(params)
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


def discriminator_net(
    data_dim: int, hidden: tuple[int, ...], dropout: float, norm: str = "none"
) -> nn.Sequential:
    """x -> one logit: Linear layers with LeakyReLU (and the chosen normalization and
    dropout)."""
    sizes = [data_dim, *hidden]
    linears = [nn.Linear(n_in, n_out) for n_in, n_out in itertools.pairwise(sizes)]
    return nn.Sequential(
        *discriminator_blocks(linears, norm, dropout),
        discriminator_head(sizes[-1], norm),
    )


def conv_generator_net(noise_dim: int, width: int, image_shape: tuple[int, ...]) -> nn.Sequential:
    """z -> pixel logits (C, H, W): a linear map to (2 width, H/4, W/4), then two
    transposed convolutions that double the size (BatchNorm + ReLU between, DCGAN's)."""
    channels, height, width_px = image_shape
    h, w = height // 4, width_px // 4
    return nn.Sequential(
        nn.Linear(noise_dim, 2 * width * h * w),
        nn.Unflatten(1, (2 * width, h, w)),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),  # (width, H/2, W/2)
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),  # (C, H, W)
        nn.Flatten(),
    )


def conv_discriminator_net(
    width: int,
    image_shape: tuple[int, ...],
    dropout: float = 0.0,
    norm: str = "none",
    label_channels: int = 0,
) -> nn.Sequential:
    """Images (C, H, W), flattened, -> one logit: two strided convolutions with
    LeakyReLU (and the chosen normalization and dropout). With ``norm="batch"`` D's
    verdict on an image depends on its batch; real and generated images go through D in
    separate batches. ``label_channels``: constant channels after the image's (a one-hot
    label, concatenated)."""
    channels, height, width_px = image_shape
    channels += label_channels
    convs = [
        nn.Conv2d(channels, width, 4, stride=2, padding=1),  # (width, H/2, W/2)
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # (2 width, H/4, W/4)
    ]
    return nn.Sequential(
        nn.Unflatten(1, (channels, height, width_px)),
        *discriminator_blocks(convs, norm, dropout),
        nn.Flatten(),
        discriminator_head(2 * width * (height // 4) * (width_px // 4), norm),
    )


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """-V(D, G) per pair of examples: -log D(x) - log(1 - D(G(z))); with one-sided label
    smoothing s the real term is the cross-entropy against the target 1 - s:
    -(1 - s) log D(x) - s log(1 - D(x))."""
    real_term = F.softplus(-real_logits)
    if smoothing:
        real_term = (1 - smoothing) * real_term + smoothing * F.softplus(real_logits)
    return real_term + F.softplus(fake_logits)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """max(0, 1 - l(x)) + max(0, 1 + l(G(z))) per pair of examples: no gradient from an
    image that D scores beyond its margin."""
    return F.relu(1 - real_logits) + F.relu(1 + fake_logits)


def generator_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """minimax: log(1 - D(G(z))); nonsaturating: -log D(G(z)); hinge: -l(G(z)); per
    example."""
    if kind == "minimax":
        return -F.softplus(fake_logits)
    if kind == "hinge":
        return -fake_logits
    return F.softplus(-fake_logits)


class GAN(GenerativeModel, HasPrior, Conditional):
    # No likelihood to validate or stop early on: the "best" checkpoint is the one of the
    # lowest FID of --quality-every (on by default), else the last one.
    val_metric = None
    eval_terms: ClassVar[dict[str, str]] = {
        "d_real": "D(x)",
        "d_fake": "D(G(z))",
        "value": "V(D, G)",
    }
    units = "D: probability that an image is real; V(D, G): nats per image pair"
    loss_label = "D loss"
    objectives = ("loss", "generator_objective")  # D's step, then G's
    curve_panels: ClassVar[dict[str, list[str]]] = {
        "losses": ["train_d_loss", "train_g_loss"],
        "discriminator outputs": ["train_d_real", "train_d_fake", "val_d_real", "val_d_fake"],
        "V(D, G)": ["train_value", "val_value"],
    }
    reference_lines: ClassVar[dict[str, tuple[float, str]]] = {
        "V(D, G)": (EQUILIBRIUM_VALUE, "equilibrium -log 4")
    }
    compare_metrics: ClassVar[dict[str, tuple[float, str] | None]] = {
        "train_d_fake": None,
        "val_value": (EQUILIBRIUM_VALUE, "equilibrium -log 4"),
    }

    def __init__(self, cfg: GANConfig, image_shape: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        data_dim = math.prod(image_shape)
        self.gen_loss = DEFAULT_GEN_LOSS[cfg.arch] if cfg.gen_loss is None else cfg.gen_loss
        if self.gen_loss == "hinge" and cfg.label_smoothing:
            raise GenzooError(
                "--label-smoothing smooths the cross-entropy's target; the hinge loss has "
                "margins instead: drop --label-smoothing or choose another --gen-loss"
            )
        d_dropout = DEFAULT_D_DROPOUT[cfg.arch] if cfg.d_dropout is None else cfg.d_dropout
        k = cfg.num_classes if cfg.conditional else 0  # G's one-hot input beside z
        concat = k if cfg.d_conditioning == "concat" else 0  # D's, beside the image
        if cfg.arch == "conv":
            if len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
                raise GenzooError(
                    f"gan --arch conv needs (C, H, W) images with sides divisible by 4, got "
                    f"{tuple(image_shape)}: resize them (--image-size) or use --arch mlp"
                )
            self.generator = conv_generator_net(cfg.noise_dim + k, cfg.conv_width, self.image_shape)
            self.discriminator = conv_discriminator_net(
                cfg.conv_width, self.image_shape, d_dropout, cfg.d_norm, concat
            )
        else:
            self.generator = generator_net(cfg.noise_dim + k, cfg.gen_hidden, data_dim)
            self.discriminator = discriminator_net(
                data_dim + concat, cfg.disc_hidden, d_dropout, cfg.d_norm
            )
        if cfg.conditional and cfg.d_conditioning == "projection":
            self.class_embedding = class_embedding(k, self.discriminator[-1], cfg.d_norm)
        self.register_buffer("noise_loc", torch.zeros(cfg.noise_dim))
        self.register_buffer("noise_scale", torch.ones(cfg.noise_dim))
        # Counts discriminator steps, so that every d_steps-th one is followed by a
        # generator step; a buffer, so a resumed run keeps the rhythm.
        self.register_buffer("d_step_count", torch.tensor(0))

    def prior(self) -> Independent:
        return Independent(Normal(self.noise_loc, self.noise_scale), 1)

    def noise(self, n: int) -> torch.Tensor:
        return self.prior().sample((n,))  # (n, noise_dim)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.cfg.num_classes).float()  # (B, K)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (N, C, H, W) in (0, 1) for noise z (N, noise_dim), of the classes
        ``labels`` (N,) where conditional; with gradients."""
        inputs = z if labels is None else torch.cat([z, self.one_hot(labels)], 1)
        return torch.sigmoid(self.generator(inputs)).view(-1, *self.image_shape)

    def logits(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's logit of images x (B, C, H, W), given their labels (B,) where conditional:
        (B,)."""
        flat = x.flatten(1)
        if labels is None:
            return self.discriminator(flat).squeeze(-1)
        if self.cfg.d_conditioning == "concat":
            return self.discriminator(torch.cat([flat, self.label_inputs(labels)], 1)).squeeze(-1)
        features = self.discriminator[:-1](flat)  # (B, F): phi(x)
        projection = (self.class_embedding(labels) * features).sum(-1)  # (B,)
        return self.discriminator[-1](features).squeeze(-1) + projection

    def label_inputs(self, labels: torch.Tensor) -> torch.Tensor:
        """The one-hot labels as D's extra inputs, flattened: (B, K) for the MLP, (B, K H W)
        (a constant channel per class) for the convolutional D."""
        one_hot = self.one_hot(labels)
        if self.cfg.arch == "mlp":
            return one_hot
        return one_hot[:, :, None, None].expand(-1, -1, *self.image_shape[1:]).flatten(1)

    def checked_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The batch's labels where conditional (refused if missing), else None."""
        if not self.cfg.conditional:
            return None
        if labels is None:
            raise GenzooError("gan --conditional is trained on labelled batches")
        return labels

    # ------------------------------------------------------------------ model contract

    def configure_optimizers(self, lr: float) -> list[Optimizer]:
        # beta1 = 0.5, the usual setting for adversarial training (Radford et al. 2016).
        fused = fused_adam_available(self)
        d_params = [p for name, p in self.named_parameters() if not name.startswith("generator.")]
        return [
            Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999), fused=fused),
            Adam(d_params, lr=lr, betas=(0.5, 0.999), fused=fused),
        ]

    def loss(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The discriminator's loss (-V(D, G), with label smoothing if set, or the hinge
        loss) on real batch ``x`` (of the classes ``labels`` where conditional) and as many
        generated images of the same classes, and its statistics (``"loss"``: that value)."""
        labels = self.checked_labels(labels)
        with torch.no_grad():
            fake = self.generate(self.noise(x.shape[0]), labels)
        real_logits, fake_logits = self.logits(x, labels), self.logits(fake, labels)  # (B,)
        if self.gen_loss == "hinge":
            d_loss = hinge_discriminator_loss(real_logits, fake_logits).mean()
        else:
            d_loss = discriminator_loss(real_logits, fake_logits, self.cfg.label_smoothing).mean()
        value = -discriminator_loss(real_logits.detach(), fake_logits.detach()).mean()
        stats = {
            "loss": d_loss.item(),
            "d_loss": d_loss.item(),
            "value": value.item(),
            "d_real": torch.sigmoid(real_logits).mean().item(),
            "d_fake": torch.sigmoid(fake_logits).mean().item(),
        }
        return d_loss, stats

    def generator_objective(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The generator's loss on as many fresh samples as batch ``x`` holds images (of
        its classes where conditional)."""
        labels = self.checked_labels(labels)
        fake_logits = self.logits(self.generate(self.noise(x.shape[0]), labels), labels)
        g_loss = generator_loss(fake_logits, self.gen_loss).mean()
        return g_loss, {"g_loss": g_loss.item()}

    def train_step(
        self, x: torch.Tensor, optimizers: list[Optimizer], labels: torch.Tensor | None = None
    ) -> dict[str, float]:
        opt_g, opt_d = optimizers
        d_loss, stats = self.objective(x, labels=labels)
        check_stats(stats)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        self.d_step_count += 1
        if self.d_step_count % self.cfg.d_steps == 0:
            # D's weights need no gradient here: its backward passes only what G needs.
            with frozen(param for group in opt_d.param_groups for param in group["params"]):
                g_loss, g_stats = self.objective(x, "generator_objective", labels)
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
            opt_g.step()
            stats |= g_stats
        return stats

    @torch.no_grad()
    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """D(x), D(G(z)) and the pair's term of V(D, G), one fresh z per image: each (B,).
        A conditional D judges an image given its class: ``evaluate_labelled``."""
        if self.cfg.conditional:
            raise GenzooError("gan --conditional scores images with their labels")
        return self.evaluate_labelled(x, None)

    @torch.no_grad()
    def evaluate_labelled(
        self, x: torch.Tensor, labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """D(x | y), D(G(z, y) | y) and the pair's term of V(D, G) for images x of the
        classes ``labels`` (B,) (None: unconditional), one fresh z per image: each (B,)."""
        labels = labels if self.cfg.conditional else None
        real_logits = self.logits(x, labels)
        fake_logits = self.logits(self.generate(self.noise(x.shape[0]), labels), labels)
        return {
            "d_real": torch.sigmoid(real_logits),
            "d_fake": torch.sigmoid(fake_logits),
            "value": -discriminator_loss(real_logits, fake_logits),
        }

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """Generated images (n, C, H, W) in (0, 1), of uniformly drawn classes where
        conditional (``temperature`` unused)."""
        if self.cfg.conditional:
            return self.sample_uniform_classes(n, self.noise_loc.device)
        return self.generate(self.noise(n))

    def takes_labels(self) -> bool:
        return self.cfg.conditional

    def class_count(self) -> int:
        return self.cfg.num_classes

    @torch.no_grad()
    def sample_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """One generated image (n, C, H, W) in (0, 1) of each label of ``labels`` (n,)."""
        check_classes(labels, self.cfg.num_classes, self.cfg.conditional)
        return self.generate(self.noise(len(labels)), labels)


def class_embedding(classes: int, head: nn.Linear, norm: str) -> nn.Module:
    """The projection discriminator's embedding of the classes, one vector per class as
    wide as D's last features (the input of its output layer ``head``), initialised as
    Miyato & Koyama's (Glorot uniform) and normalized as D's layers are."""
    embedding = nn.Embedding(classes, head.in_features)
    nn.init.xavier_uniform_(embedding.weight)
    return spectral_norm(embedding) if norm == "spectral" else embedding
