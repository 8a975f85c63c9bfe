"""Sample quality for any model that can sample, measured with the project's own MNIST classifier.

- Fréchet distance between Gaussians fitted to penultimate classifier features
  (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local
  Nash equilibrium"; FID, here with an MNIST CNN in place of Inception-v3);
- Inception score exp(E_x KL(p(y|x) || p(y))) from the classifier's class probabilities
  (Salimans et al. 2016, "Improved techniques for training GANs"), reported as they do:
  the mean and standard deviation over 10 splits of the samples;
- improved precision and recall: k-nearest-neighbour balls around each feature vector
  estimate the real and the generated manifold (Kynkäänniemi et al. 2019, "Improved
  precision and recall metric for assessing generative models");
- density and coverage, the same balls around the real points alone, counted so that
  real outliers do not inflate them (Naeem et al. 2020, "Reliable fidelity and diversity
  metrics for generative models");
- Gaussian Parzen-window log-likelihood on raw pixels, bandwidth chosen on validation
  images (Breuleux et al. 2011, "Quickly generating representative samples from an
  RBM-derived process"; the protocol of Goodfellow et al. 2014, "Generative adversarial
  nets": 10k samples, sigma in logspace(-1, 0, 10) picked on 1000 validation images,
  mean and standard error over the test set). Kept for comparison with that table only:
  Parzen estimates disagree with the likelihood and with sample quality (Theis, van den
  Oord & Bethge 2016, "A note on the evaluation of generative models").

The classifier (``FeatureNet``) is trained once on grey-level images and cached with a
SHA-256 sidecar:

    <data dir>/quality-net/<dataset>.safetensors   weights (metadata: dataset, feature_dim)
    <data dir>/quality-net/<dataset>.json          sha256, test_accuracy, feature_dim, training

A missing, corrupt or mismatching cache is rebuilt (retrained) with a message.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm  # widgets in a notebook, text in a terminal

from genzoo.data import (
    EVAL_BINARIZE_SEEDS,
    IMAGE_SHAPE,
    Data,
    Split,
    batches,
    load_data,
)
from genzoo.errors import GenzooError
from genzoo.files import cache_root, file_digest, read_json, save_weights, write_json
from genzoo.stats import mean_and_se

N_CLASSES = 10
FEATURE_DIM = 128
MIN_ACCURACY = 0.99  # below this the features are too poor for FID / IS to mean much
CACHE_FOLDER = "quality-net"
PARZEN_SIGMAS = tuple(float(s) for s in np.logspace(-1, 0, 10))  # Goodfellow et al.'s grid
PARZEN_VAL_SIZE = 1000  # validation images for the bandwidth, as in Goodfellow et al.
IS_SPLITS = 10  # the Inception score's splits, as Salimans et al. report it
PR_K = 3  # neighbours of precision and recall (Kynkäänniemi et al.'s choice)
DC_K = 5  # neighbours of density and coverage (Naeem et al.'s choice)
CLASS_FID_MIN = 2  # images of a class its FID needs, each side: a covariance needs two

ArrayLike = torch.Tensor | np.ndarray


# ----------------------------------------------------------------------------- classifier


class FeatureNet(nn.Module):
    """Small MNIST CNN: conv32-conv64-maxpool-dense(feature_dim)-dense(10).

    ``features`` is the penultimate (post-ReLU) layer used for FID and precision/recall;
    ``forward`` gives the class logits used for the Inception score.
    """

    def __init__(self, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3),  # (B, 32, 26, 26)
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),  # (B, 64, 24, 24)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 64, 12, 12)
            nn.Dropout(0.25),
            nn.Flatten(),  # (B, 9216)
            nn.Linear(64 * 12 * 12, feature_dim),
            nn.ReLU(),  # (B, F)
        )
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(feature_dim, N_CLASSES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) images in [0, 1] -> (B, F) penultimate activations."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) images in [0, 1] -> (B, 10) logits."""
        return self.head(self.features(x))


