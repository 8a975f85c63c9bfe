"""Every study with --quick on fake MNIST written here (1,600 training images, enough
for the quick protocol's 1,000 + 500), its page, --seeds, and a killed study resumed.

The figures these runs give mean nothing (one epoch on fake digits); what is checked is
that every arm trains and is evaluated, and that the table, the analysis, the answer and
the page hold what the runs measured.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from html import escape
from pathlib import Path

import pytest
import torch

from conftest import register, write_fake_idx_dataset
from genzoo import quality
from genzoo.cli import main
from genzoo.files import read_json
from genzoo.models.gan import generator_loss
from genzoo.runs import read_metrics
from genzoo.studies import STUDIES, gan_losses, recipe
from genzoo.studies.page import write_study_report
from test_report import PageParser, _chromium


@pytest.fixture(scope="module")
def big_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_fake_idx_dataset(root / "mnist", n_train=1600, n_test=300)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module's tests: the feature net is trained on the fake digits once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def data(big_data: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    register(monkeypatch, "mnist", big_data / "mnist")
    monkeypatch.setenv("GENZOO_DATA", str(big_data))
    monkeypatch.setenv("GENZOO_CACHE", str(cache))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The feature net of the quality scores, trained briefly on the fake digits.
    quality.load_or_train_feature_net(epochs=1, val_size=500)
    return big_data


def study(name: str, out: Path, *flags: str) -> dict:
    assert main(["study", name, "--quick", "--out", str(out), "--device", "cpu", *flags]) == 0
    return read_json(out / "study.json")


@pytest.mark.parametrize("study_name", STUDIES)
def test_a_budget_given_replaces_the_studys_own(study_name: str) -> None:
    study, flag = STUDIES[study_name], "--max-minutes"
    own = study.train[study.train.index(flag) + 1] if flag in study.train else None
    for budget, expected in ((None, own), (7.5, "7.5")):
        argv = recipe.train_command(study, study.arms[0], Path("run"), 0, False, budget)
        given = [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]
        assert given == ([expected] if expected else [])


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_runs_quick_and_its_page_holds_the_table(
    name: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / name
    result = study(name, out)
    spec = STUDIES[name]
    assert [row["arm"] for row in result["rows"]] == [arm.name for arm in spec.arms]
    for row in result["rows"]:
        run = out / row["runs"][0]
        evaluated = read_json(run / "eval.json")
        for key in spec.columns:
            if key in evaluated:
                assert row[key] == evaluated[key]  # one seed: the run's own figure
        assert row["parameters"] > 0
        # The training command's minutes (one seed: its own), the passes part of them.
        metrics, summary = read_metrics(run), read_json(run / "summary.json")
        wall = sum(m["wall_seconds"] for m in metrics) + summary["finishing_seconds"]
        assert row["minutes"] == pytest.approx(wall / 60)
        assert row["pass_minutes"] == pytest.approx(sum(m["seconds"] for m in metrics) / 60)
        assert row["pass_minutes"] < row["minutes"]
    assert result["answer"] and result["answer"] in capsys.readouterr().out
    if name == "gan-losses":  # D(G(z)) while training, not at the evaluation
        for arm, lowest in result["analysis"]["lowest_d_fake"].items():
            metrics = read_metrics(out / arm)
            assert "minimax" in arm and lowest == min(m["train_d_fake"] for m in metrics)
            assert f"{arm}: D(G(z)) at least {lowest:.2f}" in result["answer"]
    page = (out / "report.html").read_text()
    parsed = PageParser()
    parsed.feed(page)
    rows = parsed.table_with("arm")
    assert [r[0] for r in rows[1:]] == [arm.name for arm in spec.arms]
    for row in result["rows"]:
        assert f'href="{row["runs"][0]}/report.html"' in page
        assert (out / row["runs"][0] / "report.html").is_file()
    assert "data:image/png;base64," in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from a network


def test_estimators_meet_the_elbo_and_the_answer_follows_the_curves(
    data: Path, tmp_path: Path
) -> None:
    analysis = study("likelihood-estimators", tmp_path / "le")["analysis"]
    importance = analysis["curves"]["posterior"]
    # At K = 1 importance sampling's expectation is the ELBO; it only rises with K.
    assert importance[0]["nll"] == pytest.approx(analysis["neg_elbo"], abs=3.0)
    assert importance[-1]["nll"] <= importance[0]["nll"] + 0.5
    naive = analysis["curves"]["prior"]
    assert all(n["nll"] >= i["nll"] - 1.0 for n, i in zip(naive, importance, strict=True))
    assert (tmp_path / "le" / "figures" / "estimators.png").is_file()


def test_seeds_give_the_spread_over_seeds(data: Path, tmp_path: Path) -> None:
    result = study("likelihood-estimators", tmp_path / "s", "--seeds", "2")
    (row,) = result["rows"]
    assert row["runs"] == ["vae-seed0", "vae-seed1"]
    values = [read_json(tmp_path / "s" / r / "eval.json")["nll"] for r in row["runs"]]
    assert values[0] != values[1]
    assert row["nll"] == pytest.approx(sum(values) / 2)
    assert row["nll_spread"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    assert "standard deviation over seeds" in (tmp_path / "s" / "report.html").read_text()


def test_a_killed_study_continues_from_its_finished_arms(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "latent"
    arms_run = []
    real_run_arm = recipe.run_arm

    def killed_at_the_third(state, arm, seed):
        if len(arms_run) == 2:
            raise KeyboardInterrupt
        arms_run.append(arm.name)
        return real_run_arm(state, arm, seed)

    monkeypatch.setattr(recipe, "run_arm", killed_at_the_third)
    code = main(["study", "latent-size", "--quick", "--out", str(out), "--device", "cpu"])
    assert code == 130  # as Ctrl-C
    finished = {name: (out / name / "eval.json").stat().st_mtime_ns for name in arms_run}
    monkeypatch.setattr(recipe, "run_arm", real_run_arm)
    study("latent-size", out)
    assert {n: (out / n / "eval.json").stat().st_mtime_ns for n in arms_run} == finished
    # Another protocol in the same folder would mix runs: refused.
    assert main(["study", "latent-size", "--out", str(out), "--device", "cpu"]) == 2


def test_report_rewrites_a_study_page(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ae"
    result = study("autoencoder-generative", out)
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert escape(result["answer"]) in (out / "report.html").read_text()


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="headless Chromium not installed (Debian: apt-get install chromium)",
)
def test_study_page_in_headless_chromium(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "latent"
    study("latent-size", out)
    page = write_study_report(out)
    shot = tmp_path / "study.png"
    _chromium(tmp_path, f"--screenshot={shot}", page.resolve().as_uri())
    assert shot.is_file()
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri())
    loaded = dom.stdout.split('data-images-loaded="')[1].split('"')[0]
    done, total = map(int, loaded.split("/"))
    assert done == total > 0
    assert escape(json.loads((out / "study.json").read_text())["answer"]) in dom.stdout


def test_an_arms_own_evaluation_flags_follow_the_studys_in_the_full_protocol() -> None:
    study = STUDIES["families"]
    (arm,) = [a for a in study.arms if a.name == "diffusion"]

    def last(command: list[str], flag: str) -> str:  # argparse keeps the last value
        return command[len(command) - command[::-1].index(flag)]

    full = recipe.eval_command(study, Path("run"), quick=False, arm=arm)
    assert last(full, "--iw-samples") == "20"
    assert "1000" in full  # the study's own, overridden
    quick = recipe.eval_command(study, Path("run"), quick=True, arm=arm)
    assert quick == recipe.eval_command(study, Path("run"), quick=True)


def test_quick_evaluation_estimates_no_likelihood_where_the_full_protocol_estimates_none() -> None:
    def iw_samples(study: str) -> str:
        command = recipe.eval_command(STUDIES[study], Path("run"), quick=True)
        return command[command.index("--iw-samples") + 1]

    assert STUDIES["sampling-steps"].evaluate[:2] == ("--iw-samples", "0")
    assert iw_samples("sampling-steps") == "0"
    assert iw_samples("latent-size") == recipe.QUICK_EVAL[1] != "0"


@pytest.mark.parametrize("d_fake", [0.02, 0.0999, 0.1001, 0.44])
def test_the_saturation_note_gives_the_gradients_ratio_autograd_finds(d_fake: float) -> None:
    logit = torch.logit(torch.tensor(d_fake, dtype=torch.float64)).requires_grad_()
    (minimax,) = torch.autograd.grad(generator_loss(logit, "minimax"), logit)
    (nonsaturating,) = torch.autograd.grad(generator_loss(logit, "nonsaturating"), logit)
    note = gan_losses.saturation({"mlp-minimax-k1": d_fake})
    assert f"gradient was at least {(minimax / nonsaturating).item():.2f} of" in note
    # Under a ninth of the non-saturating gradient (D(G(z)) < 0.1): saturated.
    assert ("it saturated" in note) == ((minimax / nonsaturating).item() < 1 / 9)


def test_the_saturation_note_leaves_out_what_says_nothing() -> None:
    assert gan_losses.saturation({}) == ""
    assert gan_losses.saturation({"a": math.nan, "b": 1.0, "c": -0.5}) == ""  # no ZeroDivision
    rows = [{"arm": "mlp-minimax-k1", "fid": 20.0}]
    said = gan_losses.answer(rows, {"lowest_d_fake": {"mlp-minimax-k1": 0.3, "x": math.nan}})
    assert said.startswith("FID of the best checkpoint, lowest first: mlp-minimax-k1 20.0.")
    assert "mlp-minimax-k1: D(G(z)) at least 0.30" in said and "x:" not in said
