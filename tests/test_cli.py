"""Every CLI command once on tiny data, and the clear-error contract for bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest

from genzoo import api, cli, plots
from genzoo import data as gdata
from genzoo.cli import build_parser, main
from genzoo.runs import checkpoint_files

TINY = [
    "--epochs",
    "2",
    "--batch-size",
    "16",
    "--val-size",
    "20",
    "--hidden",
    "32",
    "--latent-dim",
    "2",
    "--device",
    "cpu",
]


@pytest.fixture
def run_dir(data_dir: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    assert main(["train", "vae", "--run-dir", str(run), *TINY]) == 0
    return run


def test_train_eval_sample_plot(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert json.loads((run_dir / "config.json").read_text())["model_config"]["latent_dim"] == 2

    assert main(["eval", str(run_dir), "--iw-samples", "50", "--limit", "12"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert {"nll", "nll_se", "neg_elbo", "recon", "kl", "iw_samples", "n_examples"} <= result.keys()
    assert result["n_examples"] == 12 and result["iw_samples"] == 50
    assert result["nll"] <= result["neg_elbo"] + 3 * result["nll_se"]
    assert "NLL" in capsys.readouterr().out

    assert (
        main(["eval", str(run_dir), "--iw-samples", "50", "--estimator", "prior", "--split", "val"])
        == 0
    )
    prior = json.loads((run_dir / "eval_prior.json").read_text())
    assert prior["estimator"] == "prior" and prior["n_examples"] == 20

    assert main(["sample", str(run_dir), "-n", "9", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["sample", str(run_dir), "-n", "5", "-o", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (5, 1, 28, 28)

    (run_dir / "figures" / "manifold.png").unlink()
    assert main(["plot", str(run_dir)]) == 0
    assert (run_dir / "figures" / "manifold.png").exists()


def test_resume_continues_to_more_epochs(run_dir: Path) -> None:
    assert main(["train", "--resume", str(run_dir), "--epochs", "3"]) == 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_resume_with_a_new_learning_rate(run_dir: Path) -> None:
    assert main(["train", "--resume", str(run_dir), "--epochs", "4", "--lr", "2.5e-4"]) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == [1e-3, 1e-3, 2.5e-4, 2.5e-4]
    assert json.loads((run_dir / "config.json").read_text())["train"]["lr"] == 2.5e-4
    # The rate sticks: a later resume without --lr keeps it, not the optimizer's first one.
    assert main(["train", "--resume", str(run_dir), "--epochs", "5"]) == 0
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 5 and last["lr"] == 2.5e-4
    # The curves show the rate only where it changed.
    assert plots.curve_panels(None, "neg_elbo", records)["learning rate"] == ["lr"]
    assert "learning rate" not in plots.curve_panels(None, "neg_elbo", records[:2])


def test_data_commands(data_dir: Path, capsys) -> None:
    assert main(["data", "info"]) == 0
    assert "mnist/train-images-idx3-ubyte.gz" in capsys.readouterr().out
    assert main(["data", "verify", "mnist"]) == 0
    assert main(["data", "download", "mnist"]) == 0  # already there: verified, not fetched
    (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    assert main(["data", "verify"]) == 2
    assert "BAD" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "nosuch"], "invalid choice"),
        (["train", "vae", "--latent-dim", "-3"], "must be positive"),
        (["train", "vae", "--hidden", "500,x"], "comma-separated"),
        (["train", "vae", "--lr", "0"], "must be positive"),
        (["train", "vae", "--ema", "1"], "must be below 1"),
        (["train", "vae", "--ema", "-0.5"], "must be >= 0"),
        (["train", "--resume", "RUN", "--lr", "-1"], "must be positive"),
        (["train"], "name a MODEL"),
        (["eval", "no/such/run"], "not a run folder"),
        (["eval", "RUN", "--iw-samples", "-1"], "must be >= 0"),
        (["sample", "RUN", "-o", "x.jpg"], ".png"),
        (["train", "vae", "--run-dir", "RUN"], "already holds a run"),
        (["data", "verify", "cifar"], "unknown dataset"),
        (["train", "vae", "--arch", "conv"], "--arch is a flag of gan, not vae"),
        (["--epochs", "1", "train", "vae"], "training flags follow `train MODEL`"),
        (["--epochs", "1", "train", "vae"], "genzoo train vae --epochs 1"),
        (["sample", "RUN", "-n", "16", "out.png"], "give -o out.png"),
        (["train", "draw", "--dataset", "folder:X", "--channels", "3"], "use --channels 1"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path: Path, capsys, argv, message) -> None:
    run_dir = tmp_path / "run"  # these errors are caught before a run's files are read
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    argv = [str(run_dir) if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:  # argparse exits itself; others return 2
        raise SystemExit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_corrupt_checkpoint_via_cli(run_dir: Path, capsys) -> None:
    # The newest pair damaged: the previous one serves, with a warning.
    (checkpoint_files(run_dir, "best")[0]).write_bytes(b"\x00" * 20)
    assert main(["eval", str(run_dir), "--iw-samples", "5"]) == 0
    assert "warning: the newest 'best' checkpoint is damaged" in capsys.readouterr().err
    # Every pair damaged: one clear line, exit 2.
    for weights in (run_dir / "checkpoints").glob("best-*.safetensors"):
        weights.write_bytes(b"\x00" * 20)
    assert main(["eval", str(run_dir), "--iw-samples", "5"]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and err.count("\n") == 1


def test_module_entry_point_gives_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "genzoo", "eval", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert "not a run folder" in bad.stderr


def test_resume_of_a_complete_run_says_so_and_how_to_train_further(run_dir: Path, capsys) -> None:
    summary = (run_dir / "summary.json").stat().st_mtime_ns
    metrics = (run_dir / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{run_dir} is complete: it reached its last epoch (2 of --epochs 2)" in out
    assert f"genzoo resume {run_dir} --epochs N, with N above 2" in out
    assert "resuming" not in out and "training vae" not in out
    assert (run_dir / "metrics.jsonl").read_text() == metrics
    assert (run_dir / "summary.json").stat().st_mtime_ns == summary


def test_a_run_its_budget_stopped_trains_on_under_a_new_budget(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    assert main(["train", "vae", "--run-dir", str(run), *TINY, "--max-minutes", "1e-9"]) == 0

    def epochs() -> list[int]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["epoch"] for line in lines]

    assert epochs() == [1]
    capsys.readouterr()
    assert main(["resume", str(run)]) == 0  # the same budget: nothing to do, and how to go on
    out = capsys.readouterr().out
    assert f"{run} is complete: its training passes took its 1e-09 minutes" in out
    assert f"genzoo resume {run} --max-minutes M, with M above 0.0 (0: no budget)" in out
    assert epochs() == [1]
    assert main(["resume", str(run), "--max-minutes", "0", "--epochs", "3"]) == 0
    assert epochs() == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["train"]["max_minutes"] == 0
    # The old spelling takes it too; a budget already spent trains nothing.
    assert main(["train", "--resume", str(run), "--epochs", "5", "--max-minutes", "1e-9"]) == 0
    assert epochs() == [1, 2, 3]  # its passes are already past the new budget
    assert main(["train", "--max-minutes", "0", "--resume", str(run), "--epochs", "4"]) == 0
    assert epochs() == [1, 2, 3, 4]


def test_sample_refuses_a_huge_grid_before_the_work(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    for module in (cli, api):  # wherever the command loads the run from
        monkeypatch.setattr(module, "load_trained", no_work)
    huge = tmp_path / "huge.png"
    assert main(["sample", str(run_dir), "-n", "100000", "-o", str(huge)]) == 2
    err = capsys.readouterr().err
    assert "at most 4,096 images" in err and f"-o {tmp_path / 'huge.npy'}" in err
    assert err.count("\n") == 1 and not huge.exists()


def test_sample_writes_into_the_run_folder_and_keeps_a_users_file(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(run_dir), "-n", "4"]) == 0
    assert (run_dir / "samples-n4-seed0.png").stat().st_size > 0
    assert not (tmp_path / "samples.png").exists()
    assert main(["sample", str(run_dir), "-n", "4"]) == 0  # its own file: replaced, and said
    assert "(replacing the file there)" in capsys.readouterr().out

    mine = tmp_path / "mine.npz"
    mine.write_bytes(b"a user's file")
    assert main(["sample", str(run_dir), "-n", "3", "-o", str(mine)]) == 2
    assert "add --force" in capsys.readouterr().err and mine.read_bytes() == b"a user's file"
    assert main(["sample", str(run_dir), "-n", "3", "-o", str(mine), "--force"]) == 0
    assert np.load(mine)["samples"].shape == (3, 1, 28, 28)


def test_the_default_sample_file_is_named_by_every_flag_that_changes_the_draw(
    run_dir: Path,
) -> None:
    """Without -o, samples of another class, temperature or sampler go to a file of
    their own rather than over each other's."""

    def named(*flags: str) -> str:
        args = build_parser().parse_args(["sample", str(run_dir), "-n", "4", *flags])
        return cli.default_samples_file(args).relative_to(run_dir).as_posix()

    assert named() == "samples-n4-seed0.png"
    assert named("--class", "3") == "samples-n4-seed0-class3.png"
    assert named("--temperature", "0.7", "--standard-normal") == (
        "samples-n4-seed0-temperature0.7-standard-normal.png"
    )
    assert named("--sampler", "ddim", "--sample-steps", "10", "--guidance", "2") == (
        "samples-n4-seed0-sampler-ddim-sample-steps10-guidance2.png"
    )


