"""Gaussian mixtures fitted to codes after training ("ex-post density estimation", Ghosh
et al. 2020, "From Variational to Deterministic Autoencoders"): the autoencoder's density
on its codes, and the conditional VAE's density of the style z of each class.

scikit-learn fits them (full covariances, EM from k-means); the models keep the fitted
parameters in buffers, so that they are saved and loaded with the weights, and draw from
them with ``torch.distributions``.
"""

from __future__ import annotations

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal


def fit_gaussian_mixture(
    codes: torch.Tensor, components: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A mixture of ``components`` full-covariance Gaussians fitted to codes (N, L):
    its weights (C,), means (C, L) and covariances (C, L, L), float64 on the CPU."""
    # Imported here: scikit-learn (and scipy.stats with it) adds 1.4 s to every start.
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(components, covariance_type="full", random_state=seed)
    gmm.fit(codes.double().cpu().numpy())
    return tuple(torch.from_numpy(v) for v in (gmm.weights_, gmm.means_, gmm.covariances_))


def gaussian_mixture(
    weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor
) -> MixtureSameFamily:
    """The mixture of weights (..., C), means (..., C, L), covariances (..., C, L, L):
    one mixture over z (L,) for each index of the leading dimensions."""
    components = MultivariateNormal(means, covariance_matrix=covariances)
    return MixtureSameFamily(Categorical(probs=weights), components)
