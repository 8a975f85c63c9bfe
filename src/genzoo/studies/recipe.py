"""What a study is (a declarative recipe) and the one runner of every study.

A ``Study`` names its question, its arms (a family and its ``genzoo train`` flags each),
the flags of the full protocol and of ``--quick``, the ``genzoo eval`` flags, the columns
of its table (keys of eval.json), the figures it shows side by side, and optionally an
``analyse`` step (a measurement beyond train and eval, e.g. the likelihood estimators'
curves) and an ``answer`` (the headline, in words, from the table and the analysis).

``run_study`` trains and evaluates every arm (``--seeds N`` times), each in its own run
folder under the study's folder, through the same CLI commands a user would type (run by
the ``run_command`` the CLI hands it), then writes study.json (the table, the analysis,
the answer, the commands) and the page (page.py). A killed study continues where it
stopped: a finished arm is kept, a checkpointed one is resumed (``genzoo resume``), an
evaluated one is not evaluated again. Ctrl-C and SIGTERM stop it alike, saying the command
that continues it.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import torch

from genzoo import plots
from genzoo.errors import GenzooError
from genzoo.files import read_json, write_json
from genzoo.interrupts import INTERRUPTED, sigterm_as_ctrl_c
from genzoo.models.base import trainable
from genzoo.report import training_seconds, wall_seconds
from genzoo.runs import load_trained, read_metrics
from genzoo.studies.page import write_study_report

# --quick: one epoch on 1,000 images, the likelihood on 100: the whole study in minutes,
# uncompiled (a compile of the families that default to it takes longer than the run).
QUICK_TRAIN = ("--epochs", "1", "--train-size", "1000", "--val-size", "500", "--no-compile")
QUICK_EVAL = ("--iw-samples", "20", "--limit", "100")
QUICK_SAMPLES = 200  # samples scored by --quality under --quick (10,000 in full)


@dataclass(frozen=True)
class Arm:
    """One configuration of a study: ``genzoo train MODEL FLAGS``."""

    name: str
    model: str
    flags: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # with --quick also these (smaller networks, fewer steps)
    # The full protocol's evaluation with also these (a family's cheaper likelihood).
    evaluate: tuple[str, ...] = ()


Analysis = Callable[["StudyRun"], dict[str, Any]]
# Runs one genzoo command (its arguments, without "genzoo") and returns its exit status:
# the CLI's own ``main``, which it hands to ``run_study`` (the studies never import the CLI).
Command = Callable[[list[str]], int]


@dataclass(frozen=True)
class Study:
    name: str
    question: str
    arms: tuple[Arm, ...]
    train: tuple[str, ...]  # the full protocol's training flags, for every arm
    evaluate: tuple[str, ...] = ("--iw-samples", "5000")
    columns: dict[str, str] = field(default_factory=dict)  # eval.json key -> column title
    figures: tuple[str, ...] = ("samples.png",)  # each arm's figures shown side by side
    quality: bool = False  # eval --quality (sample-quality scores) for every arm
    analyse: Analysis | None = None  # measurements beyond train and eval
    answer: Callable[[list[dict[str, Any]], dict[str, Any]], str] | None = None


@dataclass
class StudyRun:
    """A study being run: where, how, and the run folders of each arm (one per seed)."""

    study: Study
    out: Path
    quick: bool
    seeds: int
    device: str
    data_dir: Path | None
    run_command: Command
    runs: dict[str, list[Path]] = field(default_factory=dict)
    arms: tuple[Arm, ...] = ()  # the arms to run now (the study's, or those --arms names)
    max_minutes: float | None = None  # --max-minutes: each arm's budget, not the study's

    @property
    def figures(self) -> Path:
        return self.out / "figures"


def ranked(rows: list[dict[str, Any]], key: str) -> str:
    """The arms that have ``key``, lowest first: 'arm 12.3, arm 14.5' (for answers)."""
    scored = sorted((r for r in rows if key in r), key=lambda r: r[key])
    return ", ".join(f"{r['arm']} {r[key]:.1f}" for r in scored)


def run_dir(out: Path, arm: Arm, seed: int, seeds: int) -> Path:
    return out / (arm.name if seeds == 1 else f"{arm.name}-seed{seed}")


def train_command(
    study: Study, arm: Arm, run: Path, seed: int, quick: bool, max_minutes: float | None = None
) -> list[str]:
    protocol = QUICK_TRAIN if quick else study.train
    extra = arm.quick if quick else ()
    budget = ()
    if max_minutes is not None:  # replaces the protocol's own budget, not beside it
        protocol = without_flag(protocol, "--max-minutes")
        budget = ("--max-minutes", f"{max_minutes:g}")
    return [
        "train", arm.model, *protocol, *arm.flags, *extra, *budget, "--seed", str(seed),
        "--run-dir", str(run),
    ]  # fmt: skip


def without_flag(args: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """``args`` without ``flag`` and the value after it."""
    kept, i = [], 0
    while i < len(args):
        if args[i] == flag:
            i += 2
            continue
        kept.append(args[i])
        i += 1
    return tuple(kept)


def eval_command(study: Study, run: Path, quick: bool, arm: Arm | None = None) -> list[str]:
    """``genzoo eval`` of a run; the arm's own flags follow the study's, so they win."""
    own = () if quick or arm is None else arm.evaluate
    command = ["eval", str(run), *(quick_evaluation(study) if quick else study.evaluate), *own]
    if study.quality:
        command += ["--quality", "--n-samples", str(QUICK_SAMPLES if quick else 10000)]
    return command


def quick_evaluation(study: Study) -> tuple[str, ...]:
    """QUICK_EVAL, without the likelihood where the study's own protocol estimates none."""
    flags = study.evaluate
    no_likelihood = "--iw-samples" in flags and flags[flags.index("--iw-samples") + 1] == "0"
    return ("--iw-samples", "0", *QUICK_EVAL[2:]) if no_likelihood else QUICK_EVAL