def test_an_interrupted_sample_write_leaves_the_old_file_whole(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"the earlier grid")

    def stopped_halfway(fig, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", stopped_halfway)
    assert main(["sample", str(run_dir), "-n", "4", "-o", str(grid), "--force"]) == 130
    assert grid.read_bytes() == b"the earlier grid"
    assert sorted(tmp_path.glob("grid.png*")) == [grid]  # no temporary file left


def test_compare_and_reference_write_outside_the_current_folder(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["compare", str(run_dir), str(run_dir)]) == 0
    assert (run_dir / "compare.png").stat().st_size > 0
    # The reference scores (a feature net to train) stand in: only where they land counts.
    monkeypatch.setattr(cli, "reference_quality", lambda *args: {"fid": 1.0})
    monkeypatch.setattr(cli, "print_quality", lambda result: None)
    assert main(["eval", "--reference", "test"]) == 0
    assert json.loads((work / "runs" / "reference_test_none.json").read_text()) == {"fid": 1.0}
    assert sorted(p.name for p in work.iterdir()) == ["runs"]


def test_data_commands_report_every_dataset_offline(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(gdata.urllib.request, "urlopen", offline)
    capsys.readouterr()
    assert main(["data", "download"]) == 2  # goes on past the first that fails
    captured = capsys.readouterr()
    assert "mnist: ok (4 files, sizes and MD5s checked)" in captured.out
    for name in ("fashion-mnist", "binarized-mnist"):
        assert f"{name}: not downloaded" in captured.out
    assert "ready: mnist (genzoo data download mnist)" in captured.err
    assert main(["data", "download", "mnist"]) == 0  # only what is asked

    assert main(["data", "verify"]) == 0  # datasets never downloaded are only reported
    assert "fashion-mnist: not downloaded" in capsys.readouterr().out
    assert main(["data", "verify", "fashion-mnist"]) == 2  # named: it must be there
    (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert main(["data", "verify", "mnist"]) == 2
    captured = capsys.readouterr()
    assert "mnist: incomplete: missing t10k-labels-idx1-ubyte.gz" in captured.out
    assert "genzoo data download mnist" in captured.err


def all_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every option of every (sub-)command of the parser."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += all_options(sub)
        else:
            found.append(action)
    return found


def test_help_states_each_default_once() -> None:
    repeated = [
        a.help for a in all_options(build_parser()) if (a.help or "").count("(default:") > 1
    ]
    assert not repeated