@torch.no_grad()
def accuracy(net: FeatureNet, split: Split, batch_size: int = 1000) -> float:
    """Fraction of ``split`` that ``net`` classifies correctly (eval mode)."""
    if split.labels is None:
        raise GenzooError("this split has no labels; the feature net needs MNIST-style idx data")
    net.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        logits = net(split.images[start : start + batch_size])  # (B, 10)
        correct += (logits.argmax(1) == split.labels[start : start + batch_size]).sum().item()
    return correct / len(split)


def train_feature_net(
    data: Data,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
) -> tuple[FeatureNet, float]:
    """Train a ``FeatureNet`` on ``data.train`` (grey levels) with Adam and a one-cycle
    learning rate peaking at ``lr`` (Smith & Topin 2019: the annealing tail is what takes
    this net past 99%); return it in eval mode with its accuracy on ``data.test``. Runs
    on the device ``data`` lives on.

    The global random generator is forked, so whether the cache had to be rebuilt never
    changes the samples a caller draws afterwards.
    """
    if data.binarize != "none":
        raise GenzooError(
            f"the feature net is trained on grey levels; load the data with "
            f'binarize="none" (got {data.binarize!r})'
        )
    train = data.train
    if train.labels is None:
        raise GenzooError("the training split has no labels; the feature net needs idx data")
    device = train.images.device
    n_batches = math.ceil(len(train) / batch_size)
    # Gradients on even where the caller measures under no_grad (a study's analysis draws
    # its first FID there, and the net is trained on first use).
    with (
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        torch.enable_grad(),
    ):
        torch.manual_seed(seed)
        net = FeatureNet().to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, lr, total_steps=epochs * n_batches
        )
        # Batches of indices (not images), so each image keeps its label.
        index = Split(torch.arange(len(train), device=device), None)
        for epoch in range(1, epochs + 1):
            net.train()
            bar = tqdm(
                batches(index, batch_size, shuffle=True),
                total=n_batches,
                desc=f"feature net, epoch {epoch}/{epochs}",
                unit="batch",
                leave=False,
                disable=None,
            )
            for idx in bar:
                loss = F.cross_entropy(net(train.images[idx]), train.labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval(), accuracy(net, data.test)


# ----------------------------------------------------------------------------- cache

TrainFn = Callable[..., tuple[FeatureNet, float]]


def cache_paths(cache_dir: str | Path | None = None, dataset: str = "mnist") -> tuple[Path, Path]:
    """The weights file and its JSON sidecar, in ``cache_dir`` (default: the ``quality-net``
    folder of genzoo's cache, apart from the data folder, which may be read-only)."""
    folder = Path(cache_dir) if cache_dir else cache_root() / CACHE_FOLDER
    return folder / f"{dataset}.safetensors", folder / f"{dataset}.json"


def save_feature_net(
    net: FeatureNet,
    test_accuracy: float,
    weights: Path,
    sidecar: Path,
    dataset: str = "mnist",
    training: dict[str, Any] | None = None,
) -> None:
    """Weights, then the sidecar naming their checksum; a crash between the two leaves a
    checksum mismatch, which the next load treats as a corrupt cache."""
    digest = save_weights(weights, net, {"dataset": dataset, "feature_dim": str(net.feature_dim)})
    info = {
        "sha256": digest,
        "test_accuracy": test_accuracy,
        "dataset": dataset,
        "feature_dim": net.feature_dim,
        "training": training or {},
    }
    write_json(sidecar, info)


def load_feature_net(weights: Path, sidecar: Path) -> FeatureNet:
    """Load a cached net after checking its SHA-256; GenzooError says what is wrong."""
    if not weights.is_file() or not sidecar.is_file():
        raise GenzooError(f"no cached feature net at {weights} (with {sidecar.name})")
    info = read_json(sidecar)
    digest = file_digest(weights, "sha256")
    if digest != info.get("sha256"):
        raise GenzooError(
            f"{weights} has SHA-256 {digest}, its sidecar says {info.get('sha256')} "
            "(corrupt, truncated or half-written)"
        )
    try:
        net = FeatureNet(int(info["feature_dim"]))
        net.load_state_dict(load_file(str(weights), device="cpu"))
    except (SafetensorError, OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
        raise GenzooError(
            f"{weights} does not fit this FeatureNet ({type(err).__name__}: {str(err)[:200]})"
        ) from None
    return net.eval()


def load_or_train_feature_net(
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    dataset: str = "mnist",
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    val_size: int = 10000,
    retrain: bool = False,
    train_fn: TrainFn = train_feature_net,
) -> FeatureNet:
    """The cached feature net (checksum verified) on ``device``, in eval mode; trained and
    cached first when the cache is missing, corrupt or ``retrain`` is set.

    ``train_fn(data, epochs=, batch_size=, lr=, seed=) -> (net, test_accuracy)`` does the
    training on grey-level ``data`` (``val_size`` images held out of the training split, as
    for the models); tests pass a fast stand-in.
    """
    device = torch.device(device)
    weights, sidecar = cache_paths(cache_dir, dataset)
    if not retrain:
        try:
            return load_feature_net(weights, sidecar).to(device)
        except GenzooError as err:
            if weights.exists() or sidecar.exists():
                print(f"rebuilding the cached feature net: {err}")
    data = load_data(dataset, "none", val_size, data_dir).to(device)
    training = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    print(
        f"training the {dataset} feature net on {device}: {len(data.train)} images, "
        + ", ".join(f"{k} {v}" for k, v in training.items())
    )
    net, test_accuracy = train_fn(data, **training)
    print(f"feature net test accuracy {test_accuracy:.4f}; cached in {weights}")
    if test_accuracy < MIN_ACCURACY:
        print(
            f"warning: test accuracy below {MIN_ACCURACY}; FID and Inception scores with "
            "these features are less meaningful (train longer with more epochs)"
        )
    record = {**training, "n_train": len(data.train), "n_test": len(data.test)}
    save_feature_net(net, test_accuracy, weights, sidecar, dataset, record)
    return net.to(device).eval()


# ----------------------------------------------------------------------------- scores


def _float64(x: ArrayLike) -> torch.Tensor:
    return torch.as_tensor(x).double()


def _check_features(name: str, x: torch.Tensor, min_rows: int) -> None:
    if x.ndim != 2 or x.shape[0] < min_rows:
        raise GenzooError(f"{name} must be (N, F) with N >= {min_rows}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise GenzooError(f"{name} holds NaN or infinite values")


def _check_images(name: str, images: torch.Tensor) -> None:
    if tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise GenzooError(f"{name} must be (N, 1, 28, 28) images, got {tuple(images.shape)}")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise GenzooError(f"{name} must hold values in [0, 1] (image space, not logits)")


@torch.no_grad()
def features_and_probs(
    net: FeatureNet, images: torch.Tensor, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 28, 28) images -> (N, F) features and (N, 10) class probabilities, float64,
    on the net's device; the net is put in eval mode (dropout off)."""
    _check_images("images", images)
    net.eval()
    device = next(net.parameters()).device
    feats, probs = [], []
    for start in range(0, images.shape[0], batch_size):
        f = net.features(images[start : start + batch_size].to(device, torch.float32))  # (B, F)
        feats.append(f.double())
        probs.append(torch.softmax(net.head(f).double(), 1))  # (B, 10)
    return torch.cat(feats), torch.cat(probs)


def _spectrum_above_noise(eigenvalues: torch.Tensor, scale: float, size: int) -> torch.Tensor:
    """``eigenvalues`` of an (F, F) symmetric PSD matrix with those at or below its
    rounding noise set to 0: eigh gets each eigenvalue only to within about
    F * eps * ``scale`` (the norm of the matrices it was computed from), so a true 0 (a
    dead feature unit) comes back as +-1e-16 * scale, whose square root (1e-8 * sqrt(scale))
    would be counted as a real spread."""
    tolerance = size * torch.finfo(eigenvalues.dtype).eps * scale
    return torch.where(eigenvalues > tolerance, eigenvalues, torch.zeros_like(eigenvalues))


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) of (N, F) and (M, F) features.

    Tr (S_a S_b)^{1/2} is the sum of the square roots of the eigenvalues of S_a S_b, which
    are those of the symmetric PSD matrix S_a^{1/2} S_b S_a^{1/2} (AB and BA share their
    non-zero eigenvalues). Two symmetric eigendecompositions in float64 give it with no
    complex parts and no diagonal offset even when the covariances are singular (fewer
    samples than features, dead ReLU units), where a general matrix square root
    (scipy.linalg.sqrtm) loses accuracy or fails; eigenvalues within rounding noise of 0
    count as 0 (``_spectrum_above_noise``), so that singular directions add nothing.
    """
    a, b = _float64(feats_a).cpu(), _float64(feats_b).cpu()  # (N, F), (M, F)
    _check_features("feats_a", a, 2)
    _check_features("feats_b", b, 2)
    if a.shape[1] != b.shape[1]:
        raise GenzooError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    size = a.shape[1]
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (F, F), unbiased
    w, v = torch.linalg.eigh(cov_a)
    norm_a = w.abs().max().item()
    sqrt_a = (v * _spectrum_above_noise(w, norm_a, size).sqrt()) @ v.T  # (F, F)
    middle = sqrt_a @ cov_b @ sqrt_a  # (F, F), norm at most |S_a| |S_b|
    norm_b = torch.linalg.eigvalsh(cov_b).abs().max().item()
    eigenvalues = torch.linalg.eigvalsh((middle + middle.T) / 2)
    root_trace = _spectrum_above_noise(eigenvalues, norm_a * norm_b, size).sqrt().sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    trace_term = cov_a.trace() + cov_b.trace() - 2 * root_trace
    return (mean_term + trace_term).item()


def _check_probs(probs: torch.Tensor) -> None:
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise GenzooError(f"probs must be (N, C) class probabilities, got {tuple(probs.shape)}")
    if (probs < 0).any() or not torch.allclose(probs.sum(1), torch.ones_like(probs[:, 0])):
        raise GenzooError("probs rows must be probabilities summing to 1 (softmax, not logits)")


def inception_score(probs: ArrayLike) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of (N, C) class probabilities taken as one set, p(y)
    their mean: 1 when every prediction is the same, C when they are confident and spread
    evenly. The one-split figure (what the training probe logs); the reported figure is
    ``inception_score_splits``."""
    p = _float64(probs)  # (N, C)
    _check_probs(p)
    marginal = p.mean(0, keepdim=True)  # (1, C)
    kl = (torch.special.xlogy(p, p) - torch.special.xlogy(p, marginal)).sum(1)  # (N,)
    return kl.mean().exp().item()


def inception_score_splits(probs: ArrayLike, splits: int = IS_SPLITS) -> tuple[float, float]:
    """The Inception score as the field reports it (Salimans et al. 2016, their code):
    the (N, C) probabilities cut into ``splits`` consecutive parts (rows i N / splits to
    (i + 1) N / splits), each part scored with its own p(y), then the mean and the
    standard deviation (numpy's, ddof 0) of the parts' scores."""
    p = _float64(probs)  # (N, C)
    if p.shape[0] < splits:
        raise GenzooError(
            f"the Inception score's {splits} splits need at least {splits} samples, "
            f"got {p.shape[0]}"
        )
    bounds = [i * p.shape[0] // splits for i in range(splits + 1)]
    parts = itertools.pairwise(bounds)
    scores = torch.tensor([inception_score(p[lo:hi]) for lo, hi in parts], dtype=torch.float64)
    return scores.mean().item(), scores.std(correction=0).item()


def class_histogram(probs: ArrayLike) -> torch.Tensor:
    """(C,) int64 count of the predicted (argmax) class of (N, C) probabilities."""
    p = torch.as_tensor(probs)
    _check_probs(p.double())
    return torch.bincount(p.argmax(1).cpu(), minlength=p.shape[1])


def class_entropy(probs: ArrayLike) -> float:
    """Entropy in nats of the histogram of predicted classes of (N, C) probabilities: 0
    when every image is called the same class (total collapse), log C when the classes
    come equally often."""
    counts = class_histogram(probs).double()
    return torch.special.entr(counts / counts.sum()).sum().item()


def class_fidelity(
    net: FeatureNet,
    samples: torch.Tensor,
    labels: torch.Tensor,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    batch_size: int = 500,
) -> dict[str, Any]:
    """How well the samples (N, 1, 28, 28) of a conditional model drawn for ``labels``
    (N,) are of their class: the share the feature net classifies as their label, overall
    and per class, and the FID of each class's samples against the ``real`` images (M, 1,
    28, 28) of that class (``real_labels`` (M,)). Classes run 0 .. max label.

    The FIDs only where every class has ``CLASS_FID_MIN`` samples and real images or
    more: a quick check of a few samples still gets its other scores, and
    ``class_fids_left_out`` says why there are none (all or none, so that the figures
    of one evaluation stay comparable class by class)."""
    _check_images("samples", samples)
    if labels.shape != samples.shape[:1] or real_labels.shape != real.shape[:1]:
        raise GenzooError("one label per sample and one per real image are needed")
    feats, probs = features_and_probs(net, samples, batch_size)
    labels, real_labels = labels.to(probs.device), real_labels.to(probs.device)
    correct = (probs.argmax(1) == labels).double()  # (N,)
    classes = int(labels.max()) + 1
    scores: dict[str, Any] = {
        "class_accuracy": correct.mean().item(),
        "class_accuracies": [correct[labels == c].mean().item() for c in range(classes)],
    }
    short = [
        f"{what} of class {int(counts.argmin())}: {int(counts.min())}{hint}"
        for counts, what, hint in (
            (torch.bincount(labels, minlength=classes), "samples", " (more: --n-samples)"),
            (torch.bincount(real_labels, minlength=classes)[:classes], "real images", ""),
        )
        if counts.min() < CLASS_FID_MIN
    ]
    if short:
        scores["class_fids_left_out"] = (
            f"a class's FID needs {CLASS_FID_MIN} or more samples and real images of "
            f"each class; {' and '.join(short)}"
        )
        return scores
    real_feats, _ = features_and_probs(net, real, batch_size)
    scores["class_fids"] = [
        frechet_distance(real_feats[real_labels == c], feats[labels == c]) for c in range(classes)
    ]
    return scores


class QualityProbe:
    """Sample quality watched while training (``--quality-every``): samples scored against
    fixed real images (the validation split, grey levels) with the feature net. The real
    images' features are computed once. Its Inception score is the one-split figure
    (``inception_score``), cheaper and not the reported protocol of 10 splits."""

    def __init__(self, net: FeatureNet, real: torch.Tensor, batch_size: int = 500) -> None:
        self.net, self.batch_size = net, batch_size
        self.real_feats, _ = features_and_probs(net, real, batch_size)

    def __call__(self, samples: torch.Tensor) -> dict[str, float]:
        """FID against the real images, Inception score (one split) and class entropy of
        ``samples``."""
        feats, probs = features_and_probs(self.net, samples, self.batch_size)
        return {
            "quality_fid": frechet_distance(self.real_feats, feats),
            "quality_inception_score": inception_score(probs),
            "quality_class_entropy": class_entropy(probs),
        }


def _kth_neighbour_radii(feats: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """(N,) distance from each row to its k-th nearest other row."""
    radii = []
    for start in range(0, feats.shape[0], batch_size):
        d = torch.cdist(feats[start : start + batch_size], feats)  # (B, N)
        # k + 1 smallest: the row itself (distance 0) comes first.
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _ball_counts(
    points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """How many of the balls (``centres`` (N, F), ``radii`` (N,)) hold each of ``points``
    (P, F), and whether each ball holds any of them: (P,) int64 and (N,) bool."""
    counts = []
    covered = torch.zeros(centres.shape[0], dtype=torch.bool, device=centres.device)
    for start in range(0, points.shape[0], batch_size):
        inside = torch.cdist(points[start : start + batch_size], centres) <= radii  # (B, N)
        counts.append(inside.sum(1))
        covered |= inside.any(0)
    return torch.cat(counts), covered


def _real_and_fake(
    real_feats: ArrayLike, fake_feats: ArrayLike, min_real: int, min_fake: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets in float64 on the real ones' device, checked."""
    real, fake = _float64(real_feats), _float64(fake_feats)
    fake = fake.to(real.device)
    _check_features("real_feats", real, min_real)
    _check_features("fake_feats", fake, min_fake)
    if real.shape[1] != fake.shape[1]:
        raise GenzooError(f"feature sizes differ: {real.shape[1]} vs {fake.shape[1]}")
    return real, fake


def precision_recall(
    real_feats: ArrayLike, fake_feats: ArrayLike, k: int = PR_K, batch_size: int = 1000
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of (N, F) and (M, F) features.

    Each set's manifold is the union of balls around its points reaching their k-th nearest
    neighbour; precision is the fraction of fake points inside the real manifold (are the
    samples realistic?), recall the fraction of real points inside the fake one (is the data
    covered?). A few real outliers with large balls inflate the real manifold, so that
    even collapsed samples can score a precision of 1 (``density_coverage`` has not this
    weakness). Distances in float64, ``batch_size`` rows at a time, so 10k x 10k fits.
    """
    real, fake = _real_and_fake(real_feats, fake_feats, k + 1, k + 1)
    in_real, _ = _ball_counts(fake, real, _kth_neighbour_radii(real, k, batch_size), batch_size)
    in_fake, _ = _ball_counts(real, fake, _kth_neighbour_radii(fake, k, batch_size), batch_size)
    return (in_real > 0).double().mean().item(), (in_fake > 0).double().mean().item()


def density_coverage(
    real_feats: ArrayLike, fake_feats: ArrayLike, k: int = DC_K, batch_size: int = 1000
) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, "Reliable fidelity and diversity metrics
    for generative models") of (N, F) real and (M, F) fake features, with balls around
    the real points alone (reaching their k-th nearest real neighbour).

    Density, sum_j #{balls holding fake point j} / (k M), is how realistic the samples are
    counted by how many real neighbourhoods hold each: about 1 for samples distributed
    like the data, above 1 for samples crowded where the data is densest, and a lone
    real outlier's big ball adds only 1/k, where it gives precision a whole point.
    Coverage, the fraction of real balls that hold any fake point, is how much of the data
    the samples reach: a collapsed or noisy set covers few balls whatever its density.
    """
    real, fake = _real_and_fake(real_feats, fake_feats, k + 1, 1)
    radii = _kth_neighbour_radii(real, k, batch_size)
    counts, covered = _ball_counts(fake, real, radii, batch_size)
    return counts.sum().item() / (k * fake.shape[0]), covered.double().mean().item()


def _parzen_grid(
    samples: torch.Tensor, test: torch.Tensor, sigmas: Sequence[float], batch_size: int
) -> torch.Tensor:
    """(S, M) Parzen log-likelihoods of M test points for S bandwidths, float64; the squared
    distances of each batch are computed once and shared by every bandwidth."""
    s = samples.flatten(1).double()  # (N, D)
    x = test.flatten(1).double().to(s.device)  # (M, D)
    if s.shape[0] == 0 or s.shape[1] != x.shape[1]:
        raise GenzooError(f"need samples (N, D) and test (M, D), got {s.shape} and {x.shape}")
    if min(sigmas) <= 0:
        raise GenzooError(f"Parzen bandwidths must be positive, got {list(sigmas)}")
    n, d = s.shape
    s_sq = s.square().sum(1)  # (N,)
    rows = [[] for _ in sigmas]
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]  # (B, D)
        # float64 keeps the expansion exact enough: ||x||^2 ~ 100 for MNIST vs sigma^2 >= 0.01
        sq = (xb.square().sum(1, keepdim=True) - 2 * xb @ s.T + s_sq).clamp(min=0)  # (B, N)
        for row, sigma in zip(rows, sigmas, strict=True):
            norm = math.log(n) + d * math.log(sigma * math.sqrt(2 * math.pi))
            row.append(torch.logsumexp(-sq / (2 * sigma**2), 1) - norm)  # (B,)
    return torch.stack([torch.cat(row) for row in rows])


def parzen_log_likelihood(
    samples: torch.Tensor, test: torch.Tensor, sigma: float, batch_size: int = 100
) -> torch.Tensor:
    """log p(x) = logsumexp_i(-||x - s_i||^2 / (2 sigma^2)) - log N - D log(sigma sqrt(2 pi))
    for every test image, under the isotropic Gaussian Parzen window on the N flattened
    ``samples``: (M,) float64."""
    return _parzen_grid(samples, test, [sigma], batch_size)[0]


def select_parzen_sigma(
    samples: torch.Tensor,
    validation: torch.Tensor,
    sigmas: Sequence[float] = PARZEN_SIGMAS,
    batch_size: int = 100,
) -> float:
    """The bandwidth of ``sigmas`` with the best mean validation log-likelihood."""
    mean_ll = _parzen_grid(samples, validation, sigmas, batch_size).mean(1)  # (S,)
    return float(sigmas[int(mean_ll.argmax())])


def quality_scores(
    samples: torch.Tensor,
    real_test: torch.Tensor,
    real_val: torch.Tensor,
    net: FeatureNet,
    k: int = PR_K,
    sigmas: Sequence[float] = PARZEN_SIGMAS,
    parzen_val_size: int = PARZEN_VAL_SIZE,
    batch_size: int = 500,
    density_k: int = DC_K,
    splits: int = IS_SPLITS,
) -> dict[str, Any]:
    """Every score of (N, 1, 28, 28) ``samples`` in [0, 1] against the ``real_test`` images
    (the protocol: 10k samples, the 10k test images): FID, the Inception score over
    ``splits`` splits (mean and standard deviation; one split per sample where there are
    fewer samples, and ``inception_splits`` says so), precision and recall (``k``
    neighbours), density and coverage (``density_k``), and the Parzen log-likelihood with
    the bandwidth chosen on the first ``parzen_val_size`` of ``real_val``, validation
    images that must not be among ``real_test`` (a bandwidth chosen on the images it
    scores flatters the figure). Returns plain numbers (JSON-ready)."""
    _check_images("samples", samples)
    _check_images("real_test", real_test)
    _check_images("real_val", real_val)
    fake_feats, fake_probs = features_and_probs(net, samples, batch_size)
    real_feats, _ = features_and_probs(net, real_test, batch_size)
    splits = min(splits, samples.shape[0])  # a tiny check still gets a score, so labelled
    inception, inception_std = inception_score_splits(fake_probs, splits)
    precision, recall = precision_recall(real_feats, fake_feats, k, batch_size)
    density, coverage = density_coverage(real_feats, fake_feats, density_k, batch_size)
    sigma_images = real_val[:parzen_val_size]
    sigma = select_parzen_sigma(samples, sigma_images, sigmas, batch_size)
    parzen_ll, parzen_ll_se = mean_and_se(
        parzen_log_likelihood(samples, real_test, sigma, batch_size)
    )
    return {
        "fid": frechet_distance(real_feats, fake_feats),
        "inception_score": inception,
        "inception_score_std": inception_std,
        "inception_splits": splits,
        "precision": precision,
        "recall": recall,
        "k": k,
        "density": density,
        "coverage": coverage,
        "density_k": density_k,
        "parzen_ll": parzen_ll,
        "parzen_ll_se": parzen_ll_se,
        "parzen_sigma": sigma,
        "parzen_sigma_images": sigma_images.shape[0],
        "n_samples": samples.shape[0],
        "n_test": real_test.shape[0],
        "class_histogram": class_histogram(fake_probs).tolist(),
    }


def reference_quality_scores(
    data: Data,
    net: FeatureNet,
    n_samples: int = 10000,
    k: int = PR_K,
    sigmas: Sequence[float] = PARZEN_SIGMAS,
    parzen_val_size: int = PARZEN_VAL_SIZE,
    batch_size: int = 500,
) -> dict[str, Any]:
    """The ideal row of a table: the first ``n_samples`` training images scored by
    ``quality_scores`` exactly as a model's samples would be. With dynamic binarization
    they are binarized once (fixed seed), like the test images they are compared with."""
    if n_samples > len(data.train):
        raise GenzooError(f"only {len(data.train)} training images, asked for {n_samples}")
    reference = data.train.images[:n_samples]
    if data.binarize == "dynamic":
        generator = torch.Generator().manual_seed(EVAL_BINARIZE_SEEDS["reference"])
        reference = torch.bernoulli(reference.cpu(), generator=generator).to(reference.device)
    return quality_scores(
        reference, data.test.images, data.val.images, net, k, sigmas, parzen_val_size, batch_size
    )
