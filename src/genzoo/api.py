"""genzoo from Python: train, load, sample, evaluate and compare runs in a notebook.

    import genzoo

    run = genzoo.train("vae", latent_dim=20, epochs=5)  # a run folder, runs/vae-<stamp>
    model = genzoo.load(run)                           # its best weights, in eval mode
    images = model.sample(16)                          # (16, 1, 28, 28) in [0, 1]
    genzoo.evaluate(run, iw_samples=1000)              # test figures, kept in RUN/eval.json
    genzoo.compare([run, other])                       # their tables, and one figure
    genzoo.resume(run, epochs=10)                      # train on from its last checkpoint

Each function is what its ``genzoo`` command runs (cli.py is a thin layer over this
module), so a run trained here is the run the command trains: the same folder,
checkpoints, metrics, eval.json and page. Keyword arguments are the command's flags by
their Python names (``--latent-dim`` is ``latent_dim``, None leaves one at its default);
a mistake raises ``GenzooError`` with the command's one-line message. Progress bars
are widgets in a notebook (tqdm.auto; ``pip install 'genzoo[notebook]'``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genzoo import plots
from genzoo.comparison import compare_runs, figures_table, quality_table
from genzoo.config import (
    TrainConfig,
    check_fields,
    config_flags,
    config_from_dict,
    field_kind,
    sampling_field_names,
)
from genzoo.cpu import tune_process
from genzoo.errors import GenzooError, raises_user_errors
from genzoo.evaluation import ESTIMATORS, draw_many, evaluate_run
from genzoo.files import write_array
from genzoo.models import MODELS, GenerativeModel, find_preset
from genzoo.models.base import Conditional, MixtureSampler, Tempered, trained_on_labels
from genzoo.rng import isolated_rng
from genzoo.runs import (
    Changes,
    RunConfig,
    check_run_dir,
    load_run_config,
    load_trained,
    new_run_dir,
    resume_config,
)
from genzoo.training import train as train_run

PathLike = str | os.PathLike[str]

MAX_GRID_IMAGES = 4096  # a 64 x 64 grid, 3,900 pixels a side; more as an array
ARRAY_SUFFIXES = (".npy", ".npz")


# ----------------------------------------------------------------------------- checks
#
# The keywords that no config holds are bounded as their flags are, by the field
# metadata that config.check_fields reads for every config: one place for the bounds.


DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Runtime:
    """Where to compute (None: auto, as when the flag is not given)."""

    device: str | None = field(default="auto", metadata={"choices": DEVICES})


@dataclass
class EvalOptions(Runtime):
    """The keywords of ``evaluate`` that are numbers or choices."""

    iw_samples: int | None = field(default=None, metadata={"min": 0})
    limit: int | None = None
    skip: int = field(default=0, metadata={"min": 0})
    split: str = field(default="test", metadata={"choices": ("test", "val")})
    estimator: str = field(default="posterior", metadata={"choices": ESTIMATORS})
    n_samples: int | None = None


@dataclass
class SampleOptions(Runtime):
    """The keywords of ``sample`` that are numbers."""

    n: int = 64
    seed: int = field(default=0, metadata={"min": 0})
    temperature: float | None = field(default=None, metadata={"min": 0.0})
    label: int | None = field(default=None, metadata={"min": 0})


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def flag_of(name: str) -> str:
    """The command's flag of a keyword: latent_dim -> --latent-dim."""
    return "--" + name.replace("_", "-")


def families_with_flag(flag: str | None) -> list[str]:
    """The families whose config has ``flag`` (e.g. "--arch": ["gan"])."""
    return [name for name, family in MODELS.items() if flag in config_flags(family.config)]


def refuse_unknown_settings(model: str, settings: Mapping[str, Any]) -> None:
    """A setting that ``model`` lacks: name the families that have it, or else list
    the ones it has (with the closest first, for a slip of the keyboard)."""
    known = field_names(TrainConfig) | field_names(MODELS[model].config)
    unknown = sorted(settings.keys() - known)
    if not unknown:
        return
    name, flag = unknown[0], flag_of(unknown[0])
    owners = families_with_flag(flag)
    if owners:
        raise GenzooError(f"{flag} is a flag of {', '.join(owners)}, not {model}")
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise GenzooError(
        f"unknown setting {name!r} of {model}{hint}; its settings: {', '.join(sorted(known))}"
    )


