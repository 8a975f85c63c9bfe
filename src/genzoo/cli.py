"""The ``genzoo`` command: a thin argparse layer over the library.

    genzoo train MODEL [flags]            a new run under runs/ (or --run-dir)
    genzoo train --resume RUN             continue a killed run from its last checkpoint
    genzoo eval RUN [--iw-samples K]      ELBO parts and importance-sampled NLL -> RUN/eval.json
    genzoo eval RUN --quality             ... and FID, IS, precision/recall, Parzen of samples
    genzoo eval --reference test          the same scores for real images (the ideal row)
    genzoo quality-net train              the cached MNIST classifier behind those scores
    genzoo sample RUN -n 64 -o out.png    samples of the best checkpoint
    genzoo plot RUN                       (re)draw every figure of a run
    genzoo compare RUN RUN ...            several runs: one table, one figure
    genzoo data download|verify|info      the dataset files

User mistakes end with one line on stderr and exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

from genzoo import data as gdata
from genzoo import plots
from genzoo.compare import compare_runs
from genzoo.config import TrainConfig, add_config_arguments, given_values, positive
from genzoo.cpu import tune_process
from genzoo.errors import GenzooError
from genzoo.evaluate import ESTIMATORS, evaluate_run, load_trained, reference_quality
from genzoo.models import MODELS
from genzoo.quality import cache_paths, load_or_train_feature_net
from genzoo.runs import RunConfig, check_run_dir, new_run_dir, read_json, write_json
from genzoo.train import EVAL_SEED, isolated_rng, resolve_device, resume_config, train

positive_int = positive(int, 1)

# How `genzoo eval` names each term it may find in a result, in print order.
TERM_LABELS = {
    "neg_elbo": "-ELBO",
    "recon": "reconstruction",
    "kl": "KL",
    "nll": "NLL",
    "loss": "loss",
    "l1": "L1 of the code",
    "bpd": "bits/dim",
}


def _add_runtime_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """--device and --data-dir: how to run, not part of the run's config."""
    parser.add_argument(
        "--device",
        dest=prefix + "device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where to compute (default: auto)",
    )
    parser.add_argument(
        "--data-dir",
        dest=prefix + "data_dir",
        type=Path,
        default=None,
        help="dataset folder (default: $GENZOO_DATA, else ~/.cache/genzoo/data)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genzoo", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train_p = commands.add_parser(
        "train",
        help="train a model, or resume a run",
        description="Train MODEL, or continue a run with --resume RUN.",
    )
    train_p.add_argument(
        "--resume", type=Path, metavar="RUN", help="continue RUN from its last checkpoint"
    )
    train_p.add_argument(
        "--epochs",
        dest="resume_epochs",
        type=positive_int,
        metavar="N",
        help="with --resume: train up to this epoch (default: the run's own)",
    )
    train_p.add_argument(
        "--lr",
        dest="resume_lr",
        type=positive(float, 1e-300),
        metavar="LR",
        help="with --resume: continue with this learning rate (default: the run's own)",
    )
    _add_runtime_flags(train_p, prefix="resume_")
    models = train_p.add_subparsers(dest="model", metavar="MODEL", required=False)
    for name, family in MODELS.items():
        summary = (sys.modules[family.model.__module__].__doc__ or "").strip().splitlines()[0]
        model_p = models.add_parser(name, help=summary, description=summary)
        model_p.add_argument("--run-dir", type=Path, help="run folder (default: runs/MODEL-STAMP)")
        add_config_arguments(
            model_p.add_argument_group("training"),
            TrainConfig,
            family.training_defaults(),
        )
        add_config_arguments(model_p.add_argument_group(f"model {name}"), family.config)
        _add_runtime_flags(model_p)

    eval_p = commands.add_parser(
        "eval", help="test-set likelihoods (and sample quality) of a run -> RUN/eval.json"
    )
    eval_p.add_argument("run", type=Path, metavar="RUN", nargs="?")
    eval_p.add_argument(
        "--iw-samples",
        type=positive(int, 0),
        default=5000,
        metavar="K",
        help="importance samples per image; 0 skips the likelihood (default: 5000)",
    )
    eval_p.add_argument(
        "--limit", type=positive_int, metavar="N", help="evaluate only the first N images"
    )
    eval_p.add_argument("--split", choices=("test", "val"), default="test")
    eval_p.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default="posterior",
        help="proposal: q(z|x) (default) or the prior p(z)",
    )
    eval_p.add_argument("--output", type=Path, help="JSON file (default: RUN/eval.json)")
    eval_p.add_argument(
        "--quality",
        action="store_true",
        help="also score samples: FID, Inception score, precision/recall, Parzen window",
    )
    eval_p.add_argument(
        "--n-samples", type=positive_int, default=10000, help="samples to score (default: 10000)"
    )
    eval_p.add_argument(
        "--reference",
        choices=("test",),
        help="instead of a RUN: score real images (training images against the test "
        "images) for the ideal row of a quality table",
    )
    eval_p.add_argument(
        "--binarize",
        choices=gdata.BINARIZE_MODES,
        default="none",
        help="with --reference: the binarization to score (default: none)",
    )
    eval_p.add_argument(
        "--val-size",
        type=positive_int,
        default=10000,
        help="with --reference: training images held out for validation (default: 10000)",
    )
    _add_runtime_flags(eval_p)

    net_p = commands.add_parser(
        "quality-net", help="the MNIST classifier whose features score sample quality"
    )
    net_p.add_argument("action", choices=("train",))
    net_p.add_argument("--epochs", type=positive_int, default=5, help="(default: 5)")
    net_p.add_argument(
        "--retrain", action="store_true", help="train again even if a valid cache exists"
    )
    _add_runtime_flags(net_p)

    sample_p = commands.add_parser("sample", help="draw samples from a trained run")
    sample_p.add_argument("run", type=Path, metavar="RUN")
    sample_p.add_argument("-n", type=positive_int, default=64, help="how many (default: 64)")
    sample_p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("samples.png"),
        help="a .png grid or a .npy array (default: samples.png)",
    )
    sample_p.add_argument("--seed", type=int, default=0)
    sample_p.add_argument(
        "--temperature",
        type=positive(float, 0.0),
        help="flows: scale of the base-density noise (default: 1.0)",
    )
    sample_p.add_argument(
        "--standard-normal",
        action="store_true",
        help="autoencoders: decode z ~ N(0, I) instead of the fitted mixture",
    )
    _add_runtime_flags(sample_p)

    plot_p = commands.add_parser("plot", help="(re)draw every figure of a run")
    plot_p.add_argument("run", type=Path, metavar="RUN")
    _add_runtime_flags(plot_p)

    compare_p = commands.add_parser(
        "compare", help="several runs side by side: a table and one figure"
    )
    compare_p.add_argument("runs", type=Path, nargs="+", metavar="RUN")
    compare_p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("compare.png"),
        help="figure (default: compare.png)",
    )
    compare_p.add_argument(
        "--metrics",
        type=lambda text: text.split(","),
        help="comma-separated per-epoch metrics to plot "
        "(default: the validation objective and every diagnostic all runs logged)",
    )
    _add_runtime_flags(compare_p)

    data_p = commands.add_parser("data", help="download, verify or list the dataset files")
    data_p.add_argument("action", choices=("download", "verify", "info"))
    data_p.add_argument(
        "datasets",
        nargs="*",
        metavar="DATASET",
        help=f"some of {', '.join(gdata.DATASETS)} (default: all)",
    )
    data_p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset folder (default: $GENZOO_DATA, else ~/.cache/genzoo/data)",
    )
    return parser


