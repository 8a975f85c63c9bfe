"""Learning-rate schedules against their formulas, and as the loop applies them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from genzoo import training as gtrain
from genzoo.runs import RunConfig
from genzoo.schedule import LRSchedule

STEPS = 10  # per epoch


def schedule(kind: str, **kw) -> LRSchedule:
    return LRSchedule(kind, lr=1e-2, steps_per_epoch=STEPS, epochs=5, **kw)


def test_constant_and_warmup() -> None:
    s = schedule("constant")
    assert {s.rate(i) for i in range(50)} == {1e-2}
    w = schedule("constant", warmup_epochs=2)
    assert [w.rate(i) for i in (0, 9, 19, 20, 49)] == pytest.approx(
        [1e-2 / 20, 1e-2 / 2, 1e-2, 1e-2, 1e-2]
    )


def test_cosine_follows_the_half_cosine_from_lr_to_lr_min() -> None:
    s = schedule("cosine", lr_min=1e-3)
    for step in range(50):
        expected = 1e-3 + (1e-2 - 1e-3) * (1 + math.cos(math.pi * step / 50)) / 2
        assert s.rate(step) == pytest.approx(expected)
    assert s.rate(25) == pytest.approx((1e-2 + 1e-3) / 2)
    assert s.rate(50) == pytest.approx(1e-3)  # past the horizon (a resumed run): stays
    # After a warm-up the cosine spans the remaining steps only.
    w = schedule("cosine", warmup_epochs=1)
    assert w.rate(10) == pytest.approx(1e-2) and w.rate(30) == pytest.approx(1e-2 / 2)


def test_step_and_exponential_change_per_epoch() -> None:
    step = schedule("step", lr_decay=0.5, lr_step_epochs=2)
    assert [step.rate(e * STEPS + 3) for e in range(5)] == pytest.approx(
        [1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3]
    )
    exp = schedule("exponential", lr_decay=0.9)
    for epoch in range(5):
        rates = [exp.rate(epoch * STEPS + i) for i in range(STEPS)]
        assert rates == pytest.approx([1e-2 * 0.9**epoch] * STEPS)


def test_unknown_schedule() -> None:
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule("linear")


def test_the_loop_trains_at_the_scheduled_rate(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig
) -> None:
    tc = tiny_config.train
    tc.lr_schedule, tc.lr_decay, tc.epochs = "exponential", 0.5, 3
    gtrain.train(tmp_path / "run", tiny_config, device="cpu")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 5e-4, 2.5e-4])
