"""The one training loop, shared by every model family (the contract: models/base.py).

Per epoch: a pass over the shuffled training set (each model's own ``train_step``, at
the rate the schedule gives for that step), validation terms averaged over the
validation set, a line in metrics.jsonl, the ``last`` checkpoint (and ``best`` when
validation improved), sample grids every few epochs, and early stopping after
``patience`` epochs without improvement. Within a long epoch the ``last`` checkpoint is
also written every ``checkpoint_minutes``. With ``ema`` set, a moving average of the
weights (averaging.py) is what validation, the grids and the ``best`` checkpoint see;
``last`` keeps the weights themselves.

Two random generators: the data generator shuffles and binarizes the training set, and
torch's global one draws the models' own noise (separate, so that data-parallel ranks
draw the same batches but not the same noise: distributed.py). Checkpoints carry the
optimizer, average and generator states, the data generator's state from the start of
the epoch (to redraw its shuffle and binarization) and the batches already taken, so a
resumed run continues exactly where the killed one stopped: on CPU it ends with the
very weights of an uninterrupted run.

Under torchrun the same loop runs in every process: each takes its share of every
batch, and rank 0 alone writes and prints (distributed.py).

Ctrl-C and SIGTERM (a job scheduler's stop) alike stop the loop at the next batch
boundary, on every rank at the same one: a checkpoint there, then the command that
continues (interrupts.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch.optim import Optimizer
from tqdm.auto import tqdm  # widgets in a notebook, text in a terminal

from genzoo import distributed, figures, plots
from genzoo.averaging import WeightAverage
from genzoo.board import Board
from genzoo.data import Data, Split, batches
from genzoo.distributed import ONE_PROCESS, DataParallel, World
from genzoo.errors import GenzooError, TrainingDiverged
from genzoo.evaluation import grey_data, per_example_terms, quality_images, run_feature_net
from genzoo.files import WriteFailed, read_json, write_json
from genzoo.folders import is_folder_dataset
from genzoo.interrupts import on_stop_signals, sigterm_as_ctrl_c
from genzoo.models import MODELS, GenerativeModel
from genzoo.models.base import check_values, trained_on_labels
from genzoo.quality import QualityProbe
from genzoo.report import write_run_report
from genzoo.rng import EVAL_SEED, has_bf16_kernels, isolated_rng, rng_state, set_rng_state
from genzoo.runs import (
    RunConfig,
    append_metrics,
    build_model,
    has_checkpoint,
    load_checkpoint,
    load_data_of,
    lock_run,
    read_metrics,
    save_checkpoint,
    save_run_config,
    trim_metrics,
    unlock_run,
)
from genzoo.schedule import LRSchedule

# Batches between a data-parallel run's agreements on a stop or a checkpoint.
ASK_EVERY = 10


def validate(
    model: GenerativeModel, split: Split, device: torch.device, world: World = ONE_PROCESS
) -> dict[str, float]:
    """The mean of every ``evaluate_batch`` term over ``split``; in a data-parallel run
    each rank scores its share and the sums are added up."""
    share = world.share(len(split))
    labels = None if split.labels is None else split.labels[share]
    with isolated_rng(EVAL_SEED + world.rank, device):
        terms = per_example_terms(model, Split(split.images[share], labels))
    names = sorted(terms)
    sums = world.sum(torch.stack([terms[k].sum() for k in names]).to(device))
    return dict(zip(names, (sums / len(split)).tolist(), strict=True))


@dataclass
class LoopState:
    epoch: int = 0  # last finished epoch
    best: float = math.inf  # best validation value so far
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one
    seconds: float = 0.0  # the training passes of the finished epochs, in all


@dataclass
class EpochProgress:
    """How far the running epoch has come: what a checkpoint within it holds."""

    step: int = 0  # batches taken
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # a GAN's g_loss: some steps only
    seconds: float = 0.0  # training time so far
    start_rng: torch.Tensor | None = None  # the data generator before the shuffle and draw

    def add(self, stats: dict[str, float]) -> None:
        self.step += 1
        for name, value in stats.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict[str, float]:
        return {name: total / self.counts[name] for name, total in self.sums.items()}


def training_point(epoch: int, step: int) -> str:
    """How far training had come, in words: 'epoch 3' or 'epoch 3 and 40 batches of the next'."""
    return f"epoch {epoch}" + (f" and {step} batches of the next" if step else "")


def epoch_batches(
    data: Data,
    batch_size: int,
    progress: EpochProgress,
    generator: torch.Generator,
    labels: bool = False,
) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's batches from ``progress.step`` on, drawn from the data ``generator``
    (with their labels where the model takes them).
    A new epoch records its state before the shuffle and binarization; a resumed one
    redraws them from that state, which leaves it where the uninterrupted epoch did."""
    if progress.step == 0:
        progress.start_rng = generator.get_state()
    else:
        generator.set_state(progress.start_rng)
    return batches(
        data.train,
        batch_size,
        data.binarize,
        shuffle=True,
        skip=progress.step,
        generator=generator,
        labels=labels,
    )


