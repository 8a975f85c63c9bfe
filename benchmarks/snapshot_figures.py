"""Every family's figures and page from a fixed-seed run, to compare two versions of the
code: what a refactor that promises "every figure the same" is checked with; and the
screenshots of the pages that benchmarks/README.md shows.

    python benchmarks/snapshot_figures.py take OUT          # train tiny runs, draw, report
    python benchmarks/snapshot_figures.py compare OLD NEW   # which files differ
    python benchmarks/snapshot_figures.py pages OUT FIGURES # take, a study, the index, and
                                                            # screenshots into FIGURES

Run ``take`` once on each version (e.g. with PYTHONPATH pointing at each checkout's src/),
with one thread (OMP_NUM_THREADS=1) so the arithmetic is the same. ``compare`` compares
PNG and GIF files pixel by pixel (every frame), and JSON and HTML files as text with the
clock readings (dates, seconds, the folder's own path) left out.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from genzoo.cli import main

COMMON = ["--epochs", "2", "--batch-size", "32", "--train-size", "256", "--val-size", "100"]
COMMON += ["--device", "cpu", "--seed", "3"]
RUNS = {  # run name -> (family, its flags): small networks, every family
    "vae": ("vae", ["--hidden", "32", "--latent-dim", "2"]),
    "vae20": ("vae", ["--hidden", "32", "--latent-dim", "20"]),
    "bvae": ("bvae", ["--hidden", "32", "--latent-dim", "8"]),
    "ae": ("ae", ["--hidden", "32", "--latent-dim", "2", "--gmm-components", "2"]),
    "realnvp": ("realnvp", ["--width", "4", "--depth", "1", "--n-couplings", "1"]),
    "gan": ("gan", ["--noise-dim", "4", "--gen-hidden", "16,16", "--disc-hidden", "16"]),
    "draw": ("draw", ["--steps", "4"]),
    "hvae": ("hvae", ["--hidden", "32", "--hidden-top", "16", "--latent-dims", "8,4"]),
    "diffusion": (
        "diffusion",
        ["--base-channels", "8", "--channel-mults", "1,2", "--sample-steps", "3"],
    ),
    "m2": ("vae", ["--hidden", "32", "--latent-dim", "4", "--labels", "100"]),
    "gan-conditional": ("gan", ["--noise-dim", "4", "--gen-hidden", "16,16", "--conditional"]),
}
CLOCK = re.compile(
    r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d)?(\.\d+)?(\+00:00)?"  # dates
    r'|"(wall_|finishing_)?seconds": [\d.e-]+|data-value="[\d.e-]+"|<td>[\d.]+</td>'
    r"|[\d.]+ s\b"  # timings
)


def take(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    for name, (family, flags) in RUNS.items():
        run = out / name
        assert main(["train", family, "--run-dir", str(run), *COMMON, *flags]) == 0
        assert main(["eval", str(run), "--iw-samples", "10", "--limit", "50"]) == 0
        assert main(["plot", str(run)]) == 0
        assert main(["report", str(run)]) == 0
    runs = [str(out / "vae"), str(out / "bvae")]
    assert main(["compare", *runs, "-o", str(out / "compare.png")]) == 0


# The pages shot (folder -> page) at a desktop's and a phone's width, as the page tests
# look at them.
PAGES = {"index": "index.html", "run": "vae/report.html", "study": "study/report.html"}


def pages(out: Path, figures: Path) -> None:
    """Every family's run, a quick study beside them, the index over the folder, and
    screenshots of the index, a run's page and the study's page at both widths."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_report import DESKTOP, PHONE, _chromium

    take(out)
    study = ["study", "latent-size", "--quick", "--out", str(out / "study"), "--device", "cpu"]
    assert main(study) == 0
    assert main(["report", str(out)]) == 0
    with tempfile.TemporaryDirectory() as profile:
        for name, page in PAGES.items():
            for device, width in (("desktop", DESKTOP), ("phone", PHONE)):
                shot = figures / f"pages-{name}-{device}.png"
                shot.unlink(missing_ok=True)  # an earlier shot must not pass for this one
                uri = (out / page).resolve().as_uri()
                done = _chromium(Path(profile), f"--screenshot={shot}", uri, width=width)
                assert shot.exists(), done.stderr


def same_image(a: Path, b: Path) -> bool:
    first, second = Image.open(a), Image.open(b)
    frames = getattr(first, "n_frames", 1)
    if first.size != second.size or frames != getattr(second, "n_frames", 1):
        return False
    for frame in range(frames):
        first.seek(frame)
        second.seek(frame)
        if not np.array_equal(
            np.asarray(first.convert("RGBA")), np.asarray(second.convert("RGBA"))
        ):
            return False
    return True


def compare(old: Path, new: Path) -> list[str]:
    """The files that differ (or exist on one side only), as 'what: path'."""
    kinds = {".png", ".gif", ".json", ".html"}
    files = {
        side: {p.relative_to(side) for p in side.rglob("*") if p.suffix in kinds}
        for side in (old, new)
    }
    differ = [f"only in {old}: {p}" for p in sorted(files[old] - files[new])]
    differ += [f"only in {new}: {p}" for p in sorted(files[new] - files[old])]
    for rel in sorted(files[old] & files[new]):
        if rel.parts[-2:-1] == ("checkpoints",):
            continue  # digests of files that hold timings
        if rel.suffix in (".png", ".gif"):
            same = same_image(old / rel, new / rel)
        else:
            texts = [
                CLOCK.sub("", (side / rel).read_text().replace(str(side), ""))
                for side in (old, new)
            ]
            same = texts[0] == texts[1]
        if not same:
            differ.append(f"differs: {rel}")
    return differ


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("take", "compare", "pages"))
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    wanted = {"take": 1, "compare": 2, "pages": 2}[args.action]
    if len(args.folders) != wanted:
        parser.error(f"{args.action} takes {wanted} folder(s), got {len(args.folders)}")
    if args.action == "take":
        take(args.folders[0])
    elif args.action == "pages":
        pages(*args.folders)
    else:
        lines = compare(*args.folders)
        print("\n".join(lines) or "every figure and page the same")
