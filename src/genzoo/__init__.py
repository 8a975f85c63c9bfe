"""genzoo: deep generative models on MNIST-like images — train, evaluate, sample, show."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genzoo")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