def _genzoo(state: StudyRun, argv: list[str]) -> None:
    """One genzoo command, as a user would type it; a failure stops the study."""
    data_dir = state.data_dir
    runtime = ["--device", state.device] + (["--data-dir", str(data_dir)] if data_dir else [])
    code = state.run_command([*argv, *runtime])
    if code == INTERRUPTED:  # Ctrl-C or SIGTERM: the command said what it kept
        raise KeyboardInterrupt
    if code:
        raise GenzooError(f"`genzoo {shlex.join(argv)}` failed (exit status {code})")


def run_arm(state: StudyRun, arm: Arm, seed: int) -> Path:
    """Train (or resume, or keep) and evaluate one arm with one seed; its run folder."""
    study, quick = state.study, state.quick
    run = run_dir(state.out, arm, seed, state.seeds)
    if not (run / "summary.json").exists():
        resumable = (run / "config.json").exists()
        command = (
            ["resume", str(run)]
            if resumable
            else train_command(study, arm, run, seed, quick, state.max_minutes)
        )
        _genzoo(state, command)
    evaluated = run / "eval.json"
    if not evaluated.exists() or read_json(evaluated).get("epoch") is None:
        _genzoo(state, eval_command(study, run, quick, arm))
    return run


def arm_row(study: Study, arm: Arm, runs: list[Path], device: str) -> dict[str, Any]:
    """An arm's line of the table: each column's mean over seeds with its spread (the
    standard deviation over seeds; with one seed the evaluation's standard error), the
    training command's minutes and the parameters."""
    results = [read_json(r / "eval.json") for r in runs]
    row: dict[str, Any] = {"arm": arm.name, "model": arm.model, "runs": [r.name for r in runs]}
    for key in study.columns:
        values = [r[key] for r in results if isinstance(r.get(key), int | float)]
        if not values:
            continue
        mean = sum(values) / len(values)
        if len(values) > 1:
            spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        else:
            spread = results[0].get(f"{key}_se")
        row[key], row[f"{key}_spread"] = mean, spread
    # The training command's minutes (validation, probes and figures included), and of
    # them the training passes, each the mean over seeds.
    metrics = [read_metrics(r) for r in runs]
    walls = [
        wall_seconds(m, read_json(r / "summary.json")) for m, r in zip(metrics, runs, strict=True)
    ]
    row["minutes"] = fmean(walls) / 60
    row["pass_minutes"] = fmean(training_seconds(m) for m in metrics) / 60
    _, model, _, _ = load_trained(runs[0], device)
    row["parameters"] = sum(p.numel() for p in trainable(model))
    row["units"] = results[0].get("units")
    row["protocol"] = results[0].get("quality_protocol") or results[0].get("binarize")
    return row


def chosen_arms(study: Study, names: Sequence[str] | None) -> tuple[Arm, ...]:
    """The study's arms that ``names`` names (every arm for None), in the study's order;
    a name it lacks is refused, with the names it has."""
    if names is None:
        return study.arms
    known = {arm.name for arm in study.arms}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise GenzooError(
            f"--arms: {study.name} has no arm {', '.join(unknown) or '(none given)'}; its arms: "
            f"{', '.join(arm.name for arm in study.arms)}"
        )
    return tuple(arm for arm in study.arms if arm.name in names)


def add_finished_arms(state: StudyRun) -> None:
    """The arms an earlier run of the study (with other --arms) trained and evaluated in
    its folder, for every seed, into ``state.runs``: the table shows them too."""
    for arm in state.study.arms:
        runs = [run_dir(state.out, arm, seed, state.seeds) for seed in range(state.seeds)]
        done = all((r / "summary.json").exists() and (r / "eval.json").exists() for r in runs)
        if arm.name not in state.runs and done:
            state.runs[arm.name] = runs


