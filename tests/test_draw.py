"""DRAW (models/draw.py): the attention filterbank, the per-step KL, the importance-sampled
likelihood against a one-step model computed by hand, and the CLI with its figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.distributions import Bernoulli, Normal

from conftest import fake_digits
from genzoo.api import run_config
from genzoo.cli import main
from genzoo.errors import GenzooError
from genzoo.models import draw
from genzoo.models.draw import DRAW, DRAWConfig, GaussianAttention, filterbank
from genzoo.report import preset_text

SHAPE = (1, 28, 28)


def tiny(**overrides) -> DRAW:
    values = {"steps": 3, "enc_hidden": 16, "dec_hidden": 16, "latent_dim": 4, "write_size": 3}
    return DRAW(DRAWConfig(**{**values, **overrides}), SHAPE)


def digits(n: int, seed: int = 0) -> torch.Tensor:
    """n binarized fake digits (n, 1, 28, 28)."""
    images, _ = fake_digits(n, seed)
    grey = torch.tensor(images, dtype=torch.float32)[:, None] / 255
    return torch.bernoulli(grey, generator=torch.Generator().manual_seed(seed))


def place_read_window(attention: GaussianAttention, gx_: float, var: float) -> None:
    """Fix the read window whatever h_dec: centre g~X = gx_, g~Y = 0 (the image centre),
    delta~ = 1 (stride 1 for N = 28), variance ``var``, gamma = 1."""
    params = attention.read_window.params
    with torch.no_grad():
        params.weight.zero_()
        params.bias.copy_(torch.tensor([gx_, 0.0, math.log(var), 0.0, 0.0]))


# ---------------------------------------------------------------------- filterbank


def test_a_full_grid_of_narrow_filters_reads_the_image_itself() -> None:
    attention = GaussianAttention(hidden=3, read_size=28, write_size=2, height=28, width=28)
    place_read_window(attention, gx_=0.0, var=1e-2)
    x, x_hat = torch.rand(2, 784), torch.rand(2, 784) - 0.5
    r, window = attention.read(x, x_hat, torch.randn(2, 3))  # (2, 2 * 28 * 28)
    torch.testing.assert_close(r[:, :784], x, atol=1e-5, rtol=0)
    torch.testing.assert_close(r[:, 784:], x_hat, atol=1e-5, rtol=0)
    # Centred on the middle of the image (0-based pixels); filter centres 27 pixels apart
    # end to end, widened by sigma = 0.1 each side.
    torch.testing.assert_close(window, torch.tensor([[13.5, 13.5, 27.2, 27.2]] * 2))

    # Moving g_X three pixels right reads columns 3.. into glimpse columns 0.., and
    # nothing from past the right edge: X is the width, and off-image filters are zero.
    place_read_window(attention, gx_=17.5 / 14.5 - 1, var=1e-2)
    glimpse = attention.read(x, x_hat, torch.randn(2, 3))[0][:, :784].view(2, 28, 28)
    image = x.view(2, 28, 28)
    torch.testing.assert_close(glimpse[:, :, :25], image[:, :, 3:], atol=1e-5, rtol=0)
    assert glimpse[:, :, 25:].abs().max() < 1e-5


def test_write_is_the_transpose_of_read() -> None:
    torch.manual_seed(0)
    batch, n, h, w = 3, 5, 28, 20
    centre_x, centre_y = torch.rand(batch) * w, torch.rand(batch) * h
    delta, var = torch.rand(batch) * 4 + 0.5, torch.rand(batch) * 2 + 0.3
    fx, fy = filterbank(centre_x, delta, var, n, w), filterbank(centre_y, delta, var, n, h)
    assert fx.shape == (batch, n, w) and fy.shape == (batch, n, h)
    # A filter well inside the image is a normalised Gaussian over the pixels.
    inside = filterbank(torch.tensor([14.5]), torch.tensor([2.0]), torch.tensor([3.0]), n, 28)
    torch.testing.assert_close(inside.sum(-1), torch.ones(1, n))
    x, patch = torch.randn(batch, h, w, dtype=torch.float64), torch.randn(batch, n, n).double()
    fx, fy, one = fx.double(), fy.double(), torch.ones(batch, dtype=torch.float64)
    read = draw.read_glimpse(x, fx, fy, one)  # (B, N, N)
    written = draw.write_patch(patch, fx, fy, one)  # (B, H, W)
    # <read(x), w> = <x, write(w)>: the write maps the patch back through the same filters.
    torch.testing.assert_close((read * patch).sum((1, 2)), (x * written).sum((1, 2)))
    # gamma scales the read and divides the write.
    gamma = torch.rand(batch, dtype=torch.float64) + 0.5
    g = gamma[:, None, None]
    torch.testing.assert_close(draw.read_glimpse(x, fx, fy, gamma), g * read)
    torch.testing.assert_close(draw.write_patch(patch, fx, fy, gamma), written / g)


def test_gradients_are_finite_and_reach_every_attention_parameter() -> None:
    torch.manual_seed(0)
    model = tiny()
    loss, stats = model.loss(digits(8))
    loss.backward()
    assert isinstance(stats["loss"], float) and stats["loss"] == pytest.approx(stats["neg_elbo"])
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Rows: g~X, g~Y, log sigma^2, log delta~, log gamma, for the read and the write.
    for window in (model.attention.read_window, model.attention.write_window):
        assert (window.params.weight.grad.abs().sum(1) > 0).all()
        assert (window.params.bias.grad.abs() > 0).all()


# ---------------------------------------------------------------------- objective


def test_kl_of_each_step_matches_a_monte_carlo_estimate() -> None:
    model, x = tiny(steps=4), digits(4)
    with torch.no_grad():  # the posterior means away from 0 so that the KL is not tiny
        model.to_posterior.bias[: model.cfg.latent_dim] = 0.7
    torch.manual_seed(1)
    terms = model.evaluate_batch(x)
    torch.manual_seed(1)
    with torch.no_grad():
        q = model.infer(x).posterior  # the same z_1..T, so the same q(z_t | .)
    loc, scale = q.base_dist.loc, q.base_dist.scale  # (T, B, L)
    kl_steps = torch.stack([terms[f"kl_step{t}"] for t in range(1, 5)])  # (T, B)
    torch.testing.assert_close(kl_steps.sum(0), terms["kl"])
    torch.testing.assert_close(terms["recon"] + terms["kl"], terms["neg_elbo"])

    # KL = E_q[log q(z) - log p(z)], estimated with z = loc + scale * eps by hand.
    eps = torch.randn(20000, *loc.shape, dtype=torch.float64)
    z = loc.double() + scale.double() * eps
    log_ratio = (-0.5 * eps**2 - scale.double().log() + 0.5 * z**2).sum(-1)  # (S, T, B)
    mean, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(eps))
    assert ((mean - kl_steps.double()).abs() < 4 * se).all()
    assert (kl_steps > 0.5).all()


def test_importance_sampled_nll_lies_below_the_neg_elbo() -> None:
    torch.manual_seed(0)
    model, x = tiny(), digits(32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):  # a posterior that differs from the prior: a gap worth measuring
        loss, _ = model.loss(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = x.repeat(8, 1, 1, 1)
    neg_elbo = model.evaluate_batch(x)["neg_elbo"].double()
    nll = -model.log_likelihood(x, 64)
    gap = neg_elbo - nll
    assert nll.dtype == torch.float64 and nll.shape == (len(x),)
    assert gap.mean() > 3 * gap.std() / math.sqrt(len(gap))
    # With one sample the estimate is log w itself, whose mean is the ELBO.
    one = -model.log_likelihood(x, 1) - neg_elbo
    assert one.mean().abs() < 4 * one.std() / math.sqrt(len(one))


@pytest.mark.parametrize("max_rows", [None, 3 * 5])
def test_one_step_likelihood_matches_a_vae_computed_by_hand(
    max_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """T = 1 without attention is a VAE: q(z | LSTM_enc([x, x - 1/2, 0])), logits
    W LSTM_dec(z). The model's log p(x) must be the log-mean-exp of its weights."""
    if max_rows is not None:  # chunks of 3 samples for 5 images: 3 + 3 + 3 + 1
        monkeypatch.setattr(draw, "MAX_DECODER_ROWS", max_rows)
    torch.manual_seed(0)
    model, x, k = tiny(steps=1, attention="none"), digits(5), 10
    torch.manual_seed(7)
    estimate = model.log_likelihood(x, k)

    chunk = k if max_rows is None else max_rows // len(x)
    torch.manual_seed(7)
    with torch.no_grad():
        xf = x.flatten(1)  # (B, D)
        h_enc, _ = model.encoder(torch.cat([xf, xf - 0.5, torch.zeros(5, 16)], -1))
        loc, log_scale = model.to_posterior(h_enc).chunk(2, -1)  # (B, L)
        q, prior = Normal(loc, log_scale.exp()), Normal(0.0, 1.0)
        sizes = [min(chunk, k - s) for s in range(0, k, chunk)]
        eps = torch.cat([torch.randn(c * 5, 4).view(c, 5, 4) for c in sizes])  # (k, B, L)
        z = loc + log_scale.exp() * eps
        h_dec, _ = model.decoder(z.flatten(0, 1))
        logits = model.attention.patch(h_dec).view(k, 5, 784)
        log_px = Bernoulli(logits=logits).log_prob(xf).sum(-1)  # (k, B)
        log_w = log_px + (prior.log_prob(z) - q.log_prob(z)).sum(-1)
    expected = torch.logsumexp(log_w.double(), 0) - math.log(k)
    torch.testing.assert_close(estimate, expected, rtol=0, atol=1e-4)


