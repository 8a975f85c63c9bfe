"""Denoising diffusion and flow matching on grey-level images, with a U-Net (unet.py).

Discrete diffusion (Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models"):
a fixed forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), t = 1..T,
with the cosine schedule of Nichol & Dhariwal (2021, "Improved DDPM") or Ho et al.'s
linear one, and a learned reverse process p(x_{t-1} | x_t) = N(mu(x_t, t), sigma_t^2 I).
The network is trained by regression at a drawn t (uniform, or logit-normal: Esser et al.
2024, "Scaling Rectified Flow Transformers", section 3.1) on x_t = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps, the target being

- ``eps``: the noise eps (Ho et al.'s L_simple);
- ``v``: v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022, "Progressive
  Distillation"), whose scale does not vanish at either end of the schedule.

Samplers: ancestral DDPM steps on a strided subsequence of the T steps (Nichol & Dhariwal
section 4), or DDIM's deterministic steps with eta = 0 (Song, Meng & Ermon 2021). The
likelihood is Ho et al.'s variational bound on the 8-bit image (eq. 5),

    -log p(x_0) <= KL(q(x_T|x_0) || N(0, I)) + sum_{t=2}^T KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
                   - log p(x_0 | x_1),

with a discretized Gaussian decoder p(x_0 | x_1) over the 256 grey levels; its sum over
the T steps is estimated per image at ``samples`` timesteps, one from each of ``samples``
strata of consecutive steps, weighted by the stratum's size: unbiased, and exact with
samples = T (Ho et al.'s protocol, for reported figures); with fewer, the first steps'
large terms make it noisy. The reverse variance sigma_t^2 is fixed (the posterior's or
beta_t), or learned as in Nichol & Dhariwal (section 3.1): the network's second output v
per pixel interpolates log sigma_t^2 between the two, trained by their hybrid loss
L_simple + lambda L_vlb, with the bound's term at the drawn step in L_vlb and the mean's
output held fixed in it (a stop-gradient), so that the bound trains the variances alone.

Flow matching (Lipman et al. 2023, "Flow Matching for Generative Modeling"; Liu et al.
2023, "Flow Straight and Fast", rectified flow): the straight path x_t = (1 - t) x_0 +
t eps, t ~ U(0, 1), logit-normal, or half of them log-uniform for the likelihood
(``time_sampling``; t = 0: data, t = 1: noise, as in Liu et al.; Lipman
et al. run time the other way), and the network regresses the velocity dx_t/dt = eps -
x_0. Samples integrate the ODE dx/dt = v(x, t) from t = 1 to 0 (Euler or Heun); the
likelihood is the change of variables along the same ODE from t = 0 to 1 (Heun's steps
dense near t = 0), log p_0(x) = log N(x_1; 0, I) + int_0^1 div v(x_t, t) dt, with the
divergence by Hutchinson's estimator. It is taken at x_0 + u, u uniform on the grey
level's bin of width 2/255 (the bins of the DDPM decoder), so log P(x_int) >= E_u log
p_0(x_0 + u) + D log(2/255): the same 8-bit nats as the bound, and bits/dim = NLL /
(D ln 2) as for Real NVP.

Class conditioning with classifier-free guidance (Ho & Salimans 2022): the label is
replaced by a null label with probability ``label_dropout`` in training, and the
guided prediction is (1 + w) f(x, t, c) - w f(x, t, null) (their w parameterization:
w = 0 is the plain conditional model, computed without the second pass).

Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of
Itself"): the samplers follow (1 + g) f(x, t) - g f_guide(x, t), where the guide is a
weaker model with the same kind of errors; here the run's own averaged weights after an
early epoch (``guide_epoch``), kept at no extra training cost. Unconditional samples are
autoguided by default; the likelihoods and the training objective never are.

Images x in [0, 1] (grey levels x_int / 255) are modelled as x_0 = 2 x - 1 in [-1, 1].
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from genzoo.errors import GenzooError
from genzoo.models.base import (
    Conditional,
    Figure,
    FigureContext,
    GenerativeModel,
    Likelihood,
    LikelihoodEstimator,
    check_classes,
)
from genzoo.models.diffusion_figures import draw_chain, draw_chain_gif, draw_step_counts
from genzoo.models.diffusion_process import (
    BIN,
    Num,
    ddim,
    ddpm,
    euler,
    heun,
    learned_variance,
    log_discretized_gaussian,
    ode_log_likelihood,
    posterior,
    schedule_alpha_bars,
    stratified_timesteps,
)
from genzoo.models.unet import GROUPS, UNet
from genzoo.rng import has_bf16_kernels

SAMPLERS = {"eps": ("ddpm", "ddim"), "v": ("ddpm", "ddim"), "flow-matching": ("euler", "heun")}
# What --sampler auto picks. For flow matching Heun's method: at the same 50 network
# evaluations its 25 steps scored FID 23.7 against Euler's 50 steps' 25.6, and its 15
# steps (30 evaluations) as well as Euler's 50 (1000 samples of the 12-epoch default run,
# benchmarks/README.md).
AUTO_SAMPLER = {"eps": "ddim", "v": "ddim", "flow-matching": "heun"}
EVALUATIONS_PER_STEP = {"ddpm": 1, "ddim": 1, "euler": 1, "heun": 2}
# The default number of steps spends this many network evaluations on a sample.
DEFAULT_EVALUATIONS = 50
# --time-sampling near-data: the smallest of the log-uniform times, a hundredth of a grey
# level's bin (2/255 wide), below which x_t is the dequantized image to within its bin.
NEAR_DATA_MIN = 1e-4
EVAL_SEED = 0  # the timesteps and noise of evaluate_batch, and Hutchinson's probes
FIGURE_SEED = 0  # the noise of the figures
CHAIN_SAMPLES = 8  # samples in denoising_chain.png and sampling.gif
# Samples per panel of sample_steps.png, from the chain's first noise: few, as its
# 250-step panel costs five times the rest of the figures.
STEP_SAMPLES = 4
FIGURE_STEPS = (10, 50, 250)
# Autoguidance's defaults: the guide is the averaged weights after this epoch, and
# unguided samples follow (1 + g) f - g f_guide with this g (benchmarks/README.md).
GUIDE_EPOCH = 2
AUTOGUIDANCE = 1.0
# More ODE steps than this change the flow-matching likelihood by less than its noise; the
# limit turns eval's default of 5000 importance samples into a clear error.
MAX_ODE_STEPS = 1000


@dataclass
class DiffusionConfig:
    # Flow matching by default: its target eps - x_0 has the same scale at every t (no
    # weighting of timesteps to choose), and its near-straight paths sample well in few
    # steps, which is what a CPU pays for: rectified flow gave the best samples at 25-50
    # steps among eps, v and flow objectives in Esser et al. (2024, table 1).
    objective: str = field(
        default="flow-matching",
        metadata={"help": "regression target", "choices": tuple(SAMPLERS)},
    )
    schedule: str = field(
        default="cosine",
        metadata={"help": "noise schedule of eps and v", "choices": ("cosine", "linear")},
    )
    timesteps: int = field(
        default=1000, metadata={"help": "T, the steps of the discrete diffusion (eps and v)"}
    )
    base_channels: int = field(
        default=32, metadata={"help": f"U-Net channels at 28x28 (a multiple of {GROUPS})"}
    )
    channel_mults: tuple[int, ...] = field(
        default=(1, 2, 2),
        metadata={"help": "channel multipliers of the U-Net levels (28, 14, 7 pixels)"},
    )
    res_blocks: int = field(default=1, metadata={"help": "residual blocks per U-Net level"})
    attention: bool = field(
        default=True, metadata={"help": "self-attention at the U-Net's lowest resolution"}
    )
    # Esser et al. (2024, table 1) found rectified flow trained at logit-normal times
    # (the logit of t a standard normal: most steps at middle t, where the velocity is
    # hardest to predict, few near the ends) better than uniform times at every step
    # count; for eps and v the same density over the T steps. Measured here, 12 epochs of
    # the default recipe each way: FID of 2000 samples 20.24 against uniform's 24.19 (the
    # same noise, Euler 50), a lower probe FID at every probed epoch (benchmarks/README.md).
    # Those times starve the ends, and the likelihood of dequantized 8-bit images is
    # decided near the data, within a grey level's bin: the variational bound of the
    # straight path weighs the velocity's squared error by (1 - t) / t (Kingma & Gao 2023,
    # weighting -dlogSNR/dt), which near-data approaches by drawing half the times
    # log-uniform (density 1/t) and half uniform, without weights.
    time_sampling: str = field(
        default="logit-normal",
        metadata={
            "help": "the times of training: uniform, logit-normal (the logit of t, of t/T "
            "for eps and v, a standard normal: Esser et al. 2024), or near-data (half "
            f"uniform, half log-uniform on [{NEAR_DATA_MIN:g}, 1): for the likelihood, not "
            "samples); validation always scores uniform times",
            "choices": ("uniform", "logit-normal", "near-data"),
        },
    )
    dropout: float = field(
        default=0.0, metadata={"help": "dropout in the residual blocks", "min": 0, "below": 1}
    )
    sampler: str = field(
        default="auto",
        metadata={
            "help": "ddpm or ddim for eps and v, euler or heun for flow matching; auto: "
            + ", ".join(f"{o} {s}" for o, s in AUTO_SAMPLER.items())
            + " (euler where autoguided)",
            "choices": ("auto", "ddpm", "ddim", "euler", "heun"),
            "sampling": True,
        },
    )
    sample_steps: int | None = field(
        default=None,
        metadata={
            "help": f"sampler steps (at most --timesteps for eps and v); unset: "
            f"{DEFAULT_EVALUATIONS} network evaluations, {DEFAULT_EVALUATIONS} steps of ddpm, "
            f"ddim or euler (at most T), {DEFAULT_EVALUATIONS // 2} of heun; half as many "
            "where autoguided (the guide's pass doubles a step's)",
            "sampling": True,
        },
    )
    guidance: float = field(
        default=0.0,
        metadata={
            "help": "classifier-free guidance w: (1 + w) cond - w uncond; 0: none",
            "min": 0,
            "max": 100,
            "sampling": True,
        },
    )
    # Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of
    # Itself"): the prediction pushed away from a weaker model's, (1 + g) f - g f_guide,
    # which corrects what the two get wrong alike and sharpens the samples without the
    # loss of variety of classifier-free guidance. The guide here costs no training: the
    # run's own averaged weights after an early epoch, kept beside the final ones.
    guide_epoch: int = field(
        default=GUIDE_EPOCH,
        metadata={
            "help": "keep the averaged weights after this epoch as the guide of "
            "--autoguidance (0: none; a run of fewer epochs keeps none)",
            "min": 0,
        },
    )
    autoguidance: float | None = field(
        default=None,
        metadata={
            "help": "autoguidance g: (1 + g) f - g f_guide, f_guide the weights kept after "
            f"--guide-epoch; 0: none; unset: {AUTOGUIDANCE:g} where the run kept a guide "
            "and --guidance is 0, else none",
            "min": 0,
            "max": 100,
            "sampling": True,
        },
    )
    # auto: bf16 where the device has bfloat16 kernels. On the 12-epoch default run, 1000
    # samples from the same noise (Heun, 25 steps) scored FID 23.73 in bf16 and 23.60 in
    # fp32, in a third of the time (benchmarks/README.md).
    sample_precision: str = field(
        default="auto",
        metadata={
            "help": "arithmetic of the sampler's network passes: fp32, bf16 autocast "
            "(faster where the CPU or GPU has bfloat16 units), or auto: bf16 where the "
            "device has bfloat16 kernels, else fp32",
            "choices": ("auto", "fp32", "bf16"),
            "sampling": True,
        },
    )
    conditional: bool = field(
        default=False, metadata={"help": "condition on the class label (needs labels)"}
    )
    num_classes: int = field(default=10, metadata={"help": "classes of --conditional"})
    label_dropout: float = field(
        default=0.1,
        metadata={"help": "probability of the null label in training", "min": 0, "below": 1},
    )
    # Ho et al. found beta_t and the posterior's variance equally good for samples; the
    # posterior's makes each KL of the bound a pure mean mismatch that vanishes for a
    # perfect x_0 prediction (Ho et al. section 3.2). Learned, the variances lower the
    # bound where its first steps decide it (Nichol & Dhariwal, section 3.1).
    variance: str = field(
        default="posterior",
        metadata={
            "help": "the reverse variance of ddpm and the bound (eps and v): the "
            "posterior's (tilde beta_t), beta_t, or learned between the two by the hybrid "
            "loss (Nichol & Dhariwal 2021)",
            "choices": ("posterior", "beta", "learned"),
        },
    )
    hybrid_weight: float = field(
        default=0.001,
        metadata={
            "help": "lambda of the hybrid loss L_simple + lambda L_vlb (--variance learned; "
            "L_vlb in bits/dim scaled by T/1000 as in Nichol & Dhariwal)",
            "min": 0,
            "max": 1000,
        },
    )
    ode_probes: int = field(
        default=1, metadata={"help": "Hutchinson probes of the flow-matching likelihood"}
    )
    # Trained on the 256 grey levels alone, a flow puts near-point masses on them, and its
    # ODE log-density at x + u (u in the level's bin) is no bound the integrator can
    # reach: measured, it gave an impossible NLL below 0 (benchmarks/README.md). Lipman
    # et al. dequantize too; the noise is a 255th of the data's range. eps and v train on
    # the levels themselves, as Ho et al. do: their bound's discretized decoder is what
    # makes it a bound on the 8-bit likelihood.
    dequantize: bool = field(
        default=True,
        metadata={
            "help": "flow matching: train on grey levels plus uniform noise within their "
            "bin, what makes the ODE likelihood a bound on the 8-bit likelihood"
        },
    )
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "clip the gradient's global norm (Ho et al.)", "max": 1e12}
    )


# ---------------------------------------------------------------------- the model


class Diffusion(GenerativeModel, Likelihood, Conditional):
    # The denoising loss says little about samples: the best checkpoint is the one of the
    # lowest FID of --quality-every (on by default), else the last one.
    val_metric = None
    curve_panels: ClassVar[dict[str, list[str]]] = {"denoising MSE": ["train_loss", "val_loss"]}
    # Inductor (torch 2.13) fails on the U-Net's convolutions over symbolic sizes: static
    # shapes, compiled again for an epoch's last, smaller batch.
    compile_dynamic = False
    # nll and bpd come from the likelihood in evaluation (base.Likelihood).
    eval_terms: ClassVar[dict[str, str]] = {
        "loss": "denoising MSE",
        "nll": "NLL bound",
        "bpd": "bits/dim",
    }
    units = (
        "loss: mean squared error per pixel of the objective's target (eps, v or velocity); "
        "nll: nats per 8-bit image"
    )
    loss_label = "MSE"

    def __init__(self, cfg: DiffusionConfig, image_shape: tuple[int, ...]):
        super().__init__()
        check_config(cfg, tuple(image_shape))
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        self.flow = cfg.objective == "flow-matching"
        self.learns_variance = cfg.variance == "learned"
        self.dequantizes = self.flow and cfg.dequantize
        self.max_grad_norm = cfg.max_grad_norm
        self.net = UNet(
            image_shape[0],
            cfg.base_channels,
            cfg.channel_mults,
            cfg.res_blocks,
            cfg.attention,
            cfg.dropout,
            cfg.num_classes if cfg.conditional else None,
            # learned variances: a second output per pixel, the fraction's v
            out_channels=image_shape[0] * (2 if self.learns_variance else 1),
        )
        # Autoguidance's guide: a frozen copy of the network, which after_epoch fills with
        # the averaged weights of epoch guide_epoch; guide_from says after which epoch it
        # was filled (0: not yet). Checkpoints of runs from before guides load without.
        self.guide: UNet | None = None
        if cfg.guide_epoch:
            self.guide = copy.deepcopy(self.net).requires_grad_(False)
            self.register_buffer("guide_from", torch.tensor(0))
            self.register_load_state_dict_pre_hook(keep_missing_guide)
        # Rebuilt from the config, not saved; float64 for the steps near t = 0, where
        # 1 - abar_t is about 1e-5.
        alpha_bar = schedule_alpha_bars(cfg.schedule, cfg.timesteps)
        self.register_buffer("alpha_bar", alpha_bar, persistent=False)  # (T + 1,)
        self.alpha_bar_list = alpha_bar.tolist()
        # A learned variance at step 1 interpolates from step 2's posterior variance, as
        # in Nichol & Dhariwal's code: step 1's is 0, whose log has no interpolation.
        self.first_variance = posterior(self.alpha_bar_list[2], self.alpha_bar_list[1])[2]

    @property
    def likelihood_estimator(self) -> LikelihoodEstimator:
        if self.flow:
            return LikelihoodEstimator(
                "probability-flow ODE (Heun on t = (i/S)^3), Hutchinson divergence "
                f"({self.cfg.ode_probes} Rademacher probes, fixed seed), uniform dequantization",
                "lower bound",
                samples="ODE steps",
                eight_bit=True,
                default_samples=200,
            )
        return LikelihoodEstimator(
            f"variational bound ({self.cfg.variance} variances), stratified timesteps",
            "lower bound",
            samples="timesteps",
            eight_bit=True,
            default_samples=self.cfg.timesteps,
        )

    # ------------------------------------------------------------------ network outputs

    def predict(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        guidance: float = 0.0,
        autoguidance: float = 0.0,
    ) -> torch.Tensor:
        """The network's output (eps, v or velocity) at x (B, C, H, W), times t (B,) in
        [0, 1] and labels (B,) (None: the null label), guided by the null label with
        weight ``guidance`` or by the guide with weight ``autoguidance`` (not both)."""
        out = self.output(self.net, x, t, labels, guidance)
        if not autoguidance:
            return out
        guide = self.output(self.guide, x, t, labels)
        return (1 + autoguidance) * out - autoguidance * guide

    def output(
        self,
        net: UNet,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        guidance: float = 0.0,
    ) -> torch.Tensor:
        """``net``'s output, with classifier-free guidance of weight ``guidance``."""
        if not self.cfg.conditional:
            return net(x, t)
        null = torch.full((len(x),), self.cfg.num_classes, device=x.device)
        if labels is None:
            return net(x, t, null)
        if guidance == 0:
            return net(x, t, labels)
        both = net(x.repeat(2, 1, 1, 1), t.repeat(2), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)  # (B, C, H, W) each
        return (1 + guidance) * cond - guidance * uncond

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        guidance: float = 0.0,
        autoguidance: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(x0_hat, eps_hat, fraction) at steps t (B,) in 1..T: x0_hat clipped to [-1, 1],
        where the data lie (as Ho et al. do in sampling and in the bound), eps_hat the
        noise consistent with it, and the learned variance's fraction (None if fixed)."""
        signal, sigma = self.scales(t, x_t.dtype)
        out = self.predict(x_t, t / self.cfg.timesteps, labels, guidance, autoguidance)
        out, fraction = self.split_variance(out)
        x0 = self.clean_estimate(out, x_t, signal, sigma)
        return x0, (x_t - signal * x0) / sigma, fraction

    def clean_estimate(
        self, out: torch.Tensor, x_t: torch.Tensor, signal: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """x0_hat from the network's eps or v at x_t, clipped to [-1, 1]."""
        if self.cfg.objective == "eps":
            x0 = (x_t - sigma * out) / signal
        else:  # v
            x0 = signal * x_t - sigma * out
        return x0.clamp(-1, 1)

    def split_variance(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network's output (B, C or 2C, H, W) -> the mean's output (B, C, H, W) and,
        where the variance is learned, its fraction (v + 1) / 2 (B, C, H, W) in fp32."""
        if not self.learns_variance:
            return out, None
        mean, v = out.chunk(2, dim=1)
        return mean, (v.float() + 1) / 2

    def reverse_variance(
        self, var: Num, beta: Num, fraction: torch.Tensor | None
    ) -> Num | torch.Tensor:
        """sigma^2 of a reverse step whose posterior has variance ``var`` and whose forward
        step variance ``beta``: the config's choice."""
        if fraction is not None:
            return learned_variance(fraction, var, beta)
        return var if self.cfg.variance == "posterior" else beta

    def scales(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t) and sqrt(1 - abar_t), (B, 1, 1, 1) each, for steps t (B,); taken
        in float64, where 1 - abar_t near t = 1 (about 1e-5) keeps its digits."""
        ab = self.alpha_bar[t][:, None, None, None]
        return ab.sqrt().to(dtype), (1 - ab).sqrt().to(dtype)

    # ------------------------------------------------------------------ objective

    def per_example_loss(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error per example (B,) at times t: in [0, 1] for flow matching,
        steps 1..T otherwise; x0 and noise (B, C, H, W)."""
        if self.flow:
            s = t[:, None, None, None]
            x_t, target, time = (1 - s) * x0 + s * noise, noise - x0, t
        else:
            signal, sigma = self.scales(t, x0.dtype)
            x_t = signal * x0 + sigma * noise
            target = noise if self.cfg.objective == "eps" else signal * noise - sigma * x0
            time = t / self.cfg.timesteps
        out, fraction = self.split_variance(self.predict(x_t, time, labels))
        error = F.mse_loss(out, target, reduction="none").flatten(1).mean(1)
        if fraction is None:
            return error
        # L_vlb: the bound's term at t in bits/dim, the mean held fixed (Nichol & Dhariwal
        # eq. 16), scaled by T/1000 as in their code so that lambda keeps its meaning at any T.
        x0_hat = self.clean_estimate(out.detach(), x_t, signal, sigma)
        bits = self.step_term(x0, x_t, t, x0_hat, fraction) / (x0[0].numel() * math.log(2))
        return error + self.cfg.hybrid_weight * self.cfg.timesteps / 1000 * bits

    def draw_times(
        self,
        n: int,
        device: torch.device,
        generator: torch.Generator | None = None,
        how: str = "uniform",
    ) -> torch.Tensor:
        """Times (n,) drawn ``how`` (a ``time_sampling`` choice): in [0, 1) for flow
        matching, steps 1..T otherwise; from ``generator`` (on the CPU) where given."""
        where, steps = device if generator is None else torch.device("cpu"), self.cfg.timesteps
        if how == "uniform" and not self.flow:
            return torch.randint(1, steps + 1, (n,), generator=generator, device=where).to(device)
        if how == "logit-normal":
            u = torch.randn(n, generator=generator, device=where).sigmoid()  # (n,) in (0, 1)
        else:
            u = torch.rand(n, generator=generator, device=where)  # (n,) in [0, 1)
        if how == "near-data":  # every other time log-uniform on [NEAR_DATA_MIN, 1)
            u[1::2] = NEAR_DATA_MIN ** u[1::2]
        if not self.flow:  # step 1..T: step i takes u's mass over ((i-1)/T, i/T]
            u = (u * steps).ceil().long().clamp(1, steps)
        return u.to(device)

    def loss(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on images x (B, C, H, W) in [0, 1], with their labels (B,) where
        conditional (the loop passes them: ``takes_labels``)."""
        if self.cfg.conditional:
            if labels is None:
                raise GenzooError("diffusion --conditional is trained on labelled batches")
            dropped = torch.rand(len(labels), device=labels.device) < self.cfg.label_dropout
            labels = labels.masked_fill(dropped, self.cfg.num_classes)
        x0 = self.data_points(x, torch.rand_like(x))
        t = self.draw_times(len(x), x.device, how=self.cfg.time_sampling)
        loss = self.per_example_loss(x0, t, torch.randn_like(x0), labels).mean()
        return loss, {"loss": loss.item()}

    def data_points(self, x: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Images x in [0, 1] -> x_0 in [-1, 1], moved within their grey level's bin by
        ``uniform`` noise in [0, 1) where dequantized, as the ODE likelihood takes them."""
        x0 = 2 * x - 1
        return x0 + BIN * (uniform - 0.5) if self.dequantizes else x0

    @torch.no_grad()
    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss per example at times and noise of a fixed seed, the same every epoch
        (the null label where conditional: the unconditional model, so a conditional
        run's validation loss lies above its training loss, mostly labelled)."""
        generator = torch.Generator().manual_seed(EVAL_SEED)
        t = self.draw_times(len(x), x.device, generator)
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        uniform = torch.rand(x.shape, generator=generator).to(x.device)
        return {"loss": self.per_example_loss(self.data_points(x, uniform), t, noise)}

    # ------------------------------------------------------------------ sampling

    def generate(
        self,
        noise: torch.Tensor,
        steps: int | None = None,
        labels: torch.Tensor | None = None,
        chain: list | None = None,
    ) -> torch.Tensor:
        """Run the sampler from ``noise`` (B, C, H, W) in ``steps`` steps (default:
        the model's sample_steps): x_0 in [-1, 1] (not clamped); the states along the way go to
        ``chain``."""
        steps = self.sample_steps if steps is None else steps
        check_steps(steps, self.cfg)
        # The network's passes in bf16 if asked; the sampler's state stays fp32 (an fp32
        # x plus a bf16 update is fp32), so rounding does not build up over the steps.
        bf16 = self.samples_in_bf16(noise.device)
        with torch.autocast(noise.device.type, torch.bfloat16, enabled=bf16):
            return self.run_sampler(noise, steps, labels, chain)

    def run_sampler(
        self, noise: torch.Tensor, steps: int, labels: torch.Tensor | None, chain: list | None
    ) -> torch.Tensor:
        w, g, n = self.cfg.guidance, self.autoguidance(), len(noise)
        if self.flow:

            def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
                return self.predict(x, noise.new_full((n,), t), labels, w, g)

            grid = torch.linspace(1, 0, steps + 1).tolist()
            return (euler if self.sampler == "euler" else heun)(velocity, noise, grid, chain)

        def denoise(
            x: torch.Tensor, t: int
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            return self.denoise(x, torch.full((n,), t, device=x.device), labels, w, g)

        grid = torch.linspace(self.cfg.timesteps, 0, steps + 1).round().long().tolist()
        if self.sampler == "ddpm":
            return ddpm(denoise, noise, grid, self.alpha_bar_list, self.reverse_variance, chain)
        return ddim(denoise, noise, grid, self.alpha_bar_list, chain)

    @property
    def sampler(self) -> str:
        """--sampler, where auto AUTO_SAMPLER's, or Euler for autoguided flow matching."""
        if self.cfg.sampler != "auto":
            return self.cfg.sampler
        return "euler" if self.flow and self.autoguidance() else AUTO_SAMPLER[self.cfg.objective]

    @property
    def sample_steps(self) -> int:
        """--sample-steps, where unset the steps that spend DEFAULT_EVALUATIONS network
        passes (autoguidance's guide doubles a step's; classifier-free guidance's second
        pass is one batch with the first), at most T for eps and v."""
        if self.cfg.sample_steps is not None:
            return self.cfg.sample_steps
        passes = EVALUATIONS_PER_STEP[self.sampler] * (2 if self.autoguidance() else 1)
        steps = DEFAULT_EVALUATIONS // passes
        return steps if self.flow else min(steps, self.cfg.timesteps)

    def after_epoch(self, epoch: int) -> None:
        """Keep the weights of epoch ``guide_epoch`` (the averaged ones) as the guide."""
        if self.guide is not None and epoch == self.cfg.guide_epoch:
            self.guide.load_state_dict(self.net.state_dict())
            self.guide_from.fill_(epoch)

    def autoguidance(self) -> float:
        """The samplers' autoguidance weight: the config's, or where unset AUTOGUIDANCE if
        the run kept a guide and classifier-free guidance is off, else 0."""
        kept = self.guide is not None and bool(self.guide_from)
        g = self.cfg.autoguidance
        if g is None:
            return AUTOGUIDANCE if kept and not self.cfg.guidance else 0.0
        if g and not kept:
            raise GenzooError(
                "--autoguidance needs the guide a run keeps after --guide-epoch "
                f"({self.cfg.guide_epoch}), and this one has none (trained fewer epochs, or "
                "before genzoo kept guides): sample with --autoguidance 0"
            )
        return g

    def takes_labels(self) -> bool:
        return self.cfg.conditional

    def class_count(self) -> int:
        return self.cfg.num_classes

    @torch.no_grad()
    def sample_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """One image of each label (n,), guided by the config's ``guidance``: (n, C, H, W)
        in [0, 1]."""
        check_classes(labels, self.cfg.num_classes, self.cfg.conditional)
        noise = torch.randn(len(labels), *self.image_shape, device=labels.device)
        return to_images(self.generate(noise, labels=labels))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1]; a conditional model draws their labels
        uniformly. ``temperature`` must be 1 (diffusion does not declare Tempered)."""
        if temperature != 1.0:
            raise GenzooError(f"diffusion samples at temperature 1 only, got {temperature}")
        device = self.alpha_bar.device
        if self.cfg.conditional:
            return self.sample_uniform_classes(n, device)
        return to_images(self.generate(torch.randn(n, *self.image_shape, device=device)))

    def samples_in_bf16(self, device: torch.device) -> bool:
        precision = self.cfg.sample_precision
        return precision == "bf16" or (precision == "auto" and has_bf16_kernels(device))

    def sampling_note(self) -> str:
        g = self.autoguidance()
        guided = f", guidance {self.cfg.guidance:g}" if self.cfg.guidance else ""
        if g:
            guided += f", autoguidance {g:g} (guide: epoch {int(self.guide_from)})"
        bf16 = ", bf16" if self.samples_in_bf16(self.alpha_bar.device) else ""
        return f"{self.sampler}, {self.sample_steps} steps{guided}{bf16}"

    # ------------------------------------------------------------------ likelihood

    def log_likelihood(
        self, x: torch.Tensor, samples: int, proposal: str = "posterior"
    ) -> torch.Tensor:
        """A lower bound on log P(x) in nats of the 8-bit images x (B, C, H, W): (B,)
        float64. ``samples``: timesteps of the bound (at most T), or ODE steps."""
        x0 = grey_levels(x)
        if samples < 1:
            raise GenzooError(f"the likelihood needs at least 1 sample, got {samples}")
        if self.flow:
            if not self.dequantizes:
                raise GenzooError(
                    "the flow-matching ODE likelihood bounds the 8-bit likelihood only for a "
                    "model trained on dequantized images: train with --dequantize (or "
                    "measure the bound of --objective eps or v)"
                )
            if samples > MAX_ODE_STEPS:
                raise GenzooError(
                    f"the flow-matching likelihood takes at most {MAX_ODE_STEPS} ODE steps, "
                    f"not {samples}: pass --iw-samples {MAX_ODE_STEPS} or fewer (e.g. 200)"
                )
            return self.ode_bound(x0, samples)
        if samples > self.cfg.timesteps:
            raise GenzooError(
                f"diffusion's bound samples at most T={self.cfg.timesteps} timesteps per "
                f"image, not {samples}: pass --iw-samples {self.cfg.timesteps} or fewer"
            )
        return self.variational_bound(x0, samples, torch.randn_like(x0))

    @torch.no_grad()
    def variational_bound(
        self, x0: torch.Tensor, samples: int, noise: torch.Tensor
    ) -> torch.Tensor:
        """-(L_T + sum_t L_{t-1}), the sum estimated at ``samples`` stratified steps, one
        noise (B, C, H, W) for all of them (each term stays unbiased): (B,) float64."""
        ab_T = self.alpha_bar[-1].to(x0.dtype)
        standard = Normal(torch.zeros_like(x0), torch.ones_like(x0))
        prior = kl_divergence(Normal(ab_T.sqrt() * x0, (1 - ab_T).sqrt()), standard)
        total = prior.flatten(1).sum(1).double()  # L_T
        for t, size in stratified_timesteps(self.cfg.timesteps, samples, len(x0), x0.device):
            total += size * self.bound_term(x0, t, noise)
        return -total

    @torch.no_grad()
    def bound_term(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The bound's term of step t (B,) in 1..T at x_t of ``noise``, in nats (B,)
        float64."""
        ab_t = self.alpha_bar[t][:, None, None, None]  # (B, 1, 1, 1) float64
        x_t = (ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * noise).to(x0.dtype)
        x0_hat, _, fraction = self.denoise(x_t, t)
        return self.step_term(x0, x_t, t, x0_hat, fraction).double()

    def step_term(
        self,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        x0_hat: torch.Tensor,
        fraction: torch.Tensor | None,
    ) -> torch.Tensor:
        """-log p(x_0|x_1) at t = 1, KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) above, for
        the prediction x0_hat and the variance's fraction at x_t: nats (B,)."""
        ab_t = self.alpha_bar[t][:, None, None, None]  # (B, 1, 1, 1) float64
        ab_s = self.alpha_bar[t - 1][:, None, None, None]
        c0, ct, var, beta = (c.to(x0.dtype) for c in posterior(ab_t, ab_s))
        first = (t == 1)[:, None, None, None]
        # At t = 1 the posterior has variance 0: its KL is not used, so any scale will do;
        # a learned variance starts there from step 2's (first_variance).
        p_var = self.reverse_variance(torch.where(first, self.first_variance, var), beta, fraction)
        q = Normal(c0 * x0 + ct * x_t, torch.where(first, 1.0, var).sqrt())
        p = Normal(c0 * x0_hat + ct * x_t, torch.where(first, 1.0, p_var).sqrt())
        kl = kl_divergence(q, p).flatten(1).sum(1)
        # A fixed decoder's variance is beta_1 with either choice (the posterior's is 0).
        decoder_var = p_var if fraction is not None else 1 - self.alpha_bar_list[1]
        decoder = -log_discretized_gaussian(x0, x0_hat, decoder_var**0.5).flatten(1).sum(1)
        return torch.where(t == 1, decoder, kl)

    @torch.no_grad()
    def ode_bound(self, x0: torch.Tensor, steps: int) -> torch.Tensor:
        """E_u log p(x0 + u) + D log(2/255) for u uniform on the grey level's bin of width
        2/255 around x0, one draw of u: (B,) float64 (the bound of uniform dequantization)."""
        z = x0 + BIN * (torch.rand_like(x0) - 0.5)
        generator = torch.Generator().manual_seed(EVAL_SEED)
        probes = torch.randint(2, (self.cfg.ode_probes, *z.shape), generator=generator)
        probes = (2 * probes - 1).to(z)  # (P, B, C, H, W) of +-1

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            return self.predict(x, x.new_full((len(x),), t))

        log_p = ode_log_likelihood(velocity, z, steps, probes)
        return log_p + z[0].numel() * math.log(BIN)

    # ------------------------------------------------------------------ figures

    @torch.no_grad()
    def figures(self, context: FigureContext) -> dict[str, Figure]:
        """The denoising chain of a few samples (a PNG and a GIF from the same chain) and
        samples from the same noise at 10, 50 and 250 steps; noise of a fixed seed, so that
        runs and epochs show the same draws."""
        device = self.alpha_bar.device
        generator = torch.Generator().manual_seed(FIGURE_SEED)
        noise = torch.randn(CHAIN_SAMPLES, *self.image_shape, generator=generator).to(device)
        labels = few_labels = None
        if self.cfg.conditional:
            labels = torch.arange(CHAIN_SAMPLES, device=device) % self.cfg.num_classes
            few_labels = labels[:STEP_SAMPLES]
        chain = [noise]
        self.generate(noise, labels=labels, chain=chain)
        frames = torch.stack([to_images(x) for x in chain]).cpu()  # (S + 1, n, C, H, W)
        title = f"{self.sampler}, {len(chain) - 1} steps"
        by_steps = {
            steps: frames[-1, :STEP_SAMPLES]
            if steps == self.sample_steps
            else to_images(self.generate(noise[:STEP_SAMPLES], steps, few_labels))
            for steps in FIGURE_STEPS
            if self.flow or steps <= self.cfg.timesteps
        }
        return {
            "denoising_chain.png": lambda path: draw_chain(frames, title, path),
            "sampling.gif": lambda path: draw_chain_gif(frames, title, path),
            "sample_steps.png": lambda path: draw_step_counts(by_steps, self.sampler, path),
        }


def to_images(x0: torch.Tensor) -> torch.Tensor:
    return ((x0 + 1) / 2).clamp(0, 1)


def grey_levels(x: torch.Tensor) -> torch.Tensor:
    """Grey levels x = x_int / 255 -> x_0 = 2 x - 1, refused unless 8-bit."""
    if x.min() < 0 or x.max() > 1 or (255 * x - torch.round(255 * x)).abs().max() > 1e-3:
        raise GenzooError(
            "diffusion's likelihood is of 8-bit grey levels: pixels must be multiples of "
            "1/255 in [0, 1] (train with --binarize none)"
        )
    return 2 * torch.round(255 * x) / 255 - 1


def keep_missing_guide(module: Diffusion, state: dict, prefix: str, *args: object) -> None:
    """A load_state_dict pre-hook: weights saved before runs kept a guide load with the
    model's own unfilled one (guide_from 0)."""
    for name, value in module.guide.state_dict().items():
        state.setdefault(f"{prefix}guide.{name}", value)
    state.setdefault(f"{prefix}guide_from", module.guide_from)


def check_steps(steps: int, cfg: DiffusionConfig) -> None:
    top = math.inf if cfg.objective == "flow-matching" else cfg.timesteps
    if not 1 <= steps <= top:
        bound = "" if top == math.inf else f" and at most --timesteps ({cfg.timesteps})"
        raise GenzooError(f"--sample-steps must be at least 1{bound}, got {steps}")


def check_config(cfg: DiffusionConfig, image_shape: tuple[int, ...]) -> None:
    """What the field bounds cannot say: combinations, and the image's fit in the U-Net."""
    if cfg.sampler != "auto" and cfg.sampler not in SAMPLERS[cfg.objective]:
        raise GenzooError(
            f"--sampler {cfg.sampler} does not fit --objective {cfg.objective}: choose "
            f"{' or '.join(SAMPLERS[cfg.objective])} (or auto)"
        )
    if cfg.sample_steps is not None:
        check_steps(cfg.sample_steps, cfg)
    if cfg.variance == "learned" and cfg.objective == "flow-matching":
        raise GenzooError(
            "--variance learned is for --objective eps or v: flow matching's ODE has no "
            "reverse variance"
        )
    if cfg.guidance and not cfg.conditional:
        raise GenzooError("--guidance needs a class-conditional model: add --conditional")
    if cfg.guidance and cfg.label_dropout == 0:
        raise GenzooError(
            "--guidance needs the unconditional model that --label-dropout above 0 trains"
        )
    if cfg.guidance and cfg.autoguidance:
        raise GenzooError("--guidance and --autoguidance are two ways to guide: give one")
    if cfg.schedule == "linear" and cfg.timesteps <= 20:
        raise GenzooError("the linear schedule's beta_T = 20/T needs --timesteps above 20")
    if any(c % GROUPS for c in [cfg.base_channels * m for m in cfg.channel_mults]):
        raise GenzooError(f"--base-channels times each multiplier must be a multiple of {GROUPS}")
    factor = 2 ** (len(cfg.channel_mults) - 1)
    if len(image_shape) != 3 or image_shape[1] % factor or image_shape[2] % factor:
        raise GenzooError(
            f"the U-Net halves the image {len(cfg.channel_mults) - 1} times, so H and W must be "
            f"divisible by {factor}; got {image_shape}: use fewer --channel-mults"
        )
