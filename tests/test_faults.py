"""What a user meets when things go wrong: every bad value of every numeric flag, a
diverging rate in every family, a full disk, a damaged config.json. Each ends with one
line and no traceback: exit 2 for a mistake to fix, 1 for divergence."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genzoo import quality
from genzoo.cli import main
from genzoo.config import TrainConfig, field_kind
from genzoo.errors import GenzooError
from genzoo.models import MODELS
from genzoo.runs import build_model, checkpoint_files, load_checkpoint, load_run_config

TINY = ["--batch-size", "16", "--val-size", "20", "--device", "cpu"]
SMALL = {
    "vae": ["--hidden", "16", "--latent-dim", "2"],
    "bvae": ["--hidden", "16", "--latent-dim", "8"],
    "realnvp": ["--width", "4", "--n-couplings", "1", "--n-scales", "2", "--no-compile"],
    "draw": [
        *("--steps", "2", "--enc-hidden", "16", "--dec-hidden", "16", "--latent-dim", "4"),
        "--no-compile",
    ],
}


def numeric_flags() -> list[tuple[str, str, type]]:
    """(model, flag, type) for every int and float field of the training and model configs."""
    found = []
    for model, family in MODELS.items():
        for cls in (TrainConfig, family.config) if model == "vae" else (family.config,):
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                kind = field_kind(hints[f.name])
                if kind in (int, float):
                    found.append((model, "--" + f.name.replace("_", "-"), kind))
    return found


BAD_VALUES = ["x", "nan", "inf", "-inf", "-1", "1e400", "1e30", "99999999999999999999"]


@pytest.mark.parametrize(("model", "flag", "kind"), numeric_flags())
def test_every_numeric_flag_refuses_bad_values(capsys, model: str, flag: str, kind: type) -> None:
    for value in BAD_VALUES + (["0.5"] if kind is int else []):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", model, flag, value, "--run-dir", "/nonexistent/never-written"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, (flag, value)
        assert flag in err and "Traceback" not in err and err.count("\n") == 1, (flag, value, err)
    assert not Path("/nonexistent").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--hidden", "0"), ("--hidden", "500,-1"), ("--hidden", "2000000"), ("--hidden", "5,x")]
    + [("--sample-epochs", v) for v in ("-1", "1,a", "99999999")],
)
def test_size_lists_refuse_bad_values(capsys, flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "vae", flag, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and flag in err and err.count("\n") == 1


def test_a_fractional_count_in_config_json_is_refused(tmp_path: Path, capsys) -> None:
    from genzoo.runs import load_run_config as load

    run = tmp_path / "run"
    run.mkdir()
    cfg = {"model": "vae", "train": {"epochs": 5.5}, "model_config": {}}
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GenzooError, match="--epochs must be an int"):
        load(run)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("genzoo: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_diverging_rate_is_a_clean_stop(data_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["train", "vae", "--lr", "1e4", "--epochs", "2", "--run-dir", str(tmp_path / "r")]
    assert main([*argv, *SMALL["vae"], *TINY]) == 1
    assert "training diverged" in one_error_line(capsys)


@pytest.mark.parametrize("model", [*SMALL, "gan", "ae"])
def test_weights_that_turn_infinite_are_a_clean_stop_in_every_family(
    data_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    """Whatever a family builds from its networks' outputs (a Normal's scale, Bernoulli
    logits, the flow's z), weights gone to infinity end the run as divergence (exit 1),
    never as a ValueError from torch.distributions."""
    if model == "gan":  # its quality probe's feature net, trained before Adam is broken
        quality.load_or_train_feature_net(epochs=1, val_size=20)
    original, steps = torch.optim.Adam.step, []

    def step_then_blow_up(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 2:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(math.inf)
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_blow_up)
    argv = ["train", model, "--epochs", "1", "--run-dir", str(tmp_path / model)]
    assert main([*argv, *SMALL.get(model, []), *TINY]) == 1
    assert "training diverged before its first checkpoint" in one_error_line(capsys)


def test_a_divergence_after_a_checkpoint_keeps_it_and_says_how_to_go_on(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    argv = ["train", "vae", "--epochs", "1", "--run-dir", str(run), *SMALL["vae"], *TINY]
    assert main(argv) == 0
    assert main(["resume", str(run), "--epochs", "2", "--lr", "1e4"]) == 1
    err = one_error_line(capsys)
    assert "after epoch 1" in err and f"genzoo resume {run} --lr LR" in err
    cfg = load_run_config(run)
    assert load_checkpoint(run, "last", build_model(cfg, (1, 28, 28)))["epoch"] == 1


def test_a_damaged_config_json_is_one_line(data_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "vae", "--epochs", "1", "--run-dir", str(run), *SMALL["vae"], *TINY]) == 0
    for text in ("{not json", json.dumps({"model": "nosuch", "train": {}, "model_config": {}})):
        (run / "config.json").write_text(text)
        for argv in (["eval", str(run)], ["resume", str(run)], ["sample", str(run)]):
            assert main(argv) == 2
            assert str(run) in one_error_line(capsys)


def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``mount`` for one test, where this machine lets tests mount one."""
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)])
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; test_runs.py simulates the faults instead")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from tmpfs(tmp_path / "disk", "size=4m")


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    yield from tmpfs(tmp_path / "ro", "ro")


