"""Test-set measurements of a trained run (DESIGN.md, "Measurement protocols").

- ELBO, split into the reconstruction term -E_q log p(x|z) and KL(q(z|x) || p(z)), with
  one reparameterized sample per example and the KL in closed form;
- the negative log-likelihood -log p(x) by the family's own estimator (models/base.py,
  ``Likelihood``): importance sampling with K samples for the latent-variable models, a
  bound or an exact value for others; per example in float64, reported as the mean over
  the examples and its standard error, with the estimator and whether it is a bound.
  With ``estimator="prior"`` the proposal is p(z) (the naive Monte Carlo estimate
  log 1/K sum_k p(x|z_k)), which shows how much a learned proposal matters at equal K.

eval.json keeps each evaluation by its protocol and shows at its top level the best one
of each kind (test figures, sample quality), so that a cheaper check never replaces a
costlier figure; each figure names the epoch of its weights and the epochs the run had
trained then.

Each family states its figures' units (``units``: nats per image for the VAEs, bits per
dimension too for the flow, probabilities for the GAN's discriminator), on the images the
run was trained on (dynamic binarization: the test set drawn once with a fixed seed).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm  # widgets in a notebook, text in a terminal

from genzoo import plots, quality
from genzoo.data import Data, Split, batches, binarization_note, load_data
from genzoo.errors import GenzooError
from genzoo.files import read_json_object, updating, write_json
from genzoo.folders import is_folder_dataset
from genzoo.models import GenerativeModel
from genzoo.models.base import Likelihood, PixelMeans, trained_on_labels
from genzoo.report import trained_epochs, write_run_report
from genzoo.rng import EVAL_SEED, isolated_rng, resolve_device
from genzoo.runs import RunConfig, load_data_of, load_trained, read_metrics
from genzoo.stats import mean_and_se

PROPOSALS = {"posterior": "q(z|x)", "prior": "p(z)"}  # estimator -> where z is drawn from
ESTIMATORS = tuple(PROPOSALS)
QUALITY_SAMPLES = 10000  # samples scored by default, as many as the test images
# Images drawn per call of a model's sampler. A conv net's activations for 1000 images
# outgrow the CPU's caches: the diffusion U-Net's pass took 1.8-2.4 ms an image at 1000
# against 1.1-1.5 at 100-250 (bf16, 2 cores; benchmarks/README.md).
SAMPLE_BATCH = 250


@torch.no_grad()
def per_example_terms(
    model: GenerativeModel, split: Split, batch_size: int = 1000
) -> dict[str, torch.Tensor]:
    """``evaluate_batch`` over a whole split, concatenated: each term (N,) on the CPU; for
    a model trained on labels, ``evaluate_labelled`` with the split's labels."""
    model.eval()
    labelled = trained_on_labels(model) and split.labels is not None
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in batches(split, batch_size, labels=labelled):
        terms = model.evaluate_labelled(*batch) if labelled else model.evaluate_batch(batch)
        for name, value in terms.items():
            parts.setdefault(name, []).append(value.double().cpu())
    return {name: torch.cat(values) for name, values in parts.items()}


def likelihood_protocol(model: Likelihood, samples: int, proposal: str) -> str:
    """The estimator of ``log_likelihood`` in words, e.g. "importance sampling, K=5000,
    proposal q(z|x)"."""
    est = model.likelihood_estimator
    words = [est.name]
    if est.samples:
        words.append(f"{est.samples}={samples}")
    if model.proposals:
        words.append(f"proposal {PROPOSALS[proposal]}")
    return ", ".join(words)


