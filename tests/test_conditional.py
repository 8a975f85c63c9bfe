"""Class-conditional VAE (Sohn et al. 2015) and GAN (projection discriminator, Miyato &
Koyama 2018; or the label concatenated), MLP and convolutional: the label reaches every
network, the loop passes it, and the CLI trains, samples a chosen class, plots and
evaluates them; --class and --conditional refused in one line where they cannot apply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.mixture import GaussianMixture
from torch.distributions import MultivariateNormal

from genzoo import quality
from genzoo.cli import main
from genzoo.errors import GenzooError
from genzoo.evaluation import quality_images
from genzoo.models.gan import GAN, GANConfig
from genzoo.models.vae import VAE, VAEConfig
from genzoo.runs import load_checkpoint, save_checkpoint

SHAPE = (1, 28, 28)
COMMON = ["--batch-size", "16", "--val-size", "20", "--device", "cpu", "--epochs", "2"]
FLAGS = {
    "vae": ["--conditional", "--hidden", "16", "--latent-dim", "2"],
    "gan-mlp": ["--conditional", "--noise-dim", "4", "--gen-hidden", "8,8", "--disc-hidden", "8"],
    "gan-conv": [
        *("--conditional", "--arch", "conv", "--conv-width", "4", "--noise-dim", "4"),
        *("--d-conditioning", "concat", "--quality-every", "0"),
    ],
}
GANS = [
    GANConfig(conditional=True, arch=arch, d_conditioning=how, d_norm=norm, conv_width=8)
    for arch in ("mlp", "conv")
    for how in ("projection", "concat")
    for norm in ("none", "spectral")
]


def labels_seen(monkeypatch: pytest.MonkeyPatch, family: type) -> list:
    """The labels the loop passes to ``family.loss``, batch by batch, as training goes."""
    seen = []
    real_loss = family.loss

    def recording_loss(self, x, labels=None):
        seen.append(labels)
        return real_loss(self, x, labels)

    monkeypatch.setattr(family, "loss", recording_loss)
    return seen


def same_noise(draw, *args) -> torch.Tensor:
    torch.manual_seed(0)
    return draw(*args)


@pytest.mark.parametrize("cfg", GANS, ids=lambda c: f"{c.arch}-{c.d_conditioning}-{c.d_norm}")
def test_the_class_reaches_the_generator_and_the_discriminator(cfg: GANConfig) -> None:
    torch.manual_seed(0)
    model = GAN(cfg, SHAPE).eval()
    threes, fives = torch.full((4,), 3), torch.full((4,), 5)
    assert not torch.equal(
        same_noise(model.sample_classes, threes), same_noise(model.sample_classes, fives)
    )
    x = torch.rand(4, *SHAPE)
    assert not torch.allclose(model.logits(x, threes), model.logits(x, fives))
    stats = model.train_step(x, model.configure_optimizers(1e-3), threes)
    assert {"d_loss", "g_loss"} <= stats.keys()
    with pytest.raises(GenzooError, match="labelled batches"):
        model.loss(x)


def test_projection_is_the_embedding_times_the_features() -> None:
    torch.manual_seed(0)
    model = GAN(GANConfig(conditional=True, disc_hidden=(8,)), SHAPE).eval()
    x, labels = torch.rand(3, *SHAPE), torch.tensor([0, 4, 9])
    features = model.discriminator[:-1](x.flatten(1))  # phi(x)
    unconditional = model.discriminator[-1](features).squeeze(-1)  # psi(phi(x))
    inner = (model.class_embedding.weight[labels] * features).sum(-1)
    assert torch.allclose(model.logits(x, labels), unconditional + inner)


def test_the_class_reaches_the_conditional_vae() -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(conditional=True, latent_dim=2, hidden=(16,)), SHAPE).eval()
    threes, fives = torch.full((4,), 3), torch.full((4,), 5)
    assert not torch.equal(
        same_noise(model.sample_classes, threes), same_noise(model.sample_classes, fives)
    )
    x = torch.bernoulli(torch.rand(4, *SHAPE))
    assert not torch.equal(model.posterior(x, threes).mean, model.posterior(x, fives).mean)
    code = model.encode(x)  # the decoder's input: z and the one-hot class of q(y|x)
    assert code.shape == (4, 2 + 10) and torch.equal(code[:, 2:].sum(1), torch.ones(4))
    assert model.decode(code).shape == x.shape


def codes_of_classes() -> tuple[torch.Tensor, torch.Tensor]:
    """2-D codes (N, 2) and their classes (N,): 40 of each class y < 8 around (10 y, 0),
    one of class 8, none of class 9."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.arange(8).repeat_interleave(40), torch.tensor([8])])
    centres = torch.stack([10.0 * labels, torch.zeros(len(labels))], 1)
    return centres + torch.randn(len(labels), 2, generator=generator), labels


