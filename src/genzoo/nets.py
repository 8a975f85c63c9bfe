"""Building blocks shared by the model families."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import field
from typing import Any

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def activation_field() -> Any:
    """The ``activation`` field of every MLP model config (a flag --activation relu|tanh)."""
    return field(
        default="relu", metadata={"help": "hidden activation", "choices": tuple(ACTIVATIONS)}
    )


def mlp(
    sizes: Sequence[int],
    activation: str = "relu",
    input_dropout: float = 0.0,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the
    last); dropout (Srivastava et al. 2014) on the input and on each hidden layer where
    asked."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        if i:
            layers.append(ACTIVATIONS[activation]())
        if rate := dropout if i else input_dropout:
            layers.append(nn.Dropout(rate))
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)
