"""DRAW: a recurrent VAE that draws an image in T steps on a canvas, with attention.

Gregor, Danihelka, Graves, Rezende & Wierstra (2015), "DRAW: A Recurrent Neural Network
For Image Generation". For t = 1..T, with c_0 = 0 and h_dec_0 = 0:

    x_hat_t = x - sigmoid(c_{t-1})                        the error image
    r_t     = read(x, x_hat_t, h_dec_{t-1})
    h_enc_t = LSTM_enc(h_enc_{t-1}, [r_t, h_dec_{t-1}])
    z_t     ~ q(z_t | h_enc_t) = N(mu(h_enc_t), diag sigma^2(h_enc_t))
    h_dec_t = LSTM_dec(h_dec_{t-1}, z_t)
    c_t     = c_{t-1} + write(h_dec_t)

with p(z_t) = N(0, I) and p(x | c_T) = prod_d Bernoulli(x_d; sigmoid(c_T,d)). The loss is
the negative ELBO (section 2.2), reconstruction plus the closed-form KL of every step:

    -ELBO(x) = -E_q log p(x | c_T) + sum_t KL(q(z_t | h_enc_t) || N(0, I)).

``attention none``: read gives [x, x_hat], write a linear map of h_dec to every pixel.
``attention gaussian``: read and write see an N x N grid of Gaussian filters whose centre,
stride, variance and intensity one linear map of h_dec sets (eqs. 19-26).

log p(x) is importance sampled with the whole sequence z_1..T drawn from q, so
log w = log p(x | c_T) + sum_t [log p(z_t) - log q(z_t | h_enc_t)].
``sample`` gives the pixel means sigmoid(c_T) (it has no ``PixelMeans``): the
canvas is what DRAW draws, and a 0/1 draw of it adds only pixel noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from genzoo.config import Preset
from genzoo.errors import GenzooError
from genzoo.models.base import (
    Figure,
    FigureContext,
    GenerativeModel,
    Likelihood,
    Reconstructs,
    check_values,
)
from genzoo.models.draw_figures import (
    DRAWING_SAMPLES,
    draw_drawing,
    draw_drawing_gif,
    draw_kl_per_step,
    draw_reading,
)
from genzoo.models.latent import IMPORTANCE_SAMPLING, MAX_DECODER_ROWS
from genzoo.stats import importance_sampled_log_mean

ATTENTIONS = ("gaussian", "none")


@dataclass
class DRAWConfig:
    steps: int = field(
        default=16, metadata={"help": "drawing steps T (the paper: 64)", "max": 1000}
    )
    enc_hidden: int = field(default=256, metadata={"help": "encoder LSTM units"})
    dec_hidden: int = field(default=256, metadata={"help": "decoder LSTM units"})
    latent_dim: int = field(default=100, metadata={"help": "size of z_t, per step"})
    attention: str = field(
        default="gaussian", metadata={"help": "read/write attention", "choices": ATTENTIONS}
    )
    # 5 x 5, not the paper's 2 x 2: at T = 16 a 2 x 2 read lets the encoder see too
    # little of the image (validation -ELBO 202.8 against 193.1 after 5 epochs on 10,000
    # images, benchmarks/README.md); --preset gregor2015 reads 2 x 2 at T = 64.
    read_size: int = field(
        default=5, metadata={"help": "read grid N x N (gaussian attention)", "max": 64}
    )
    write_size: int = field(
        default=5, metadata={"help": "write grid N x N (gaussian attention)", "max": 64}
    )


# ---------------------------------------------------------------------- attention


def filterbank(
    centre: torch.Tensor, delta: torch.Tensor, var: torch.Tensor, n: int, size: int
) -> torch.Tensor:
    """F (B, n, size): row i is a Gaussian over pixels a = 1..size with mean
    centre + (i - n/2 - 1/2) delta, i = 1..n, and variance ``var`` (eqs. 19-20, 25-26),
    normalised to sum 1; centre, delta, var are (B,)."""
    i = torch.arange(1, n + 1, device=centre.device, dtype=centre.dtype)
    mu = centre[:, None] + (i - n / 2 - 0.5) * delta[:, None]  # (B, n)
    a = torch.arange(1, size + 1, device=centre.device, dtype=centre.dtype)
    f = torch.exp(-((a - mu[..., None]) ** 2) / (2 * var[:, None, None]))  # (B, n, size)
    # The epsilon keeps a filter that lies wholly off the image at zero, not NaN.
    return f / (f.sum(-1, keepdim=True) + 1e-8)


def read_glimpse(
    image: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    """gamma F_Y image F_X^T: (B, H, W) -> (B, N, N) (eq. 27)."""
    return gamma[:, None, None] * fy @ image @ fx.transpose(1, 2)


def write_patch(
    patch: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    """(1 / gamma) F_Y^T patch F_X: (B, N, N) -> (B, H, W), the transpose of the read
    (eq. 29)."""
    return fy.transpose(1, 2) @ patch @ fx / gamma[:, None, None]


class AttentionWindow(nn.Module):
    """An N x N grid of Gaussian filters placed by one linear map of h_dec (eqs. 21-24)."""

    def __init__(self, hidden: int, n: int, height: int, width: int):
        super().__init__()
        self.n, self.height, self.width = n, height, width
        self.params = nn.Linear(hidden, 5)  # g~X, g~Y, log sigma^2, log delta~, log gamma

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """F_X (B, N, W), F_Y (B, N, H), gamma (B,) and the window (B, 4) as
        (centre x, centre y, width, height) in 0-based pixels, the imshow convention: the
        span of the filter centres, widened by one standard deviation on either side."""
        gx_, gy_, log_var, log_delta, log_gamma = self.params(h).unbind(-1)  # (B,) each
        # Scaled so that g~ = 0 is the image's centre and delta~ = 1 spreads the grid
        # over the whole image, whatever its size and N.
        gx = (self.width + 1) / 2 * (gx_ + 1)
        gy = (self.height + 1) / 2 * (gy_ + 1)
        delta = (max(self.height, self.width) - 1) / max(self.n - 1, 1) * log_delta.exp()
        var = log_var.exp()
        fx = filterbank(gx, delta, var, self.n, self.width)
        fy = filterbank(gy, delta, var, self.n, self.height)
        side = (self.n - 1) * delta + 2 * var.sqrt()
        return fx, fy, log_gamma.exp(), torch.stack([gx - 1, gy - 1, side, side], -1)


class GaussianAttention(nn.Module):
    """Read an N x N glimpse of x and of the error image; write an N x N patch."""

    def __init__(self, hidden: int, read_size: int, write_size: int, height: int, width: int):
        super().__init__()
        self.shape = (height, width)
        self.read_dim = 2 * read_size**2
        self.read_window = AttentionWindow(hidden, read_size, height, width)
        self.write_window = AttentionWindow(hidden, write_size, height, width)
        self.patch = nn.Linear(hidden, write_size**2)
        self.write_size = write_size

    def read(
        self, x: torch.Tensor, x_hat: torch.Tensor, h_dec: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x, x_hat (B, D), h_dec (B, hidden) -> r (B, 2 N^2) and the window (B, 4)."""
        fx, fy, gamma, window = self.read_window(h_dec)
        glimpses = [read_glimpse(v.view(-1, *self.shape), fx, fy, gamma) for v in (x, x_hat)]
        return torch.cat([g.flatten(1) for g in glimpses], -1), window

    def write(self, h_dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h_dec (B, hidden) -> canvas increment (B, D) and the window (B, 4)."""
        fx, fy, gamma, window = self.write_window(h_dec)
        patch = self.patch(h_dec).view(-1, self.write_size, self.write_size)  # (B, N, N)
        return write_patch(patch, fx, fy, gamma).flatten(1), window


class FullView(nn.Module):
    """No attention: read the whole image and error image, write every pixel."""

    def __init__(self, hidden: int, height: int, width: int):
        super().__init__()
        self.read_dim = 2 * height * width
        self.patch = nn.Linear(hidden, height * width)

    def read(
        self, x: torch.Tensor, x_hat: torch.Tensor, h_dec: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.cat([x, x_hat], -1), None  # (B, 2D)

    def write(self, h_dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.patch(h_dec), None  # (B, D)


# ---------------------------------------------------------------------- the model


@dataclass
class Unroll:
    """One pass through the T steps. ``posterior`` (batch (T, B), event (L,)) is None
    when the decoder ran alone; ``canvases`` sigmoid(c_t) (B, D) and ``windows`` (B, 4)
    per step are kept only when asked for (read windows when inferring, write windows
    when generating; None without attention)."""

    logits: torch.Tensor  # c_T (B, D)
    z: torch.Tensor  # (T, B, L)
    posterior: Independent | None
    canvases: list[torch.Tensor]
    windows: list[torch.Tensor | None]


class DRAW(GenerativeModel, Reconstructs, Likelihood):
    val_metric = "neg_elbo"
    eval_terms: ClassVar[dict[str, str]] = {
        "neg_elbo": "-ELBO",
        "recon": "reconstruction",
        "kl": "KL (all steps)",
        "nll": "NLL",
    }  # and kl_step1..kl_stepT, the KL of each step
    curve_panels: ClassVar[dict[str, list[str]]] = {
        "objective": ["train_neg_elbo", "val_neg_elbo"],
        "ELBO terms": ["train_recon", "val_recon", "train_kl", "val_kl"],
    }
    likelihood_estimator = IMPORTANCE_SAMPLING
    proposals = ("posterior", "prior")

    def __init__(self, cfg: DRAWConfig, image_shape: tuple[int, ...]):
        super().__init__()
        if len(image_shape) != 3 or image_shape[0] != 1:
            raise GenzooError(f"draw needs (1, H, W) images, got shape {tuple(image_shape)}")
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        _, height, width = image_shape
        if cfg.attention == "gaussian":
            self.attention = GaussianAttention(
                cfg.dec_hidden, cfg.read_size, cfg.write_size, height, width
            )
        else:
            self.attention = FullView(cfg.dec_hidden, height, width)
        self.encoder = nn.LSTMCell(self.attention.read_dim + cfg.dec_hidden, cfg.enc_hidden)
        self.to_posterior = nn.Linear(cfg.enc_hidden, 2 * cfg.latent_dim)  # mu, log sigma
        self.decoder = nn.LSTMCell(cfg.latent_dim, cfg.dec_hidden)
        self.register_buffer("prior_loc", torch.zeros(cfg.latent_dim))
        self.register_buffer("prior_scale", torch.ones(cfg.latent_dim))

    def step_prior(self) -> Independent:
        """p(z_t) = N(0, I), the same at every step; event shape (L,)."""
        return Independent(Normal(self.prior_loc, self.prior_scale), 1)

    def likelihood(self, logits: torch.Tensor) -> Independent:
        """p(x | c_T) over flattened pixels. validate_args=False: grey-level targets use
        the same cross-entropy, and the support check costs a pass over every pixel."""
        return Independent(Bernoulli(logits=logits, validate_args=False), 1)

    def infer(self, x: torch.Tensor, mean: bool = False, record: bool = False) -> Unroll:
        """Encoder and decoder together on images x (B, 1, H, W), z_t drawn from q by
        reparameterization (or set to its mean with ``mean``)."""
        x = x.flatten(1)  # (B, D)
        h_enc = self._zero_state(x.shape[0], self.cfg.enc_hidden, x)
        h_dec = self._zero_state(x.shape[0], self.cfg.dec_hidden, x)
        canvas = torch.zeros_like(x)
        params, zs, canvases, windows = [], [], [], []
        for _ in range(self.cfg.steps):
            r, window = self.attention.read(x, x - torch.sigmoid(canvas), h_dec[0])
            h_enc = self.encoder(torch.cat([r, h_dec[0]], -1), h_enc)
            loc, log_scale = self.to_posterior(h_enc[0]).chunk(2, -1)  # (B, L) each
            scale = log_scale.exp()
            z = loc if mean else loc + scale * torch.randn_like(loc)
            h_dec, canvas, _ = self._decode_step(z, h_dec, canvas)
            params.append((loc, scale))
            zs.append(z)
            if record:
                canvases.append(torch.sigmoid(canvas))
                windows.append(window)
        locs, scales = (torch.stack(p) for p in zip(*params, strict=True))  # (T, B, L)
        # Checked once for all steps (one device sync), before the Normal's own check.
        check_values("the posterior's mean", locs)
        check_values("the posterior's scale", scales, positive=True)
        q = Independent(Normal(locs, scales), 1)  # batch (T, B)
        return Unroll(canvas, torch.stack(zs), q, canvases, windows)

    def generate(self, z: torch.Tensor, record: bool = False) -> Unroll:
        """The decoder alone on z (T, B, L): what ``sample`` and the prior proposal use."""
        h_dec = self._zero_state(z.shape[1], self.cfg.dec_hidden, z)
        canvas = z.new_zeros(z.shape[1], math.prod(self.image_shape))  # (B, D)
        canvases, windows = [], []
        for z_t in z:
            h_dec, canvas, window = self._decode_step(z_t, h_dec, canvas)
            if record:
                canvases.append(torch.sigmoid(canvas))
                windows.append(window)
        return Unroll(canvas, z, None, canvases, windows)

    def _decode_step(
        self, z: torch.Tensor, h_dec: tuple[torch.Tensor, torch.Tensor], canvas: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """One LSTM_dec step and its write: new state, c_t and the write window."""
        h_dec = self.decoder(z, h_dec)
        increment, window = self.attention.write(h_dec[0])
        return h_dec, canvas + increment, window

    @staticmethod
    def _zero_state(rows: int, size: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = like.new_zeros(rows, size)
        return zeros, zeros  # (h, c) of an LSTMCell

    # ------------------------------------------------------------------ objective

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-log p(x | c_T) (B,) at one reparameterized z sequence, and the closed-form
        KL of every step (T, B)."""
        out = self.infer(x)
        recon = -self.likelihood(out.logits).log_prob(x.flatten(1))
        prior = self.step_prior().expand(out.posterior.batch_shape)
        return recon, kl_divergence(out.posterior, prior)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        recon, kl_steps = self.elbo_terms(x)
        kl = kl_steps.sum(0)  # (B,)
        loss = (recon + kl).mean()
        # One read of the three numbers (and, compiled, no graph break per .item()).
        value, mean_recon, mean_kl = torch.stack([loss, recon.mean(), kl.mean()]).detach().tolist()
        return loss, {"loss": value, "neg_elbo": value, "recon": mean_recon, "kl": mean_kl}

    @torch.no_grad()
    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        recon, kl_steps = self.elbo_terms(x)
        kl = kl_steps.sum(0)
        per_step = {f"kl_step{t}": v for t, v in enumerate(kl_steps, start=1)}
        return {"neg_elbo": recon + kl, "recon": recon, "kl": kl, **per_step}

    def log_weights(self, x: torch.Tensor, k: int, proposal: str = "posterior") -> torch.Tensor:
        """log p(x, z_1..T) - log r(z_1..T) for k sequences per image: (k, B)."""
        x_rep = x.flatten(1).repeat(k, 1)  # (k*B, D), sample-major
        if proposal == "posterior":
            out = self.infer(x_rep)
            q, prior = out.posterior, self.step_prior()
            log_ratio = (prior.log_prob(out.z) - q.log_prob(out.z)).sum(0)  # (k*B,)
        elif proposal == "prior":  # p(z) / r(z) = 1: the plain Monte Carlo average of p(x|z)
            out = self.generate(self.step_prior().sample((self.cfg.steps, x_rep.shape[0])))
            log_ratio = 0.0
        else:
            raise ValueError(f"unknown proposal {proposal!r}; choose posterior or prior")
        log_w = self.likelihood(out.logits).log_prob(x_rep) + log_ratio  # (k*B,)
        return log_w.view(k, x.shape[0])

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, samples: int, proposal: str = "posterior"
    ) -> torch.Tensor:
        """Importance-sampled log p(x) with K = ``samples`` sequences per image, (B,)
        float64, nats; at most MAX_DECODER_ROWS (sample x image) rows unrolled at once."""
        return importance_sampled_log_mean(
            lambda n: self.log_weights(x, n, proposal), samples, MAX_DECODER_ROWS, x.shape[0]
        )

    # ------------------------------------------------------------------ images

    def _images(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.view(-1, *self.image_shape)

    def _sequence(self, out: Unroll) -> tuple[torch.Tensor, torch.Tensor | None]:
        canvases = torch.stack([self._images(c) for c in out.canvases])  # (T, B, 1, H, W)
        attends = out.windows[0] is not None
        return canvases, torch.stack(out.windows) if attends else None  # (T, B, 4)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """Pixel means sigmoid(c_T) for z_t ~ N(0, I): (n, 1, H, W) in [0, 1]
        (``temperature`` unused)."""
        z = self.step_prior().sample((self.cfg.steps, n))  # (T, n, L)
        return self._images(torch.sigmoid(self.generate(z).logits))

    @torch.no_grad()
    def sample_sequence(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The canvases sigmoid(c_t) of n samples (T, n, 1, H, W) and the write windows
        (T, n, 4) as (centre x, centre y, width, height) in pixels; None without attention."""
        return self._sequence(self.generate(self.step_prior().sample((self.cfg.steps, n)), True))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(c_T) with every z_t at its posterior mean: (B, 1, H, W)."""
        return self._images(torch.sigmoid(self.infer(x, mean=True).logits))

    @torch.no_grad()
    def reconstruct_sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As ``sample_sequence`` for the reconstruction of x (z_t at posterior means),
        with the read windows: step t reads where the window of step t shows."""
        return self._sequence(self.infer(x, mean=True, record=True))

    def figures(self, context: FigureContext) -> dict[str, Figure]:
        # drawing.png and drawing.gif show the same samples.
        canvases, windows = self.sample_sequence(DRAWING_SAMPLES)
        images = context.test.images
        return {
            "drawing.png": lambda path: draw_drawing(canvases, windows, path),
            "drawing.gif": lambda path: draw_drawing_gif(canvases, windows, path),
            "reading.png": lambda path: draw_reading(
                images[:4], *self.reconstruct_sequence(images[:4]), path
            ),
            "kl_per_step.png": lambda path: draw_kl_per_step(self.kl_per_step(images[:1000]), path),
        }

    @torch.no_grad()
    def kl_per_step(self, images: torch.Tensor) -> torch.Tensor:
        """KL(q(z_t|.) || p(z_t)) of every step for every image, 500 at a time: (T, N)."""
        parts = [self.evaluate_batch(x) for x in images.split(500)]
        steps = [name for name in parts[0] if name.startswith("kl_step")]
        return torch.stack([torch.cat([p[name] for p in parts]) for name in steps]).double().cpu()


# ---------------------------------------------------------------------- presets

# The paper's MNIST generation model (Gregor et al. 2015, table 3: -log p <= 80.97 with
# attention): 64 glimpses, LSTMs of 256, z_t of 100, a 2 x 2 read and a 5 x 5 write, on
# the static binarization. What it does not give is left as the family's defaults.
PRESETS: dict[str, Preset] = {
    "gregor2015": Preset(
        "Gregor et al. 2015 (DRAW), MNIST generation with attention",
        {
            "binarize": "static",
            "steps": 64,
            "enc_hidden": 256,
            "dec_hidden": 256,
            "latent_dim": 100,
            "attention": "gaussian",
            "read_size": 2,
            "write_size": 5,
        },
        (
            "the optimizer's rate, its schedule and the number of updates are genzoo's "
            "(Adam from 1e-3 with a cosine decay, averaged weights): the paper gives none",
            "test NLL by importance sampling, genzoo eval --iw-samples K "
            "(the paper reports its bound)",
        ),
    ),
}
