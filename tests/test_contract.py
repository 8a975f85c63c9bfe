"""The model contract (models/base.py): a new family is one file plus one line in MODELS.

A toy family defined here, independent Bernoulli pixels with one logit per pixel, goes
through every command of the CLI; the loop's checks of the contract, and the absence of
capability probing outside models/, are tested too.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Independent

import genzoo
from genzoo.cli import main
from genzoo.models import MODELS, GenerativeModel, ModelFamily


@dataclass
class ToyConfig:
    init_logit: float = field(default=0.0, metadata={"help": "starting logit", "min": -10})


class Toy(GenerativeModel):
    val_metric = "nll"
    eval_terms: ClassVar[dict[str, str]] = {"nll": "toy NLL"}
    bernoulli_pixels = False

    def __init__(self, cfg: ToyConfig, image_shape: tuple[int, ...]):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.logits = nn.Parameter(torch.full((math.prod(image_shape),), cfg.init_logit))

    def pixels(self) -> Independent:
        return Independent(Bernoulli(logits=self.logits), 1)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        nll = -self.pixels().log_prob(x.flatten(1)).mean()
        return nll, {"loss": nll.item()}

    def evaluate_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"nll": -self.pixels().log_prob(x.flatten(1))}

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return self.pixels().sample((n,)).view(n, *self.image_shape)


@pytest.fixture
def toy_family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "toy", ModelFamily(ToyConfig, Toy))


TINY = ["--batch-size", "16", "--val-size", "20", "--device", "cpu"]


def test_a_new_family_is_one_class_and_one_line(
    toy_family: None, data_dir: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "toy"
    assert main(["train", "toy", "--epochs", "2", "--run-dir", str(run), *TINY]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["val_nll"] < rows[0]["val_nll"]
    capsys.readouterr()
    assert main(["eval", str(run), "--iw-samples", "10"]) == 0
    assert "toy NLL" in capsys.readouterr().out
    assert json.loads((run / "eval.json").read_text())["nll"] > 0
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0
    assert main(["plot", str(run)]) == 0
    assert {"curves.png", "samples.png"} <= {p.name for p in (run / "figures").iterdir()}
    assert main(["resume", str(run), "--epochs", "3"]) == 0
    assert main(["compare", str(run), str(run), "-o", str(tmp_path / "c.png")]) == 0
    # What the toy does not declare is refused with a clear line, not probed for.
    assert main(["sample", str(run), "--temperature", "0.5", "-o", str(tmp_path / "t.png")]) == 2
    assert "flows" in capsys.readouterr().err


def test_stats_without_a_loss_are_refused(toy_family: None) -> None:
    class NoLoss(Toy):
        def loss(self, x):
            nll, _ = super().loss(x)
            return nll, {"nll": nll.item()}

    model = NoLoss(ToyConfig(), (1, 4, 4))
    with pytest.raises(TypeError, match="'loss'"):
        model.train_step(torch.zeros(2, 1, 4, 4), model.configure_optimizers(1e-3))


def test_default_hooks_and_capabilities() -> None:
    model = Toy(ToyConfig(), (1, 4, 4))
    assert model.epoch_diagnostics(torch.zeros(2, 1, 4, 4)) == {}
    assert not (model.can_encode or model.has_likelihood or model.sample_temperatures)
    with pytest.raises(NotImplementedError, match="can_encode"):
        model.encode(torch.zeros(1, 1, 4, 4))


def test_no_capability_probing_outside_the_models() -> None:
    """The loop, figures, CLI and evaluation read declared capabilities: no hasattr, and
    getattr only on configs and argparse namespaces."""
    root = Path(genzoo.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "hasattr":
                    pytest.fail(f"hasattr in {path.name}:{node.lineno}")
                if node.func.id == "getattr":
                    target = ast.unparse(node.args[0])
                    assert "model" not in target or "config" in target, (path.name, target)


def test_help_names_the_families(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in MODELS) and "``" not in out


def test_a_training_flag_before_the_model_name_counts(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["train", "--epochs", "1", "vae", "--hidden", "8", "--latent-dim", "2"]
    assert main([*argv, "--run-dir", str(run), *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 1


def test_train_size_is_recorded_and_printed(data_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    flags = ["--train-size", "32", "--epochs", "1", "--hidden", "8", "--latent-dim", "2"]
    assert main(["train", "vae", *flags, "--run-dir", str(run), *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["train_size"] == 32
    assert "32 train (the first 32" in capsys.readouterr().out
    too_many = ["train", "vae", "--train-size", "1000", "--run-dir", str(tmp_path / "b"), *TINY]
    assert main(too_many) == 2
    assert "--train-size must be between 1 and 80" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "vae", "--lr", "nan"], "finite"),
        (["train", "vae", "--lr", "inf"], "finite"),
        (["train", "vae", "--epochs", "1e20"], "not a valid int"),
        (["train", "vae", "--lr-schedule", "linear"], "invalid choice"),
        (["train", "vae", "--checkpoint-minutes", "-1"], ">= 0"),
        (["resume", "RUN", "--lr", "-1"], "must be positive"),
    ],
)
def test_bad_numbers_exit_2(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    argv = [str(tmp_path) if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_bad_value_in_config_json_is_one_clear_line(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    assert (
        main(["train", "vae", "--epochs", "1", "--hidden", "8", "--run-dir", str(run), *TINY]) == 0
    )
    config = json.loads((run / "config.json").read_text())
    config["model_config"]["latent_dim"] = -2
    (run / "config.json").write_text(json.dumps(config))
    assert main(["eval", str(run)]) == 2
    assert "--latent-dim must be positive" in capsys.readouterr().err
