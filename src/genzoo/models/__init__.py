"""Every model family, by the name the CLI uses: its config, its module, the pixel
binarizations it is defined for (the first one is its default), the image channels it
takes (1 grey, 3 RGB), and the training settings whose defaults differ from
TrainConfig's for it."""

from __future__ import annotations

from typing import Any, NamedTuple

from genzoo.config import Preset
from genzoo.data import BINARIZE_MODES
from genzoo.errors import GenzooError
from genzoo.models.autoencoder import Autoencoder, AutoencoderConfig
from genzoo.models.base import GenerativeModel
from genzoo.models.binary_vae import BinaryVAE, BinaryVAEConfig
from genzoo.models.diffusion import Diffusion, DiffusionConfig
from genzoo.models.draw import DRAW, DRAWConfig
from genzoo.models.draw import PRESETS as DRAW_PRESETS
from genzoo.models.gan import GAN, GANConfig
from genzoo.models.hvae import HVAE, HVAEConfig
from genzoo.models.hvae import PRESETS as HVAE_PRESETS
from genzoo.models.realnvp import RealNVP, RealNVPConfig
from genzoo.models.vae import VAE, VAEConfig


class ModelFamily(NamedTuple):
    config: type
    model: type
    binarize: tuple[str, ...] = BINARIZE_MODES
    train_overrides: dict[str, Any] | None = None
    presets: dict[str, Preset] | None = None  # --preset NAME: a paper's protocol
    channels: tuple[int, ...] = (1, 3)  # --channels it takes

    def training_defaults(self) -> dict[str, Any]:
        """The TrainConfig values this family trains with unless told otherwise."""
        return {"binarize": self.binarize[0], **(self.train_overrides or {})}


MODELS: dict[str, ModelFamily] = {
    # Evaluated with averaged weights: 1.5 nats of validation -ELBO and 0.6 of test NLL
    # better after 40 epochs at Adam's constant rate (benchmarks/README.md).
    "vae": ModelFamily(VAEConfig, VAE, train_overrides={"ema": 0.999}),
    # The papers' protocols are presets (--preset burda-1l|burda-2l|vampprior, hvae.py).
    "hvae": ModelFamily(
        HVAEConfig, HVAE, binarize=("dynamic", "static", "threshold"), presets=HVAE_PRESETS
    ),
    "bvae": ModelFamily(BinaryVAEConfig, BinaryVAE),
    "ae": ModelFamily(AutoencoderConfig, Autoencoder),
    # Trained on grey levels by default, as in Goodfellow et al. (2014); sample quality
    # watched every epoch, the best checkpoint the one of the lowest FID. Adam's rate is
    # DCGAN's (Radford et al. 2016); batches of 64 learned faster than of 128, and the
    # averaged weights' samples score better than the last weights' (Yazici et al. 2019)
    # in this project's ablation (benchmarks/README.md, bench_gan_recipe.py). A cosine
    # decay of the rate, run to its end (no early stop on the noisy probe FID), took the
    # non-saturating MLP from FID 32.5 to 22.2 in the same 30 minutes; 90 epochs take
    # about 30 minutes at the 19-20 s an epoch of one CPU thread here. The MLP pair's
    # minimax loss (gan.py's DEFAULT_GEN_LOSS) scored FID 14.4 over 3 seeds against 28.3.
    "gan": ModelFamily(
        GANConfig,
        GAN,
        binarize=("none", "dynamic", "threshold", "static"),
        train_overrides={
            "quality_every": 1,
            "lr": 2e-4,
            "lr_schedule": "cosine",
            "epochs": 90,
            "patience": 0,
            "batch_size": 64,
            "ema": 0.999,
        },
    ),
    # A density over grey levels: dequantization needs the 256 levels, not 0/1 pixels.
    # Small batches: on a CPU a step costs time in proportion to the batch, and the flow
    # learns more from four steps of 32 images than from one of 128 (benchmarks/README.md).
    # Compiled: inductor fuses the couplings' normalizations, ReLUs and affine maps around
    # the convolutions; a step 16-17% faster on this 2-core CPU (one or two threads), for
    # 72-79 s of compiling at the start of a run of hours (benchmarks/README.md).
    "realnvp": ModelFamily(
        RealNVPConfig,
        RealNVP,
        binarize=("none",),
        train_overrides={"batch_size": 32, "compile": True},
    ),
    # The measured recipe (benchmarks/README.md: 87.48 test -ELBO in 95 minutes of one
    # CPU thread with attention, on the static binarization the paper trains on, which
    # --binarize static or the preset selects): a 5 x 5 read, Adam from 1e-3 decayed by a
    # cosine over 58 epochs, the averaged weights evaluated. Dynamic binarization by
    # default, as for the VAE: it works for every dataset. The paper's own model:
    # --preset gregor2015. Its attention windows read and write one grey canvas.
    # Compiled: the element-wise work of its T steps (filterbanks, gates, the canvas)
    # fused, a step 26-38% faster on this 2-core CPU (one or two threads) for 116-128 s
    # of compiling at the start of a run of hours (benchmarks/README.md).
    "draw": ModelFamily(
        DRAWConfig,
        DRAW,
        binarize=("dynamic", "static", "threshold"),
        channels=(1,),
        train_overrides={"lr_schedule": "cosine", "epochs": 58, "ema": 0.999, "compile": True},
        presets=DRAW_PRESETS,
    ),
    # Grey levels in [-1, 1]; averaged weights as in Ho et al. (decay 0.9999 over their
    # 800k steps; 0.999 for the few thousand a CPU affords). Batches of 64: on a CPU a
    # step costs in proportion to the batch, and early on more steps learn more. bf16
    # autocast where the device has its kernels: on this project's AVX-512 CPU a step
    # took 0.57 s against 1.08 s in fp32 (one thread), with the same validation MSE and
    # probe FID after an epoch (0.1959 and 173.5 against 0.1947 and 177.3). A cosine
    # decay over 17 epochs: what fits the 90 minutes for the whole command on
    # both threads of this 2-core CPU (measured: 76.0 minutes, validation in bf16 and the
    # guide kept; an epoch's training pass 191-252 s, about 4.5 minutes with validation
    # and the probe). Sample quality is watched every 2 epochs on 500 samples (autoguided from
    # the guide's epoch on), and the best checkpoint is the epoch of the lowest probe
    # FID (benchmarks/README.md).
    "diffusion": ModelFamily(
        DiffusionConfig,
        Diffusion,
        binarize=("none",),
        train_overrides={
            "ema": 0.999,
            "lr": 1e-3,
            "batch_size": 64,
            "epochs": 17,
            "lr_schedule": "cosine",
            "patience": 0,
            "quality_every": 2,
            "quality_samples": 500,
            "precision": "auto",
        },
    ),
}


def find_preset(model: str, name: str) -> Preset:
    """Family ``model``'s preset ``name``; a name it lacks is refused in one line that
    says whose it is, or which it has."""
    presets = MODELS[model].presets or {}
    if name in presets:
        return presets[name]
    owners = [family for family, f in MODELS.items() if name in (f.presets or {})]
    if owners:
        raise GenzooError(f"--preset {name} is a preset of {', '.join(owners)}, not {model}")
    has = f"its presets: {', '.join(presets)}" if presets else f"{model} has none"
    raise GenzooError(f"unknown --preset {name!r} for {model}; {has}")


__all__ = ["MODELS", "GenerativeModel", "ModelFamily", "find_preset"]
