"""The ``genzoo`` command: a thin argparse layer over the library.

One small function adds each sub-command (``add_train``, ``add_resume``, ...) and names
the function that runs it (``set_defaults(func=...)``); each ``cmd_*`` function turns
the parsed flags into one library call and prints its result. User mistakes end with
one line on stderr and exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import typing
from pathlib import Path
from typing import Any

from genzoo import api, distributed
from genzoo import data as gdata
from genzoo.config import (
    TrainConfig,
    add_config_arguments,
    add_field_argument,
    bounded,
    given_values,
)
from genzoo.cpu import tune_process
from genzoo.errors import GenzooError, RunFailed, user_errors
from genzoo.evaluation import ESTIMATORS, QUALITY_SAMPLES, reference_quality
from genzoo.figures import draw_run_figures
from genzoo.files import read_json, write_json
from genzoo.index import write_report
from genzoo.interrupts import INTERRUPTED, sigterm_as_ctrl_c
from genzoo.models import MODELS
from genzoo.quality import cache_paths, load_or_train_feature_net
from genzoo.rng import EVAL_SEED, isolated_rng, resolve_device
from genzoo.runs import (
    Changes,
    check_run_dir,
    load_trained,
    new_run_dir,
    read_metrics,
    resume_config,
)
from genzoo.studies import STUDIES, run_study

positive_int = bounded(int)

DESCRIPTION = """\
genzoo trains, evaluates, samples and shows deep generative models of MNIST-like
images, with the measurements of the papers (ELBO and its parts, importance-sampled
log-likelihood in nats, bits per dimension, sample-quality scores) and their figures.

