"""Every model family, by the name the CLI uses: its config dataclass and its module."""

from __future__ import annotations

from typing import NamedTuple

from genzoo.models.base import GenerativeModel
from genzoo.models.vae import VAE, VAEConfig


class ModelFamily(NamedTuple):
    config: type
    model: type


MODELS: dict[str, ModelFamily] = {
    "vae": ModelFamily(VAEConfig, VAE),
}

__all__ = ["MODELS", "GenerativeModel", "ModelFamily"]
