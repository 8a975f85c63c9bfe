"""Polyak averaging of the weights: the formula, the swap, and what the loop does with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from genzoo import figures
from genzoo import training as gtrain
from genzoo.averaging import WeightAverage
from genzoo.cli import main
from genzoo.data import load_data
from genzoo.models.vae import VAE
from genzoo.runs import RunConfig, checkpoint_files, load_run_config


def all_equal(xs, ys) -> bool:
    return all(torch.equal(x, y) for x, y in zip(list(xs), list(ys), strict=True))


def all_close(xs, ys) -> bool:
    return all(torch.allclose(x, y, atol=1e-6) for x, y in zip(list(xs), list(ys), strict=True))


def test_average_follows_the_moving_average_recursion() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.9)
    expected = [p.detach().clone() for p in model.parameters()]  # starts at the weights
    for t in range(1, 41):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))  # any new weights
        average.update()
        d = min(0.9, (1 + t) / (10 + t))  # warm-up, then the decay itself
        weights = list(model.parameters())
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, weights, strict=True)]
        assert all_close(average.average, expected)
    # Constant weights are their own average (the recursion's fixed point).
    with torch.no_grad():
        for p, a in zip(model.parameters(), average.average, strict=True):
            p.copy_(a)
    before = [a.clone() for a in average.average]
    average.update()
    assert all_close(average.average, before)


def test_swapped_in_uses_the_average_then_restores_weights_and_keeps_buffers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    average = WeightAverage(model, decay=0.5)
    model(torch.randn(8, 4))  # BatchNorm's running statistics move
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update()
    weights = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    with average.swapped_in():
        assert all_equal(model.parameters(), average.average)
        assert not torch.equal(next(model.parameters()), weights[0])
        assert all_equal(model.buffers(), buffers)
    assert all_equal(model.parameters(), weights)


def test_state_dict_round_trip() -> None:
    model = nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        average.update()
    fresh = WeightAverage(model, decay=0.99)
    fresh.load_state_dict(average.state_dict())
    assert fresh.steps == 3
    assert all_equal(fresh.average, average.average)


def test_validation_and_best_checkpoint_see_the_average(
    data_dir: Path, tmp_path: Path, tiny_config: RunConfig
) -> None:
    tiny_config.train.ema = 0.9
    run = tmp_path / "run"
    gtrain.train(run, tiny_config, device="cpu")
    last = load_file(checkpoint_files(run, "last")[0])
    best = load_file(checkpoint_files(run, "best")[0])
    assert any(not torch.equal(last[k], best[k]) for k in last)  # the average, not the weights
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best_row = min(rows, key=lambda r: r["val_neg_elbo"])
    model = VAE(tiny_config.model_config, (1, 28, 28))
    model.load_state_dict(best)
    data = load_data("mnist", "dynamic", tiny_config.train.val_size)
    val = gtrain.validate(model, data.val, torch.device("cpu"))
    assert val["neg_elbo"] == pytest.approx(best_row["val_neg_elbo"], rel=1e-6)


def test_vae_trains_with_an_average_unless_told(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "vae", "--epochs", "1", "--val-size", "20", "--hidden", "16"]
    assert main([*args, "--latent-dim", "2", "--run-dir", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["ema"] == 0.999  # the family's default
    off = tmp_path / "off"
    assert main([*args, "--latent-dim", "2", "--ema", "0", "--run-dir", str(off)]) == 0
    assert json.loads((off / "config.json").read_text())["train"]["ema"] == 0
    # curves.png says which weights its validation curve is of.
    assert "0.999" in figures.averaging_note(load_run_config(run).train.ema)
    assert figures.averaging_note(load_run_config(off).train.ema) is None
