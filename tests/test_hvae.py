"""The hierarchical VAE (models/hvae.py) against references, its presets, Burda's
schedule, and the burda and vampprior studies through the CLI.

References: the two-layer model's log p(x) by brute-force integration over a grid of both
latents; the VampPrior's density as an explicit mixture of the pseudo-inputs'
posteriors; the schedule against its formula.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Bernoulli, Independent, Normal

from conftest import register, write_fake_idx_dataset
from genzoo import api
from genzoo.cli import main
from genzoo.data import Data, Split, load_data
from genzoo.errors import GenzooError
from genzoo.models.hvae import HVAE, PRESETS, SAMPLED_KL, HVAEConfig, mixture_log_prob
from genzoo.runs import checkpoint_files, load_run_config
from genzoo.schedule import LRSchedule
from genzoo.studies import STUDIES
from genzoo.studies.papers import REST_HEADER as REST
from genzoo.studies.papers import PaperCell, beside_paper
from genzoo.studies.recipe import StudyRun

SHAPE = (1, 28, 28)
DEPTHS = {"one": {"latent_dims": (6,)}, "two": {"latent_dims": (6, 3)}}
SMALL = {"hidden": (16,), "hidden_top": (8,), "pseudo_inputs": 7}


def model(depth: str = "two", prior: str = "standard", seed: int = 0, **kw) -> HVAE:
    torch.manual_seed(seed)
    cfg = HVAEConfig(**DEPTHS[depth], **SMALL, prior=prior, **kw)
    return HVAE(cfg, SHAPE).eval()


def images(n: int = 8, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(n, *SHAPE, generator=generator) * 0.6, generator=generator)


EVERY_MODEL = [(d, p) for d in DEPTHS for p in ("standard", "vamp")]


# ---------------------------------------------------------------------- objectives


@pytest.mark.parametrize(("depth", "prior"), EVERY_MODEL)
def test_the_iwae_bound_with_k_1_is_the_elbo_estimate(depth: str, prior: str) -> None:
    x = images()
    losses = []
    for objective in ("elbo", "iwae"):
        m = model(depth, prior, objective=objective, k=1)
        torch.manual_seed(3)
        losses.append(m.loss(x)[0])
    assert torch.equal(losses[0], losses[1])


@pytest.mark.parametrize(("depth", "prior"), EVERY_MODEL)
def test_the_bound_rises_with_k_in_expectation(depth: str, prior: str) -> None:
    m, x = model(depth, prior), images()
    torch.manual_seed(0)
    with torch.no_grad():
        log_w = m.log_weights(x, 50 * 200).view(200, 50, -1)  # (repeats, k, B)
    bounds = [(torch.logsumexp(log_w[:, :k], 1) - math.log(k)).mean().item() for k in (1, 5, 50)]
    assert bounds[0] < bounds[1] < bounds[2]


@pytest.mark.parametrize(("depth", "prior"), EVERY_MODEL)
def test_the_importance_sampled_nll_is_below_the_negative_elbo(depth: str, prior: str) -> None:
    m, x = model(depth, prior), images()
    torch.manual_seed(0)
    recon, kl = m.elbo_terms(x, 500)  # the -ELBO's expectation, nearly
    nll = -m.log_likelihood(x, 500)
    assert nll.mean() < (recon + kl).mean()
    assert m.eval_terms["kl"] == ("KL" if m.closed_form_kl() else SAMPLED_KL)


def test_active_units_count_the_codes_whose_mean_varies_over_the_images() -> None:
    two = model("two")  # z1 of 6, z2 of 3
    x = images(64)
    head = two.up[0][-1]  # -> [mean (6), log-variance (6)] of q(z1|x)
    with torch.no_grad():
        head.weight[:6] *= 50  # every mean varies over the images ...
        head.weight[1], head.bias[1] = 0.0, 0.7  # ... but unit 1's: 0.7 for every image
    found = two.epoch_diagnostics(x)
    assert set(found) == {"active_units_z1", "active_units_z2"}
    assert found["active_units_z1"] == 5
    means = two.up[0](x.flatten(1))[:, :6]
    assert found["active_units_z1"] == (means.var(0, correction=0) > 0.01).sum()
    assert 0 <= found["active_units_z2"] <= 3
    assert set(model("one").epoch_diagnostics(x)) == {"active_units_z1"}


def test_the_closed_form_kl_agrees_with_the_sampled_one() -> None:
    m, x = model("one"), images()
    torch.manual_seed(0)
    _, closed = m.elbo_terms(x)
    _, log_ratio = m.weight_parts(x, 20000)
    assert torch.allclose(-log_ratio.mean(0), closed, atol=0.1)


def test_the_warm_up_weighs_the_kl_from_zero_to_one() -> None:
    m, x = model("one", kl_warmup_steps=4), images()
    optimizers = m.configure_optimizers(1e-3)
    weights = [m.train_step(x, optimizers)["kl_weight"] for _ in range(6)]
    assert weights == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert int(m.steps_taken) == 6  # a buffer: checkpoints carry it
    assert optimizers[0].defaults["eps"] == m.cfg.adam_eps


# ---------------------------------------------------------------------- references


def tiny_two_layer(prior: str) -> HVAE:
    """Latents of one dimension each and 2x2 images: small enough to integrate."""
    torch.manual_seed(5)
    cfg = HVAEConfig(latent_dims=(1, 1), hidden=(8,), hidden_top=(8,), prior=prior, pseudo_inputs=3)
    return HVAE(cfg, (1, 2, 2)).eval()


@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_the_two_layer_likelihood_against_brute_force_integration(prior: str) -> None:
    """log p(x) = log of the double integral of p(x|z1) p(z1|z2) p(z2) over a grid, written
    out with torch.distributions from the networks' outputs; the importance-sampled
    estimate converges to it and the ELBO stays below it."""
    m = tiny_two_layer(prior)
    x = torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 1], [0, 0, 0, 0]]).view(3, 1, 2, 2)
    step = 0.02
    grid = torch.arange(-7, 7, step, dtype=torch.float64)  # (G,)
    with torch.no_grad():
        z2 = grid.float().view(-1, 1)  # (G, 1)
        log_p2 = m.prior().log_prob(z2).double()  # (G,)
        mu, logvar = m.down[0](z2).double().chunk(2, -1)  # (G, 1) each
        log_p1 = Normal(mu, torch.exp(0.5 * logvar)).log_prob(grid.view(1, -1))  # (G2, G1)
        logits = m.decoder(grid.float().view(-1, 1)).double()  # (G1, 4)
        log_px = Independent(Bernoulli(logits=logits.unsqueeze(1)), 1).log_prob(
            x.flatten(1).double()
        )  # (G1, B)
        joint = log_p2.view(-1, 1, 1) + log_p1.unsqueeze(-1) + log_px.unsqueeze(0)
        exact = torch.logsumexp(joint.flatten(0, 1), 0) + 2 * math.log(step)  # (B,)
        torch.manual_seed(0)
        estimate = m.log_likelihood(x, 200000)
        recon, kl = m.elbo_terms(x, 20000)
    assert torch.allclose(estimate, exact, atol=0.02)
    assert (-(recon + kl).double() < exact).all()


@pytest.mark.parametrize("depth", DEPTHS)
def test_the_vampprior_is_the_mixture_of_the_pseudo_inputs_posteriors(depth: str) -> None:
    m = model(depth, "vamp")
    z = torch.randn(5, 4, m.cfg.latent_dims[-1])  # (k, B, L)
    with torch.no_grad():
        per_input = []
        for u in m.pseudo_images():  # each pseudo-input alone, through the recognition chain
            h = u.view(1, -1)
            for net in m.up[:-1]:
                mu, _ = net(h).chunk(2, -1)
                h = mu  # the mean path below the top layer
            mu, logvar = m.up[-1](h).chunk(2, -1)
            q = Independent(Normal(mu[0], torch.exp(0.5 * logvar[0])), 1)
            per_input.append(q.log_prob(z))  # (k, B)
        explicit = torch.logsumexp(torch.stack(per_input), 0) - math.log(len(per_input))
        assert torch.allclose(m.log_prior(z), explicit, atol=1e-4)
        assert torch.allclose(m.prior().log_prob(z), explicit, atol=1e-4)


def test_the_mixture_density_keeps_its_precision_for_sharp_components() -> None:
    loc = torch.randn(30, 50) * 3
    scale = torch.rand(30, 50) * 0.01 + 0.005
    z = loc[:4] + scale[:4] * torch.randn(4, 50)  # near components, where terms cancel
    explicit = Independent(Normal(loc, scale), 1).log_prob(z.unsqueeze(1))  # (4, 30)
    expected = torch.logsumexp(explicit, 1) - math.log(30)
    assert torch.allclose(mixture_log_prob(z, loc, scale), expected, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------- shapes


def test_two_layer_sampling_shapes_and_ranges() -> None:
    m, x = model("two", "vamp"), images(4)
    draws, log_q = m.upward(x, 3)
    assert [d.shape for d in draws] == [(3, 4, 6), (3, 4, 3)] and log_q.shape == (3, 4)
    assert m.ancestral_z1((2, 5)).shape == (2, 5, 6)
    assert m.log_weights(x, 3, "prior").shape == (3, 4)
    assert m.encode(x).shape == (4, 3) and m.decode(m.encode(x)).shape == (4, *SHAPE)
    samples, means = m.sample(5), m.sample_means(5)
    assert samples.shape == means.shape == (5, *SHAPE)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    assert ((means >= 0) & (means <= 1)).all()
    assert m.prior().sample((2,)).shape == (2, 3)


def test_gated_units_are_a_glu() -> None:
    m = model("one", activation="gated")
    assert any(isinstance(layer, torch.nn.GLU) for layer in m.up[0])
    assert m.up[0][0].out_features == 2 * SMALL["hidden"][0]


# ---------------------------------------------------------------------- schedule


def test_burdas_schedule_against_its_formula() -> None:
    steps = 3
    s = LRSchedule("burda", lr=1e-3, steps_per_epoch=steps, epochs=3280)
    rates = [s.rate(epoch * steps) for epoch in range(3280)]
    assert s.rate(steps - 1) == rates[0] and s.rate(3300 * steps) == rates[-1]
    start = 0
    for i in range(8):
        stage = rates[start : start + 3**i]
        assert len(stage) == 3**i and stage == pytest.approx([1e-3 * 10 ** (-i / 7)] * 3**i)
        start += 3**i
    assert start == 3280  # every pass counted: sum of 3^i, i = 0..7
    assert rates[-1] == pytest.approx(1e-4)  # 10^(-7/7): the rate fell tenfold


# ---------------------------------------------------------------------- data


def test_train_on_val_trains_on_the_validation_images_too(data_dir: Path) -> None:
    plain = load_data("mnist", "dynamic", 20)
    both = load_data("mnist", "dynamic", 20, train_on_val=True)
    assert len(plain.train) == 80 and len(both.train) == 100 and len(both.val) == 20
    assert torch.equal(both.train.images[:80], plain.train.images)
    grey_val = load_data("mnist", "none", 20).val.images
    assert torch.equal(both.train.images[80:], grey_val)  # grey: drawn afresh each epoch
    assert torch.equal(both.val.images, plain.val.images)  # binarized once, as before


def test_the_pixels_start_at_the_training_images_mean() -> None:
    grey = torch.rand(40, *SHAPE, generator=torch.Generator().manual_seed(0))
    grey[:, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.0005])  # never, always, almost never on
    split = Split(grey, None)
    data = Data(split, split, split, "dynamic")
    started, zero = model(pixel_bias="data"), model(pixel_bias="zero")
    started.before_training(data, seed=0)
    zero.before_training(data, seed=0)
    # sigmoid(bias) is each pixel's mean, kept 0.001 away from 0 and 1.
    expected = grey.flatten(1).mean(0).clamp(1e-3, 1 - 1e-3)
    assert expected[:3].tolist() == pytest.approx([1e-3, 1 - 1e-3, 1e-3])
    torch.testing.assert_close(torch.sigmoid(started.decoder[-1].bias), expected)
    assert torch.equal(zero.decoder[-1].bias, torch.zeros(784))


def test_a_resumed_run_keeps_its_trained_pixel_bias(data_dir: Path, tmp_path: Path) -> None:
    flags = ["--latent-dims", "4,2", "--hidden", "16", "--hidden-top", "8", *TINY]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["train", "hvae", *flags, "--epochs", "2", "--run-dir", str(whole)]) == 0
    assert main(["train", "hvae", *flags, "--epochs", "1", "--run-dir", str(resumed)]) == 0
    assert main(["resume", str(resumed), "--epochs", "2"]) == 0
    weights = [load_file(checkpoint_files(r, "last")[0]) for r in (whole, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_run_saved_before_the_pixel_bias_choice_reads_as_started_at_zero(
    data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    flags = ["--latent-dims", "4", "--hidden", "16", "--epochs", "1", *TINY]
    assert main(["train", "hvae", *flags, "--run-dir", str(run)]) == 0
    assert load_run_config(run).model_config.pixel_bias == "data"  # today's default
    saved = json.loads((run / "config.json").read_text())
    del saved["model_config"]["pixel_bias"]  # as the runs of before the choice
    (run / "config.json").write_text(json.dumps(saved))
    assert load_run_config(run).model_config.pixel_bias == "zero"


def test_the_papers_presets_start_the_pixels_as_their_code_does() -> None:
    assert PRESETS["burda-1l"].settings["pixel_bias"] == "data"
    assert PRESETS["burda-2l"].settings["pixel_bias"] == "data"
    assert PRESETS["vampprior"].settings["pixel_bias"] == "zero"


# ---------------------------------------------------------------------- the CLI

TINY = ["--val-size", "20", "--device", "cpu", "--sample-every", "100"]


def test_a_preset_is_printed_and_recorded_and_a_flag_beside_it_is_a_deviation(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    flags = ["--preset", "burda-2l", "--epochs", "1", "--latent-dims", "4,2", "--hidden", "8"]
    assert (
        main(["train", "hvae", *flags, "--hidden-top", "100,100", "--run-dir", str(run), *TINY])
        == 0
    )
    out = capsys.readouterr().out
    assert "preset burda-2l (Burda" in out and "batch_size=20" in out and "adam_eps=0.0001" in out
    assert "deviation: --latent-dims 4,2 (the preset's 100,50)" in out
    config = json.loads((run / "config.json").read_text())
    preset, values = config["preset"], {**config["train"], **config["model_config"]}
    for name, value in preset["settings"].items():  # every one recorded, and in force
        assert name in preset["deviations"] or values[name] == value
    assert preset["name"] == "burda-2l" and preset["settings"]["lr_schedule"] == "burda"
    assert config["train"]["batch_size"] == 20 and config["train"]["train_on_val"] is True
    assert config["model_config"]["adam_eps"] == 1e-4
    # Given against the preset: a deviation; given as the preset has it: none.
    assert preset["deviations"] == {
        "epochs": {"preset": 3280, "run": 1},
        "hidden": {"preset": [200, 200], "run": [8]},
        "latent_dims": {"preset": [100, 50], "run": [4, 2]},
    }
    page = (run / "report.html").read_text()
    assert "Preset burda-2l" in page and "deviation: the preset&#x27;s [100, 50]" in page
    # A resume with a new rate is a deviation too, recorded when it continues.
    assert main(["resume", str(run), "--epochs", "2", "--lr", "0.01"]) == 0
    deviations = json.loads((run / "config.json").read_text())["preset"]["deviations"]
    assert deviations["lr"] == {"preset": 0.001, "run": 0.01}


def test_train_eval_and_sample_a_two_layer_vampprior_iwae(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    model_flags = ["--latent-dims", "4,2", "--hidden", "16", "--hidden-top", "8", "--prior", "vamp"]
    flags = [*model_flags, "--pseudo-inputs", "5", "--objective", "iwae", "--k", "3"]
    assert main(["train", "hvae", *flags, "--epochs", "2", "--run-dir", str(run), *TINY]) == 0
    assert main(["eval", str(run), "--iw-samples", "10"]) == 0
    assert "KL by sampling" in capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())
    assert result["terms"]["kl"] == SAMPLED_KL and result["iw_samples"] == 10
    assert result["nll"] < result["neg_elbo"] + 3 * result["nll_se"]
    assert (run / "figures" / "pseudo_inputs.png").stat().st_size > 0
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--latent-dims", "0"], "values must be from 1"),
        (["--latent-dims", "10,-1"], "values must be from 1"),
        (["--latent-dims", "10,10,10"], "--latent-dims takes 1 to 2 values, got 10,10,10"),
        (["--pseudo-inputs", "0"], "must be positive"),
        (["--preset", "bogus"], "unknown --preset 'bogus' for hvae; its presets: burda-1l"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    command = ["train", "hvae", *argv, "--run-dir", str(tmp_path / "r"), *TINY]
    try:
        code = main(command)
    except SystemExit as exit_info:  # argparse's refusal of a flag's text
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_preset_of_another_family_is_refused(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["train", "vae", "--preset", "burda-1l", "--run-dir", str(tmp_path / "r")]) == 2
    assert "--preset burda-1l is a preset of hvae, not vae" in capsys.readouterr().err


@pytest.fixture
def study_data(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Enough fake MNIST for --quick's 1,000 + 500 images (vampprior's --quick trains on
    them, dynamically binarized, instead of the static files)."""
    write_fake_idx_dataset(data_dir / "mnist", n_train=1600, n_test=300)
    register(monkeypatch, "mnist", data_dir / "mnist")
    return data_dir


