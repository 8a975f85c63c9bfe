"""The model contract (models/base.py): a new family is one file plus one line in MODELS.

One contract test runs over every entry of ``MODELS`` (normflows' pattern): a family is
covered by being registered. A toy family defined here, independent Bernoulli pixels
with one logit per pixel and a figure of its own, goes through every command of the CLI;
the abstract methods, the declared interfaces and the absence of capability probing
outside models/ are tested too.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Independent

import genzoo
from genzoo.cli import main
from genzoo.data import Data, Split
from genzoo.errors import GenzooError
from genzoo.models import MODELS, GenerativeModel, ModelFamily
from genzoo.models import base as contract
from genzoo.models.base import (
    Conditional,
    Encodes,
    FigureContext,
    HasPrior,
    Likelihood,
    MixtureSampler,
    PixelMeans,
    Reconstructs,
    Tempered,
    trained_on_labels,
)
from genzoo.runs import load_checkpoint, save_checkpoint

INTERFACES = (
    Encodes,
    Reconstructs,
    HasPrior,
    PixelMeans,
    Likelihood,
    MixtureSampler,
    Conditional,
    Tempered,
)


@dataclass
class ToyConfig:
    init_logit: float = field(default=0.0, metadata={"help": "starting logit", "min": -10})


class Toy(GenerativeModel):
    val_metric = "nll"
    eval_terms: ClassVar[dict[str, str]] = {"nll": "toy NLL"}

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

    def figures(self, context: FigureContext) -> dict[str, contract.Figure]:
        return {"toy_probabilities.png": self.draw_probabilities}

    def draw_probabilities(self, path: Path) -> None:
        fig, ax = plt.subplots()
        ax.imshow(torch.sigmoid(self.logits).detach().view(self.image_shape[-2:]).numpy())
        fig.savefig(path)
        plt.close(fig)


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
    # Its own figure came through the hook, at the end of training and on `plot`.
    own = run / "figures" / "toy_probabilities.png"
    assert own.stat().st_size > 0
    own.unlink()
    capsys.readouterr()
    assert main(["eval", str(run), "--iw-samples", "10"]) == 0
    assert "toy NLL" in capsys.readouterr().out
    assert json.loads((run / "eval.json").read_text())["nll"] > 0
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0
    assert main(["plot", str(run)]) == 0
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"curves.png", "samples.png", "toy_probabilities.png"} <= figures
    assert main(["report", str(run)]) == 0
    assert "toy_probabilities" in (run / "report.html").read_text()
    assert main(["resume", str(run), "--epochs", "3"]) == 0
    assert main(["compare", str(run), str(run), "-o", str(tmp_path / "c.png")]) == 0
    # What the toy does not declare is refused with a clear line, not probed for.
    assert main(["sample", str(run), "--temperature", "0.5", "-o", str(tmp_path / "t.png")]) == 2
    assert "realnvp" in capsys.readouterr().err


def test_stats_without_a_loss_are_refused(toy_family: None) -> None:
    class NoLoss(Toy):
        def loss(self, x):
            nll, _ = super().loss(x)
            return nll, {"nll": nll.item()}

    model = NoLoss(ToyConfig(), (1, 4, 4))
    with pytest.raises(TypeError, match="'loss'"):
        model.train_step(torch.zeros(2, 1, 4, 4), model.configure_optimizers(1e-3))


def test_default_hooks() -> None:
    model = Toy(ToyConfig(), (1, 4, 4))
    assert model.epoch_diagnostics(torch.zeros(2, 1, 4, 4)) == {}
    assert model.ready_to_sample()
    assert not isinstance(model, INTERFACES)


@pytest.mark.parametrize("method", ["loss", "evaluate_batch", "sample"])
def test_a_family_without_a_required_method_cannot_be_built(method: str) -> None:
    namespace = {
        name: getattr(Toy, name)
        for name in ("__init__", "loss", "evaluate_batch", "sample")
        if name != method
    }
    incomplete = type("Incomplete", (GenerativeModel,), namespace)
    with pytest.raises(TypeError, match=method):
        incomplete(ToyConfig(), (1, 4, 4))


@pytest.mark.parametrize("interface", INTERFACES)
def test_an_ability_cannot_be_declared_without_its_methods(interface: type) -> None:
    declared = type("Declared", (Toy, interface), {})
    with pytest.raises(TypeError, match="abstract"):
        declared(ToyConfig(), (1, 4, 4))


# ---------------------------------------------------------------------- every family

SHAPE = (1, 28, 28)


def images(family: ModelFamily, n: int, seed: int) -> torch.Tensor:
    """n images in the family's default pixel kind: 0/1 or 8-bit grey levels."""
    generator = torch.Generator().manual_seed(seed)
    grey = torch.randint(0, 256, (n, *SHAPE), generator=generator).float() / 255
    return grey if family.binarize[0] == "none" else torch.bernoulli(grey, generator=generator)


def tiny_data(family: ModelFamily) -> Data:
    labels = torch.arange(16) % 10
    splits = [Split(images(family, 16, seed), labels) for seed in (1, 2, 3)]
    return Data(*splits, binarize="none")


# Options that change what a family's model is (its networks, the interfaces it serves),
# each held to the contract too: the labels of vae and gan.
VARIANTS: dict[str, tuple[dict, ...]] = {
    "vae": ({"conditional": True}, {"labels": "10"}, {"labels": "all"}),
    "gan": tuple(
        {"conditional": True, "arch": arch, "d_conditioning": how, "conv_width": 8}
        for arch in ("mlp", "conv")
        for how in ("projection", "concat")
    ),
}
CASES = [(name, {}) for name in sorted(MODELS)] + [
    (name, options) for name, variants in VARIANTS.items() for options in variants
]


