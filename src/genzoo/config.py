"""Configs as dataclasses, and the one mapping from their fields to command-line flags.

A field ``latent_dim`` becomes ``--latent-dim``; its ``help`` and ``choices`` come from the
field metadata, its default from the dataclass, so the CLI, config.json and the library
never disagree. Flags default to None in argparse, which lets ``--resume`` tell which
values the user actually gave.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from genzoo.data import BINARIZE_MODES, DATASETS


@dataclass
class TrainConfig:
    dataset: str = field(
        default="mnist",
        metadata={
            "help": "dataset",
            "choices": tuple(d for d in DATASETS if d != "binarized-mnist"),
        },
    )
    binarize: str = field(
        default="dynamic", metadata={"help": "pixel binarization", "choices": BINARIZE_MODES}
    )
    val_size: int = field(
        default=10000, metadata={"help": "training images held out for validation"}
    )
    epochs: int = field(default=40, metadata={"help": "maximum number of epochs"})
    batch_size: int = field(default=128, metadata={"help": "examples per training batch"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    patience: int = field(
        default=10,
        metadata={
            "help": "stop after this many epochs without a better validation (0: never)",
            "min": 0,
        },
    )
    sample_every: int = field(
        default=10, metadata={"help": "draw sample grids every this many epochs"}
    )
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0})
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


def positive(kind: type, minimum: float, below: float | None = None) -> typing.Callable[[str], Any]:
    """An argparse type: parse ``kind`` and refuse values below ``minimum`` (and, if
    given, from ``below`` on)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if value < minimum:
            bound = "positive" if minimum > 0 else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be below {below}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of sizes, e.g. 500,500"
        ) from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text}")
    return sizes


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, defaults: dict[str, Any] | None = None
) -> None:
    """Add one flag per field of dataclass ``cls``; numbers must be positive unless told.

    ``defaults`` replaces some fields' defaults in the help text (a model family's own);
    the flags themselves still default to None.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        shown = (defaults or {}).get(f.name, f.default)
        if kind is bool:
            parser.add_argument(
                _flag(f.name),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{f.metadata.get('help', '')} (default: {shown})",
            )
            continue
        if kind is int or kind is float:
            minimum = f.metadata.get("min", 1 if kind is int else 1e-300)
            parse = positive(kind, minimum, f.metadata.get("below"))
        elif kind == tuple[int, ...]:
            parse = _int_tuple
        else:
            parse = kind
        shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else shown
        parser.add_argument(
            _flag(f.name),
            type=parse,
            default=None,
            choices=f.metadata.get("choices"),
            metavar=None if "choices" in f.metadata else f.name.upper(),
            help=f"{f.metadata.get('help', '')} (default: {shown})",
        )


def given_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a config from JSON (lists back to tuples); unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    fixed = {k: tuple(v) if hints.get(k) == tuple[int, ...] else v for k, v in values.items()}
    return cls(**fixed)