PAPER_COLUMNS = ("genzoo NLL", "genzoo - paper")


def test_the_rest_of_a_schedule_at_the_pace_of_the_passes_so_far(tmp_path: Path) -> None:
    """An arm 30 of 120 epochs in, after 45 minutes of training passes: 90 epochs more at
    1.5 minutes each, 2.25 hours; one at the end of its schedule has none left."""
    runs = {}
    for name, done in (("halfway", 30), ("finished", 120)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"train": {"epochs": 120}}))
        (run / "eval.json").write_text(json.dumps({"nll": 90.0, "nll_se": 0.2, "iw_samples": 50}))
        lines = [json.dumps({"epoch": e + 1, "seconds": 90.0}) + "\n" for e in range(done)]
        (run / "metrics.jsonl").write_text("".join(lines))
        runs[name] = [run]
    state = StudyRun(STUDIES["burda"], tmp_path, False, 1, "cpu", None, main, runs=runs)
    cells = [PaperCell(name, (name,), 89.0, name) for name in runs]
    analysis = beside_paper(state, cells, ("cell",), "a schedule", fixed_schedule=True)
    table = analysis["table"]
    rest = table["headers"].index(REST)
    assert [row[rest] for row in table["rows"]] == [pytest.approx(2.25, abs=0.06), 0.0]
    assert [c["epochs"] for c in analysis["cells"]] == [30, 120]
    without = beside_paper(state, cells, ("cell",), "a schedule")["table"]
    assert REST not in without["headers"] and len(without["rows"][0]) == len(table["rows"][0]) - 1