@torch.no_grad()
def negative_log_likelihood(
    model: Likelihood,
    split: Split,
    samples: int,
    proposal: str = "posterior",
    batch_size: int = 100,
) -> torch.Tensor:
    """-log p(x) (or its bound) for every image of ``split`` by the model's own estimator
    with ``samples`` samples: (N,) float64, nats.

    With thousands of samples this takes minutes, so the progress bar shows the mean NLL
    of the images done so far: a user sees early whether the figure is worth waiting for.
    """
    parts = []
    total = 0.0
    bar = tqdm(
        range(0, len(split), batch_size),
        desc=f"NLL by {likelihood_protocol(model, samples, proposal)}",
        unit="batch",
        leave=False,
        disable=None,
    )
    for start in bar:
        x = split.images[start : start + batch_size]
        parts.append(-model.log_likelihood(x, samples, proposal).cpu())
        total += parts[-1].sum().item()
        bar.set_postfix(nll=f"{total / (start + len(x)):.2f}")
    return torch.cat(parts)


def likelihood_result(
    model: Likelihood, images: Split, samples: int, proposal: str
) -> dict[str, Any]:
    """The NLL's mean and standard error (and bits/dim for 8-bit likelihoods) with what
    the estimator is, as eval.json keeps them: its samples (``iw_samples``) where it takes
    any, its proposal (``estimator``) where it has a choice."""
    if proposal not in (model.proposals or ("posterior",)):
        name = type(model).__name__.lower()
        choices = ", ".join(model.proposals) if model.proposals else "none: leave it out"
        raise GenzooError(f"--estimator {proposal} does not apply to {name}: {choices}")
    est = model.likelihood_estimator
    nll = negative_log_likelihood(model, images, samples, proposal)
    result: dict[str, Any] = {}
    result["nll"], result["nll_se"] = mean_and_se(nll)
    if est.samples:
        result["iw_samples"] = samples
    if model.proposals:
        result["estimator"] = proposal
    if est.eight_bit:
        dims = images.images[0].numel()
        result["bpd"], result["bpd_se"] = mean_and_se(nll / (dims * math.log(2)))
    result["likelihood"] = {
        "estimator": est.name,
        "kind": est.kind,
        "samples": est.samples,
        "protocol": likelihood_protocol(model, samples, proposal),
    }
    return result