def check_plan(out: Path, plan: dict[str, Any]) -> None:
    """Record what the study folder is for; a folder holding another study, or the same
    one with --quick or --seeds changed, is refused (its runs would be mixed in)."""
    path = out / "plan.json"
    if path.exists():
        earlier = read_json(path)
        if earlier != plan:
            raise GenzooError(
                f"{out} holds a study run as {earlier}, not {plan}: give another --out, or "
                "the same settings to continue it"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, plan)


def run_study(
    study: Study,
    out: Path,
    quick: bool = False,
    seeds: int = 1,
    device: str = "auto",
    data_dir: Path | None = None,
    *,
    run_command: Command,
    arms: Sequence[str] | None = None,
    max_minutes: float | None = None,
) -> Path:
    """Run every arm of ``study`` (or the ``arms`` named) into ``out`` (resuming what a
    killed run left), then its analysis, study.json and the page; returns the page's path.
    ``run_command`` runs each ``genzoo train|resume|eval`` command of the arms (the CLI
    passes its ``main``); ``max_minutes`` replaces the study's training budget per arm.
    Ctrl-C or SIGTERM stops it, saying the command that continues it."""
    chosen = chosen_arms(study, arms)
    state = StudyRun(
        study,
        out,
        quick,
        seeds,
        device,
        data_dir,
        run_command,
        arms=chosen,
        max_minutes=max_minutes,
    )
    with sigterm_as_ctrl_c():
        try:
            return _run_study(state)
        except KeyboardInterrupt:
            print(f"\nthe study was interrupted; continue it with: {continue_command(state)}")
            raise


def continue_command(state: StudyRun) -> str:
    """The command that continues a stopped study: its folder, with the same --quick and
    --seeds (check_plan refuses others) and the same device (a run resumes exactly on
    the device it was trained on)."""
    argv = ["study", state.study.name, "--out", str(state.out)]
    argv += ["--quick"] if state.quick else []
    argv += ["--device", state.device] if state.device != "auto" else []
    argv += ["--seeds", str(state.seeds)] if state.seeds > 1 else []
    if state.arms != state.study.arms:
        argv += ["--arms", ",".join(arm.name for arm in state.arms)]
    argv += ["--max-minutes", f"{state.max_minutes:g}"] if state.max_minutes else []
    argv += ["--data-dir", str(state.data_dir)] if state.data_dir else []
    return "genzoo " + shlex.join(argv)


def _run_study(state: StudyRun) -> Path:
    study, out, quick, seeds = state.study, state.out, state.quick, state.seeds
    budget = {} if state.max_minutes is None else {"max_minutes": state.max_minutes}
    check_plan(out, {"study": study.name, "quick": quick, "seeds": seeds, **budget})
    plan = [(arm, seed) for seed in range(seeds) for arm in state.arms]
    for i, (arm, seed) in enumerate(plan, start=1):
        print(f"[{i}/{len(plan)}] {study.name}: {arm.name} (seed {seed})", flush=True)
        state.runs.setdefault(arm.name, []).append(run_arm(state, arm, seed))
    add_finished_arms(state)
    shown = [arm for arm in study.arms if arm.name in state.runs]
    rows = [arm_row(study, arm, state.runs[arm.name], state.device) for arm in shown]
    with torch.no_grad():
        analysis = study.analyse(state) if study.analyse else {}
    answer = study.answer(rows, analysis) if study.answer else ""
    commands = (
        [
            "genzoo "
            + shlex.join(
                train_command(study, arm, run_dir(out, arm, 0, seeds), 0, quick, state.max_minutes)
            )
            for arm in shown
        ]
        + [
            "genzoo " + shlex.join(eval_command(study, Path(arm.name), quick, arm))
            for arm in shown
            if arm.evaluate and not quick
        ]
        + ["genzoo " + shlex.join(eval_command(study, Path("RUN"), quick))]
    )
    write_json(
        out / "study.json",
        {
            "study": study.name,
            "question": study.question,
            "answer": answer,
            "quick": quick,
            "seeds": seeds,
            **budget,
            "columns": study.columns,
            "rows": rows,
            "figures": list(study.figures),
            "analysis": analysis,
            "commands": commands,
        },
    )
    return write_study_report(out)


def draw_arm_curves(
    state: StudyRun,
    panels: dict[str, str],
    path: Path,
    log_scale: tuple[str, ...] = (),
    references: dict[str, tuple[float, str]] | None = None,
) -> None:
    """One panel per (title -> metric of metrics.jsonl), one curve per arm (its first
    seed) over the epochs; ``references`` adds a labelled horizontal line to a panel."""
    runs = {arm: read_metrics(paths[0]) for arm, paths in state.runs.items()}
    plots.draw_metric_panels(runs, panels, path, log_scale, references)
