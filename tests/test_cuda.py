"""The GPU path: every family end to end with --device cuda, data kept on the GPU, bf16.

Skipped, with a message, on a machine without a CUDA GPU (``pytest -m cuda`` selects
these tests where there is one).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genzoo.cli import main
from genzoo.runs import load_data_of, load_run_config
from test_cli_families import COMMON, FAMILIES

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine"),
]
ON_GPU = [a if a != "cpu" else "cuda" for a in COMMON]


@pytest.mark.parametrize("model", [*FAMILIES, "draw"])
def test_every_family_runs_on_the_gpu(model: str, data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / model
    sizes = FAMILIES.get(
        model, ["--steps", "3", "--enc-hidden", "8", "--dec-hidden", "8", "--no-compile"]
    )
    assert main(["train", model, "--run-dir", str(run), *ON_GPU, *sizes]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["device"] == "cuda"
    assert main(["eval", str(run), "--iw-samples", "10", "--limit", "10", "--device", "cuda"]) == 0
    sample = ["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.npy"), "--device", "cuda"]
    assert main(sample) == 0
    assert main(["plot", str(run), "--device", "cuda"]) == 0


def test_the_data_stays_on_the_gpu(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "vae"
    assert main(["train", "vae", "--run-dir", str(run), *ON_GPU, *FAMILIES["vae"]]) == 0
    data = load_data_of(load_run_config(run), torch.device("cuda"), None)
    assert all(s.images.is_cuda for s in (data.train, data.val, data.test))


def test_bf16_trains_on_the_gpu(data_dir: Path, tmp_path: Path) -> None:
    runs = {p: tmp_path / p for p in ("fp32", "bf16")}
    for precision, run in runs.items():
        argv = ["train", "vae", "--run-dir", str(run), *ON_GPU, *FAMILIES["vae"]]
        assert main([*argv, "--precision", precision]) == 0
    losses = [json.loads((r / "metrics.jsonl").read_text().splitlines()[-1]) for r in runs.values()]
    assert losses[1]["val_neg_elbo"] == pytest.approx(losses[0]["val_neg_elbo"], rel=0.02)