# What a value must be where check_fields, which bounds numbers, cannot tell: a flag's
# text is parsed into its type, a keyword's value may be of any.
KIND_WORDS = {bool: "True or False", str: "a string", tuple[int, ...]: "a list of whole numbers"}


def refuse_wrong_kinds(cls: type, values: Mapping[str, Any]) -> None:
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        kind = field_kind(hints[name])
        if value is None or kind not in KIND_WORDS:  # None: check_fields says if it may be
            continue
        expected = (list, tuple) if kind == tuple[int, ...] else kind
        if not isinstance(value, expected):
            raise GenzooError(f"{flag_of(name)} must be {KIND_WORDS[kind]}, got {value!r}")


def checked_config(cls: type, values: Mapping[str, Any]) -> Any:
    """A config of ``cls`` from keyword ``values`` (lists as tuples), checked as flags are."""
    refuse_wrong_kinds(cls, values)
    return config_from_dict(cls, dict(values))


def run_config(model: str, settings: Mapping[str, Any]) -> RunConfig:
    """The config of a new run of family ``model``: ``settings`` (the flags of ``genzoo
    train MODEL`` by their field names; None: not given) over the family's training
    defaults, checked as the command checks its flags."""
    if model not in MODELS:
        raise GenzooError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    family = MODELS[model]
    given = {name: value for name, value in settings.items() if value is not None}
    refuse_unknown_settings(model, given)
    if "preset" in given:  # its settings, then the flags given beside it
        given = {**find_preset(model, given["preset"]).settings, **given}
    train = {k: v for k, v in given.items() if k in field_names(TrainConfig)}
    own = {k: v for k, v in given.items() if k in field_names(family.config)}
    cfg = RunConfig(
        model,
        checked_config(TrainConfig, {**family.training_defaults(), **train}),
        checked_config(family.config, own),
    )
    # A family refuses other images only once the data is loaded (models/draw.py), so the
    # setting that fixes it is named before that. Every family takes grey images (MNIST's).
    if cfg.train.channels not in family.channels:
        takes = " or ".join(str(c) for c in family.channels)
        raise GenzooError(
            f"model {model} is defined for --channels {takes}, not {cfg.train.channels}: "
            "use --channels 1 (RGB images are then read as grey)"
        )
    return cfg


def sampling_fields() -> dict[str, tuple[dataclasses.Field, Any, str]]:
    """The settings of ``sample`` that a trained model may be sampled with, from every
    family's config (fields marked "sampling"): name -> (field, type, family)."""
    found: dict[str, tuple[dataclasses.Field, Any, str]] = {}
    for name, family in MODELS.items():
        hints = typing.get_type_hints(family.config)
        for f in dataclasses.fields(family.config):
            if f.metadata.get("sampling"):
                found.setdefault(f.name, (f, hints[f.name], name))
    return found


