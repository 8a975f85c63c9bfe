"""Configs as dataclasses, and the one mapping from their fields to command-line flags.

A field ``latent_dim`` becomes ``--latent-dim``; its ``help`` and ``choices`` come from the
field metadata, its default from the dataclass, so the CLI, config.json and the library
never disagree. Bounds live in the metadata too (``min``, ``max``, ``below``) and are
checked in one place, ``check_fields``/``check_number``, for values from flags,
config.json and library calls alike. Flags default to None in argparse, which lets a
resume tell which values the user actually gave.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from genzoo.data import BINARIZE_MODES, DATASETS
from genzoo.errors import GenzooError
from genzoo.schedule import SCHEDULES


@dataclass
class TrainConfig:
    dataset: str = field(
        default="mnist",
        metadata={
            "help": f"dataset: {', '.join(d for d in DATASETS if d != 'binarized-mnist')}, "
            "or folder:PATH, a folder of PNG/JPEG images (one subfolder per class gives labels)"
        },
    )
    channels: int = field(
        default=1,
        metadata={"help": "folder datasets: 1 (grey) or 3 (RGB)", "choices": (1, 3)},
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "folder datasets: resize every image to N x N (default: keep their size, "
            "which must then be one for all)",
            "max": 4096,
        },
    )
    binarize: str = field(
        default="dynamic", metadata={"help": "pixel binarization", "choices": BINARIZE_MODES}
    )
    val_size: int = field(
        default=10000, metadata={"help": "training images held out for validation"}
    )
    train_on_val: bool = field(
        default=False,
        metadata={
            "help": "also train on the validation images (all 60,000 of MNIST's, as papers "
            "that hold none out did); validation then measures images trained on"
        },
    )
    train_size: int | None = field(
        default=None,
        metadata={"help": "train on the first N training images only (quick trials; default: all)"},
    )
    epochs: int = field(default=40, metadata={"help": "maximum number of epochs", "max": 10**6})
    batch_size: int = field(default=128, metadata={"help": "examples per training batch"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate", "max": 1e4})
    lr_schedule: str = field(
        default="constant",
        metadata={"help": "learning-rate schedule (schedule.py)", "choices": SCHEDULES},
    )
    lr_min: float = field(
        default=0.0,
        metadata={"help": "final rate of the cosine schedule", "min": 0.0, "max": 1e4},
    )
    lr_decay: float = field(
        default=0.1,
        metadata={"help": "rate factor per decay of the step and exponential schedules", "max": 1},
    )
    lr_step_epochs: int = field(
        default=10, metadata={"help": "epochs between decays of the step schedule"}
    )
    warmup_epochs: int = field(
        default=0, metadata={"help": "epochs of linear warm-up of the rate", "min": 0}
    )
    patience: int = field(
        default=10,
        metadata={
            "help": "stop after this many epochs without a better validation (0: never)",
            "min": 0,
        },
    )
    max_minutes: float = field(
        default=0.0,
        metadata={
            "help": "stop after the epoch in which the training passes reach this many "
            "minutes in all (a time budget; 0: none)",
            "min": 0.0,
            "max": 1e6,
        },
    )
    sample_every: int = field(
        default=10, metadata={"help": "draw sample grids after epoch 1 and every this many epochs"}
    )
    sample_epochs: tuple[int, ...] = field(
        default=(),
        metadata={
            "help": "draw sample grids after just these epochs instead, e.g. 0,1,25,40 "
            "(0: before training)",
            "min": 0,
        },
    )
    quality_every: int = field(
        default=0,
        metadata={
            "help": "every N epochs (and after the first) score --quality-samples samples of "
            "fixed noise with the MNIST feature net: FID against the validation images, "
            "Inception score, entropy of the predicted classes (log 10: no collapse); a "
            "family without a validation metric (gan, diffusion) keeps as best the epoch of "
            "the lowest FID (0: off)",
            "min": 0,
        },
    )
    quality_samples: int = field(
        default=2000,
        metadata={
            "help": "samples scored by each --quality-every probe (fewer: a cheaper probe, "
            "an FID biased upwards)",
            "min": 10,
        },
    )
    tensorboard: bool = field(
        default=False,
        metadata={
            "help": "also write the metrics and sample grids as TensorBoard event files in "
            "RUN/tensorboard (pip install 'genzoo[tensorboard]')"
        },
    )
    checkpoint_minutes: float = field(
        default=10.0,
        metadata={
            "max": 1e6,
            "help": "also write the last checkpoint within an epoch after this many minutes "
            "(0: at the end of each epoch only)",
            "min": 0.0,
        },
    )
    precision: str = field(
        default="fp32",
        metadata={
            "help": "arithmetic of the training steps and validation: fp32, bf16 autocast "
            "(matrix products in bfloat16; genzoo eval stays fp32), or auto: bf16 where the "
            "device has bfloat16 kernels (a CUDA GPU that supports it, a CPU with AVX-512), "
            "else fp32 (recorded as chosen)",
            "choices": ("auto", "fp32", "bf16"),
        },
    )
    compile: bool = field(
        default=False,
        metadata={"help": "compile the model's objectives with torch.compile (minutes at first)"},
    )
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": 2**32 - 1})
    preset: str | None = field(
        default=None,
        metadata={
            "help": "a paper's protocol in one flag (hvae: burda-1l, burda-2l, vampprior): "
            "every setting it names, printed and kept in config.json; a flag given beside it "
            "wins and is marked there and on the run's page as a deviation (default: none)"
        },
    )
    ema: float = field(
        default=0.0,
        metadata={
            "help": "decay of the moving average of the weights that validation, the best "
            "checkpoint and evaluation use (Polyak averaging; 0: off, the weights themselves)",
            "min": 0,
            "below": 1,
        },
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def comparable(value: Any) -> Any:
    """A setting as config.json gives it back (tuples as lists), for comparing values."""
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Preset:
    """A paper's protocol in one flag, ``--preset NAME`` of a family: ``settings`` of the
    run, training and model ones alike, by field name; ``notes``, what the protocol holds
    beyond them (the test's K, what could not be followed). A flag given beside the preset
    wins; where it sets one of its settings otherwise, that is a deviation."""

    paper: str
    settings: Mapping[str, Any]
    notes: tuple[str, ...] = ()

    def deviations(self, values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The settings that the run's ``values`` (by field name) set otherwise than the
        preset: name -> {"preset": its value, "run": the run's}."""
        return {
            name: {"preset": comparable(value), "run": comparable(values[name])}
            for name, value in self.settings.items()
            if comparable(values[name]) != comparable(value)
        }

    def record(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """What config.json keeps of the preset of a run with ``values``."""
        return {
            "name": name,
            "paper": self.paper,
            "settings": {k: comparable(v) for k, v in self.settings.items()},
            "notes": list(self.notes),
            "deviations": self.deviations(values),
        }

    def lines(self, name: str, values: Mapping[str, Any]) -> list[str]:
        """The preset in words, as training prints it: every setting, then the notes and
        the deviations."""
        shown = ", ".join(f"{k}={value_words(v)}" for k, v in self.settings.items())
        lines = [f"preset {name} ({self.paper}): {shown}", *(f"  {n}" for n in self.notes)]
        for setting, pair in self.deviations(values).items():
            lines.append(
                f"  deviation: {_flag(setting)} {value_words(pair['run'])} "
                f"(the preset's {value_words(pair['preset'])})"
            )
        return lines


def value_words(value: Any) -> str:
    """A setting as a flag takes it: 100,50 for a tuple or list."""
    return ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


MAX_INT = 10**6  # a bound for counts and sizes that no field states itself


def check_number(value: float, kind: type, metadata: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``value`` is finite and within the bounds of a field's
    ``metadata``: ``min`` (inclusive; default 1 for ints, above 0 for floats), ``max``
    (inclusive; default MAX_INT for ints) and ``below`` (exclusive)."""
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    minimum = metadata.get("min")
    if minimum is None and kind is int:
        minimum = 1
    if minimum is None:
        if value <= 0:
            raise ValueError(f"must be positive, got {value}")
    elif value < minimum:
        raise ValueError("must be positive" if minimum == 1 else f"must be >= {minimum}")
    maximum = metadata.get("max", MAX_INT if kind is int else math.inf)
    if value > maximum:
        raise ValueError(f"must be at most {maximum}, got {value}")
    if "below" in metadata and value >= metadata["below"]:
        raise ValueError(f"must be below {metadata['below']}, got {value}")


def field_kind(hint: Any) -> Any:
    """The type of a field, with ``X | None`` read as X (None: the default, unset)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is types.UnionType and len(args) == 1 else hint


def check_fields(config: Any) -> None:
    """Check every field of a config dataclass against its metadata (bounds, choices,
    finiteness): the one place where values from flags, config.json and library calls
    are validated. Raises GenzooError naming the flag."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, kind = getattr(config, f.name), field_kind(hints[f.name])
        try:
            if value is None and kind is not hints[f.name]:
                continue
            if kind in (int, float) and not isinstance(value, bool):
                if not isinstance(value, int if kind is int else int | float):
                    raise ValueError(
                        f"must be {'an int' if kind is int else 'a number'}, got {value!r}"
                    )
                check_number(value, kind, f.metadata)
            elif kind == tuple[int, ...] and any(
                not isinstance(v, int) or not f.metadata.get("min", 1) <= v <= MAX_INT
                for v in value
            ):
                raise ValueError(
                    f"must be whole numbers from {f.metadata.get('min', 1)} to {MAX_INT}, "
                    f"got {value}"
                )
            shortest, longest = f.metadata.get("length", (0, math.inf))
            if kind == tuple[int, ...] and not shortest <= len(value) <= longest:
                raise ValueError(
                    f"takes {shortest} to {longest} values, got {','.join(map(str, value))}"
                )
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ValueError(f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        except ValueError as err:
            raise GenzooError(f"{_flag(f.name)} {err}") from None


def bounded(kind: type, **metadata: Any) -> typing.Callable[[str], Any]:
    """An argparse type: parse ``kind`` and apply ``check_number``'s bounds."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        try:
            check_number(value, kind, metadata)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def int_tuple(minimum: int = 1) -> typing.Callable[[str], tuple[int, ...]]:
    """An argparse type: comma-separated whole numbers, each >= ``minimum``."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of whole numbers, e.g. 500,500"
            ) from None
        if min(values) < minimum or max(values) > MAX_INT:
            raise argparse.ArgumentTypeError(
                f"values must be from {minimum} to {MAX_INT}, got {text}"
            )
        return values

    return parse


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, defaults: dict[str, Any] | None = None
) -> None:
    """Add one flag per field of dataclass ``cls``, checked by ``check_number`` (numbers
    positive unless the field's metadata says otherwise).

    ``defaults`` replaces some fields' defaults in the help text (a model family's own);
    the flags themselves still default to None.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        add_field_argument(parser, f, hints[f.name], (defaults or {}).get(f.name, f.default))


def add_field_argument(
    parser: argparse.ArgumentParser, f: dataclasses.Field, hint: Any, shown: Any
) -> None:
    """The flag of one dataclass field (type ``hint``), its default ``shown`` in the help."""
    kind = field_kind(hint)
    if kind is bool:
        parser.add_argument(
            _flag(f.name),
            action=argparse.BooleanOptionalAction,
            default=None,
            help=help_with_default(f, shown),
        )
        return
    if kind is int or kind is float:
        parse = bounded(kind, **f.metadata)
    elif kind == tuple[int, ...]:
        parse = int_tuple(f.metadata.get("min", 1))
    else:
        parse = kind
    shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else shown
    parser.add_argument(
        _flag(f.name),
        type=parse,
        default=None,
        choices=f.metadata.get("choices"),
        metavar=None if "choices" in f.metadata else f.name.upper(),
        help=help_with_default(f, shown),
    )


def help_with_default(f: dataclasses.Field, shown: Any) -> str:
    """A field's help and its default, unless the help already says what the default
    means (an unset size: "default: keep their size"), which "(default: unset)" after it
    would only repeat."""
    text = f.metadata.get("help", "")
    if "default:" in text:
        return text
    return f"{text} (default: {'unset' if shown is None else shown})"


def config_flags(cls: type) -> set[str]:
    """The flags of a config dataclass's fields, ``--no-X`` of the on/off ones included."""
    hints = typing.get_type_hints(cls)
    flags = set()
    for f in dataclasses.fields(cls):
        flags.add(_flag(f.name))
        if field_kind(hints[f.name]) is bool:
            flags.add(_flag("no_" + f.name))
    return flags


def sampling_field_names(config: Any) -> set[str]:
    """The fields of a family's config (class or instance) that set how ``sample`` draws
    (metadata "sampling"): a trained model may be sampled with other values of them."""
    return {f.name for f in dataclasses.fields(config) if f.metadata.get("sampling")}


def given_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a config from JSON (lists back to tuples) and check it; unknown keys are an
    error (TypeError), and so are values outside a field's bounds (GenzooError)."""
    hints = typing.get_type_hints(cls)
    fixed = {k: tuple(v) if hints.get(k) == tuple[int, ...] else v for k, v in values.items()}
    config = cls(**fixed)
    check_fields(config)
    return config


def saved_config(cls: type, values: dict[str, Any]) -> Any:
    """A run's saved config: ``config_from_dict``, where a field the run predates takes its
    ``absent`` metadata (the value the run was trained with, where today's default is
    another) and otherwise its default."""
    predated = {
        f.name: f.metadata["absent"]
        for f in dataclasses.fields(cls)
        if f.name not in values and "absent" in f.metadata
    }
    return config_from_dict(cls, {**values, **predated})
