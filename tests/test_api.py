"""genzoo from Python (api.py): the functions on tiny data, the very run the command
makes, and bad input refused with the command's one-line message."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from IPython.lib.pretty import pretty
from safetensors.torch import load_file

import genzoo
from genzoo import api
from genzoo.cli import main
from genzoo.config import TrainConfig
from genzoo.errors import GenzooError, TrainingDiverged
from genzoo.evaluation import SAMPLE_BATCH
from genzoo.models import MODELS
from genzoo.models.diffusion import DiffusionConfig
from genzoo.models.vae import VAE, VAEConfig
from genzoo.rng import isolated_rng
from genzoo.runs import RunConfig, checkpoint_files, save_run_config

# The tests' tiny VAE, as keywords and as the command's flags.
TINY = {"epochs": 2, "batch_size": 16, "val_size": 20, "hidden": [32], "latent_dim": 2}
TINY_FLAGS = ["--epochs", "2", "--batch-size", "16", "--val-size", "20", "--hidden", "32"]
TINY_FLAGS += ["--latent-dim", "2", "--device", "cpu"]


@pytest.fixture
def run(data_dir: Path, tmp_path: Path) -> Path:
    return genzoo.train("vae", run_dir=tmp_path / "api", device="cpu", **TINY)


def test_the_package_exports_the_api_and_keeps_its_modules() -> None:
    assert genzoo.train is api.train and genzoo.evaluate is api.evaluate
    assert genzoo.compare is api.compare and genzoo.load is api.load
    # No module of the package is shadowed by a function of the same name.
    for name in ("training", "evaluation", "comparison"):
        assert importlib.import_module(f"genzoo.{name}") is getattr(genzoo, name)
    for name in genzoo.__all__:
        assert getattr(genzoo, name).__doc__, f"genzoo.{name} has no docstring"


def test_train_load_sample_evaluate_compare(run: Path, tmp_path: Path, capsys) -> None:
    assert run == tmp_path / "api"
    config = json.loads((run / "config.json").read_text())
    assert config["model_config"]["hidden"] == [32] and config["train"]["ema"] == 0.999
    assert (run / "report.html").exists() and (run / "summary.json").exists()

    model = genzoo.load(run)
    images = model.sample(16)
    assert images.shape == (16, 1, 28, 28) and images.min() >= 0 and images.max() <= 1

    first = genzoo.sample(run, 9, seed=3)
    assert first.device.type == "cpu" and torch.equal(first, genzoo.sample(run, 9, seed=3))
    assert not torch.equal(first, genzoo.sample(run, 9, seed=4))
    capsys.readouterr()
    genzoo.sample(run, 4, output=tmp_path / "four.npz")
    assert np.load(tmp_path / "four.npz")["samples"].shape == (4, 1, 28, 28)
    assert f"wrote 4 samples of epoch 2 to {tmp_path / 'four.npz'}" in capsys.readouterr().out

    result = genzoo.evaluate(run, iw_samples=20, limit=12)
    assert result["n_examples"] == 12 and result["iw_samples"] == 20
    assert json.loads((run / "eval.json").read_text())["nll"] == result["nll"]

    comparison = genzoo.compare([run, str(run)], output=tmp_path / "both.png")
    assert comparison.figure.stat().st_size > 0 and len(comparison.rows) == 2
    table = str(comparison)
    assert table.startswith("run") and "K" in table and table.count("\n") >= 3
    assert pretty(comparison) == table  # a notebook cell shows the tables


def test_the_api_makes_the_very_run_the_command_makes(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    by_command = tmp_path / "cli"
    assert main(["train", "vae", "--run-dir", str(by_command), *TINY_FLAGS]) == 0
    assert (run / "config.json").read_text() == (by_command / "config.json").read_text()
    weights = [load_file(checkpoint_files(r, "best")[0]) for r in (run, by_command)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    assert main(["sample", str(by_command), "-n", "5", "--seed", "7", "-o", "s.npy"]) == 0
    assert torch.equal(torch.from_numpy(np.load("s.npy")), genzoo.sample(run, 5, seed=7))

    assert main(["eval", str(by_command), "--iw-samples", "10", "--limit", "6"]) == 0
    mine = genzoo.evaluate(run, iw_samples=10, limit=6)
    theirs = json.loads((by_command / "eval.json").read_text())
    assert {k: theirs[k] for k in ("nll", "nll_se", "neg_elbo")} == {
        k: mine[k] for k in ("nll", "nll_se", "neg_elbo")
    }


def test_resume_trains_on_to_the_run_a_longer_training_makes(
    run: Path, tmp_path: Path, capsys
) -> None:
    assert genzoo.resume(run, epochs=3) == run
    longer = genzoo.train("vae", run_dir=tmp_path / "longer", device="cpu", **{**TINY, "epochs": 3})
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    weights = [load_file(checkpoint_files(r, "last")[0]) for r in (run, longer)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    capsys.readouterr()
    genzoo.resume(run)  # at its end: says so, trains nothing
    assert f"{run} is complete" in capsys.readouterr().out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_sampling_asks_the_run_for_abilities_it_has(run: Path) -> None:
    with pytest.raises(GenzooError, match=r"^--class applies to class-conditional models"):
        genzoo.sample(run, 4, label=1)
    with pytest.raises(GenzooError, match=r"^--temperature applies to flows"):
        genzoo.sample(run, 4, temperature=0.5)


def test_many_samples_are_drawn_in_batches_and_a_few_in_one_draw(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60,000 samples of a diffusion model in one batch would not fit in memory: sample
    draws SAMPLE_BATCH at a time; up to that, the very images of one seeded draw."""
    model = genzoo.load(run)
    with isolated_rng(3, torch.device("cpu")):
        one_draw = model.sample(9)
    assert torch.equal(genzoo.sample(run, 9, seed=3), one_draw)
    sizes = []
    real_sample = VAE.sample

    def recording_sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        sizes.append(n)
        return real_sample(self, n, temperature)

    monkeypatch.setattr(VAE, "sample", recording_sample)
    n = 2 * SAMPLE_BATCH + SAMPLE_BATCH // 2
    assert genzoo.sample(run, n, seed=3).shape == (n, 1, 28, 28)
    assert sizes == [SAMPLE_BATCH, SAMPLE_BATCH, SAMPLE_BATCH // 2]


# ----------------------------------------------------------------------------- bad input


def vae_run(folder: Path) -> Path:
    """A run folder with a VAE's config and no checkpoint: every mistake below is refused
    before a model would be loaded."""
    save_run_config(folder, RunConfig("vae", TrainConfig(), VAEConfig()))
    return folder


def diffusion_run(folder: Path) -> Path:
    defaults = MODELS["diffusion"].training_defaults()
    save_run_config(folder, RunConfig("diffusion", TrainConfig(**defaults), DiffusionConfig()))
    return folder


Call = Callable[[Path], Any]  # given the folder to work in, as the command is

# (the API call, the command that makes the same mistake, the text both say: None where
# the whole line is the same; the command None where the mistake has no flag form)
BAD_INPUT: list[tuple[str, Call, list[str] | None, str | None]] = [
    (
        "another family's setting",
        lambda tmp: genzoo.train("vae", arch="conv"),
        ["train", "vae", "--arch", "conv"],
        "--arch is a flag of gan, not vae",
    ),
    (
        "a setting out of bounds",
        lambda tmp: genzoo.train("vae", latent_dim=-3),
        ["train", "vae", "--latent-dim", "-3"],
        "--latent-dim: must be positive",
    ),
    (
        "a rate of averaging of 1",
        lambda tmp: genzoo.train("vae", ema=1),
        ["train", "vae", "--ema", "1"],
        "--ema: must be below 1",
    ),
    (
        "a device that does not exist",
        lambda tmp: genzoo.train("vae", device="gpu"),
        ["train", "vae", "--device", "gpu"],
        "--device",
    ),
    (
        "RGB images for DRAW",
        lambda tmp: genzoo.train("draw", dataset="folder:X", channels=3),
        ["train", "draw", "--dataset", "folder:X", "--channels", "3"],
        None,
    ),
    (
        "a binarization the family is not defined for",
        lambda tmp: genzoo.train("realnvp", binarize="dynamic", run_dir=tmp / "r", device="cpu"),
        ["train", "realnvp", "--binarize", "dynamic", "--run-dir", "r", "--device", "cpu"],
        None,
    ),
    (
        "an unknown family",
        lambda tmp: genzoo.train("vea"),
        None,
        "unknown model 'vea'; choose one of vae, hvae, bvae,",
    ),
    (
        "a misspelt setting",
        lambda tmp: genzoo.train("vae", latent_dimm=3),
        None,
        "unknown setting 'latent_dimm' of vae (did you mean latent_dim?); its settings: ",
    ),
    (
        "a number where a list goes",
        lambda tmp: genzoo.train("vae", hidden=32),
        None,
        "--hidden must be a list of whole numbers, got 32",
    ),
    (
        "a string where True or False goes",
        lambda tmp: genzoo.train("vae", compile="yes"),
        None,
        "--compile must be True or False, got 'yes'",
    ),
    (
        "no run folder",
        lambda tmp: genzoo.evaluate(tmp / "none"),
        ["eval", "none"],
        None,
    ),
    (
        "negative importance samples",
        lambda tmp: genzoo.evaluate(vae_run(tmp / "v"), iw_samples=-1),
        ["eval", "v", "--iw-samples", "-1"],
        "--iw-samples: must be >= 0",
    ),
    (
        "a split that is not held out",
        lambda tmp: genzoo.evaluate(vae_run(tmp / "v"), split="train"),
        ["eval", "v", "--split", "train"],
        "--split",
    ),
    (
        "a sampling setting of another family",
        lambda tmp: genzoo.evaluate(vae_run(tmp / "v"), sample_steps=10),
        ["eval", "v", "--sample-steps", "10"],
        None,
    ),
    (
        "a sampling setting without quality scores",
        lambda tmp: genzoo.evaluate(diffusion_run(tmp / "d"), sample_steps=10),
        ["eval", "d", "--sample-steps", "10"],
        None,
    ),
    (
        "a sampling setting out of bounds",
        lambda tmp: genzoo.evaluate(diffusion_run(tmp / "d"), quality=True, sample_steps=0),
        ["eval", "d", "--quality", "--sample-steps", "0"],
        "--sample-steps: must be positive",
    ),
    (
        "a keyword like none of evaluate's",
        lambda tmp: genzoo.evaluate(vae_run(tmp / "v"), steps=3),
        None,
        "unknown keyword 'steps' of genzoo.evaluate; its keywords: run, iw_samples, limit, "
        "skip, split, estimator, quality, n_samples, output, device, data_dir, class_prior, "
        "sampler, sample_steps, guidance",
    ),
    (
        "a misspelt keyword of evaluate",
        lambda tmp: genzoo.evaluate(vae_run(tmp / "v"), iw_sample=100),
        None,
        "unknown keyword 'iw_sample' of genzoo.evaluate (did you mean iw_samples?); ",
    ),
    (
        "a misspelt keyword of sample",
        lambda tmp: genzoo.sample(vae_run(tmp / "v"), 4, temprature=0.5),
        None,
        "unknown keyword 'temprature' of genzoo.sample (did you mean temperature?); ",
    ),
    (
        "a misspelt keyword of load",
        lambda tmp: genzoo.load(vae_run(tmp / "v"), devce="cpu"),
        None,
        "unknown keyword 'devce' of genzoo.load (did you mean device?); ",
    ),
    (
        "an image format sample does not write",
        lambda tmp: genzoo.sample(vae_run(tmp / "v"), output="x.jpg"),
        ["sample", "v", "-o", "x.jpg"],
        None,
    ),
    (
        "too many images for a grid",
        lambda tmp: genzoo.sample(vae_run(tmp / "v"), 100000, output="huge.png"),
        ["sample", "v", "-n", "100000", "-o", "huge.png"],
        None,
    ),
    (
        "no samples",
        lambda tmp: genzoo.sample(vae_run(tmp / "v"), 0),
        ["sample", "v", "-n", "0"],
        "-n: must be positive",
    ),
    (
        "a negative temperature",
        lambda tmp: genzoo.sample(vae_run(tmp / "v"), temperature=-1.0),
        ["sample", "v", "--temperature", "-1"],
        "must be >= 0.0",
    ),
    (
        "guidance for a family without it",
        lambda tmp: genzoo.load(vae_run(tmp / "v"), guidance=2.0),
        ["sample", "v", "--guidance", "2"],
        None,
    ),
    (
        "one run that is not a run folder",
        lambda tmp: genzoo.compare([vae_run(tmp / "v"), tmp / "none"]),
        ["compare", "v", "none"],
        None,
    ),
    (
        "one run where a list goes",
        lambda tmp: genzoo.compare("v"),
        None,
        "give a list of runs, e.g. ['v'], not one",
    ),
    ("no runs", lambda tmp: genzoo.compare([]), None, "give at least one run to compare"),
    (
        "resuming a folder that holds no run",
        lambda tmp: genzoo.resume(tmp / "none"),
        ["resume", "none"],
        None,
    ),
    (
        "resuming at a negative rate",
        lambda tmp: genzoo.resume(vae_run(tmp / "v"), epochs=4, lr=-1.0),
        ["resume", "v", "--epochs", "4", "--lr", "-1"],
        "--lr: must be positive",
    ),
]


def command_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The one line the command prints for a mistake (exit status 2), without its
    'genzoo: error: ' or 'genzoo CMD: error: ' lead."""
    with pytest.raises(SystemExit) as exit_info:  # argparse exits itself; others return 2
        raise SystemExit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err.split(": error: ", 1)[1].strip()


@pytest.mark.parametrize(
    ("what", "call", "argv", "shared"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_raises_the_commands_one_line_message(
    what: str,
    call: Call,
    argv: list[str] | None,
    shared: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # the commands' relative folders are the calls' tmp ones

    def no_work(*args, **kwargs):
        raise AssertionError("a model was loaded before the mistake was refused")

    monkeypatch.setattr(api, "load_trained", no_work)
    with pytest.raises(GenzooError) as raised:
        call(Path())
    message = str(raised.value)
    assert "\n" not in message
    if argv is None:
        assert message.startswith(shared)
        return
    said = command_error(argv, capsys)
    if shared is None:
        assert message == said
    else:  # argparse words a flag's bounds in its own way: the same words, "argument" first
        assert shared.replace(":", "") in message and shared in said


def test_what_python_raises_in_its_own_types_is_the_commands_one_line(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    under_a_file = tmp_path / "file" / "run"  # a NotADirectoryError from mkdir
    with pytest.raises(GenzooError) as raised:
        genzoo.train("vae", run_dir=under_a_file, **TINY, device="cpu")
    said = command_error(["train", "vae", "--run-dir", str(under_a_file), *TINY_FLAGS], capsys)
    assert str(raised.value) == said and said.endswith("a file is in the way of a folder")

    argv = ["train", "vae", "--run-dir", str(tmp_path / "r"), *TINY_FLAGS]

    def raising(err: BaseException) -> Callable[..., None]:
        def train_run(*args: Any, **kwargs: Any) -> None:
            raise err

        return train_run

    # CUDA's allocator and the CPU's word running out of memory differently.
    for err in (
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8e10"),
    ):
        monkeypatch.setattr(api, "train_run", raising(err))
        with pytest.raises(GenzooError) as raised:
            genzoo.train("vae", run_dir=tmp_path / "r", **TINY, device="cpu")
        said = command_error(argv, capsys)
        assert str(raised.value) == said == "out of memory; choose smaller sizes or batches"

    # A divergence keeps its own type and exit status through both.
    monkeypatch.setattr(api, "train_run", raising(TrainingDiverged("the loss became NaN")))
    with pytest.raises(TrainingDiverged):
        genzoo.train("vae", run_dir=tmp_path / "r", **TINY, device="cpu")
    assert main(argv) == TrainingDiverged.exit_code == 1
    # A bug, and an OSError that names no file (a broken pipe), keep their type.
    for err in (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), BrokenPipeError()):
        monkeypatch.setattr(api, "train_run", raising(err))
        with pytest.raises(type(err)):
            genzoo.train("vae", run_dir=tmp_path / "r", **TINY, device="cpu")