def test_a_full_disk_ends_with_one_line_and_keeps_the_last_checkpoint(
    data_dir: Path, small_disk: Path, capsys
) -> None:
    run = small_disk / "run"
    # 100k parameters: 1.2 MB a checkpoint pair, so the third pair no longer fits.
    argv = ["train", "vae", "--hidden", "64", "--epochs", "20", "--run-dir", str(run), *TINY]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert f"no space left on {small_disk}" in err or "No space left" in err
    assert [p for p in run.rglob("*.tmp")] == []
    cfg = load_run_config(run)
    state = load_checkpoint(run, "last", build_model(cfg, (1, 28, 28)))
    assert state["epoch"] >= 1 and f"after epoch {state['epoch']}" in err
    assert checkpoint_files(run, "last")[0].exists()


def test_an_output_place_that_cannot_be_a_folder_is_one_line(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    assert main(["train", "vae", "--epochs", "1", "--run-dir", str(run), *SMALL["vae"], *TINY]) == 0
    (tmp_path / "file").write_text("")
    assert main(["sample", str(run), "-o", str(tmp_path / "file" / "x.png")]) == 2
    assert "a file is in the way of a folder" in one_error_line(capsys)
    assert main(["train", "vae", "--run-dir", str(tmp_path / "file" / "run"), *TINY]) == 2
    assert "file" in one_error_line(capsys)


def test_a_second_training_of_a_folder_is_refused(
    data_dir: Path, tmp_path: Path, capsys, lock_held_elsewhere
) -> None:
    run = tmp_path / "run"
    assert main(["train", "vae", "--epochs", "1", "--run-dir", str(run), *SMALL["vae"], *TINY]) == 0
    with lock_held_elsewhere(run) as pid:
        assert main(["resume", str(run), "--epochs", "2"]) == 2
        assert f"another genzoo process (PID {pid})" in one_error_line(capsys)
    assert main(["resume", str(run), "--epochs", "2"]) == 0  # the killed holder left no lock


def test_a_read_only_place_is_one_line(data_dir: Path, read_only_disk: Path, capsys) -> None:
    argv = ["train", "vae", "--run-dir", str(read_only_disk / "run"), *SMALL["vae"], *TINY]
    assert main(argv) == 2
    assert "Read-only file system" in one_error_line(capsys)


def test_every_flag_the_readme_names_exists(capsys) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", readme))
    helps = ""
    for argv in (
        *(["train", model, "--help"] for model in MODELS),
        *(
            [command, "--help"]
            for command in ("eval", "sample", "compare", "resume", "plot", "study", "report")
        ),
        ["train", "--help"],
    ):
        with pytest.raises(SystemExit):
            main(argv)
        helps += capsys.readouterr().out
    # torchrun's own
    external = {"--nproc-per-node", "--nnodes", "--node-rank", "--rdzv-backend", "--rdzv-endpoint"}
    assert sorted(f for f in named - external if f not in helps) == []
