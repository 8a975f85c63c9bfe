"""The semi-supervised VAE (Kingma et al. 2014's M2, ``vae --labels N``): its unlabelled
bound against the sum over the classes written out, the balanced choice of the labelled
images, the weights of the objective, the labels the loop does (not) pass, the CLI from
train to eval, and the one-line refusals."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence

from genzoo.cli import main
from genzoo.data import Data, Split, balanced_subset
from genzoo.errors import GenzooError
from genzoo.interrupts import INTERRUPTED
from genzoo.models.vae import VAE, VAEConfig
from genzoo.runs import checkpoint_files
from test_conditional import labels_seen

SHAPE = (1, 28, 28)
SMALL = {"latent_dim": 3, "hidden": (16,)}
TINY = ["--batch-size", "16", "--val-size", "20", "--device", "cpu", "--hidden", "16"]
TINY += ["--latent-dim", "3"]


def tiny_data(n: int = 40, seed: int = 0) -> Data:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, *SHAPE, generator=generator)
    labels = torch.arange(n) % 10
    split = Split(images, labels)
    return Data(split, split.head(10), split.head(10), "dynamic")


def explicit_unlabelled_bound(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """-U(x) written out, one class at a time, from the networks and torch.distributions:
    sum_y q(y|x) (E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z))) + H(q(y|x)),
    with z = mu + sigma eps for the given standard normal draws eps (K B, L)."""
    k, b = model.cfg.num_classes, len(x)
    pixels = x.flatten(1)
    q_y = Categorical(logits=model.classifier(pixels))
    prior = Independent(Normal(torch.zeros(model.cfg.latent_dim), 1.0), 1)
    bounds = []
    for c in range(k):
        y = F.one_hot(torch.full((b,), c), k).float()
        mu, logvar = model.encoder(torch.cat([pixels, y], 1)).chunk(2, -1)
        q_z = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
        z = mu + torch.exp(0.5 * logvar) * eps[c * b : (c + 1) * b]
        log_px = Independent(Bernoulli(logits=model.decoder(torch.cat([z, y], 1))), 1)
        bounds.append(log_px.log_prob(pixels) - math.log(k) - kl_divergence(q_z, prior))
    return (q_y.probs * torch.stack(bounds, 1)).sum(1) + q_y.entropy()


def test_the_unlabelled_bound_is_the_sum_over_the_classes() -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(labels="10", **SMALL), SHAPE).eval()
    x = torch.bernoulli(torch.rand(5, *SHAPE))
    with torch.no_grad():
        torch.manual_seed(1)
        recon, kl = model.unlabelled_terms(x)  # one draw of z per image and class
        torch.manual_seed(1)
        eps = torch.randn(10 * 5, 3)  # the same draws: rsample's standard normals
        expected = explicit_unlabelled_bound(model, x, eps)
    assert torch.allclose(-(recon + kl), expected, atol=1e-4, rtol=1e-5)
    # and it is what validation and eval report as the -ELBO
    torch.manual_seed(1)
    assert torch.allclose(model.evaluate_batch(x)["neg_elbo"], recon + kl)


def test_the_labelled_images_are_balanced_by_seed() -> None:
    labels = torch.arange(1000) % 10
    labels = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    chosen = balanced_subset(labels, 100, 10, seed=0)
    assert len(chosen) == 100 == len(set(chosen.tolist()))
    assert torch.equal(chosen, chosen.sort().values)
    assert torch.bincount(labels[chosen], minlength=10).tolist() == [10] * 10
    assert torch.equal(chosen, balanced_subset(labels, 100, 10, seed=0))  # deterministic
    assert not torch.equal(chosen, balanced_subset(labels, 100, 10, seed=1))


@pytest.mark.parametrize(
    ("n", "message"),
    [
        (1010, "more than the 1000 training images"),
        (105, "does not divide among the 10 classes"),
    ],
)
def test_impossible_label_choices_are_refused(n: int, message: str) -> None:
    with pytest.raises(GenzooError, match=message):
        balanced_subset(torch.arange(1000) % 10, n, 10, seed=0)
    too_few = torch.cat([torch.zeros(50), torch.arange(50) % 10]).long()  # 5 of class 1
    with pytest.raises(GenzooError, match="has 5 of class 1"):
        balanced_subset(too_few, 100, 10, seed=0)


@pytest.mark.parametrize(
    ("weighting", "weights"),
    [
        # eq. 9 per image: N_l / N of L, (N - N_l) / N of U, alpha on the cross-entropy
        ("paper", (0.25, 0.75, 0.3)),
        # L and U alike, alpha N / N_l on the cross-entropy (the paper's ratio to L)
        ("oversampled", (1.0, 1.0, 0.3 * 4)),
    ],
)
def test_the_objective_weighs_labelled_and_unlabelled_images(weighting: str, weights) -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(labels="10", alpha=0.3, weighting=weighting, **SMALL), SHAPE)
    data = tiny_data(40)
    model.before_training(data, seed=0)
    assert model.labelled_share == 10 / 40
    assert torch.bincount(model.labelled.labels, minlength=10).tolist() == [1] * 10
    _, stats = model.loss(torch.bernoulli(data.train.images[:8]))
    parts = (stats["labelled_neg_elbo"], stats["neg_elbo"], stats["class_loss"])
    expected = sum(w * part for w, part in zip(weights, parts, strict=True))
    assert stats["loss"] == pytest.approx(expected, rel=1e-5)


def test_every_label_weighs_only_the_labelled_bound_and_the_classifier() -> None:
    data = tiny_data(40)
    everything = VAE(VAEConfig(labels="all", **SMALL), SHAPE)
    everything.before_training(data, seed=0)
    _, stats = everything.loss(data.train.images[:8], data.train.labels[:8])
    assert "neg_elbo" not in stats  # every image labelled: no unlabelled bound
    assert stats["loss"] == pytest.approx(
        stats["labelled_neg_elbo"] + 0.1 * stats["class_loss"], rel=1e-5
    )


def test_labels_reach_the_encoder_the_decoder_and_the_classifier_trains() -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(labels="all", **SMALL), SHAPE)
    data = tiny_data(40)
    x, y = torch.bernoulli(data.train.images), data.train.labels
    assert not torch.equal(model.posterior(x, y).mean, model.posterior(x, (y + 1) % 10).mean)
    # posterior's shortcut (W_x x once for several labels) is the encoder on [x, one-hot y],
    # to float32's rounding of the 794 products summed in another order (absolute, so an
    # output near 0 is held to it too; a wrong shortcut misses by tenths)
    joined = torch.cat([x.flatten(1), F.one_hot(y, 10).float()], 1)
    shortcut, direct = model.posterior(x, y).mean, model.encoder(joined).chunk(2, -1)[0]
    assert torch.allclose(shortcut, direct, rtol=0, atol=1e-6)
    optimizers = model.configure_optimizers(3e-3)
    before = model.classify(x).log_prob(y).mean().item()
    for _ in range(30):
        model.train_step(x, optimizers, y)
    assert model.classify(x).log_prob(y).mean().item() > before + 0.5


def linear_layers(model: VAE) -> list[torch.nn.Linear]:
    return [m for m in model.classifier if isinstance(m, torch.nn.Linear)]


def test_dropout_acts_on_q_y_while_training_and_nowhere_else() -> None:
    torch.manual_seed(0)
    cfg = VAEConfig(labels="10", classifier_dropout=0.5, classifier_input_dropout=0.2, **SMALL)
    model = VAE(cfg, SHAPE)
    plain = VAE(replace(cfg, classifier_dropout=0.0, classifier_input_dropout=0.0), SHAPE)
    for mine, theirs in zip(linear_layers(model), linear_layers(plain), strict=True):
        theirs.load_state_dict(mine.state_dict())
    x = torch.rand(6, *SHAPE)
    # training: two passes drop different units; the encoder and decoder drop none
    assert not torch.equal(model.classify(x).logits, model.classify(x).logits)
    labels = torch.arange(6)
    assert torch.equal(model.posterior(x, labels).mean, model.posterior(x, labels).mean)
    # evaluation: the classifier without dropout, the same weights
    model.eval()
    plain.eval()
    assert torch.allclose(model.classify(x).logits, plain.classify(x).logits)
    rates = [m.p for m in model.classifier if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.2, 0.5]  # on the pixels, then on the hidden layer


def test_an_m2_run_from_the_command_line(data_dir: Path, tmp_path: Path, monkeypatch, capsys):
    seen = labels_seen(monkeypatch, VAE)
    run = tmp_path / "m2"
    assert (
        main(["train", "vae", "--labels", "20", "--epochs", "2", "--run-dir", str(run), *TINY]) == 0
    )
    # The loop's batches come unlabelled: M2 draws its own labelled ones.
    assert seen and all(labels is None for labels in seen)
    config = json.loads((run / "config.json").read_text())
    assert config["model_config"]["labels"] == "20"
    # The labelled images are recorded in the checkpoints: 2 of each class, by the seed.
    recorded = load_file(checkpoint_files(run, "last")[0])["labelled_indices"]
    train_labels = torch.arange(80) % 10  # the fake digits' classes (index mod 10)
    assert torch.equal(recorded, balanced_subset(train_labels, 20, 10, seed=0))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"val_class_error", "train_class_loss", "train_labelled_neg_elbo"} <= rows[-1].keys()
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"analogies.png", "classes.png", "latents.png", "interpolation.png"} <= figures
    capsys.readouterr()
    assert main(["eval", str(run), "--iw-samples", "3", "--limit", "10"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())
    assert "error of q(y|x)" in printed and 0 <= result["class_error"] <= 1
    assert result["likelihood"]["samples"] == "K per class" and result["iw_samples"] == 3
    assert main(["sample", str(run), "-n", "4", "--class", "7", "-o", str(tmp_path / "s.npy")]) == 0
    other = tmp_path / "m2-seed1"
    flags = ["--labels", "20", "--epochs", "1", "--seed", "1", "--run-dir", str(other), *TINY]
    assert main(["train", "vae", *flags]) == 0
    assert not torch.equal(
        recorded, load_file(checkpoint_files(other, "last")[0])["labelled_indices"]
    )


def test_a_killed_m2_run_resumes_to_the_weights_of_an_uninterrupted_one(
    data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    # A checkpoint after every batch; the labelled batches M2 draws come from the noise
    # generator, which the checkpoint carries.
    train = ["train", "vae", "--labels", "20", "--epochs", "2", "--checkpoint-minutes", "1e-9"]
    assert main([*train, "--run-dir", str(tmp_path / "whole"), *TINY]) == 0
    original, calls = VAE.train_step, []

    def killed_in_epoch_2(self, x, optimizers, labels=None):
        calls.append(1)
        if len(calls) == 5 + 2:  # 5 batches an epoch: dies at the 2nd batch of epoch 2
            raise KeyboardInterrupt
        return original(self, x, optimizers, labels)

    monkeypatch.setattr(VAE, "train_step", killed_in_epoch_2)
    assert main([*train, "--run-dir", str(tmp_path / "killed"), *TINY]) == INTERRUPTED
    monkeypatch.setattr(VAE, "train_step", original)
    assert main(["resume", str(tmp_path / "killed")]) == 0
    whole = load_file(checkpoint_files(tmp_path / "whole", "last")[0])
    resumed = load_file(checkpoint_files(tmp_path / "killed", "last")[0])
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--labels", "90"], "--labels 90 is more than the 80 training images"),
        (["--labels", "15"], "--labels 15 does not divide among the 10 classes"),
        (["--labels", "many"], "--labels must be a number of labelled images or all"),
        (["--labels", "20", "--objective", "iwae"], "--objective iwae is for the VAE without"),
    ],
)
def test_bad_labels_are_one_line_and_exit_2(data_dir, tmp_path, capsys, flags, message):
    argv = ["train", "vae", *flags, "--epochs", "1", "--run-dir", str(tmp_path / "r"), *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("labels", ["10", "all"])
def test_the_class_mixtures_are_fitted_to_the_classes_the_model_may_know(
    labels: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When training ends: with every label, each class's codes by its label; M2 knows
    only its N labels, so there the classes are q(y|x)'s (here: always 3)."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(labels=labels, **SMALL), SHAPE)
    monkeypatch.setattr(model, "predict", lambda x: torch.full((len(x),), 3))
    model.after_training(tiny_data())
    fitted = model.class_mixture_means.abs().sum((1, 2)) > 0  # (K,): p(z)'s means are 0
    assert model.class_mixture_fitted
    assert fitted.tolist() == ([y == 3 for y in range(10)] if labels == "10" else [True] * 10)