def compile_objectives(model: GenerativeModel, device: torch.device) -> None:
    """torch.compile the model's forward: every objective that train_step computes. On a
    CPU, inductor's generated code needs a C++ compiler; without one the run trains
    eagerly and says so (the same steps, only slower) rather than failing at its first."""
    compiler = os.environ.get("CXX", "g++")
    if device.type == "cpu" and shutil.which(compiler) is None:
        print(f"note: torch.compile needs a C++ compiler ({compiler}); training uncompiled")
        return
    # Shapes dynamic from the start where the model allows: an epoch's last, smaller batch
    # would otherwise compile the model a second time (DRAW: 154 s for the first, 190 s
    # more for the second; one dynamic compile, 227 s, gives steps as fast:
    # benchmarks/README.md).
    model.compile(dynamic=model.compile_dynamic)


class Trainer:
    """One run's model, optimizers, average, schedule and data, and the loop over them."""

    def __init__(
        self,
        run_dir: Path,
        cfg: RunConfig,
        dev: torch.device,
        data: Data,
        world: World = ONE_PROCESS,
        quality_probe: QualityProbe | None = None,
    ) -> None:
        tc = cfg.train
        self.run_dir, self.cfg, self.dev, self.data, self.world = run_dir, cfg, dev, data, world
        self.quality_probe = quality_probe
        self.board = Board(run_dir) if tc.tensorboard and world.is_main else None
        torch.manual_seed(tc.seed)
        self.model = build_model(cfg, data.image_shape).to(dev)
        conditional = trained_on_labels(self.model)
        if conditional and data.train.labels is None:
            flags = labels_flags(cfg.model_config)
            raise GenzooError(
                f"{cfg.model} {flags} is trained on the class labels, and "
                f"{without_labels(tc.dataset, tc.binarize)}: train without {flags}"
            )
        self.model.before_training(data, tc.seed)  # M2 takes its labelled images here
        # Labels with every batch, unless the model holds its own few (M2).
        self.takes_labels = conditional and self.model.batch_labels()
        self.data_rng = torch.Generator(dev).manual_seed(tc.seed)
        if tc.compile:
            compile_objectives(self.model, dev)
        if world.parallel:
            self.model.parallel = DataParallel(self.model, world, dev)
            torch.manual_seed(world.noise_seed(tc.seed))
        self.optimizers: list[Optimizer] = self.model.configure_optimizers(tc.lr)
        self.average = WeightAverage(self.model, tc.ema) if tc.ema else None
        self.steps_per_epoch = math.ceil(len(data.train) / tc.batch_size)
        self.schedule = LRSchedule(
            tc.lr_schedule,
            tc.lr,
            self.steps_per_epoch,
            tc.epochs,
            tc.lr_min,
            tc.lr_decay,
            tc.lr_step_epochs,
            tc.warmup_epochs,
        )
        # Drawn once per run: with dynamic binarization a draw covers the whole split.
        self.probe = diagnostics_batch(data, dev)  # for epoch_diagnostics
        self.loop = LoopState()
        self.progress = EpochProgress()
        self.saved_at: str | None = None  # the point of training of the last checkpoint
        self.stop_signal: int | None = None  # Ctrl-C or SIGTERM, noted while training
        self.abandoning = False  # in validation or the probe, which a stop abandons

    def arithmetic(self) -> AbstractContextManager:
        """bf16 autocast for the training steps and validation if asked (the weights stay
        fp32; ``genzoo eval`` computes in fp32)."""
        bf16 = self.cfg.train.precision == "bf16"
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=bf16)

    def evaluated(self) -> AbstractContextManager:
        """What validation, the grids and the best checkpoint see: the average, if any."""
        return self.average.swapped_in() if self.average else nullcontext()

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds beside the weights; in a data-parallel run every rank
        must call it (it gathers their generators)."""
        state: dict[str, Any] = {
            "epoch": self.loop.epoch,
            "step": self.progress.step,
            "loop": asdict(self.loop),
            "rng": rng_state(self.dev),
            "rank_rngs": self.world.gather(rng_state(self.dev)),
            "data_rng": self.data_rng.get_state(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "progress": asdict(self.progress) if self.progress.step else None,
        }
        if self.average is not None:
            state["average"] = self.average.state_dict()
        return state

    def save_last(self, state: dict[str, Any]) -> None:
        if self.world.is_main:
            save_checkpoint(self.run_dir, "last", self.model, state)
        self.saved_at = training_point(state["epoch"], state["step"])

    def last_good(self) -> str:
        if self.saved_at is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is after {self.saved_at}"

    def resume_command(self) -> str:
        nproc = f" --nproc {self.world.size}" if self.world.parallel else ""
        return f"genzoo resume {self.run_dir}{nproc}"

    @contextmanager
    def saying_how_to_continue(self) -> Iterator[None]:
        """Ctrl-C or SIGTERM (KeyboardInterrupt) in the block: say which checkpoint is kept
        and the command that continues from it."""
        try:
            yield
        except KeyboardInterrupt:
            print(f"\ninterrupted; {self.last_good()}. Continue with: {self.resume_command()}")
            raise

    @contextmanager
    def naming_the_last_good_checkpoint(self) -> Iterator[None]:
        """A write that fails (a full disk) says which checkpoint is still good."""
        try:
            yield
        except WriteFailed as err:
            raise WriteFailed(f"{err}; {self.last_good()}") from None

    def restore(self) -> None:
        """Weights, optimizer, average and generator states, loop counters and the running
        epoch's progress of the last checkpoint.

        The learning rates come from the schedule at the next step, so ``genzoo resume
        RUN --lr LR`` continues with a new base rate.
        """
        state = load_checkpoint(self.run_dir, "last", self.model)
        for opt, opt_state in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        if self.average is not None:
            if "average" not in state:
                raise GenzooError(
                    f"the last checkpoint in {self.run_dir} holds no weight average although "
                    "the run's config.json sets ema: they do not belong together; delete the "
                    "run or retrain"
                )
            self.average.load_state_dict(state["average"])
        self.restore_generators(state)
        self.loop = LoopState(**state["loop"])
        self.progress = (
            EpochProgress(**state["progress"]) if state.get("progress") else EpochProgress()
        )
        self.saved_at = training_point(self.loop.epoch, self.progress.step)

    def restore_generators(self, state: dict[str, Any]) -> None:
        """This rank's noise generator as saved (a new rank of a resume with more
        processes starts its own stream), and the data generator."""
        if "data_rng" in state:  # older checkpoints: one generator for data and noise
            self.data_rng.set_state(state["data_rng"])
        saved = state.get("rank_rngs", [state["rng"]])
        if self.world.rank < len(saved):
            set_rng_state(saved[self.world.rank], self.dev)
        else:
            torch.manual_seed(self.world.noise_seed(self.cfg.train.seed + state["epoch"]))

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """The rest of epoch ``epoch`` (all of it unless resumed within it); returns the
        mean of each ``train_step`` statistic over the whole epoch."""
        tc, progress = self.cfg.train, self.progress
        self.model.train()
        loader = epoch_batches(self.data, tc.batch_size, progress, self.data_rng, self.takes_labels)
        parallel = self.model.parallel
        bar = tqdm(
            loader,
            total=self.steps_per_epoch,
            initial=progress.step,
            desc=f"epoch {epoch}",
            leave=False,
            disable=None if self.world.is_main else True,
        )
        last_save = start = time.perf_counter()
        for batch in bar:
            x, labels = batch if self.takes_labels else (batch, None)
            if parallel is not None:
                if x.shape[0] < self.world.size:  # too few images to give every rank one
                    continue
                x = parallel.share(x)
                labels = None if labels is None else parallel.share(labels)
            self.schedule.apply(self.optimizers, (epoch - 1) * self.steps_per_epoch + progress.step)
            with self.arithmetic():
                stats = self.model.train_step(x, self.optimizers, labels)
            if not math.isfinite(stats["loss"]):
                raise self.diverged(f"the loss became {stats['loss']}", epoch)
            if self.average is not None:
                self.average.update()
            progress.add(stats)
            if progress.step % 20 == 0:
                bar.set_postfix(loss=f"{stats['loss']:.2f}")
            now = time.perf_counter()
            # After the epoch's last batch end_epoch validates, then checkpoints.
            if progress.step < self.steps_per_epoch and self.ranks_may_ask(progress.step):
                stopping = self.stop_asked()
                if stopping or self.checkpoint_due(now - last_save):
                    progress.seconds += now - start
                    self.save_last(self.state())
                    if stopping:
                        raise KeyboardInterrupt  # saying_how_to_continue names the checkpoint
                    last_save = start = time.perf_counter()
        progress.seconds += time.perf_counter() - start
        return progress.means()

    def note_stop(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-C and SIGTERM while training: noted, and acted on at the next batch boundary
        (``stop_asked``), where the state is whole, or at once within validation and the
        quality probe (``abandonable``). A further one is noted alike: a rank
        may get one from torchrun and one from a scheduler that signals every process."""
        first, self.stop_signal = self.stop_signal is None, signum
        if self.abandoning:  # validation or the probe: the resume redoes them
            self.abandoning = False  # a second signal while unwinding is only noted
            raise KeyboardInterrupt
        if first and self.world.is_main:
            tqdm.write("stopping after this batch, with a checkpoint")

    def ranks_may_ask(self, step: int) -> bool:
        """Whether this batch may ask for a stop or a checkpoint. A data-parallel run asks
        every ASK_EVERY batches: each asking is a collective (on a GPU, a wait for it)."""
        return not self.world.parallel or step % ASK_EVERY == 0

    def stop_asked(self) -> bool:
        """Has Ctrl-C or SIGTERM come to this rank or any other? (A collective: every rank
        stops after the same batch.)"""
        return self.world.any_rank(self.stop_signal is not None)

    def stop_if_asked(self) -> None:
        """Where the last checkpoint holds the whole state (between epochs): stop if asked."""
        if self.stop_asked():
            raise KeyboardInterrupt  # saying_how_to_continue names the checkpoint

    def checkpoint_due(self, seconds_since_last: float) -> bool:
        """Time for a checkpoint within the epoch? In a data-parallel run rank 0's clock
        decides (the answer is a collective)."""
        minutes = self.cfg.train.checkpoint_minutes
        if not minutes:
            return False
        due = seconds_since_last >= 60 * minutes
        return self.world.agree(due) if self.world.parallel else due

    def end_epoch(self, epoch: int, train_stats: dict[str, float]) -> dict[str, Any]:
        """Validation, metrics, checkpoints and grids after epoch ``epoch``."""
        model, tc, metric = self.model, self.cfg.train, self.model.val_metric
        begun = time.perf_counter()
        with self.redone_on_resume_if_stopped():
            # In the training's arithmetic: the diffusion default's validation took 35 s
            # in fp32 against 11 s in bf16 (2,000 images, one thread of this project's
            # CPU), the loss 0.1% apart; in fp32 it was most of the 40 s an epoch of 250 s
            # spent outside its training pass.
            with self.evaluated(), self.arithmetic(), self.abandonable():
                val = validate(model, self.data.val, self.dev, self.world)
            scores = self.probe_quality(epoch)
            with self.evaluated():
                model.after_epoch(epoch)
        record = {
            "epoch": epoch,
            **{f"train_{k}": v for k, v in train_stats.items()},
            **{f"val_{k}": v for k, v in val.items()},
            "seconds": self.progress.seconds,  # the training pass alone
            "lr": self.optimizers[0].param_groups[0]["lr"],
            "device": str(self.dev),
        }
        if scores:
            record.update(scores, quality_samples=tc.quality_samples)
        # What the user waits for: the pass, then validation and the probe.
        record["wall_seconds"] = record["seconds"] + time.perf_counter() - begun
        main = self.world.is_main
        if main:
            with isolated_rng(EVAL_SEED, self.dev):
                record.update(model.epoch_diagnostics(self.probe))
            append_metrics(self.run_dir, record)
            if self.board is not None:
                self.board.epoch(record)
        score = self.selection_score(epoch, val, record)
        improved = score is not None and score < self.loop.best
        self.loop = LoopState(
            epoch=epoch,
            best=score if improved else self.loop.best,
            best_epoch=epoch if improved else self.loop.best_epoch,
            # an epoch without a figure to compare (no probe this time) counts neither way
            bad_epochs=0 if improved else self.loop.bad_epochs + (score is not None),
            seconds=self.loop.seconds + self.progress.seconds,
        )
        self.progress = EpochProgress()
        state = self.state()
        # best before last: a kill between the two then redoes this epoch from the previous
        # last checkpoint, instead of leaving a last that counts on a best never written.
        if improved and main:
            with self.evaluated():
                save_checkpoint(self.run_dir, "best", model, state)
        self.save_last(state)
        with self.evaluated():
            if main and draws_samples_after(epoch, tc.sample_every, tc.sample_epochs):
                draw_progress(model, self.run_dir, epoch, tc.seed, self.dev, self.board)
        shown = f"val {metric} {val[metric]:8.2f}  " if metric else ""
        if "quality_fid" in record:  # what picks the best epoch where there is no metric
            shown += f"FID {record['quality_fid']:7.2f}  "
        print(
            f"epoch {epoch:3d}  train {model.loss_label} {train_stats['loss']:8.2f}  {shown}"
            f"lr {record['lr']:.2e}  ({record['seconds']:.1f} s)" + ("  *" if improved else "")
        )
        return record

    def probe_quality(self, epoch: int) -> dict[str, float]:
        """The quality probe's scores after ``epoch`` where it is due, else {}."""
        tc = self.cfg.train
        if self.quality_probe is None or not (
            draws_samples_after(epoch, tc.quality_every, ()) or epoch == tc.epochs
        ):
            return {}
        # The same noise every time (seeded): the scores follow the model, not the draw.
        # Every rank scores the same samples, so that all take the same best epoch.
        with self.evaluated(), isolated_rng(tc.seed, self.dev), self.abandonable():
            samples, _ = quality_images(self.model, tc.quality_samples)
            return self.quality_probe(check_values("a sample", samples))

    @contextmanager
    def redone_on_resume_if_stopped(self) -> Iterator[None]:
        """Validation and the quality probe, which can take minutes (a diffusion model's
        probe draws 500 samples): a stop within them, or one that came in the epoch's last
        batch (``abandonable``), abandons them, with a checkpoint of the finished pass,
        so that a scheduler's grace period before SIGKILL loses nothing; the resume
        does them then. Data-parallel ranks finish them: they must stop at one point."""
        generators = rng_state(self.dev)  # as the pass left them
        try:
            yield
        except KeyboardInterrupt:
            # A stop may land in a block's own restoring of the generators (validation's
            # isolated_rng): the checkpoint takes them from before the block.
            set_rng_state(generators, self.dev)
            self.save_last(self.state())
            raise

    @contextmanager
    def abandonable(self) -> Iterator[None]:
        """Inside the block a stop raises KeyboardInterrupt at once (``note_stop``). Only
        inside: the averaged weights and the generators the block runs on are swapped
        back after it, signals or not (the flag is down while they are)."""
        self.abandoning = not self.world.parallel
        try:
            if self.abandoning and self.stop_signal is not None:  # came before the block
                raise KeyboardInterrupt
            yield
        finally:
            self.abandoning = False

    def selection_score(
        self, epoch: int, val: dict[str, float], record: dict[str, Any]
    ) -> float | None:
        """What the best checkpoint and early stopping minimise: the validation metric;
        for a model without one (a GAN) the quality probe's FID in the epochs it runs
        (None in the others), or, with no probe, the epoch reversed: the latest is best."""
        metric = self.model.val_metric
        if metric:
            return val[metric]
        if self.quality_probe is not None:
            return record.get("quality_fid")
        return -epoch

    def diverged(self, what: str, epoch: int) -> TrainingDiverged:
        """The stop for a non-finite loss or network output, saying what can be done."""
        where = f"{what} in epoch {epoch} (batch {self.progress.step + 1}): training diverged"
        if self.saved_at is None:
            return TrainingDiverged(
                f"{where} before its first checkpoint; start again with a lower --lr"
            )
        return TrainingDiverged(
            f"{where}; the last good checkpoint (after {self.saved_at}) is kept: continue "
            f"from it at a lower rate with genzoo resume {self.run_dir} --lr LR"
        )

    def stopped_early(self) -> bool:
        patience = self.cfg.train.patience
        return bool(patience) and self.loop.bad_epochs >= patience

    def out_of_time(self) -> bool:
        minutes = self.cfg.train.max_minutes
        return bool(minutes) and self.loop.seconds >= 60 * minutes

    def finished_because(self) -> str | None:
        """Why the loop would train no further (and, where a resume can change that, how
        to go on); None while it would."""
        tc, epoch = self.cfg.train, self.loop.epoch
        if self.stopped_early():
            return (
                f"it stopped early after epoch {epoch} (no better validation for "
                f"{tc.patience} epochs: --patience); to train longer, start a new run"
            )
        if self.out_of_time():
            return (
                f"its training passes took its {tc.max_minutes:g} minutes (--max-minutes); "
                f"to train it further: genzoo resume {self.run_dir} --max-minutes M, with M "
                f"above {self.loop.seconds / 60:.1f} (0: no budget)"
            )
        if epoch >= tc.epochs:
            return (
                f"it reached its last epoch ({epoch} of --epochs {tc.epochs}); to train it "
                f"further: genzoo resume {self.run_dir} --epochs N, with N above {epoch}"
            )
        return None

    def run(self) -> None:
        """The epochs left; Ctrl-C or SIGTERM stops them at the next batch boundary (or
        within validation and the probe), after a checkpoint, with KeyboardInterrupt."""
        with on_stop_signals(self.note_stop):
            self.train_epochs()
        # One that came in the last epoch's checkpoints or grids (or its validation, in a
        # data-parallel run): before the finishing steps.
        self.stop_if_asked()

    def train_epochs(self) -> None:
        for epoch in range(self.loop.epoch + 1, self.cfg.train.epochs + 1):
            if self.stopped_early() or self.out_of_time():
                break
            self.stop_if_asked()
            try:
                with self.naming_the_last_good_checkpoint():
                    self.end_epoch(epoch, self.train_epoch(epoch))
            except FloatingPointError as err:  # a family's check_values, before a distribution
                raise self.diverged(str(err), epoch) from None
        if self.stopped_early():
            print(f"stopped early: no better validation for {self.cfg.train.patience} epochs")
        elif self.out_of_time() and self.loop.epoch < self.cfg.train.epochs:
            print(
                f"stopped after epoch {self.loop.epoch}: the training passes took "
                f"{self.loop.seconds / 60:.1f} of --max-minutes {self.cfg.train.max_minutes:g}"
            )

    def close(self) -> None:
        """The board's file closed, and the DDP wrapper freed before the process group goes:
        a reducer that outlives it aborts the process at exit ("terminate called without an
        active exception")."""
        if self.board is not None:
            self.board.close()
        self.model.parallel = None

    def finish(self) -> dict[str, Any]:
        """Rank 0's finishing steps after the last epoch: the best checkpoint with what
        ``after_training`` sets, the run's figures, summary.json and the report; the summary."""
        model, data, loop, run_dir = self.model, self.data, self.loop, self.run_dir
        begun = time.perf_counter()
        best_state = load_checkpoint(run_dir, "best", model)
        with isolated_rng(EVAL_SEED, self.dev), self.naming_the_last_good_checkpoint():
            model.after_training(data)
            save_checkpoint(run_dir, "best", model, best_state)  # with what after_training set
            figures.draw_run_figures(
                model, data.test, read_metrics(run_dir), run_dir / "figures", self.cfg.train.ema
            )
        summary = {"run_dir": str(run_dir), "epochs": loop.epoch, "best_epoch": loop.best_epoch}
        if model.val_metric:
            summary[f"best_val_{model.val_metric}"] = loop.best
        summary["finishing_seconds"] = time.perf_counter() - begun  # figures (the page: next)
        write_json(run_dir / "summary.json", summary)
        print(f"report: {write_run_report(run_dir)}")
        return summary


