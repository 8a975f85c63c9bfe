"""The GAN's recipe, by measurement: short runs of `genzoo train gan` (MLP or conv pair)
that differ in one setting each, and the quality probe's figures (FID against the
validation images, class entropy of 2,000 fixed-noise samples; log 10 = 2.303 is no
collapse) per epoch.

    python benchmarks/bench_gan_recipe.py --epochs 8 --out runs/gan-recipe [ARM ...]

Arms run one after another, each on one thread (start two of these with different arms
to use two cores). A finished arm is not run again; its table row is read back from its
metrics.jsonl. Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from genzoo.report import training_seconds
from genzoo.runs import read_metrics

# Every setting spelled out (a later flag wins), so that the arms stay what they were
# whatever the defaults become: the settings before this ablation, at Adam's rate 2e-4.
BASE = (
    "--arch mlp --gen-loss nonsaturating --lr 2e-4 --lr-schedule constant --patience 0 "
    "--d-dropout 0 --d-norm none --label-smoothing 0 --ema 0"
)
RECIPE = "--batch-size 64 --d-dropout 0.3 --ema 0.999"  # what the MLP ablation chose
CONV = "--arch conv --batch-size 64 --ema 0.999"  # the conv pair as first measured
ARMS: dict[str, str] = {
    "b128": "--batch-size 128",  # the recipe of the collapsed run
    "b64": "--batch-size 64",
    "b64-dropout": "--batch-size 64 --d-dropout 0.3",
    "b64-smooth": "--batch-size 64 --label-smoothing 0.1",
    "b64-dropout-smooth": "--batch-size 64 --d-dropout 0.3 --label-smoothing 0.1",
    "b64-wide-d-dropout": "--batch-size 64 --d-dropout 0.3 --disc-hidden 1024,512,256",
    "b64-dropout-ema": RECIPE,
    "lr1e-3": "--batch-size 64 --lr 1e-3",
    "recipe-spectral": f"{RECIPE} --d-norm spectral",
    "recipe-hinge": f"{RECIPE} --gen-loss hinge",
    "conv": CONV,
    "conv-dropout": f"{CONV} --d-dropout 0.3",
    "conv-batchnorm": f"{CONV} --d-norm batch",
    "conv-spectral": f"{CONV} --d-norm spectral",
    "conv-hinge-spectral": f"{CONV} --gen-loss hinge --d-norm spectral",
}


def run_arm(name: str, epochs: int, out: Path) -> None:
    run_dir = out / name
    if len(quality_rows(run_dir)) >= epochs:
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    flags = f"{BASE} {ARMS[name]} --epochs {epochs} --sample-every {epochs} --run-dir {run_dir}"
    cmd = [sys.executable, "-m", "genzoo", "train", "gan", *flags.split()]
    subprocess.run(cmd, env=env, check=True)


def quality_rows(run_dir: Path) -> list[dict]:
    """The run's epochs that carry the probe's figures ([] before the run exists)."""
    return [r for r in read_metrics(run_dir) if "quality_fid" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/gan-recipe"))
    args = parser.parse_args()
    for name in args.arms:
        run_arm(name, args.epochs, args.out)
    print("| arm | FID by epoch | best FID | class entropy at best | minutes |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.arms:
        rows = quality_rows(args.out / name)
        best = min(rows, key=lambda r: r["quality_fid"])
        fids = ", ".join(f"{r['quality_fid']:.0f}" for r in rows)
        minutes = training_seconds(read_metrics(args.out / name)) / 60
        print(
            f"| {name} | {fids} | {best['quality_fid']:.1f} (epoch {best['epoch']}) "
            f"| {best['quality_class_entropy']:.3f} | {minutes:.1f} |"
        )


if __name__ == "__main__":
    main()