def refuse_unknown_keywords(function: Callable[..., Any], given: Mapping[str, Any]) -> None:
    """A keyword of ``function``'s ``**sampling`` that no family samples with is a slip of
    the keyboard, not a sampling setting (``iw_sample=100`` for ``iw_samples``): refused,
    as Python refuses an unknown keyword, naming the closest of all its keywords."""
    sampling = sampling_fields()
    unknown = sorted(given.keys() - sampling.keys())
    if not unknown:
        return
    keywords = [
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is not parameter.VAR_KEYWORD
    ] + list(sampling)
    close = difflib.get_close_matches(unknown[0], keywords, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise GenzooError(
        f"unknown keyword {unknown[0]!r} of genzoo.{function.__name__}{hint}; its keywords: "
        + ", ".join(keywords)
    )


def sampling_settings(run_dir: Path, given: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling settings given (None: not given; each a setting of some family's
    sampling: ``refuse_unknown_keywords``), refused where the run's family has not
    such a setting, and checked against the setting's bounds."""
    known = sampling_fields()
    settings = {name: value for name, value in given.items() if value is not None}
    cfg = load_run_config(run_dir)
    foreign = sorted(settings.keys() - sampling_field_names(cfg.model_config))
    if foreign:
        name = foreign[0]
        raise GenzooError(f"{flag_of(name)} applies to {known[name][2]} only, not {cfg.model}")
    checked_config(type(cfg.model_config), {**dataclasses.asdict(cfg.model_config), **settings})
    return settings


def run_folder(run: PathLike) -> Path:
    return check_run_dir(Path(run))


def as_list(values: Any, what: str) -> list:
    """``values`` as a list; a single string or path is refused, which iterating would
    split into its characters."""
    if isinstance(values, str | os.PathLike):
        raise GenzooError(f"give a list of {what}, e.g. [{str(values)!r}], not one")
    return list(values)


# ----------------------------------------------------------------------------- train, load


@raises_user_errors
def train(
    model: str,
    *,
    run_dir: PathLike | None = None,
    device: str | None = "auto",
    data_dir: PathLike | None = None,
    **settings: Any,
) -> Path:
    """Train a new run of family ``model`` (vae, bvae, ae, gan, realnvp, draw, diffusion)
    and return its folder (default runs/MODEL-STAMP), as ``genzoo train MODEL`` does.

    ``settings`` are the command's training and model flags, e.g. ``latent_dim=20,
    epochs=5, hidden=[500, 500]``; the family's own defaults fill the rest. Training
    prints a line per epoch and writes checkpoints, metrics, figures and the run's page
    (report.html). Ctrl-C (a notebook's stop) keeps the last checkpoint; ``genzoo resume
    RUN`` continues it. Sets the process settings that keep CPU training fast (cpu.py).
    """
    cfg = run_config(model, settings)
    check_fields(Runtime(device))
    folder = Path(run_dir) if run_dir is not None else new_run_dir(model)
    tune_process()
    train_run(folder, cfg, device, data_dir)
    return folder


@raises_user_errors
def resume(
    run: PathLike,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    max_minutes: float | None = None,
    device: str | None = "auto",
    data_dir: PathLike | None = None,
) -> Path:
    """Continue ``run`` from its last checkpoint, as ``genzoo resume RUN`` does: a run
    stopped (Ctrl-C, a kernel restart) goes on exactly as if it had not been; ``epochs``
    trains a finished run further, at the base rate ``lr`` if given; ``max_minutes`` is a
    new budget for all its training passes, those done included (0: none), for a run its
    budget stopped. Returns its folder."""
    folder = run_folder(run)
    check_fields(Runtime(device))
    cfg = resume_config(folder, Changes(epochs, lr, max_minutes))
    tune_process()
    train_run(folder, cfg, device, data_dir, resume=True)
    return folder


@raises_user_errors
def load(
    run: PathLike,
    *,
    device: str | None = "auto",
    data_dir: PathLike | None = None,
    **sampling: Any,
) -> GenerativeModel:
    """The trained model of ``run`` with its best weights, in eval mode: ``model.sample(n)``
    draws n images (n, C, H, W) in [0, 1]. ``sampling`` replaces settings of how it
    samples (a diffusion model's ``sampler``, ``sample_steps``, ``guidance``)."""
    refuse_unknown_keywords(load, sampling)
    folder = run_folder(run)
    check_fields(Runtime(device))
    model, _ = trained_model(folder, device, data_dir, sampling)
    return model


def trained_model(
    folder: Path, device: str | None, data_dir: PathLike | None, sampling: Mapping[str, Any]
) -> tuple[GenerativeModel, int]:
    """The run's model with its best weights, and their epoch; ``sampling`` replaces
    settings of how it samples, once checked."""
    settings = sampling_settings(folder, sampling)
    _, model, _, epoch = load_trained(folder, device, data_dir, sampling=settings)
    return model, epoch


# ----------------------------------------------------------------------------- sample


def families_with(ability: type) -> str:
    """The names of the families that have an ability, for the message refusing a flag
    that needs it: e.g. "realnvp"."""
    return ", ".join(name for name, family in MODELS.items() if issubclass(family.model, ability))


def check_samples_file(output: Path, n: int, force: bool) -> None:
    """Before any work: a known format, a grid small enough to draw, and no existing
    file replaced without ``force``."""
    suffix = output.suffix.lower()
    if suffix not in (".png", *ARRAY_SUFFIXES):
        raise GenzooError(f"-o {output}: give a .png (image grid), .npy or .npz (array) file")
    if suffix == ".png" and n > MAX_GRID_IMAGES:
        raise GenzooError(
            f"-n {n} is too many for one .png grid (at most {MAX_GRID_IMAGES:,} images); "
            f"write them as an array: -o {output.with_suffix('.npy')} (or .npz)"
        )
    if output.exists() and not force:
        raise GenzooError(f"{output} exists; add --force to replace it, or choose another -o")


def refuse_missing_abilities(
    model: GenerativeModel, label: int | None, standard_normal: bool, temperature: float | None
) -> None:
    """The ways of sampling that the model's family does not have."""
    if label is not None and not trained_on_labels(model):
        raise GenzooError(
            f"--class applies to class-conditional models ({families_with(Conditional)}) "
            "trained on labels (--conditional; vae also --labels) only"
        )
    if standard_normal and not isinstance(model, MixtureSampler):
        raise GenzooError(
            "--standard-normal applies to autoencoders with a mixture on their codes "
            f"({families_with(MixtureSampler)}) only"
        )
    if temperature is not None and not isinstance(model, Tempered):
        raise GenzooError(
            f"--temperature applies to flows and other tempered models "
            f"({families_with(Tempered)}) only"
        )


def draw_samples(
    model: GenerativeModel,
    n: int,
    seed: int,
    temperature: float | None,
    label: int | None,
    standard_normal: bool,
) -> torch.Tensor:
    """``n`` samples (n, C, H, W) on the CPU, from their own seeded generator, drawn in
    batches (``draw_many``): 60,000 diffusion samples in one batch would not fit in
    memory."""
    device = next(model.parameters()).device
    with isolated_rng(seed, device):
        if standard_normal:
            samples = draw_many(model, n, draw=model.sample_standard_normal)
        elif label is not None:
            samples = draw_many(model, n, labels=torch.full((n,), label, device=device))
        else:
            t = 1.0 if temperature is None else temperature
            samples = draw_many(model, n, draw=lambda m: model.sample(m, temperature=t))
    return samples.cpu()


def write_samples(samples: torch.Tensor, output: Path, title: str) -> None:
    """Samples (n, C, H, W) as an array file or a .png grid, written atomically."""
    if output.suffix.lower() in ARRAY_SUFFIXES:
        write_array(output, samples.numpy())
    else:
        plots.save_image_grid(samples, output, title)


@raises_user_errors
def sample(
    run: PathLike,
    n: int = 64,
    *,
    seed: int = 0,
    temperature: float | None = None,
    label: int | None = None,
    standard_normal: bool = False,
    output: PathLike | None = None,
    force: bool = False,
    device: str | None = "auto",
    data_dir: PathLike | None = None,
    **sampling: Any,
) -> torch.Tensor:
    """``n`` samples (n, C, H, W) in [0, 1] of the run's best weights, on the CPU, as
    ``genzoo sample`` draws them: the same ``seed`` gives the same images.

    ``temperature``: flows; ``label``: every sample of this class (class-conditional
    models); ``standard_normal``: autoencoders decode z ~ N(0, I) instead of the fitted
    mixture; ``sampling``: a diffusion model's sampler settings. With ``output`` (a .png
    grid, or a .npy or .npz array) they are also written there; an existing file only
    with ``force``.
    """
    refuse_unknown_keywords(sample, sampling)
    folder = run_folder(run)
    check_fields(SampleOptions(device=device, n=n, seed=seed, temperature=temperature, label=label))
    target = None if output is None else Path(output)
    if target is not None:
        check_samples_file(target, n, force)
    model, epoch = trained_model(folder, device, data_dir, sampling)
    refuse_missing_abilities(model, label, standard_normal, temperature)
    samples = draw_samples(model, n, seed, temperature, label, standard_normal)
    if target is not None:
        replaced = " (replacing the file there)" if target.exists() else ""
        write_samples(samples, target, f"{n} samples, {folder.name}")
        print(f"wrote {n} samples of epoch {epoch} to {target}{replaced}")
    return samples


# ----------------------------------------------------------------------------- evaluate


@raises_user_errors
def evaluate(
    run: PathLike,
    *,
    iw_samples: int | None = None,
    limit: int | None = None,
    skip: int = 0,
    split: str = "test",
    estimator: str = "posterior",
    quality: bool = False,
    n_samples: int | None = None,
    output: PathLike | None = None,
    device: str | None = "auto",
    data_dir: PathLike | None = None,
    **sampling: Any,
) -> dict[str, Any]:
    """The run's test figures, as ``genzoo eval`` measures them, kept in ``output``
    (default RUN/eval.json) beside earlier evaluations of other protocols, and shown on
    the run's page; returns them (e.g. ``["nll"]``, ``["nll_se"]``, ``["neg_elbo"]``).

    ``iw_samples``: samples per image of the likelihood estimator (None: the family's
    default, 5000 importance samples for the VAEs; 0 skips it); ``limit``: only the first
    N images (after the first ``skip``); ``split``: "test" or "val"; ``estimator``: the
    proposal, "posterior" q(z|x) or "prior" p(z); ``quality``: also score ``n_samples``
    samples (FID, Inception score, precision/recall, Parzen), drawn with the ``sampling``
    settings where given.
    """
    refuse_unknown_keywords(evaluate, sampling)
    folder = run_folder(run)
    check_fields(
        EvalOptions(
            device=device,
            iw_samples=iw_samples,
            limit=limit,
            skip=skip,
            split=split,
            estimator=estimator,
            n_samples=n_samples,
        )
    )
    settings = sampling_settings(folder, sampling)
    if settings and not quality:
        raise GenzooError("the sampling flags set how --quality draws its samples: add --quality")
    tune_process()
    return evaluate_run(
        folder,
        iw_samples,
        limit,
        split,
        estimator,
        device,
        data_dir,
        None if output is None else Path(output),
        quality,
        n_samples,
        settings,
        skip,
    )


# ----------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Comparison:
    """What ``compare`` gives: one row per run (its settings, epochs and eval.json's best
    figures) and the figure's path. Printed (or shown as a notebook cell's value), the
    tables of ``genzoo compare``."""

    rows: list[dict[str, Any]]
    figure: Path

    def __str__(self) -> str:
        return "\n".join([*figures_table(self.rows, self.figure), *quality_table(self.rows)])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's display: the tables, not the rows' dictionaries."""
        printer.text(str(self))


@raises_user_errors
def compare(
    runs: Sequence[PathLike],
    *,
    output: PathLike | None = None,
    metrics: Sequence[str] | None = None,
    device: str | None = "auto",
    data_dir: PathLike | None = None,
) -> Comparison:
    """Several runs side by side, as ``genzoo compare``: their table and one figure of
    their curves and samples, written to ``output`` (default: the first run's
    compare.png). ``metrics``: the per-epoch curves to draw (default: the validation
    objective and every diagnostic all runs logged)."""
    folders = [run_folder(run) for run in as_list(runs, "runs")]
    if not folders:
        raise GenzooError("give at least one run to compare")
    check_fields(Runtime(device))
    curves = None if metrics is None else as_list(metrics, "metric names")
    figure = Path(output) if output is not None else folders[0] / "compare.png"
    rows = compare_runs(folders, figure, curves, device, data_dir)
    return Comparison(rows, figure)