def labels_flags(model_config: Any) -> str:
    """The flags that make a model train on labels, as its config sets them."""
    given = [name for name in ("conditional", "labels") if getattr(model_config, name, None)]
    return " ".join("--" + name for name in given) or "--conditional"


def without_labels(dataset: str, binarize: str) -> str:
    """That the dataset has no labels, as the message refusing a conditional model says."""
    if binarize == "static":
        return "the static binarized MNIST (--binarize static) has none"
    return f"{dataset} has none (a folder needs a subfolder per class)"


def draws_samples_after(epoch: int, every: int, epochs: tuple[int, ...]) -> bool:
    """Sample grids after the chosen ``epochs`` if given (0: before training), else
    after epoch 1 and every ``every`` epochs."""
    return epoch in epochs if epochs else epoch <= 1 or epoch % every == 0


def diagnostics_batch(data: Data, dev: torch.device, size: int = 256) -> torch.Tensor:
    """A fixed batch of training images (one seeded binarization) for ``epoch_diagnostics``."""
    with isolated_rng(EVAL_SEED, dev):
        return next(batches(data.train, size, data.binarize))


def draw_progress(
    model: GenerativeModel,
    run_dir: Path,
    epoch: int,
    seed: int,
    dev: torch.device,
    board: Board | None = None,
) -> None:
    if not model.ready_to_sample():  # e.g. the autoencoder's mixture comes at the end
        return
    model.eval()
    # The same noise every time (seeded), so the grids show the model changing, not the draw.
    with isolated_rng(seed, dev):
        means, samples = figures.means_and_samples(model)
    label = "before training" if epoch == 0 else f"after epoch {epoch}"
    path = run_dir / "figures" / f"samples_epoch{epoch:03d}.png"
    plots.draw_samples(samples, means, f"samples {label}", path)
    if board is not None:
        board.samples(samples, epoch)