def test_the_canvas_sums_the_writes_of_every_step() -> None:
    """Without attention, c_T = sum_t W h_dec_t + T b with h_dec_t = LSTM_dec(h_dec_{t-1}, z_t)."""
    torch.manual_seed(0)
    model, z = tiny(attention="none"), torch.randn(3, 2, 4)  # (T, B, L)
    with torch.no_grad():
        state, expected = None, torch.zeros(2, 784)
        for z_t in z:
            state = model.decoder(z_t, state)
            expected += model.attention.patch(state[0])
        torch.testing.assert_close(model.generate(z).logits, expected)


def test_the_prior_proposal_is_supported_and_others_are_refused() -> None:
    model, x = tiny(), digits(4)
    assert torch.isfinite(model.log_likelihood(x, 8, proposal="prior")).all()
    with pytest.raises(ValueError, match="proposal"):
        model.log_likelihood(x, 8, proposal="uniform")


# ---------------------------------------------------------------------- images


@pytest.mark.parametrize("attention", ["gaussian", "none"])
def test_samples_reconstructions_and_their_sequences(attention: str) -> None:
    torch.manual_seed(0)
    model, x = tiny(attention=attention), digits(3)
    samples = model.sample(5)
    assert samples.shape == (5, *SHAPE) and samples.min() >= 0 and samples.max() <= 1
    canvases, windows = model.sample_sequence(2)
    assert canvases.shape == (3, 2, *SHAPE)
    canvases, windows = model.reconstruct_sequence(x)
    assert canvases.shape == (3, 3, *SHAPE)
    # The last canvas of the sequence is the reconstruction (z_t at posterior means).
    torch.testing.assert_close(canvases[-1], model.reconstruct(x))
    if attention == "none":
        assert windows is None
    else:
        assert windows.shape == (3, 3, 4) and (windows[..., 2:] > 0).all()


