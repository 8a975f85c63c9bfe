"""The source material's studies, one command each: ``genzoo study NAME``.

Each study is a small declarative recipe in its own module (recipe.py says what one
holds); adding one is a module with a ``STUDY`` and a line in ``STUDIES``.
"""

from __future__ import annotations

from genzoo.studies import (
    autoencoder_generative,
    burda,
    discrete_latents,
    families,
    few_labels,
    gan_losses,
    latent_size,
    likelihood_estimators,
    sampling_steps,
    vampprior,
)
from genzoo.studies.recipe import Arm, Study, run_study

STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        latent_size.STUDY,
        likelihood_estimators.STUDY,
        discrete_latents.STUDY,
        gan_losses.STUDY,
        autoencoder_generative.STUDY,
        families.STUDY,
        sampling_steps.STUDY,
        few_labels.STUDY,
        burda.STUDY,
        vampprior.STUDY,
    )
}

__all__ = ["STUDIES", "Arm", "Study", "run_study"]