def class_log_densities(model: VAE, z: torch.Tensor) -> torch.Tensor:
    """log density of z (N, L) under every class's mixture: (N, K)."""
    return torch.stack([model.class_mixture(y).log_prob(z) for y in range(10)], 1)


def test_each_class_mixture_is_fitted_to_its_own_codes_and_its_samples_come_from_it(
    tmp_path: Path,
) -> None:
    model = VAE(VAEConfig(conditional=True, latent_dim=2, class_prior_components=2), SHAPE)
    assert (
        model.sampling_note()
        == "z ~ p(z): this checkpoint has no fitted class mixtures (made before them)"
    )
    codes, labels = codes_of_classes()
    model.fit_class_mixtures(codes, labels, seed=0)
    probe = torch.randn(50, 2) * 20
    log_p = class_log_densities(model, probe)
    for y in range(8):
        reference = GaussianMixture(2, covariance_type="full", random_state=0)
        expected = reference.fit(codes[labels == y].double().numpy()).score_samples(probe.double())
        torch.testing.assert_close(
            log_p[:, y].double(), torch.from_numpy(expected), rtol=1e-4, atol=1e-3
        )
    standard = MultivariateNormal(torch.zeros(2), torch.eye(2))
    for y in (8, 9):  # one code, too few for a fit, and none: p(z)
        torch.testing.assert_close(log_p[:, y], standard.log_prob(probe))
    assert "mixture of 2 Gaussians" in model.sampling_note()

    torch.manual_seed(0)
    fives = model.styles(torch.full((2000,), 5))
    assert (fives.mean(0) - codes[labels == 5].mean(0)).abs().max() < 0.15  # se 0.02
    assert model.sample_classes(torch.full((3,), 5)).shape == (3, *SHAPE)
    model.cfg.class_prior = "standard"  # --class-prior standard at sampling time
    assert model.styles(torch.full((2000,), 5)).mean(0).abs().max() < 0.15
    assert model.sampling_note() == "z ~ p(z)"
    model.cfg.class_prior = "fitted"

    save_checkpoint(tmp_path, "best", model, {"epoch": 1})
    reloaded = VAE(model.cfg, SHAPE)
    load_checkpoint(tmp_path, "best", reloaded)
    torch.testing.assert_close(class_log_densities(reloaded, probe), log_p)
    # Weights from before the class mixtures load (strictly), and sample from p(z).
    older = VAE(model.cfg, SHAPE)
    older.load_state_dict({k: v for k, v in model.state_dict().items() if "mixture" not in k})
    assert not older.class_mixture_fitted and "no fitted class mixtures" in older.sampling_note()