@torch.no_grad()
def draw_many(
    model: GenerativeModel,
    n: int,
    batch_size: int = SAMPLE_BATCH,
    draw: Callable[[int], torch.Tensor] | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """``n`` images drawn ``batch_size`` at a time, so that tens of thousands fit in
    memory: by ``draw(m)`` (default: the model's ``sample``), or, given ``labels`` (n,),
    by the class-conditional model's ``sample_classes`` of each batch's labels.
    (n, C, H, W) on the model's device."""
    draw = draw or model.sample
    parts = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        parts.append(draw(m) if labels is None else model.sample_classes(labels[start : start + m]))
    return torch.cat(parts)


def balanced_labels(n: int, classes: int, device: torch.device) -> torch.Tensor:
    """(n,) labels 0, 1, .., classes - 1, 0, 1, ..: each class n / classes times."""
    return torch.arange(n, device=device) % classes


@torch.no_grad()
def quality_images(
    model: GenerativeModel, n: int, batch_size: int = SAMPLE_BATCH
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the sample-quality scores see of a model: (n, C, H, W) in [0, 1], and the
    (n,) labels they were drawn for (None for an unconditional model). For models with
    Bernoulli pixels the pixel means of p(x|z), z ~ p(z): the feature net was trained on
    grey levels, and a 0/1 draw of every pixel is noise it punishes, which the real
    images would not carry; for a class-conditional model samples of every class in turn
    (``balanced_labels``); for the others their samples."""
    if trained_on_labels(model):
        device = next(model.parameters()).device
        labels = balanced_labels(n, model.class_count(), device)
        return draw_many(model, n, batch_size, labels=labels), labels
    if not isinstance(model, PixelMeans):
        return draw_many(model, n, batch_size), None
    return draw_many(model, n, batch_size, model.sample_means), None


def quality_protocol(model: GenerativeModel, n: int, split: str) -> str:
    """The sample-quality protocol in words, for eval.json and the pages (the number of
    real images is eval.json's n_test)."""
    what = "pixel means of p(x|z), z ~ p(z)" if isinstance(model, PixelMeans) else "samples"
    if trained_on_labels(model):
        kind = "pixel means" if isinstance(model, PixelMeans) else "samples"
        what = f"{kind} ({n // model.class_count()} or more of each class)"
    how = f" ({model.sampling_note()})" if model.sampling_note() else ""
    return f"{n} {what}{how} against the grey-level {split} images"


def grey_dataset(dataset: str, binarize: str) -> str:
    """The grey-level dataset of images of ``dataset`` binarized as ``binarize``: the
    real images sample quality is scored against, and the dataset of the feature net
    that scores it. Static binarized MNIST has no grey version: MNIST stands in for it."""
    return "mnist" if binarize == "static" else dataset


def feature_net(
    dataset: str,
    binarize: str,
    device: torch.device,
    data_dir: str | Path | None,
    val_size: int = 10000,
) -> quality.FeatureNet:
    """The feature net that scores samples of ``dataset`` binarized as ``binarize``: that
    of its ``grey_dataset`` (trained and cached first if need be, on its training images
    less ``val_size``). A folder of images has none (any size, colour and classes, or no
    labels at all to train one on): refused."""
    if is_folder_dataset(dataset):
        raise GenzooError(
            f"sample quality is scored with a classifier of MNIST-like datasets; "
            f"{dataset} has none: leave out --quality"
        )
    grey = grey_dataset(dataset, binarize)
    return quality.load_or_train_feature_net(data_dir, device, dataset=grey, val_size=val_size)


def run_feature_net(
    cfg: RunConfig, device: torch.device, data_dir: str | Path | None
) -> quality.FeatureNet:
    """The feature net that scores the run's samples (``feature_net``), the same for the
    training probe and for ``genzoo eval --quality``."""
    tc = cfg.train
    return feature_net(tc.dataset, tc.binarize, device, data_dir, tc.val_size)


def grey_data(cfg: RunConfig, device: torch.device, data_dir: str | Path | None) -> Data:
    """The run's dataset in grey levels (``grey_dataset``), the real images of the
    sample-quality scores (the feature net's own kind)."""
    tc = cfg.train
    if tc.binarize == "none":
        return load_data_of(cfg, device, data_dir)
    grey = dataclasses.replace(tc, binarize="none", dataset=grey_dataset(tc.dataset, tc.binarize))
    return load_data_of(dataclasses.replace(cfg, train=grey), device, data_dir)


def quality_reference(grey: Data, split: str) -> tuple[Split, torch.Tensor]:
    """The real images the sample-quality scores compare with, every image of ``split``
    (``--limit`` never shrinks them), and the validation images Parzen's bandwidth is
    chosen on, never among them: the first ``PARZEN_VAL_SIZE``; when the validation
    split itself is scored, those are held out of it (at most half of it)."""
    if split == "test":
        return grey.test, grey.val.images[: quality.PARZEN_VAL_SIZE]
    held = min(quality.PARZEN_VAL_SIZE, len(grey.val) // 2)
    val = grey.val
    rest = Split(val.images[held:], None if val.labels is None else val.labels[held:])
    return rest, val.images[:held]


def sample_quality(
    model: GenerativeModel,
    real: Split,
    sigma_images: torch.Tensor,
    n_samples: int,
    net: quality.FeatureNet,
) -> dict[str, Any]:
    """FID, Inception score, precision/recall, density/coverage and Parzen log-likelihood
    of ``n_samples`` ``quality_images`` against the grey ``real`` images, with the
    feature net ``net``; the Parzen bandwidth is chosen on ``sigma_images``. For a
    class-conditional model also how well its samples are of their class
    (``quality.class_fidelity``). The seconds of drawing the samples and of scoring them
    are kept apart: what sampling costs is a figure of its own."""
    start = time.perf_counter()
    samples, labels = quality_images(model, n_samples)
    drawn = time.perf_counter()
    scores = quality.quality_scores(samples, real.images, sigma_images, net)
    if labels is not None and real.labels is not None:
        scores.update(quality.class_fidelity(net, samples, labels, real.images, real.labels))
    timing = {"sampling_seconds": drawn - start, "scoring_seconds": time.perf_counter() - drawn}
    return scores | timing


def measure_quality(
    model: GenerativeModel,
    cfg: RunConfig,
    split: str,
    n_samples: int,
    sampling: dict[str, Any] | None,
    net: quality.FeatureNet,
    data_dir: str | Path | None,
) -> dict[str, Any]:
    """The sample-quality part of an evaluation: the scores, their protocol, and the
    ``sampling`` settings the samples were drawn with."""
    device = next(model.parameters()).device
    real, sigma_images = quality_reference(grey_data(cfg, device, data_dir), split)
    scores = sample_quality(model, real, sigma_images, n_samples, net)
    protocol = quality_protocol(model, n_samples, split)
    return {**scores, "quality_protocol": protocol, "sampling": sampling or {}}


def reference_quality(
    binarize: str = "none",
    dataset: str = "mnist",
    device: str = "auto",
    data_dir: str | Path | None = None,
    n_samples: int = 10000,
    val_size: int = 10000,
) -> dict[str, Any]:
    """The ideal row of a sample-quality table: ``n_samples`` training images scored as if
    they were a model's samples, against the test images."""
    dev = resolve_device(device)
    net = feature_net(dataset, binarize, dev, data_dir, val_size)
    data = load_data(dataset, binarize, val_size, data_dir).to(dev)
    scores = quality.reference_quality_scores(data, net, n_samples)
    return {**scores, "reference": "training images", "dataset": dataset, "binarize": binarize}


# ----------------------------------------------------------------------------- eval.json
#
# eval.json keeps every evaluation by its protocol, so that a quick check (fewer images,
# no likelihood) never wipes a figure that took twenty minutes: "evaluations" holds the
# test figures ("figures", keyed by ``figures_protocol``) and the sample-quality scores
# ("quality", keyed by their quality_protocol), a later evaluation replacing an earlier
# one of the same protocol. The top level is the best of each kind, flat, where every
# reader of eval.json has always found the figures (``shown_evaluations``).

# What eval.json held of sample quality before it kept evaluations by protocol.
LEGACY_QUALITY_KEYS = (
    "fid", "inception_score", "precision", "recall", "parzen_ll", "parzen_ll_se",
    "parzen_sigma", "n_samples", "n_test", "k", "class_histogram", "class_accuracy",
    "class_accuracies", "class_fids", "quality_protocol", "sampling",
)  # fmt: skip
Evaluations = dict[str, dict[str, dict[str, Any]]]  # kind -> protocol -> record


def figures_protocol(figures: dict[str, Any]) -> str:
    """What the test figures were measured on, in words: e.g. "test split, 10000 images,
    importance sampling, K=5000, proposal q(z|x)" (no likelihood: the images alone)."""
    words = f"{figures['split']} split, {figures['n_examples']} images"
    if figures.get("first_example"):
        words += f" from #{figures['first_example']}"
    likelihood = figures.get("likelihood")
    return f"{words}, {likelihood['protocol']}" if likelihood else words


def figures_rank(figures: dict[str, Any]) -> tuple:
    """How good the protocol of test figures is, for ``max``: the test split over the
    validation one, then more images, then more samples per image of the likelihood (an
    exact one above every estimate, none below), then later weights."""
    samples = figures.get("iw_samples", math.inf) if "nll" in figures else -1
    return figures.get("split") == "test", figures.get("n_examples", 0), samples, figures["epoch"]


def quality_rank(scores: dict[str, Any]) -> tuple:
    """How good the protocol of sample-quality scores is, for ``max``: of samples drawn
    with the run's own sampling settings (none replaced: the model as trained, not a
    cheaper sampler that a quick check tried, e.g. 10 steps of diffusion's 1000), then
    against the test images, then against more real images, then of more samples, then
    of later weights."""
    return (
        not scores.get("sampling"),
        scores.get("quality_split") == "test",
        scores.get("n_test", 0),
        scores.get("n_samples", 0),
        scores["quality_epoch"],
    )


RANKS = {"figures": figures_rank, "quality": quality_rank}


def legacy_evaluations(stored: dict[str, Any]) -> Evaluations:
    """An eval.json written before evaluations were kept by protocol, as one evaluation:
    its test figures and, where it has them, its sample-quality scores."""
    evaluations: Evaluations = {"figures": {}, "quality": {}}
    figures = {k: v for k, v in stored.items() if k not in LEGACY_QUALITY_KEYS}
    if {"split", "n_examples", "epoch"} <= figures.keys():
        evaluations["figures"][figures_protocol(figures)] = {
            **figures,
            "protocol": figures_protocol(figures),
        }
    if "fid" in stored:
        scores = {k: stored[k] for k in LEGACY_QUALITY_KEYS if k in stored}
        protocol = stored.get("quality_protocol", f"{stored.get('n_samples')} samples")
        evaluations["quality"][protocol] = {
            **scores,
            "quality_protocol": protocol,
            "quality_split": stored.get("split"),
            "quality_epoch": stored.get("epoch", 0),
        }
    return evaluations


def kept_evaluations(path: Path) -> Evaluations:
    """The evaluations an eval.json keeps (none where there is no file yet)."""
    if not path.exists():
        return {"figures": {}, "quality": {}}
    stored = read_json_object(path)
    return stored["evaluations"] if "evaluations" in stored else legacy_evaluations(stored)


def shown_evaluations(evaluations: Evaluations) -> dict[str, Any]:
    """eval.json's top level: the best-ranked record of each kind, flat (ties: the later
    one), and every evaluation under "evaluations"."""
    shown: dict[str, Any] = {}
    for kind, records in evaluations.items():
        if records:
            ranked = enumerate(records.values())
            shown.update(max(ranked, key=lambda pair: (RANKS[kind](pair[1]), pair[0]))[1])
    return {**shown, "evaluations": evaluations}


def keep_evaluation(output: Path, parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Add an evaluation's ``parts`` (kind -> record) to the eval.json at ``output`` by
    their protocols (moved last, so that they win ties), rewrite its top level, and
    return that top level."""
    with updating(output):  # two evaluations of one run at once each keep the other's
        evaluations = kept_evaluations(output)
        for kind, record in parts.items():
            protocol = record["protocol" if kind == "figures" else "quality_protocol"]
            evaluations[kind].pop(protocol, None)
            evaluations[kind][protocol] = record
        shown = shown_evaluations(evaluations)
        write_json(output, shown)
    return shown


def better_shown(shown: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """What eval.json goes on showing instead of this evaluation's ``result``, because it
    was measured on a better protocol, e.g. "test figures of test split, 10000 images,
    importance sampling, K=5000, proposal q(z|x) (epoch 15)"; [] when it shows this one."""
    kept = []
    if shown["protocol"] != result["protocol"]:
        kept.append(f"test figures of {shown['protocol']} (epoch {shown['epoch']})")
    if "quality_protocol" in result and shown["quality_protocol"] != result["quality_protocol"]:
        kept.append(
            f"sample quality of {shown['quality_protocol']} (epoch {shown['quality_epoch']})"
        )
    return kept


def evaluate_run(
    run_dir: Path,
    iw_samples: int | None = None,
    limit: int | None = None,
    split: str = "test",
    estimator: str = "posterior",
    device: str = "auto",
    data_dir: str | Path | None = None,
    output: Path | None = None,
    quality: bool = False,
    n_samples: int | None = None,
    sampling: dict[str, Any] | None = None,
    skip: int = 0,
) -> dict[str, Any]:
    """Measure the run's best checkpoint; keep the results in ``output`` (default
    RUN/eval.json, or RUN/eval_prior.json for the prior estimator) beside the earlier
    evaluations of other protocols, and return them with ``output`` and ``better_shown``.

    Every per-example term of ``evaluate_batch`` gets its mean and standard error (for a
    VAE: neg_elbo, recon, kl); models with a ``Likelihood`` add its nll and nll_se by
    their own estimator with ``iw_samples`` samples (None: the estimator's default; 0
    skips it), and what the estimator is; ``quality`` adds the sample-quality scores of
    ``n_samples`` samples (quality.py) against every real image of the split, drawn with
    the ``sampling`` settings where given (e.g. diffusion's sampler and steps).
    ``limit`` limits the model's side alone: the first ``limit`` images are evaluated
    (after the first ``skip``: MNIST's test set holds one group of writers in its first
    5,000 images and another in the rest, so a few images from each half, weighed
    equally, estimate the whole set's mean without its bias), and without ``n_samples``
    ``QUALITY_SAMPLES`` or ``limit`` samples are scored, whichever is fewer; the real
    images the samples are scored against stay all of them.
    Each figure records the epoch of its weights and the epochs the run had trained when
    it was measured (``run_epochs``), so that pages can tell when the run has moved on.
    """
    if estimator not in ESTIMATORS:
        raise GenzooError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    cfg, model, data, epoch = load_trained(run_dir, device, data_dir, sampling=sampling)
    # Before the figures, which may take minutes: a dataset without a feature net is
    # refused at once, and a feature net to train is trained first.
    net = run_feature_net(cfg, data.test.images.device, data_dir) if quality else None
    everything = {"test": data.test, "val": data.val}[split]
    if skip >= len(everything):
        raise GenzooError(
            f"--skip {skip} leaves none of the {len(everything)} {split} images: skip fewer"
        )
    images = everything.window(skip, limit)
    n_samples = n_samples or min(QUALITY_SAMPLES, limit or QUALITY_SAMPLES)
    run_epochs = trained_epochs(read_metrics(run_dir))
    start = time.perf_counter()
    figures: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    with isolated_rng(EVAL_SEED, images.images.device):
        for name, values in per_example_terms(model, images).items():
            figures[name], figures[f"{name}_se"] = mean_and_se(values)
        if isinstance(model, Likelihood):
            if iw_samples is None:
                iw_samples = model.likelihood_estimator.default_samples
            if iw_samples > 0:
                figures.update(likelihood_result(model, images, iw_samples, estimator))
        if net is not None:
            scores = measure_quality(model, cfg, split, n_samples, sampling, net, data_dir)
            parts["quality"] = {
                **scores,
                "quality_split": split,
                "quality_epoch": epoch,
                "quality_run_epochs": run_epochs,
            }
    figures.update(
        n_examples=len(images),
        first_example=skip,
        split=split,
        dataset=cfg.train.dataset,
        binarize=binarization_note(cfg.train.binarize, split),
        units=model.units,
        # The labels of the terms measured (an unconditional VAE has no classifier's error).
        terms={k: v for k, v in model.eval_terms.items() if k in figures},
        checkpoint="best",
        epoch=epoch,
        run_epochs=run_epochs,
        seconds=time.perf_counter() - start,
    )
    parts["figures"] = {**figures, "protocol": figures_protocol(figures)}
    if output is None:
        output = run_dir / ("eval.json" if estimator == "posterior" else f"eval_{estimator}.json")
    shown = keep_evaluation(output, parts)
    if quality:  # the figure of the scores eval.json shows, as the page does
        plots.draw_class_histogram(
            shown["class_histogram"], run_dir / "figures" / "class_histogram.png"
        )
    write_run_report(run_dir)
    result = {k: v for part in parts.values() for k, v in part.items()}
    return {**result, "output": str(output), "better_shown": better_shown(shown, result)}