@pytest.mark.parametrize(
    ("study", "arms"), [("burda", "1l-k1,2l-iwae-k5"), ("vampprior", "vae-vamp")]
)
def test_a_study_quick_on_some_arms_sets_each_cell_beside_the_papers(
    study_data: Path, tmp_path: Path, study: str, arms: str
) -> None:
    out = tmp_path / study
    argv = ["study", study, "--quick", "--arms", arms, "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    result = json.loads((out / "study.json").read_text())
    assert [row["arm"] for row in result["rows"]] == arms.split(",")
    table = result["analysis"]["table"]
    shown = {row[-1] for row in table["rows"]}
    assert shown == set(arms.split(","))
    column = {header: i for i, header in enumerate(table["headers"])}
    for row in table["rows"]:
        paper, genzoo_cell, gap_cell = (row[column[h]] for h in ("paper NLL", *PAPER_COLUMNS))
        genzoo, gap = (float(cell.split(" ± ")[0]) for cell in (genzoo_cell, gap_cell))
        # Both written to their error's place (pagekit.with_error): each rounded by half of it.
        place = 10.0 ** -len(genzoo_cell.split(" ± ")[1].partition(".")[2])
        assert gap_cell.split(" ± ")[1] == genzoo_cell.split(" ± ")[1]  # the same error
        assert gap == pytest.approx(genzoo - paper, abs=1.01 * place)
    # Burda's schedule is a set number of passes: the hours of the rest are shown (none
    # left after --quick's one epoch); the VampPrior's protocol stops early: no column.
    assert (REST in column) == (study == "burda")
    if study == "burda":
        assert {row[column[REST]] for row in table["rows"]} == {0.0}
    assert "genzoo - paper" in (out / "report.html").read_text()
    # Another arm later, in the same folder: the table holds both runs' arms.
    if study == "burda":
        assert main([*argv[:4], "2l-k1", *argv[5:]]) == 0
        rows = json.loads((out / "study.json").read_text())["rows"]
        assert [row["arm"] for row in rows] == ["1l-k1", "2l-k1", "2l-iwae-k5"]


def test_a_study_refuses_an_arm_it_lacks(data_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["study", "burda", "--quick", "--arms", "3l-k1", "--out", str(tmp_path)]) == 2
    assert "burda has no arm 3l-k1; its arms: 1l-k1" in capsys.readouterr().err


def test_the_library_takes_a_preset_as_the_command_does() -> None:
    cfg = api.run_config("hvae", {"preset": "burda-1l", "k": 5, "objective": "iwae"})
    assert (cfg.train.batch_size, cfg.train.lr_schedule, cfg.train.epochs) == (20, "burda", 3280)
    assert (cfg.model_config.latent_dims, cfg.model_config.k) == ((50,), 5)
    assert cfg.to_dict()["preset"]["deviations"] == {}  # k and the objective: not the preset's
    with pytest.raises(GenzooError, match="a preset of hvae, not gan"):
        api.run_config("gan", {"preset": "vampprior"})