# ----------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.resume is not None:
        if args.model is not None:
            parser.error("give either MODEL or --resume RUN, not both")
        run_dir = check_run_dir(args.resume)
        cfg = resume_config(run_dir, args.resume_epochs, args.resume_lr)
        train(run_dir, cfg, args.resume_device, args.resume_data_dir, resume=True)
        return
    if args.model is None:
        parser.error(f"name a MODEL ({', '.join(MODELS)}) or give --resume RUN")
    family = MODELS[args.model]
    for name, value in family.training_defaults().items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    cfg = RunConfig(
        args.model,
        TrainConfig(**given_values(args, TrainConfig)),
        family.config(**given_values(args, family.config)),
    )
    run_dir = args.run_dir or new_run_dir(args.model)
    if (run_dir / "config.json").exists():
        raise GenzooError(
            f"{run_dir} already holds a run; choose another --run-dir, "
            f"or continue it with `genzoo train --resume {run_dir}`"
        )
    train(run_dir, cfg, args.device, args.data_dir)


def print_quality(r: dict) -> None:
    print(
        f"  sample quality of {r['n_samples']} samples against {r['n_test']} images:\n"
        f"  FID {r['fid']:.2f}   Inception score {r['inception_score']:.2f}   "
        f"precision {r['precision']:.3f}   recall {r['recall']:.3f} (k={r['k']})\n"
        f"  Parzen log-likelihood {r['parzen_ll']:.1f} ± {r['parzen_ll_se']:.1f} nats "
        f"(sigma {r['parzen_sigma']:.3f})\n"
        f"  classes {r['class_histogram']}"
    )


def cmd_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if (args.run is None) == (args.reference is None):
        parser.error("give a RUN or --reference test (not both)")
    if args.reference:
        r = reference_quality(
            args.binarize, "mnist", args.device, args.data_dir, args.n_samples, args.val_size
        )
        output = args.output or Path(f"reference_{args.reference}_{args.binarize}.json")
        write_json(output, r)
        print(f"reference: training images as samples, binarize={args.binarize}")
        print_quality(r)
        print(f"  written to {output}")
        return
    r = evaluate_run(
        check_run_dir(args.run),
        args.iw_samples,
        args.limit,
        args.split,
        args.estimator,
        args.device,
        args.data_dir,
        args.output,
        args.quality,
        args.n_samples,
    )
    print(f"{r['split']} set, {r['n_examples']} images, {r['binarize']}, epoch {r['epoch']}")
    for name, label in TERM_LABELS.items():
        if name in r:
            print(f"  {label:<16}{r[name]:9.2f} ± {r[f'{name}_se']:.2f}")
    if "iw_samples" in r:
        print(f"  (NLL: importance sampling, K={r['iw_samples']}, proposal {r['estimator']})")
    elif "bpd" in r:
        print("  (NLL: exact, of 8-bit images, one uniform dequantization per image)")
    if "fid" in r:
        print_quality(r)
    print(f"  nats per image; {r['seconds']:.0f} s")


