"""Sample-quality scores checked against closed forms and brute-force references, and the
feature-net cache against corruption. Tiny synthetic data; no real training."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.special
import torch
from safetensors.torch import load_file
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from conftest import fake_digits
from genzoo import quality
from genzoo.data import Data, load_data
from genzoo.errors import GenzooError
from genzoo.files import file_digest
from genzoo.quality import (
    FeatureNet,
    QualityProbe,
    class_entropy,
    class_histogram,
    density_coverage,
    frechet_distance,
    inception_score,
    inception_score_splits,
    parzen_log_likelihood,
    precision_recall,
    quality_scores,
    select_parzen_sigma,
)


def exact_moments(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, F) float64 points whose sample mean and (unbiased) covariance are exactly
    ``mean`` and ``cov``: whitened Gaussian noise, then coloured."""
    z = torch.randn(n, mean.numel(), generator=torch.Generator().manual_seed(seed)).double()
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # sample cov = I
    return mean + z @ torch.linalg.cholesky(cov).T


def random_spd(f: int, seed: int) -> torch.Tensor:
    a = torch.randn(f, f, generator=torch.Generator().manual_seed(seed)).double()
    return a @ a.T / f + 0.1 * torch.eye(f, dtype=torch.float64)


# ----------------------------------------------------------------------------- FID


@pytest.mark.parametrize(("n", "f"), [(300, 16), (20, 64)])  # full rank, and N < F (singular)
def test_frechet_distance_of_a_set_with_itself_is_zero(n: int, f: int) -> None:
    feats = torch.relu(torch.randn(n, f, generator=torch.Generator().manual_seed(0)))
    feats[:, :3] = 0  # dead ReLU units: a singular covariance, as real features have
    scale = torch.cov(feats.double().T).trace().item()
    assert abs(frechet_distance(feats, feats.clone())) < 1e-6 * scale
    assert abs(frechet_distance(feats.numpy(), feats.numpy())) < 1e-6 * scale


def test_frechet_distance_grows_with_a_mean_shift_as_its_square() -> None:
    feats = torch.randn(400, 8, generator=torch.Generator().manual_seed(1)).double()
    direction = torch.linspace(-1, 1, 8, dtype=torch.float64)
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0]
    fids = [frechet_distance(feats, feats + t * direction) for t in shifts]
    assert all(a < b for a, b in itertools.pairwise(fids)), fids
    expected = [t**2 * direction.square().sum().item() for t in shifts]
    np.testing.assert_allclose(fids, expected, rtol=1e-8, atol=1e-9)


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians() -> None:
    mu_a, mu_b = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, -0.5])
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25, 2.0]), torch.tensor([9.0, 1.0, 0.25, 0.5])
    a = exact_moments(mu_a.double(), torch.diag(var_a).double(), 500, seed=2)
    b = exact_moments(mu_b.double(), torch.diag(var_b).double(), 300, seed=3)
    expected = ((mu_a - mu_b) ** 2).sum() + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-9)