model families (genzoo train MODEL --help lists each one's flags):
{families}

a first run:
  genzoo train vae --latent-dim 20 --epochs 40     # -> runs/vae-<stamp>/
  genzoo eval runs/vae-<stamp>                     # test ELBO parts and NLL
  genzoo sample runs/vae-<stamp> -n 64 -o samples.png
"""


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line that points to --help, not the whole usage."""

    command_names: tuple[str, ...] = ()  # genzoo's sub-commands, set by build_parser

    def error(self, message: str) -> typing.NoReturn:
        if self.prog == "genzoo train" and "invalid choice" in message:
            message += "; training flags follow MODEL (genzoo train vae --batch-size 64)"
        refuse(self.prog, message)


def refuse(prog: str, message: str, help_of: str | None = None) -> typing.NoReturn:
    """End a mistaken command line: one line on stderr that points to the help of
    ``help_of`` (``prog`` itself by default), exit status 2."""
    print(f"{prog}: error: {message} (see {help_of or prog} --help)", file=sys.stderr)
    raise SystemExit(2)


def family_summary(name: str) -> str:
    """The first line of a family's module docstring: what it is and its paper."""
    module = sys.modules[MODELS[name].model.__module__]
    return (module.__doc__ or name).strip().splitlines()[0]


def _add_runtime_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """--device and --data-dir: how to run, not part of the run's config."""
    parser.add_argument(
        "--device",
        dest=prefix + "device",
        default=None,  # auto; None tells a flag given before MODEL from the default
        choices=api.DEVICES,
        help="where to compute (default: auto)",
    )
    parser.add_argument(
        "--data-dir",
        dest=prefix + "data_dir",
        type=Path,
        default=None,
        help="dataset folder (default: $GENZOO_DATA, else ~/.cache/genzoo/data)",
    )


def _add_nproc_flag(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    parser.add_argument(
        "--nproc",
        dest=prefix + "nproc",
        type=bounded(int, max=1024),
        default=None,
        metavar="N",
        help="train data-parallel in N processes on this machine, through torchrun "
        "(one per GPU on CUDA; default: 1)",
    )


def _add_resume_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """What a resume may change: the last epoch, the base learning rate, the time budget."""
    bounds = {f.name: f.metadata for f in dataclasses.fields(TrainConfig)}
    parser.add_argument(
        "--epochs",
        dest=prefix + "epochs",
        type=bounded(int, **bounds["epochs"]),
        metavar="N",
        help="train up to this epoch (default: the run's own)",
    )
    parser.add_argument(
        "--lr",
        dest=prefix + "lr",
        type=bounded(float, **bounds["lr"]),
        metavar="LR",
        help="continue with this base learning rate (default: the run's own)",
    )
    parser.add_argument(
        "--max-minutes",
        dest=prefix + "max_minutes",
        type=bounded(float, **bounds["max_minutes"]),
        metavar="M",
        help="a new time budget for the training passes in all, those done included "
        "(0: none; default: the run's own)",
    )
    _add_nproc_flag(parser, prefix)
    _add_runtime_flags(parser, prefix)


# ----------------------------------------------------------------------------- sub-commands


def add_train(commands: argparse._SubParsersAction) -> None:
    train_p = commands.add_parser(
        "train",
        help="train a model (MODEL and its flags)",
        description="Train MODEL; its flags follow its name (genzoo train vae --epochs 5).",
    )
    train_p.set_defaults(func=cmd_train)
    # The old spelling of `genzoo resume RUN`, kept as an alias; its flags (prefixed
    # resume_) also catch a training flag put before MODEL, which cmd_train then applies.
    train_p.add_argument("--resume", type=Path, metavar="RUN", help="the same as genzoo resume RUN")
    _add_resume_flags(train_p, prefix="resume_")
    models = train_p.add_subparsers(dest="model", metavar="MODEL", required=False)
    for name, family in MODELS.items():
        summary = family_summary(name)
        model_p = models.add_parser(name, help=summary, description=summary)
        model_p.add_argument("--run-dir", type=Path, help="run folder (default: runs/MODEL-STAMP)")
        add_config_arguments(
            model_p.add_argument_group("training"), TrainConfig, family.training_defaults()
        )
        add_config_arguments(model_p.add_argument_group(f"model {name}"), family.config)
        _add_nproc_flag(model_p)
        _add_runtime_flags(model_p)


def add_resume(commands: argparse._SubParsersAction) -> None:
    resume_p = commands.add_parser(
        "resume",
        help="continue a run from its last checkpoint",
        description="Continue RUN exactly where it stopped (its last checkpoint, even one "
        "within an epoch), optionally for more epochs or at a new base learning rate.",
    )
    resume_p.set_defaults(func=cmd_resume)
    resume_p.add_argument("run", type=Path, metavar="RUN")
    _add_resume_flags(resume_p)


def add_eval(commands: argparse._SubParsersAction) -> None:
    eval_p = commands.add_parser(
        "eval", help="test-set measurements (and sample quality) of a run -> RUN/eval.json"
    )
    eval_p.set_defaults(func=cmd_eval)
    eval_p.add_argument("run", type=Path, metavar="RUN", nargs="?")
    eval_p.add_argument(
        "--iw-samples",
        type=bounded(int, min=0),
        metavar="SAMPLES",
        help="samples per image of the likelihood estimator: importance samples (VAEs, "
        "DRAW; default 5000), timesteps of the diffusion bound (default T, the exact sum) "
        "or ODE steps of flow matching (default 200); 0 skips the likelihood",
    )
    eval_p.add_argument(
        "--bound-samples",
        dest="iw_samples",
        type=bounded(int, min=0),
        metavar="SAMPLES",
        help="--iw-samples by the name of diffusion's bound: its timesteps per image",
    )
    eval_p.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="evaluate only the first N images, and score N samples unless --n-samples says "
        "otherwise (the quality scores' real images are always the whole split)",
    )
    eval_p.add_argument(
        "--skip",
        type=bounded(int, min=0),
        default=0,
        metavar="N",
        help="leave out the first N images (MNIST's test set: 5000 for its second group "
        "of writers, whose images differ from the first 5000's)",
    )
    eval_p.add_argument("--split", choices=("test", "val"), default="test")
    eval_p.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default="posterior",
        help="proposal: q(z|x) (default) or the prior p(z)",
    )
    eval_p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="JSON file (default: RUN/eval.json; with --reference "
        "runs/reference_SPLIT_BINARIZE.json)",
    )
    eval_p.add_argument(
        "--quality",
        action="store_true",
        help="also score samples: FID, Inception score, precision/recall, Parzen window",
    )
    eval_p.add_argument(
        "--n-samples",
        type=positive_int,
        help=f"samples to score (default: {QUALITY_SAMPLES}, or --limit's N)",
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
    add_sampling_flags(eval_p)
    _add_runtime_flags(eval_p)


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    for f, hint, family in api.sampling_fields().values():
        add_field_argument(parser, f, hint, f"the run's; {family} only")


def sampling_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling flags, None where not given (api.sampling_settings checks them)."""
    return {name: getattr(args, name) for name in api.sampling_fields()}


def add_quality_net(commands: argparse._SubParsersAction) -> None:
    net_p = commands.add_parser(
        "quality-net", help="the MNIST classifier whose features score sample quality"
    )
    net_p.set_defaults(func=cmd_quality_net)
    net_p.add_argument("action", choices=("train",))
    net_p.add_argument("--epochs", type=positive_int, default=5, help="(default: 5)")
    net_p.add_argument(
        "--retrain", action="store_true", help="train again even if a valid cache exists"
    )
    _add_runtime_flags(net_p)


def add_sample(commands: argparse._SubParsersAction) -> None:
    sample_p = commands.add_parser("sample", help="draw samples from a trained run")
    sample_p.set_defaults(func=cmd_sample)
    sample_p.add_argument("run", type=Path, metavar="RUN")
    sample_p.add_argument("-n", type=positive_int, default=64, help="how many (default: 64)")
    sample_p.add_argument(
        "-o",
        "--output",
        type=Path,
        help=f"a .png grid (at most {api.MAX_GRID_IMAGES:,} images), or a .npy or .npz array "
        "(default: RUN/samples-nN-seedS.png, with --class, --temperature and the sampling "
        "flags given in the name too)",
    )
    sample_p.add_argument(
        "--force", action="store_true", help="replace the file -o names if it exists"
    )
    sample_p.add_argument("--seed", type=bounded(int, min=0), default=0)
    sample_p.add_argument(
        "--temperature",
        type=bounded(float, min=0.0),
        help="flows: scale of the base-density noise (default: 1.0)",
    )
    sample_p.add_argument(
        "--class",
        dest="label",
        type=bounded(int, min=0),
        metavar="C",
        help="conditional models: draw every sample of this class",
    )
    add_sampling_flags(sample_p)
    sample_p.add_argument(
        "--standard-normal",
        action="store_true",
        help="autoencoders: decode z ~ N(0, I) instead of the fitted mixture",
    )
    _add_runtime_flags(sample_p)


def add_plot(commands: argparse._SubParsersAction) -> None:
    plot_p = commands.add_parser("plot", help="(re)draw every figure of a run")
    plot_p.set_defaults(func=cmd_plot)
    plot_p.add_argument("run", type=Path, metavar="RUN")
    _add_runtime_flags(plot_p)


def add_compare(commands: argparse._SubParsersAction) -> None:
    compare_p = commands.add_parser(
        "compare", help="several runs side by side: a table and one figure"
    )
    compare_p.set_defaults(func=cmd_compare)
    compare_p.add_argument("runs", type=Path, nargs="+", metavar="RUN")
    compare_p.add_argument(
        "-o", "--output", type=Path, help="figure (default: the first RUN's compare.png)"
    )
    compare_p.add_argument(
        "--metrics",
        type=lambda text: text.split(","),
        help="comma-separated per-epoch metrics to plot "
        "(default: the validation objective and every diagnostic all runs logged)",
    )
    _add_runtime_flags(compare_p)


def add_report(commands: argparse._SubParsersAction) -> None:
    report_p = commands.add_parser(
        "report",
        help="one self-contained HTML page of a run or study -> DIR/report.html; of a "
        "folder of runs -> FOLDER/index.html, an index linking to every run's page",
    )
    report_p.set_defaults(func=cmd_report)
    report_p.add_argument("run", type=Path, metavar="RUN|STUDY|FOLDER")
    report_p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="HTML file (default: DIR/report.html, FOLDER/index.html)",
    )


def add_study(commands: argparse._SubParsersAction) -> None:
    names = "\n".join(f"  {name:<24}{study.question}" for name, study in STUDIES.items())
    study_p = commands.add_parser(
        "study",
        help="run one of the classic studies: every arm trained, evaluated, one page",
        description=f"Run a study: every arm, its evaluation, one page.\n\nstudies:\n{names}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    study_p.set_defaults(func=cmd_study)
    study_p.add_argument("name", choices=tuple(STUDIES), metavar="NAME")
    study_p.add_argument(
        "--quick", action="store_true", help="one epoch on 1,000 images: minutes, a smoke run"
    )
    study_p.add_argument(
        "--out", type=Path, help="study folder (default: studies/NAME, studies/NAME-quick)"
    )
    study_p.add_argument(
        "--seeds", type=bounded(int, max=100), default=1, help="seeds per arm (default: 1)"
    )
    study_p.add_argument(
        "--arms",
        type=lambda text: tuple(text.split(",")),
        metavar="ARM,ARM",
        help="run only these arms (the table also shows those an earlier run of the study "
        "finished; default: every arm)",
    )
    study_p.add_argument(
        "--max-minutes",
        type=bounded(float, max=1e6),
        metavar="M",
        help="each arm's training budget in minutes, instead of the study's own",
    )
    _add_runtime_flags(study_p)


def add_data(commands: argparse._SubParsersAction) -> None:
    data_p = commands.add_parser("data", help="download, verify or list the dataset files")
    data_p.set_defaults(func=cmd_data)
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


SUBCOMMANDS = (
    add_train,
    add_resume,
    add_eval,
    add_sample,
    add_plot,
    add_compare,
    add_report,
    add_study,
    add_quality_net,
    add_data,
)


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, MODELS)) + 2
    families = "\n".join(f"  {name:<{width}}{family_summary(name)}" for name in MODELS)
    parser = Parser(
        prog="genzoo",
        description=DESCRIPTION.format(families=families),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    parser.command_names = tuple(commands.choices)
    return parser


# ----------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> None:
    if args.resume is not None:
        if args.model is not None:
            raise GenzooError("give either MODEL or --resume RUN, not both")
        _resume(
            args.resume,
            Changes(args.resume_epochs, args.resume_lr, args.resume_max_minutes),
            args.resume_device,
            args.resume_data_dir,
            args.resume_nproc,
            args.argv,
        )
        return
    if args.model is None:
        raise GenzooError(f"name a MODEL ({', '.join(MODELS)}) or resume a run: genzoo resume RUN")
    # A flag given before MODEL (genzoo train --epochs 5 vae) counts as if given after it.
    for name in ("epochs", "lr", "max_minutes", "device", "data_dir", "nproc"):
        early = getattr(args, f"resume_{name}")
        if early is not None and getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise GenzooError(f"{flag} is given both before and after MODEL; give it once")
        if early is not None:
            setattr(args, name, early)
    settings = {
        **given_values(args, TrainConfig),
        **given_values(args, MODELS[args.model].config),
    }
    if args.run_dir is None and distributed.launched_by_torchrun():
        raise GenzooError("under torchrun give --run-dir, the one folder every process uses")
    run_dir = args.run_dir or new_run_dir(args.model)
    if (args.nproc or 1) > 1 and not distributed.launched_by_torchrun():
        api.run_config(args.model, settings)  # refused here once, not by every process
        # The folder is named here, once, for every process torchrun starts.
        argv = args.argv if args.run_dir else [*args.argv, "--run-dir", str(run_dir)]
        launch(args.nproc, argv, run_dir)
        return
    api.train(args.model, run_dir=run_dir, device=args.device, data_dir=args.data_dir, **settings)


def cmd_resume(args: argparse.Namespace) -> None:
    changes = Changes(args.epochs, args.lr, args.max_minutes)
    _resume(args.run, changes, args.device, args.data_dir, args.nproc, args.argv)


def _resume(
    run: Path,
    changes: Changes,
    device: str | None,
    data_dir: Path | None,
    nproc: int | None,
    argv: list[str],
) -> None:
    run_dir = check_run_dir(run)
    if (nproc or 1) > 1 and not distributed.launched_by_torchrun():
        resume_config(run_dir, changes)  # its errors before any process starts
        launch(nproc, argv, run_dir)
        return
    api.resume(run_dir, device=device, data_dir=data_dir, **changes._asdict())


def launch(nproc: int, argv: list[str], run_dir: Path) -> None:
    """``genzoo ARGV`` without --nproc, in ``nproc`` processes under torchrun."""
    status = distributed.launch(nproc, without_nproc(argv))
    if status:
        raise RunFailed(
            f"the data-parallel run stopped: a process failed (torchrun exit status {status}, "
            f"its report above); {run_dir} keeps its last good checkpoint: continue with "
            f"genzoo resume {run_dir} --nproc {nproc}"
        )


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` with its ``--nproc N`` (or ``--nproc=N``) left out."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def print_quality(r: dict) -> None:
    what = r.get("quality_protocol", f"{r['n_samples']} samples against {r['n_test']} images")
    print(
        f"  sample quality of {what}:\n"
        f"  FID {r['fid']:.2f}   Inception score {r['inception_score']:.2f} ± "
        f"{r['inception_score_std']:.2f} (standard deviation over {r['inception_splits']} "
        "splits)\n"
        f"  precision {r['precision']:.3f}   recall {r['recall']:.3f} (k={r['k']})   "
        f"density {r['density']:.3f}   coverage {r['coverage']:.3f} (k={r['density_k']})\n"
        f"  Parzen log-likelihood {r['parzen_ll']:.1f} ± {r['parzen_ll_se']:.1f} nats "
        f"(sigma {r['parzen_sigma']:.3f} chosen on {r['parzen_sigma_images']} validation "
        "images; for comparison with Goodfellow et al. 2014 only, Parzen disagrees with "
        "likelihood and sample quality)\n"
        f"  classes {r['class_histogram']}"
    )
    if "sampling_seconds" in r:
        print(f"  drawn in {r['sampling_seconds']:.1f} s, scored in {r['scoring_seconds']:.1f} s")
    if "class_accuracy" in r:
        per_class = " ".join(f"{a:.3f}" for a in r["class_accuracies"])
        if "class_fids" in r:
            fids = " ".join(f"{f:.1f}" for f in r["class_fids"])
        else:
            fids = f"left out: {r['class_fids_left_out']}"
        print(
            f"  samples of the class asked for, classified as it: {r['class_accuracy']:.4f}\n"
            f"    per class 0..{len(r['class_accuracies']) - 1}: {per_class}\n"
            f"  FID per class: {fids}"
        )


def cmd_eval(args: argparse.Namespace) -> None:
    if (args.run is None) == (args.reference is None):
        raise GenzooError("give a RUN or --reference test (not both)")
    if args.reference:
        r = reference_quality(
            args.binarize,
            "mnist",
            args.device,
            args.data_dir,
            args.n_samples or QUALITY_SAMPLES,
            args.val_size,
        )
        output = args.output or Path("runs") / f"reference_{args.reference}_{args.binarize}.json"
        write_json(output, r)
        print(f"reference: training images as samples, binarize={args.binarize}")
        print_quality(r)
        print(f"  written to {output}")
        return
    r = api.evaluate(
        args.run,
        iw_samples=args.iw_samples,
        limit=args.limit,
        skip=args.skip,
        split=args.split,
        estimator=args.estimator,
        quality=args.quality,
        n_samples=args.n_samples,
        output=args.output,
        device=args.device,
        data_dir=args.data_dir,
        **sampling_flags(args),
    )
    print(f"{r['split']} set, {r['n_examples']} images, {r['binarize']}, epoch {r['epoch']}")
    for name, label in r["terms"].items():
        if name in r:
            print(f"  {label:<16}{r[name]:9.3f} ± {r[f'{name}_se']:.3f}")
    if "likelihood" in r:
        likelihood = r["likelihood"]
        print(f"  (NLL: {likelihood['protocol']}; {likelihood['kind']})")
    if "fid" in r:
        print_quality(r)
    print(f"  units: {r['units']}; {r['seconds']:.0f} s; written to {r['output']}")
    for better in r["better_shown"]:
        print(f"  it goes on showing the {better}, a better protocol; this one is kept beside")


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


def default_samples_file(args: argparse.Namespace) -> Path:
    """Where samples go without -o: a file of the run's own, which a rerun with the same
    flags replaces, named by every flag that changes the draw, so that ``--class 3`` and
    ``--class 5`` (or two samplers) each keep their own: e.g.
    RUN/samples-n64-seed0-class3.png, RUN/samples-n64-seed0-sampler-ddim-sample-steps10.png."""
    given = {
        "class": args.label,
        "temperature": args.temperature,
        **{name.replace("_", "-"): value for name, value in sampling_flags(args).items()},
    }
    parts = [f"n{args.n}", f"seed{args.seed}"]
    for flag, value in given.items():
        if value is not None:  # numbers follow their flag, words after a dash
            parts.append(
                f"{flag}{value:g}" if isinstance(value, int | float) else f"{flag}-{value}"
            )
    if args.standard_normal:
        parts.append("standard-normal")
    return check_run_dir(args.run) / f"samples-{'-'.join(parts)}.png"


def cmd_sample(args: argparse.Namespace) -> None:
    output = args.output or default_samples_file(args)
    api.sample(
        args.run,
        args.n,
        seed=args.seed,
        temperature=args.temperature,
        label=args.label,
        standard_normal=args.standard_normal,
        output=output,
        force=args.force or args.output is None,
        device=args.device,
        data_dir=args.data_dir,
        **sampling_flags(args),
    )


def cmd_plot(args: argparse.Namespace) -> None:
    run_dir = check_run_dir(args.run)
    cfg, model, data, _ = load_trained(run_dir, args.device, args.data_dir)
    with isolated_rng(EVAL_SEED, next(model.parameters()).device):
        figures = draw_run_figures(
            model, data.test, read_metrics(run_dir), run_dir / "figures", cfg.train.ema
        )
        for path in figures:
            print(path)


def cmd_compare(args: argparse.Namespace) -> None:
    print(
        api.compare(
            args.runs,
            output=args.output,
            metrics=args.metrics,
            device=args.device,
            data_dir=args.data_dir,
        )
    )


def cmd_report(args: argparse.Namespace) -> None:
    print(write_report(args.run, args.output))


def cmd_study(args: argparse.Namespace) -> None:
    out = args.out or Path("studies") / (args.name + ("-quick" if args.quick else ""))
    study = STUDIES[args.name]
    device = args.device or "auto"
    page = run_study(
        study,
        out,
        args.quick,
        args.seeds,
        device,
        args.data_dir,
        run_command=main,
        arms=args.arms,
        max_minutes=args.max_minutes,
    )
    rows = read_json(out / "study.json")
    print(f"{study.name}: {rows['answer']}")
    print(f"page: {page}")


def cmd_data(args: argparse.Namespace) -> None:
    """``genzoo data download|verify|info [DATASET ...]``: the state of each dataset
    named (every one by default), one line each."""
    root = gdata.resolve_data_dir(args.data_dir)
    print(f"data folder: {root}")
    unknown = set(args.datasets) - set(gdata.DATASETS)
    if unknown:
        raise GenzooError(
            f"unknown dataset(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(gdata.DATASETS)}"
        )
    names = args.datasets or list(gdata.DATASETS)
    if args.action == "download":
        download_datasets(names, root)
    elif args.action == "verify":
        verify_datasets(names, root, named=bool(args.datasets))
    else:
        list_dataset_files(names, root)


def download_datasets(names: list[str], root: Path) -> None:
    """Fetch what is missing of each dataset, going on past one that cannot be fetched
    (offline, say), so that every dataset's state is reported; raises GenzooError after
    the lines if any could not be."""
    failed: dict[str, str] = {}  # dataset -> why it could not be fetched
    for name in names:
        try:
            gdata.dataset_paths(name, root)
        except GenzooError as err:
            failed[name] = str(err)
        print(gdata.dataset_state(name, root).describe())
        if name in failed:
            print(f"  {failed[name]}")
    if failed:
        message = f"could not download {', '.join(failed)}"
        ready = [name for name in names if name not in failed]
        if ready:  # what to run for just the datasets that are there
            message += f"; ready: {', '.join(ready)} (genzoo data download {' '.join(ready)})"
        raise GenzooError(message)


def verify_datasets(names: list[str], root: Path, named: bool) -> None:
    """Check sizes and MD5s; raises GenzooError, after the lines, if a dataset is damaged
    or incomplete, or one ``named`` is not there at all (unnamed, it is just reported)."""
    faulty = []
    for name in names:
        state = gdata.dataset_state(name, root)
        print(state.describe())
        if not state.complete and (named or not state.absent):
            faulty.append(name)
    if faulty:
        raise GenzooError(
            f"{', '.join(faulty)}: files missing or damaged (above); genzoo data download "
            f"{' '.join(faulty)} fetches the missing ones (delete a damaged one first), or "
            "fix --data-dir"
        )


def list_dataset_files(names: list[str], root: Path) -> None:
    for name in names:
        for spec in gdata.DATASETS[name].files:
            path = root / name / spec.name
            status = f"{path.stat().st_size} bytes" if path.exists() else "missing"
            print(f"  {name}/{spec.name}: {status}")


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line, or one line (exit 2) that names the fix of a common slip."""
    parser = build_parser()
    check_command_first(argv, parser.command_names)
    args, extras = parser.parse_known_args(argv)
    if extras:
        refuse_extras(args, extras)
    return args


def check_command_first(argv: list[str], command_names: tuple[str, ...]) -> None:
    """``genzoo --epochs 1 train vae``: argparse would call '1' an invalid command."""
    if not argv or not argv[0].startswith("-") or argv[0] in ("-h", "--help"):
        return
    commands = [name for name in argv if name in command_names]
    if not commands:
        return  # no command at all: argparse says so
    at = argv.index(commands[0])
    # The command and, for train, its MODEL come first; the flags then follow them.
    model_follows = argv[at] == "train" and at + 1 < len(argv) and argv[at + 1] in MODELS
    words = 2 if model_follows else 1
    fixed = [*argv[at : at + words], *argv[:at], *argv[at + words :]]
    refuse(
        "genzoo",
        f"{argv[0]} comes before the command: flags follow it, and training flags follow "
        f"`train MODEL`, as in: genzoo {shlex.join(fixed)}",
    )


def refuse_extras(args: argparse.Namespace, extras: list[str]) -> typing.NoReturn:
    """Arguments no parser took: say which family has a flag, or that a file name wants
    -o, where that is what went wrong."""
    model = getattr(args, "model", None)  # train's MODEL; other commands have none
    prog = f"genzoo {args.command}" + (f" {model}" if model else "")
    message = f"unrecognized arguments: {' '.join(extras)}"
    flag = next((e.split("=")[0] for e in extras if e.startswith("--")), None)
    owners = api.families_with_flag(flag)
    if model and owners:
        refuse(
            prog,
            f"{message}; {flag} is a flag of {', '.join(owners)}, not {model}",
            help_of=f"genzoo train {owners[0]}",
        )
    name = next((e for e in extras if not e.startswith("-")), None)
    if name is not None and "output" in vars(args):
        message += f"; to write to {name}, give -o {name}"
    refuse(prog, message)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    args.argv = argv
    tune_process()
    try:
        with sigterm_as_ctrl_c(), user_errors():
            args.func(args)
    except GenzooError as err:
        print(f"genzoo: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (interrupts.py)
        return INTERRUPTED
    return 0