def case_id(case: tuple[str, dict]) -> str:
    name, options = case
    return "-".join([name, *(f"{k}={v}" for k, v in options.items())])


def terms_of(model: GenerativeModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-example terms, as evaluation takes them: with labels for a model trained
    on them."""
    if trained_on_labels(model):
        return model.evaluate_labelled(x, torch.arange(len(x)) % model.class_count())
    return model.evaluate_batch(x)


def outputs(model: GenerativeModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the model computes from x and from noise, under a fixed seed."""
    torch.manual_seed(0)
    result = dict(terms_of(model, x))
    result["samples"] = model.sample(3)
    return result


def exercise_interfaces(model: GenerativeModel, x: torch.Tensor) -> None:
    """Each declared interface's methods, called once, with their shapes and ranges."""
    in_unit_range = lambda t: bool(((t >= 0) & (t <= 1)).all())  # noqa: E731
    if isinstance(model, Encodes):
        z = model.encode(x)
        assert z.shape[0] == len(x) and torch.isfinite(z).all()
        decoded = model.decode(z)
        assert decoded.shape == x.shape and in_unit_range(decoded)
    if isinstance(model, Reconstructs):
        recon = model.reconstruct(x)
        assert recon.shape == x.shape and in_unit_range(recon)
    if isinstance(model, HasPrior):
        assert model.prior().sample((2,)).shape[0] == 2
    if isinstance(model, PixelMeans):
        means = model.sample_means(3)
        assert means.shape == (3, *SHAPE) and in_unit_range(means)
    if isinstance(model, Likelihood):
        estimator = model.likelihood_estimator
        assert estimator.kind in ("estimate", "lower bound", "exact")
        for proposal in model.proposals or ("posterior",):
            log_p = model.log_likelihood(x, 2, proposal)
            assert log_p.shape == (len(x),) and log_p.dtype == torch.float64
            assert torch.isfinite(log_p).all()
    if isinstance(model, MixtureSampler):
        assert model.mixture().sample((2,)).shape[0] == 2
        assert model.sample_standard_normal(2).shape == (2, *SHAPE)
    if isinstance(model, Conditional):
        labels = torch.tensor([0, 1])
        if trained_on_labels(model):  # the class reaches the networks: same noise, new class
            torch.manual_seed(0)
            drawn = model.sample_classes(labels)
            torch.manual_seed(0)
            assert not torch.equal(drawn, model.sample_classes(labels.flip(0)))
            assert drawn.shape == (2, *SHAPE) and in_unit_range(drawn)
        else:  # refused, clearly, where trained without labels
            with pytest.raises(GenzooError, match="--conditional"):
                model.sample_classes(labels)
    if isinstance(model, Tempered):
        for t in model.figure_temperatures():
            assert in_unit_range(model.sample(2, temperature=t))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_registered_family_keeps_the_contract(case: tuple[str, dict], tmp_path: Path) -> None:
    name, options = case
    family = MODELS[name]
    torch.manual_seed(0)
    model = family.model(family.config(**options), SHAPE)
    data, x = tiny_data(family), images(family, 4, seed=4)
    model.before_training(data, 0)
    passed = trained_on_labels(model) and model.batch_labels()
    labels = data.train.labels if passed else None
    stats = model.train_step(data.train.images, model.configure_optimizers(1e-3), labels)
    assert math.isfinite(stats["loss"])
    model.eval()
    model.after_training(data)
    terms = terms_of(model, x)
    assert terms and all(v.shape == (len(x),) and torch.isfinite(v).all() for v in terms.values())
    assert model.val_metric is None or model.val_metric in terms
    samples = model.sample(3)
    assert samples.shape == (3, *SHAPE) and ((samples >= 0) & (samples <= 1)).all()
    exercise_interfaces(model, x)
    for figure_name, draw in model.figures(FigureContext(data.test)).items():
        draw(tmp_path / figure_name)
        assert (tmp_path / figure_name).stat().st_size > 0

    # A checkpoint round trip gives a model that computes the same.
    save_checkpoint(tmp_path, "last", model, {"epoch": 1})
    torch.manual_seed(1)
    loaded = family.model(family.config(**options), SHAPE).eval()
    load_checkpoint(tmp_path, "last", loaded)
    before, after = outputs(model, x), outputs(loaded, x)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def attributes_read_on_models(tree: ast.AST) -> set[str]:
    """Names read as ``model.X``, ``self.model.X`` or ``trainer.model.X``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            target = ast.unparse(node.value)
            if target == "model" or target.endswith(".model"):
                names.add(node.attr)
    return names


def test_other_modules_call_only_what_the_contract_declares() -> None:
    """Outside models/, a model is used through GenerativeModel and the declared
    interfaces alone: no hasattr, getattr only on configs and argparse namespaces, and
    every attribute read on a model declared by the base or an interface."""
    kinds = (GenerativeModel, *INTERFACES)
    declared = set().union(
        *(dir(kind) for kind in kinds), *(kind.__annotations__ for kind in kinds)
    )
    root = Path(genzoo.__file__).parent
    for path in [*root.glob("*.py"), *root.glob("studies/*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "hasattr":
                    pytest.fail(f"hasattr in {path.name}:{node.lineno}")
                if node.func.id == "getattr":
                    target = ast.unparse(node.args[0])
                    assert "model" not in target or "config" in target, (path.name, target)
        undeclared = attributes_read_on_models(tree) - declared
        assert not undeclared, f"{path.name} reads {sorted(undeclared)} on a model"


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