def diagonal_moments(mean: torch.Tensor, var: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, F) float64 points with exactly the sample mean ``mean`` and the diagonal
    covariance ``var``; units of variance 0 hold their mean in every row."""
    points = mean.expand(n, -1).clone()
    live = var > 0
    points[:, live] = exact_moments(mean[live], torch.diag(var[live]), n, seed)
    return points


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_frechet_distance_adds_nothing_for_units_without_variance(scale: float) -> None:
    """Dead units (always 0) and constant ones in both sets, and units dead in one set
    only: the closed form of diagonal Gaussians to rounding, in any orthogonal basis of
    the features (the distance does not depend on it; a rotation is what turns the units'
    exact zeros into the eigensolver's noise, +-1e-16 * scale, whose square roots the
    trace would otherwise count as spread: errors of 1e-7 to 1e-5 here)."""
    gen = torch.Generator().manual_seed(8)
    mu_a, mu_b = torch.randn(38, generator=gen).double(), torch.randn(38, generator=gen).double()
    var_a = scale * (0.1 + torch.rand(38, generator=gen, dtype=torch.float64))
    var_b = scale * (0.1 + torch.rand(38, generator=gen, dtype=torch.float64))
    var_a[:6] = 0  # dead in the first set alone
    var_a[30:] = var_b[30:] = 0  # without variance in both ...
    mu_a[30:34] = mu_b[30:34] = 0  # ... dead units
    mu_a[34:], mu_b[34:] = 2.0, 2.5  # ... constant units
    a, b = diagonal_moments(mu_a, var_a, 400, 9), diagonal_moments(mu_b, var_b, 300, 10)
    expected = ((mu_a - mu_b).square().sum() + (var_a.sqrt() - var_b.sqrt()).square().sum()).item()
    rotation, _ = torch.linalg.qr(torch.randn(38, 38, generator=gen, dtype=torch.float64))
    for basis in (torch.eye(38, dtype=torch.float64), rotation):
        assert abs(frechet_distance(a @ basis, b @ basis) - expected) < 1e-12 * expected
        assert abs(frechet_distance(a @ basis, a @ basis)) < 1e-12 * expected


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances() -> None:
    f = 6
    mu_a, mu_b = torch.zeros(f, dtype=torch.float64), torch.linspace(0, 1, f).double()
    cov_a, cov_b = random_spd(f, 4), random_spd(f, 5)
    a, b = exact_moments(mu_a, cov_a, 400, 6), exact_moments(mu_b, cov_b, 400, 7)
    covmean = scipy.linalg.sqrtm(cov_a.numpy() @ cov_b.numpy()).real
    expected = (mu_a - mu_b).square().sum().item() + np.trace(
        cov_a.numpy() + cov_b.numpy() - 2 * covmean
    )
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------------------- IS


def test_inception_score_is_ten_for_confident_evenly_spread_predictions() -> None:
    probs = torch.eye(10).repeat(7, 1)  # (70, 10), every class 7 times, fully confident
    assert inception_score(probs) == pytest.approx(10.0, rel=1e-12)


def test_inception_score_is_one_for_identical_predictions() -> None:
    row = torch.softmax(torch.randn(10, generator=torch.Generator().manual_seed(0)), 0)
    assert inception_score(row.expand(50, 10)) == pytest.approx(1.0, abs=1e-12)
    assert inception_score(torch.eye(10)[[3] * 50]) == pytest.approx(1.0, abs=1e-12)


def test_inception_score_matches_scipy_kl_reference() -> None:
    probs = torch.softmax(3 * torch.randn(40, 10, generator=torch.Generator().manual_seed(1)), 1)
    p = probs.double().numpy()
    kl = scipy.special.rel_entr(p, p.mean(0, keepdims=True)).sum(1)
    assert inception_score(probs) == pytest.approx(math.exp(kl.mean()), rel=1e-10)


def salimans_inception_score(preds: np.ndarray, splits: int) -> tuple[float, float]:
    """The Inception score as Salimans et al.'s released code computes it (the numpy part
    of inception_score.py, improved-gan), for (N, C) probabilities."""
    scores = []
    for i in range(splits):
        part = preds[(i * preds.shape[0] // splits) : ((i + 1) * preds.shape[0] // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        kl = np.mean(np.sum(kl, 1))
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


@pytest.mark.parametrize(("n", "splits"), [(103, 10), (50, 10), (40, 1)])
def test_inception_score_splits_match_the_papers_code(n: int, splits: int) -> None:
    probs = torch.softmax(3 * torch.randn(n, 10, generator=torch.Generator().manual_seed(n)), 1)
    expected = salimans_inception_score(probs.double().numpy(), splits)
    assert inception_score_splits(probs, splits) == pytest.approx(expected, rel=1e-10)


def test_inception_score_splits_score_each_split_with_its_own_marginal() -> None:
    """Half the samples one class, half another, in that order: as one set the score is 2
    (two classes, evenly); each of 10 splits holds one class alone, so each scores 1."""
    probs = torch.eye(10)[torch.arange(100) // 50]  # (100, 10), classes 0 then 1
    assert inception_score(probs) == pytest.approx(2.0)
    assert inception_score_splits(probs, 10) == pytest.approx((1.0, 0.0), abs=1e-12)
    with pytest.raises(GenzooError, match="10 splits need at least 10 samples, got 9"):
        inception_score_splits(probs[:9], 10)


def test_class_histogram_counts_predicted_classes_and_rejects_logits() -> None:
    labels = torch.tensor([0, 3, 3, 9, 9, 9])
    probs = torch.softmax(10 * torch.eye(10)[labels], 1)
    assert class_histogram(probs).tolist() == [1, 0, 0, 2, 0, 0, 0, 0, 0, 3]
    with pytest.raises(GenzooError, match="summing to 1"):
        inception_score(10 * torch.eye(10)[labels])


def test_class_entropy_tells_collapse_from_balance() -> None:
    one_class = torch.softmax(10 * torch.eye(10)[torch.full((50,), 7)], 1)
    balanced = torch.softmax(10 * torch.eye(10)[torch.arange(50) % 10], 1)
    assert class_entropy(one_class) == pytest.approx(0.0, abs=1e-12)
    assert class_entropy(balanced) == pytest.approx(math.log(10))
    two_classes = torch.softmax(10 * torch.eye(10)[torch.arange(50) % 2], 1)
    assert class_entropy(two_classes) == pytest.approx(math.log(2))


def test_quality_probe_scores_the_real_images_as_perfect() -> None:
    torch.manual_seed(0)
    net = FeatureNet().eval()
    real = torch.rand(300, 1, 28, 28)
    probe = QualityProbe(net, real)
    same = probe(real)
    assert same["quality_fid"] == pytest.approx(0.0, abs=1e-6)
    assert probe(torch.zeros(300, 1, 28, 28))["quality_class_entropy"] == pytest.approx(0.0)
    assert probe(real.clamp(0, 0.2))["quality_fid"] > 1e-3


# ----------------------------------------------------------------------------- precision / recall


def brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al.'s definition, written out with full distance matrices."""

    def radii(x: np.ndarray) -> np.ndarray:
        return np.sort(scipy.spatial.distance.cdist(x, x), axis=1)[:, k]

    def inside(points: np.ndarray, centres: np.ndarray, r: np.ndarray) -> float:
        return float((scipy.spatial.distance.cdist(points, centres) <= r).any(1).mean())

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def test_precision_recall_of_a_set_with_itself_is_one() -> None:
    feats = torch.randn(60, 5, generator=torch.Generator().manual_seed(0))
    assert precision_recall(feats, feats.clone(), k=3, batch_size=7) == (1.0, 1.0)