@pytest.mark.parametrize("shape", [(3, 28, 28), (784,)])
def test_only_single_channel_images_are_accepted(shape: tuple[int, ...]) -> None:
    with pytest.raises(GenzooError, match=r"\(1, H, W\)"):
        DRAW(DRAWConfig(), shape)


# ---------------------------------------------------------------------- CLI


TRAIN = [
    *("--epochs", "1", "--batch-size", "16", "--val-size", "20", "--device", "cpu"),
    "--no-compile",  # compiled by default; a tiny run is faster without
]
SIZES = ["--steps", "3", "--enc-hidden", "8", "--dec-hidden", "8", "--latent-dim", "2"]


@pytest.mark.parametrize("attention", ["gaussian", "none"])
def test_train_eval_sample_and_plot_through_the_cli(
    attention: str, data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "draw"
    argv = ["train", "draw", "--run-dir", str(run), *TRAIN, *SIZES, "--attention", attention]
    assert main([*argv, "--read-size", "3", "--write-size", "4"]) == 0
    (epoch,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"train_neg_elbo", "val_neg_elbo", "val_kl_step1", "val_kl_step3"} <= epoch.keys()

    assert main(["eval", str(run), "--iw-samples", "4"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert {"nll", "neg_elbo", "recon", "kl", "kl_step1", "kl_step3"} <= result.keys()
    assert math.isfinite(result["nll"]) and result["iw_samples"] == 4
    steps = sum(result[f"kl_step{t}"] for t in (1, 2, 3))
    assert steps == pytest.approx(result["kl"])

    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "-n", "4", "-o", str(out)]) == 0
    samples = np.load(out)
    assert samples.shape == (4, *SHAPE) and samples.min() >= 0 and samples.max() <= 1

    assert main(["plot", str(run)]) == 0
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"drawing.png", "drawing.gif", "reading.png", "kl_per_step.png"} <= figures
    with Image.open(run / "figures" / "drawing.gif") as gif:
        assert gif.n_frames == 3  # a frame per step


def test_grey_levels_are_refused(data_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["train", "draw", "--run-dir", str(tmp_path / "r"), *TRAIN, "--binarize", "none"]
    assert main(argv) == 2
    assert "binarize" in capsys.readouterr().err


def test_the_default_is_the_measured_recipe_and_the_papers_model_one_preset_away() -> None:
    default = run_config("draw", {})
    assert (default.model_config.steps, default.model_config.read_size) == (16, 5)
    assert (default.train.lr_schedule, default.train.epochs, default.train.ema) == (
        "cosine",
        58,
        0.999,
    )
    paper = run_config("draw", {"preset": "gregor2015"})
    m = paper.model_config
    assert (m.steps, m.read_size, m.write_size, m.attention) == (64, 2, 5, "gaussian")
    assert paper.train.binarize == "static" and paper.to_dict()["preset"]["deviations"] == {}
    shorter = run_config("draw", {"preset": "gregor2015", "steps": 16}).to_dict()["preset"]
    assert shorter["deviations"] == {"steps": {"preset": 64, "run": 16}}
    # The page's lead says which of the two a run followed.
    assert "genzoo's default recipe, no preset" in preset_text(default.to_dict())
    assert "--preset gregor2015: Gregor et al. 2015" in preset_text(default.to_dict())
    lead = preset_text(paper.to_dict())
    assert lead.startswith(" Preset gregor2015") and "with none of its settings changed" in lead
    assert preset_text(run_config("vae", {}).to_dict()) == ""  # a family without presets