@pytest.mark.parametrize("name", FLAGS)
def test_a_conditional_run_trains_samples_a_class_plots_and_evaluates(
    name: str, data_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    model = name.split("-")[0]
    seen = labels_seen(monkeypatch, {"vae": VAE, "gan": GAN}[model])
    if model == "gan":  # its default --quality-every probe needs the feature net
        quality.load_or_train_feature_net(epochs=1, val_size=20)  # briefly, on the tiny data
    run = tmp_path / name
    assert main(["train", model, *FLAGS[name], *COMMON, "--run-dir", str(run)]) == 0
    # The loop passed each batch's labels (the fake digits' class: index mod 10).
    assert seen and all(y is not None and y.shape == (16,) for y in seen[:-1])
    figures = {p.name for p in (run / "figures").iterdir()}
    assert "classes.png" in figures
    if model == "vae":
        assert {"analogies.png", "interpolation.png"} <= figures
        assert "manifold.png" not in figures  # z = 2, but the code holds the class too
    draws = {}
    for label in (3, 5):
        out = tmp_path / f"{name}-{label}.npy"
        assert main(["sample", str(run), "-n", "3", "--class", str(label), "-o", str(out)]) == 0
        draws[label] = np.load(out)
    assert not np.array_equal(draws[3], draws[5])  # the same noise (seed), another class
    if model == "vae":  # z from p(z) instead of the class's fitted mixture
        out = tmp_path / f"{name}-3-standard.npy"
        argv = ["sample", str(run), "-n", "3", "--class", "3", "--class-prior", "standard"]
        assert main([*argv, "-o", str(out)]) == 0
        assert not np.array_equal(np.load(out), draws[3])
    quality.load_or_train_feature_net(epochs=1, val_size=20)
    capsys.readouterr()
    argv = ["eval", str(run), "--iw-samples", "2", "--limit", "10", "--quality"]
    assert main([*argv, "--n-samples", "20"]) == 0
    printed = capsys.readouterr().out
    assert "samples of the class asked for, classified as it" in printed
    result = json.loads((run / "eval.json").read_text())
    assert len(result["class_accuracies"]) == 10 == len(result["class_fids"])
    kind = "pixel means" if model == "vae" else "samples"
    assert f"{kind} (2 or more of each class)" in result["quality_protocol"]
    if model == "vae":
        assert 0 <= result["class_error"] <= 1  # q(y|x), trained beside the cVAE
        assert "fitted to the codes q(z|x, y)" in result["quality_protocol"]
    else:
        assert 0 < result["d_real"] < 1  # D's verdict on the test images, given their class


def test_quality_images_return_the_labels_they_were_drawn_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The labels that score class fidelity are those the samples were drawn for, batch
    by batch: every class in turn."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(conditional=True, latent_dim=2, hidden=(16,)), SHAPE).eval()
    asked = []
    real_draw = VAE.sample_classes

    def recording_draw(self, labels):
        asked.append(labels)
        return real_draw(self, labels)

    monkeypatch.setattr(VAE, "sample_classes", recording_draw)
    images, labels = quality_images(model, 25, batch_size=10)
    assert images.shape == (25, *SHAPE) and [len(batch) for batch in asked] == [10, 10, 5]
    assert torch.equal(labels, torch.cat(asked)) and torch.equal(labels, torch.arange(25) % 10)


def test_a_quick_quality_check_of_a_conditional_run_leaves_out_the_class_fids(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    """12 samples of 10 classes, one of most: `genzoo eval --quality` gives every other
    score and says why the FID per class is left out, where it crashed."""
    run = tmp_path / "cvae"
    assert main(["train", "vae", *FLAGS["vae"], *COMMON, "--run-dir", str(run)]) == 0
    quality.load_or_train_feature_net(epochs=1, val_size=20)  # briefly, on the tiny data
    capsys.readouterr()
    argv = ["eval", str(run), "--iw-samples", "0", "--quality", "--n-samples", "12"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "FID per class: left out: a class's FID needs 2 or more samples" in printed
    result = json.loads((run / "eval.json").read_text())
    assert "fid" in result and len(result["class_accuracies"]) == 10
    assert "class_fids" not in result
    assert result["class_fids_left_out"].endswith("samples of class 2: 1 (more: --n-samples)")


def test_samples_of_two_classes_keep_their_own_default_files(
    data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "cvae"
    assert main(["train", "vae", *FLAGS["vae"], *COMMON, "--run-dir", str(run)]) == 0
    for label in ("3", "5"):
        assert main(["sample", str(run), "-n", "4", "--class", label]) == 0
    threes, fives = (run / f"samples-n4-seed0-class{c}.png" for c in (3, 5))
    assert threes.read_bytes() != fives.read_bytes()


def test_class_on_an_unconditional_run_or_outside_the_classes_is_refused(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    plain, conditional = tmp_path / "plain", tmp_path / "conditional"
    flags = ["--hidden", "8", "--latent-dim", "2", *COMMON]
    assert main(["train", "vae", *flags, "--run-dir", str(plain)]) == 0
    assert main(["train", "vae", "--labels", "all", *flags, "--run-dir", str(conditional)]) == 0
    capsys.readouterr()
    out = str(tmp_path / "s.png")
    for run, label, message in (
        (plain, "3", "trained on labels (--conditional; vae also --labels) only"),
        (conditional, "10", "--class must be a class of the run, 0 to 9"),
        (conditional, "-1", "must be >= 0"),
    ):
        with pytest.raises(SystemExit) as exit_info:  # argparse's refusals exit themselves
            raise SystemExit(main(["sample", str(run), "--class", label, "-o", out]))
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "argv", [["vae", "--conditional"], ["vae", "--labels", "10"], ["gan", "--conditional"]]
)
def test_labels_needed_from_an_unlabelled_folder_are_refused(
    argv: list[str], tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.full((28, 28), 20 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    flags = ["--dataset", f"folder:{folder}", "--val-size", "2", "--epochs", "1"]
    assert main(["train", *argv, *flags, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    flags_named = " ".join(a for a in argv if not a.isdigit())  # e.g. "vae --labels"
    assert f"{flags_named} is trained on the class labels" in err
    assert "has none (a folder needs a subfolder per class)" in err
    assert len(err.strip().splitlines()) == 1