def test_precision_recall_of_far_apart_sets_is_zero() -> None:
    real = torch.randn(50, 5, generator=torch.Generator().manual_seed(0))
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_tell_a_dropped_mode_from_unrealistic_samples() -> None:
    gen = torch.Generator().manual_seed(2)
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0]])
    real = centres[torch.arange(400) % 2] + torch.randn(400, 2, generator=gen)
    fake = centres[0] + torch.randn(200, 2, generator=gen)  # only the first mode
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.9  # every sample looks real ...
    assert 0.3 < recall <= 0.5  # ... but half of the data is never produced


@pytest.mark.parametrize("batch_size", [7, 1000])
def test_precision_recall_match_brute_force_reference(batch_size: int) -> None:
    gen = torch.Generator().manual_seed(3)
    real = torch.randn(80, 4, generator=gen).double()
    fake = 1.3 * torch.randn(70, 4, generator=gen).double() + 0.5
    expected = brute_force_precision_recall(real.numpy(), fake.numpy(), k=5)
    got = precision_recall(real, fake, k=5, batch_size=batch_size)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # a case where both are informative
    assert got == pytest.approx(expected, abs=1e-12)


def brute_force_density_coverage(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Naeem et al.'s definitions, written out with full distance matrices."""
    radii = np.sort(scipy.spatial.distance.cdist(real, real), axis=1)[:, k]  # (N,)
    inside = scipy.spatial.distance.cdist(fake, real) <= radii  # (M, N)
    return float(inside.sum() / (k * len(fake))), float(inside.any(0).mean())


@pytest.mark.parametrize("batch_size", [7, 1000])
def test_density_coverage_match_brute_force_reference(batch_size: int) -> None:
    gen = torch.Generator().manual_seed(5)
    real = torch.randn(90, 4, generator=gen).double()
    fake = 1.2 * torch.randn(60, 4, generator=gen).double() + 0.4
    expected = brute_force_density_coverage(real.numpy(), fake.numpy(), k=5)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # a case where both are informative
    got = density_coverage(real, fake, k=5, batch_size=batch_size)
    assert got == pytest.approx(expected, abs=1e-12)


def real_cluster_with_outliers() -> torch.Tensor:
    """(203, 2): a unit Gaussian cluster and three outliers far from it, whose balls
    (reaching into the cluster for their k-th neighbour) span the space between."""
    cluster = torch.randn(200, 2, generator=torch.Generator().manual_seed(7))
    return torch.cat([cluster, torch.tensor([[30.0, 0.0], [30.0, 3.0], [33.0, 0.0]])])


@pytest.mark.parametrize(
    "collapsed",
    [
        torch.tensor([15.0, 0.0]).expand(100, 2),  # one point, inside the outliers' balls
        real_cluster_with_outliers()[0].expand(100, 2),  # one real image over and over
        60 + 5 * torch.randn(100, 2, generator=torch.Generator().manual_seed(8)),  # noise
    ],
    ids=["outliers", "one-real-point", "noise"],
)
def test_collapsed_samples_never_score_near_perfect_density_and_coverage(
    collapsed: torch.Tensor,
) -> None:
    """Density and coverage are never both near 1 for a collapsed set (coverage gives it
    away), while samples spread like the data score well on both."""
    real = real_cluster_with_outliers()
    _, coverage = density_coverage(real, collapsed)
    assert coverage < 0.05  # a collapsed set reaches few neighbourhoods, whatever its density
    fair = density_coverage(
        real, 1.0 * torch.randn(300, 2, generator=torch.Generator().manual_seed(9))
    )
    assert fair[0] > 0.7 and fair[1] > 0.9  # samples like the cluster score well on both


def test_outliers_give_collapsed_samples_full_precision_but_not_density() -> None:
    real = real_cluster_with_outliers()
    collapsed = torch.tensor([15.0, 0.0]).expand(100, 2)
    precision, _ = precision_recall(real, collapsed, k=3)
    density, coverage = density_coverage(real, collapsed, k=5)
    assert precision == 1.0  # the weakness of the k-NN manifold (Naeem et al. 2020)
    assert density <= 3 / 5 and coverage == pytest.approx(3 / 203)  # the outliers' balls alone


# ----------------------------------------------------------------------------- Parzen


def test_parzen_of_one_sample_is_the_gaussian_log_density() -> None:
    gen = torch.Generator().manual_seed(0)
    sample, x, sigma = (
        torch.rand(1, 1, 4, 4, generator=gen),
        torch.rand(1, 1, 4, 4, generator=gen),
        0.3,
    )
    ll = parzen_log_likelihood(sample, x, sigma)
    d = 16
    sq = (x - sample).double().square().sum()
    formula = -sq / (2 * sigma**2) - d * math.log(sigma * math.sqrt(2 * math.pi))
    assert ll.shape == (1,) and ll.dtype == torch.float64
    assert ll.item() == pytest.approx(formula.item(), rel=1e-12)
    reference = Normal(sample.flatten().double(), sigma).log_prob(x.flatten().double()).sum()
    assert ll.item() == pytest.approx(reference.item(), rel=1e-12)


def test_parzen_of_many_samples_is_the_mixture_log_density_in_any_batching() -> None:
    gen = torch.Generator().manual_seed(1)
    samples, test, sigma = torch.rand(9, 12, generator=gen), torch.rand(11, 12, generator=gen), 0.2
    mixture = MixtureSameFamily(
        Categorical(torch.ones(9, dtype=torch.float64)),
        Independent(Normal(samples.double(), sigma), 1),
    )
    expected = mixture.log_prob(test.double())  # (11,)
    for batch_size in (3, 100):
        got = parzen_log_likelihood(samples, test, sigma, batch_size=batch_size)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("true_sigma", [0.05, 0.5])
def test_select_parzen_sigma_finds_the_true_bandwidth(true_sigma: float) -> None:
    """Validation points drawn from the Parzen density of the samples with bandwidth
    ``true_sigma``: the chosen bandwidth is the grid point next to it."""
    gen = torch.Generator().manual_seed(2)
    samples = 10 * torch.randn(30, 20, generator=gen)  # centres far apart
    centre = samples[torch.randint(0, 30, (300,), generator=gen)]
    validation = centre + true_sigma * torch.randn(300, 20, generator=gen)
    grid = np.logspace(-2, 1, 16)  # a factor 10**0.2 between neighbours
    chosen = select_parzen_sigma(samples, validation, grid)
    assert abs(math.log10(chosen / true_sigma)) <= 0.1 + 1e-9, chosen


# ----------------------------------------------------------------------------- feature net


def test_feature_net_shapes_and_logits_come_from_the_features() -> None:
    torch.manual_seed(0)
    net = FeatureNet().eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        logits, feats = net(x), net.features(x)
        assert logits.shape == (5, 10)
        assert feats.shape == (5, quality.FEATURE_DIM)
        torch.testing.assert_close(net.head(feats), logits)
    assert FeatureNet(feature_dim=32).features(x).shape == (5, 32)


def test_train_feature_net_learns_the_fake_digits_and_keeps_the_global_rng(data_dir: Path) -> None:
    data = load_data("mnist", "none", val_size=20, data_dir=data_dir)  # 80 train, 30 test
    rng_before = torch.get_rng_state()
    with torch.no_grad():  # as where a study's analysis asks for it first: it trains anyway
        net, test_accuracy = quality.train_feature_net(data, epochs=2, batch_size=16, lr=1e-3)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert not net.training
    # The crosses are trivially separable: anything short of this means images and labels
    # were paired wrongly.
    assert test_accuracy >= 0.9
    assert test_accuracy == quality.accuracy(net, data.test)


def test_train_feature_net_refuses_binarized_data(data_dir: Path) -> None:
    data = load_data("mnist", "dynamic", val_size=20, data_dir=data_dir)
    with pytest.raises(GenzooError, match="grey levels"):
        quality.train_feature_net(data, epochs=0)


# ----------------------------------------------------------------------------- cache


class FakeTrainer:
    """Stands in for ``train_feature_net``: a seeded untrained net, and a record of calls."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, data: Data, **kwargs) -> tuple[FeatureNet, float]:
        assert data.binarize == "none" and data.train.labels is not None
        self.calls.append(kwargs)
        torch.manual_seed(len(self.calls))
        return FeatureNet(feature_dim=16).eval(), 0.995


def test_cache_saves_then_loads_identical_weights(data_dir: Path) -> None:
    trainer = FakeTrainer()
    first = quality.load_or_train_feature_net(
        data_dir=data_dir, epochs=2, val_size=20, train_fn=trainer
    )
    assert len(trainer.calls) == 1 and trainer.calls[0]["epochs"] == 2
    weights, sidecar = (
        data_dir.parent / "cache" / "quality-net" / "mnist.safetensors",
        data_dir.parent / "cache" / "quality-net" / "mnist.json",
    )
    assert quality.cache_paths() == (weights, sidecar)
    info = json.loads(sidecar.read_text())
    assert info["sha256"] == file_digest(weights, "sha256")
    assert info["test_accuracy"] == 0.995 and info["feature_dim"] == 16

    second = quality.load_or_train_feature_net(data_dir=data_dir, val_size=20, train_fn=trainer)
    assert len(trainer.calls) == 1  # loaded, not retrained
    assert not second.training
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name

    quality.load_or_train_feature_net(
        data_dir=data_dir, val_size=20, train_fn=trainer, retrain=True
    )
    assert len(trainer.calls) == 2


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_weight_bit(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x01  # inside the tensor data
    path.write_bytes(bytes(raw))
    load_file(str(path))  # still a valid safetensors file: only the checksum can tell


@pytest.mark.parametrize("damage", [_truncate, _flip_a_weight_bit])
def test_corrupt_cache_is_detected_and_rebuilt(
    damage, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer, cache = FakeTrainer(), tmp_path / "cache"
    original = quality.load_or_train_feature_net(
        data_dir=data_dir, cache_dir=cache, val_size=20, train_fn=trainer
    )
    weights, _ = quality.cache_paths(cache_dir=cache)
    damage(weights)
    with pytest.raises(GenzooError, match="SHA-256"):
        quality.load_feature_net(*quality.cache_paths(cache_dir=cache))
    capsys.readouterr()

    rebuilt = quality.load_or_train_feature_net(
        data_dir=data_dir, cache_dir=cache, val_size=20, train_fn=trainer
    )
    assert len(trainer.calls) == 2
    assert "rebuilding the cached feature net" in capsys.readouterr().out
    # The new net (another seed) was cached and verifies again; no third training.
    reloaded = quality.load_or_train_feature_net(
        data_dir=data_dir, cache_dir=cache, val_size=20, train_fn=trainer
    )
    assert len(trainer.calls) == 2
    assert torch.equal(reloaded.head[1].weight, rebuilt.head[1].weight)
    assert not torch.equal(reloaded.head[1].weight, original.head[1].weight)


def test_missing_sidecar_means_rebuild(tmp_path: Path, data_dir: Path) -> None:
    trainer, cache = FakeTrainer(), tmp_path / "cache"
    quality.load_or_train_feature_net(
        data_dir=data_dir, cache_dir=cache, val_size=20, train_fn=trainer
    )
    quality.cache_paths(cache_dir=cache)[1].unlink()
    quality.load_or_train_feature_net(
        data_dir=data_dir, cache_dir=cache, val_size=20, train_fn=trainer
    )
    assert len(trainer.calls) == 2


# ----------------------------------------------------------------------------- all scores


def digits(n: int, seed: int) -> torch.Tensor:
    images, _ = fake_digits(n, seed)
    return torch.from_numpy(images).float().div(255).unsqueeze(1)  # (n, 1, 28, 28)


def test_quality_scores_rank_real_images_above_noise() -> None:
    torch.manual_seed(0)
    net = FeatureNet(feature_dim=16)
    test, val, real = digits(40, 1), digits(20, 2), digits(40, 3)
    noise = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    sigmas = (0.1, 0.3, 1.0)

    itself = quality_scores(test, test, val, net, sigmas=sigmas, batch_size=16)
    assert abs(itself["fid"]) < 1e-6
    assert (itself["precision"], itself["recall"]) == (1.0, 1.0)
    assert itself["n_samples"] == 40 and sum(itself["class_histogram"]) == 40
    _, probs = quality.features_and_probs(net, test)
    expected_is = inception_score_splits(probs, 10)
    assert (itself["inception_score"], itself["inception_score_std"]) == pytest.approx(expected_is)
    assert itself["inception_splits"] == 10
    # each real ball holds its centre and k = 5 neighbours: (k + 1) / k, up to rounding at
    # the balls' edges
    assert itself["density"] == pytest.approx(6 / 5, abs=0.1) and itself["coverage"] == 1.0
    json.dumps(itself)  # plain numbers only

    good = quality_scores(real, test, val, net, sigmas=sigmas, batch_size=16)
    bad = quality_scores(noise, test, val, net, sigmas=sigmas, batch_size=16)
    assert good["fid"] < bad["fid"]
    assert good["parzen_ll"] > bad["parzen_ll"]
    assert good["parzen_sigma"] in sigmas and good["parzen_ll_se"] > 0
    lls = parzen_log_likelihood(real, test, good["parzen_sigma"])
    assert good["parzen_ll"] == pytest.approx(lls.mean().item())
    assert good["parzen_ll_se"] == pytest.approx(lls.std().item() / math.sqrt(40))


def test_parzen_bandwidth_is_chosen_on_the_validation_images_alone() -> None:
    """Validation images equal to samples call for the narrowest window, noisy test
    images for a wide one: the bandwidth is the validation images' choice, and the test
    images are scored with it."""
    torch.manual_seed(0)
    net, samples = FeatureNet(feature_dim=16), digits(40, 1)
    val = samples[:20]
    test = (
        samples + 0.3 * torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    ).clamp(0, 1)
    sigmas = (0.1, 0.3, 1.0)
    on_val = select_parzen_sigma(samples, val, sigmas)
    assert on_val != select_parzen_sigma(samples, test, sigmas)  # the choice matters here
    scores = quality_scores(samples, test, val, net, sigmas=sigmas, batch_size=16)
    assert scores["parzen_sigma"] == on_val and scores["parzen_sigma_images"] == 20
    expected = parzen_log_likelihood(samples, test, on_val).mean().item()
    assert scores["parzen_ll"] == pytest.approx(expected, rel=1e-12)


def test_class_fidelity_counts_the_samples_of_their_class() -> None:
    """Real images with their own labels: the net's accuracy on them, and each class's FID
    against itself 0; with every label moved to the next class, the share the net calls
    the moved label; with one class's samples noise, that class's FID alone above 0."""
    torch.manual_seed(0)
    net = FeatureNet(feature_dim=8).eval()
    images = digits(60, 1)
    labels = torch.arange(60) % 3
    _, probs = quality.features_and_probs(net, images)
    predicted = probs.argmax(1)

    own = quality.class_fidelity(net, images, labels, images, labels)
    assert own["class_accuracy"] == pytest.approx((predicted == labels).double().mean().item())
    for c in range(3):
        expected = (predicted[labels == c] == c).double().mean().item()
        assert own["class_accuracies"][c] == pytest.approx(expected)
    assert own["class_fids"] == pytest.approx([0.0] * 3, abs=1e-6)

    moved = (labels + 1) % 3
    other = quality.class_fidelity(net, images, moved, images, labels)
    assert other["class_accuracy"] == pytest.approx((predicted == moved).double().mean().item())
    noisy = torch.where((labels == 0)[:, None, None, None], torch.rand_like(images), images)
    fids = quality.class_fidelity(net, noisy, labels, images, labels)["class_fids"]
    assert fids[0] > 1e-3 and fids[1:] == pytest.approx([0.0] * 2, abs=1e-6)
    with pytest.raises(GenzooError, match="one label per sample"):
        quality.class_fidelity(net, images, labels[:10], images, labels)


def test_class_fids_are_left_out_with_a_reason_where_a_class_has_one_image() -> None:
    """12 samples of 10 classes (`genzoo eval --quality --n-samples 12`): every class's
    accuracy, and no class FID, which needs two images of each class on both sides; the
    reason names the side that is short."""
    torch.manual_seed(0)
    net = FeatureNet(feature_dim=8).eval()
    real, real_labels = digits(30, 1), torch.arange(30) % 10  # 3 real images a class
    samples, labels = digits(12, 2), torch.arange(12) % 10  # 2 of classes 0, 1; 1 of the rest
    few = quality.class_fidelity(net, samples, labels, real, real_labels)
    assert "class_fids" not in few and len(few["class_accuracies"]) == 10
    assert few["class_fids_left_out"] == (
        "a class's FID needs 2 or more samples and real images of each class; "
        "samples of class 2: 1 (more: --n-samples)"
    )
    json.dumps(few)  # plain numbers and words, for eval.json
    samples, labels = digits(20, 2), torch.arange(20) % 10  # 2 of each class
    enough = quality.class_fidelity(net, samples, labels, real, real_labels)
    assert len(enough["class_fids"]) == 10 and "class_fids_left_out" not in enough
    short_real = quality.class_fidelity(net, samples, labels, real[:15], real_labels[:15])
    assert short_real["class_fids_left_out"].endswith("real images of class 5: 1")


def test_quality_scores_reject_images_outside_the_unit_interval() -> None:
    net, test = FeatureNet(feature_dim=16), digits(10, 1)
    with pytest.raises(GenzooError, match=r"samples must hold values in \[0, 1\]"):
        quality_scores(2 * test - 1, test, test, net)


def test_reference_row_scores_training_images_like_samples(data_dir: Path) -> None:
    data = load_data("mnist", "none", val_size=20, data_dir=data_dir)
    torch.manual_seed(0)
    net = FeatureNet(feature_dim=16)
    sigmas = (0.3, 1.0)
    row = quality.reference_quality_scores(data, net, n_samples=50, sigmas=sigmas)
    direct = quality_scores(
        data.train.images[:50], data.test.images, data.val.images, net, sigmas=sigmas
    )
    assert row == direct
    with pytest.raises(GenzooError, match="only 80 training images"):
        quality.reference_quality_scores(data, net, n_samples=81)
