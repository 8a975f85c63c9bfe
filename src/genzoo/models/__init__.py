"""Every model family, by the name the CLI uses: its config, its module, and the pixel
binarizations it is defined for (the first one is its default)."""

from __future__ import annotations

from typing import NamedTuple

from genzoo.data import BINARIZE_MODES
from genzoo.models.autoencoder import Autoencoder, AutoencoderConfig
from genzoo.models.base import GenerativeModel
from genzoo.models.binary_vae import BinaryVAE, BinaryVAEConfig
from genzoo.models.gan import GAN, GANConfig
from genzoo.models.realnvp import RealNVP, RealNVPConfig
from genzoo.models.vae import VAE, VAEConfig


class ModelFamily(NamedTuple):
    config: type
    model: type
    binarize: tuple[str, ...] = BINARIZE_MODES


MODELS: dict[str, ModelFamily] = {
    "vae": ModelFamily(VAEConfig, VAE),
    "bvae": ModelFamily(BinaryVAEConfig, BinaryVAE),
    "ae": ModelFamily(AutoencoderConfig, Autoencoder),
    # Trained on grey levels by default, as in Goodfellow et al. (2014).
    "gan": ModelFamily(GANConfig, GAN, binarize=("none", "dynamic", "threshold", "static")),
    # A density over grey levels: dequantization needs the 256 levels, not 0/1 pixels.
    "realnvp": ModelFamily(RealNVPConfig, RealNVP, binarize=("none",)),
}

__all__ = ["MODELS", "GenerativeModel", "ModelFamily"]
