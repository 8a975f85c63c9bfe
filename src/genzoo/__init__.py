"""genzoo: deep generative models on MNIST-like images — train, evaluate, sample, show.

From Python (api.py; the ``genzoo`` command is a thin layer over it)::

    import genzoo

    run = genzoo.train("vae", latent_dim=20, epochs=5)
    images = genzoo.load(run).sample(16)
    genzoo.evaluate(run, iw_samples=1000)

The modules behind them are ``genzoo.training``, ``genzoo.evaluation`` and
``genzoo.comparison``.
"""

from importlib.metadata import PackageNotFoundError, version

from genzoo.api import Comparison, compare, evaluate, load, resume, sample, train
from genzoo.errors import GenzooError

try:
    __version__ = version("genzoo")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "Comparison",
    "GenzooError",
    "compare",
    "evaluate",
    "load",
    "resume",
    "sample",
    "train",
]
