"""The defaults README.md states are the code's: the families table, which families
average their weights, and each default the text gives in numbers.

A statement is found by a pattern; if the README is reworded so that one no longer
matches, the test says which, so that the claim is updated here rather than lost.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from genzoo.config import TrainConfig
from genzoo.models import MODELS, diffusion
from genzoo.models.gan import DEFAULT_D_DROPOUT

TEXT = (Path(__file__).parents[1] / "README.md").read_text()
README = " ".join(TEXT.split())  # one line: a statement may wrap anywhere


def trained_with(family: str | None, name: str) -> Any:
    """The default of setting ``name``: the family's training default or model config
    field, else TrainConfig's (``family`` None: TrainConfig's alone)."""
    if family is not None:
        overrides = MODELS[family].training_defaults()
        if name in overrides:
            return overrides[name]
        own = {f.name: f.default for f in dataclasses.fields(MODELS[family].config)}
        if name in own:
            return own[name]
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}[name]


def same(stated: str, value: Any) -> bool:
    """A value as the README writes it (2e-4, 2,000, 10k, flow matching) against the
    code's."""
    if isinstance(value, tuple):
        return stated == ",".join(map(str, value))
    if isinstance(value, str):
        return stated.replace(" ", "-") == value
    number = float(stated.replace(",", "").replace("k", "e3"))
    return number == value


# (pattern in README.md, what each of its groups states: (family, setting) or a value)
CLAIMS: list[tuple[str, tuple[Any, ...]]] = [
    (r"`--hidden (\d+)`", (("vae", "hidden"),)),
    (r"checkpoint within an epoch every M minutes, default (\d+)", ((None, "checkpoint_minutes"),)),
    (r"`--checkpoint-minutes` \(default (\d+)\)", ((None, "checkpoint_minutes"),)),
    (r"`--binarize (\w+)` \(default\)", (("vae", "binarize"),)),
    (r"and the last (\d+k) for validation \(`--val-size`\)", ((None, "val_size"),)),
    (r"`--quality-every N` \(on, N = (\d+), for `gan`", (("gan", "quality_every"),)),
    (r"scores ([\d,]+) samples of fixed noise every N epochs", ((None, "quality_samples"),)),
    (r"Bernoulli latents \((\d+)\)", (("bvae", "latent_dim"),)),
    (r"dropout ([\d.]+) in the MLP D", (DEFAULT_D_DROPOUT["mlp"],)),
    (
        r"Adam ([\d.e-]+) decayed by a (\w+) over (\d+) epochs, batches of (\d+)",
        (("gan", "lr"), ("gan", "lr_schedule"), ("gan", "epochs"), ("gan", "batch_size")),
    ),
    (
        r"FID watched every (\d+) epochs on (\d+) samples",
        (("diffusion", "quality_every"), ("diffusion", "quality_samples")),
    ),
    (r"\(default (flow matching)\)", (("diffusion", "objective"),)),
    (
        r"Adam ([\d.]+) decayed by a (\w+) over (\d+) epochs \(`genzoo train diffusion`",
        (("diffusion", "lr"), ("diffusion", "lr_schedule"), ("diffusion", "epochs")),
    ),
    (
        r"with g = ([\d.]+), the guide the run's own averaged weights after epoch (\d+)",
        (diffusion.AUTOGUIDANCE, ("diffusion", "guide_epoch")),
    ),
]


@pytest.mark.parametrize(("pattern", "claims"), CLAIMS, ids=[c[0][:40] for c in CLAIMS])
def test_each_default_the_readme_states_is_the_codes(pattern: str, claims: tuple) -> None:
    found = re.search(pattern, README)
    assert found, f"README.md no longer says {pattern!r}: update the claim in this test"
    for text, claim in zip(found.groups(), claims, strict=True):
        value = trained_with(*claim) if isinstance(claim, tuple) else claim
        assert same(text, value), f"README.md says {text!r} for {claim}, the code {value!r}"


def families_table() -> dict[str, str]:
    """MODEL -> the rest of its row, from the README's table of model families (whose
    names are lower case, its header's `MODEL` not)."""
    return dict(re.findall(r"^\| `([a-z]\w*)` \| (.*)$", TEXT, flags=re.MULTILINE))


def test_the_families_table_lists_every_family_and_its_averaging() -> None:
    rows = families_table()
    assert list(rows) == list(MODELS)
    averaged = {name for name in MODELS if trained_with(name, "ema") > 0}
    assert {name for name, row in rows.items() if "averaged weights" in row} == averaged


def test_the_compile_flag_names_the_families_compiled_by_default() -> None:
    found = re.search(
        r"On by default where it\s+pays on this 2-core CPU: ((?:`\w+`(?:, | and )?)+)", README
    )
    assert found, "README.md no longer says which families compile by default"
    named = set(re.findall(r"`(\w+)`", found.group(1)))
    assert named == {name for name in MODELS if trained_with(name, "compile")}


def test_the_ema_flag_names_the_families_that_average() -> None:
    found = re.search(r"((?:`\w+`(?:, | and )?)+) defaults? to ([\d.]+), the others to 0", README)
    assert found, "README.md no longer says which families default to averaged weights"
    named = set(re.findall(r"`(\w+)`", found.group(1)))
    assert named == {name for name in MODELS if trained_with(name, "ema") > 0}
    assert all(same(found.group(2), trained_with(name, "ema")) for name in named)