def describe(cfg: RunConfig, data: Data, run_dir: Path, dev: torch.device, world: World) -> str:
    tc = cfg.train
    subset = f" (the first {tc.train_size}: --train-size)" if tc.train_size else ""
    among = " (among the train images: --train-on-val)" if tc.train_on_val else ""
    where = f"{world.size} processes ({dev.type})" if world.parallel else str(dev)
    return "\n".join(
        [
            *cfg.preset_lines(),
            f"training {cfg.model} in {run_dir} on {where}: {len(data.train)} train{subset} / "
            f"{len(data.val)} validation images{among}, binarize={tc.binarize}, lr {tc.lr:g} "
            f"({tc.lr_schedule})",
        ]
    )


def train(
    run_dir: Path,
    cfg: RunConfig,
    device: str = "auto",
    data_dir: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train (or, with ``resume``, continue) the run in ``run_dir``; returns a summary.

    A resume of a run that has no checkpoint yet (killed early) starts it afresh from
    its saved config; a resume changes config.json only once its checkpoint has loaded.
    Under torchrun every process calls this; rank 0 holds the lock and writes. SIGTERM
    stops it as Ctrl-C does (interrupts.py).
    """
    with sigterm_as_ctrl_c():
        return _train(run_dir, cfg, device, data_dir, resume)


def _train(
    run_dir: Path, cfg: RunConfig, device: str, data_dir: str | Path | None, resume: bool
) -> dict[str, Any]:
    world, dev = distributed.start(device)
    try:
        cfg = with_precision_chosen(cfg, dev)
        tc = cfg.train
        allowed = MODELS[cfg.model].binarize
        if tc.binarize not in allowed:
            raise GenzooError(
                f"model {cfg.model} is defined for --binarize {' or '.join(allowed)}, "
                f"not {tc.binarize}"
            )
        data = load_data_of(cfg, dev, data_dir)
        probe = None
        if tc.quality_every:
            # Rank 0 trains and caches the feature net if need be; the others then read it.
            if not world.is_main:
                world.barrier()
            probe = watch_quality(cfg, dev, data_dir)
            if world.is_main:
                world.barrier()
        took_the_lock = world.is_main and lock_run(run_dir)
        try:
            summary = _train_locked(run_dir, cfg, dev, data, resume, world, probe)
            world.barrier()  # the others wait for rank 0's last writes, then all leave at once
            return summary
        finally:
            if took_the_lock:  # a caller that holds it keeps it
                unlock_run(run_dir)
    finally:
        distributed.stop()


def with_precision_chosen(cfg: RunConfig, dev: torch.device) -> RunConfig:
    """``--precision auto`` made bf16 or fp32 for the device, so config.json records the
    arithmetic the run trains with and a resume elsewhere keeps it."""
    if cfg.train.precision != "auto":
        return cfg
    precision = "bf16" if has_bf16_kernels(dev) else "fp32"
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision))


def watch_quality(
    cfg: RunConfig, dev: torch.device, data_dir: str | Path | None
) -> QualityProbe | None:
    """The probe of ``--quality-every``: the dataset's feature net (trained first if not
    cached) and the grey validation images; None, with a note, where no feature net fits."""
    tc = cfg.train
    if is_folder_dataset(tc.dataset):
        print("--quality-every is off: the feature net is for MNIST-like datasets")
        return None
    return QualityProbe(
        run_feature_net(cfg, dev, data_dir), grey_data(cfg, dev, data_dir).val.images
    )


def _train_locked(
    run_dir: Path,
    cfg: RunConfig,
    dev: torch.device,
    data: Data,
    resume: bool,
    world: World,
    probe: QualityProbe | None,
) -> dict[str, Any]:
    """``train`` once the run folder's lock is held (by rank 0)."""
    tc, main = cfg.train, world.is_main
    if main and not resume and (run_dir / "config.json").exists():  # under the lock: no race
        raise GenzooError(
            f"{run_dir} already holds a run; choose another --run-dir, "
            f"or continue it with `genzoo resume {run_dir}`"
        )
    trainer = Trainer(run_dir, cfg, dev, data, world, probe)
    if resume and has_checkpoint(run_dir, "last"):
        trainer.restore()
        why_complete = trainer.finished_because()
        # A run killed after its last epoch but before its summary still has its finishing
        # steps (figures, report) to do: only a summary says the run came to its end.
        if why_complete and (run_dir / "summary.json").exists():
            print(f"{run_dir} is complete: {why_complete}")
            return read_json(run_dir / "summary.json")
        if main:
            save_run_config(run_dir, cfg)
            trim_metrics(run_dir, trainer.loop.epoch)
        print(f"resuming from the checkpoint after {trainer.saved_at}")
    else:
        if resume:
            print(f"{run_dir} has no checkpoint yet: training from the start with its config")
        if main:
            save_run_config(run_dir, cfg)
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            if draws_samples_after(0, tc.sample_every, tc.sample_epochs):
                draw_progress(trainer.model, run_dir, 0, tc.seed, dev, trainer.board)

    print(describe(cfg, data, run_dir, dev, world))
    # Ctrl-C or SIGTERM in the finishing steps as well: a resume does what they left.
    with trainer.saying_how_to_continue():
        try:
            trainer.run()
        finally:
            trainer.close()
        return trainer.finish() if main else {}