def cmd_quality_net(args: argparse.Namespace) -> None:
    net = load_or_train_feature_net(
        args.data_dir, resolve_device(args.device), epochs=args.epochs, retrain=args.retrain
    )
    weights, sidecar = cache_paths()
    info = read_json(sidecar)
    print(
        f"feature net: {weights}, test accuracy {info['test_accuracy']:.4f}, "
        f"{sum(p.numel() for p in net.parameters())} parameters"
    )


def cmd_sample(args: argparse.Namespace) -> None:
    suffix = args.output.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise GenzooError(f"-o {args.output}: give a .png (image grid) or .npy (array) file")
    _, model, _, epoch = load_trained(check_run_dir(args.run), args.device)
    if args.standard_normal and not hasattr(model, "sample_standard_normal"):
        raise GenzooError("--standard-normal applies to autoencoders (model ae) only")
    draw = model.sample_standard_normal if args.standard_normal else model.sample
    if args.temperature is not None:
        if not hasattr(model, "sample_temperatures"):
            raise GenzooError("--temperature applies to flows (model realnvp) only")
        draw = partial(model.sample, temperature=args.temperature)
    with isolated_rng(args.seed, next(model.parameters()).device):
        samples = draw(args.n).cpu()  # (n, C, H, W)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(args.output, samples.numpy())
    else:
        plots.save_image_grid(samples, args.output, f"{args.n} samples, {args.run.name}")
    print(f"wrote {args.n} samples of epoch {epoch} to {args.output}")


def cmd_plot(args: argparse.Namespace) -> None:
    run_dir = check_run_dir(args.run)
    _, model, data, _ = load_trained(run_dir, args.device, args.data_dir)
    with isolated_rng(EVAL_SEED, next(model.parameters()).device):
        for path in plots.draw_run_figures(model, data, run_dir):
            print(path)


def cmd_compare(args: argparse.Namespace) -> None:
    rows = compare_runs(args.runs, args.output, args.metrics, args.device, args.data_dir)
    print(f"{'run':<24}{'model':<8}{'epochs':>6}{'images':>8}{'-ELBO':>17}{'NLL':>17}  settings")
    for row in rows:
        cells = [
            f"{row[k]:8.2f} ± {row[k + '_se']:5.2f}" if k in row else f"{'-':>15}"
            for k in ("neg_elbo", "nll")
        ]
        print(
            f"{row['run']:<24}{row['model']:<8}{row['epochs']:>6}{row.get('n_examples', '-'):>8}"
            f"  {cells[0]}  {cells[1]}  {row['settings']}"
        )
    print(f"(test images, nats per image, from each run's eval.json; figure: {args.output})")


def cmd_data(args: argparse.Namespace) -> None:
    root = gdata.resolve_data_dir(args.data_dir)
    unknown = set(args.datasets) - set(gdata.DATASETS)
    if unknown:
        raise GenzooError(
            f"unknown dataset(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(gdata.DATASETS)}"
        )
    names = args.datasets or list(gdata.DATASETS)
    print(f"data folder: {root}")
    if args.action == "download":
        for name in names:
            gdata.dataset_paths(name, root)
            print(f"{name}: ok")
        return
    problems = 0
    for name in names:
        for spec in gdata.DATASETS[name].files:
            path = root / name / spec.name
            if not path.exists():
                status = "missing"
                # Without named datasets, verify only the ones that are there at all.
                problems += args.action == "verify" and (
                    bool(args.datasets) or (root / name).is_dir()
                )
            elif args.action == "info":
                status = f"{path.stat().st_size} bytes"
            else:
                try:
                    gdata.verify_file(path, spec)
                    status = "ok (size and MD5)"
                except GenzooError as err:
                    status, problems = f"BAD: {err}", problems + 1
            print(f"  {name}/{spec.name}: {status}")
    if problems:
        raise GenzooError(
            f"{problems} dataset file(s) missing or corrupt; "
            "run `genzoo data download` or fix --data-dir"
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_process()
    try:
        if args.command == "train":
            cmd_train(args, parser)
        elif args.command == "eval":
            cmd_eval(args, parser)
        elif args.command == "quality-net":
            cmd_quality_net(args)
        elif args.command == "sample":
            cmd_sample(args)
        elif args.command == "plot":
            cmd_plot(args)
        elif args.command == "compare":
            cmd_compare(args)
        else:
            cmd_data(args)
    except GenzooError as err:
        print(f"genzoo: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    return 0
