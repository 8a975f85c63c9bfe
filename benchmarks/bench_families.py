"""One training step of every family at its defaults, its sampling and its likelihood,
each against its floor.

For each family (the defaults of ``genzoo train NAME``, plus the conv GAN and Burda et
al.'s presets of the hierarchical VAE, batch 20):

  1. the step: ``model.train_step`` on one batch of the family's default size, from the
     project's own data path (binarization included), the averaged weights' update after
     it where the family averages, in bf16 autocast where the loop would use it
     (diffusion's), as the loop does;
  2. its floor: the same step's products alone, on random tensors of the same shapes
     and type (bf16 where the call ran under autocast): every convolution, transposed
     convolution, linear layer and LSTM cell the step calls (recorded by forward hooks)
     and every matrix product outside them (``@``, bmm, attention's scaled dot products:
     DRAW's filterbanks, the U-Net's attention; recorded by a torch function mode),
     forward, and backward where the step backpropagates through them: the weight's
     gradient and the input's where they need one, each as its own product or
     convolution kernel (no bias, no activation, no autograd), plus the optimizer's
     update alone on parameters of the same shapes;
  3. the evaluations, each beside its floor recorded in the same way (forward only):
     sampling a batch (diffusion at its default sampler and steps), and for the
     importance-sampled families the likelihood of ``--nll-images`` test images at
     K = 5000; with ``--quality N``, the quality scores of N images (FID, precision and
     recall, density and coverage, Parzen) against N test images.

A family that trains compiled by default (``compile`` in its training defaults) is timed
compiled, as the training loop runs it, its floor recorded on the eager model first, and
its uncompiled step beside it.

Each timing is a job's calls in a row for about ``--seconds`` (a step as the training
loop takes it, after the step before; a lone step after other jobs took twice as long
for Burda's batch of 20), per call; jobs alternate round by round (``interleaved_best``
of bench_vae.py), the best of each kept, so that a drift of a shared machine reaches a
step and its floor alike.

    cd benchmarks && GENZOO_DATA=../../shared/data python bench_families.py [--quality 10000]
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from bench_vae import interleaved_best, linear_layer_matmuls, update_alone
from torch import nn
from torch.overrides import TorchFunctionMode

from genzoo.api import run_config
from genzoo.averaging import WeightAverage
from genzoo.cpu import tune_process
from genzoo.data import batches, load_data
from genzoo.models import MODELS
from genzoo.models.base import Conditional, GenerativeModel
from genzoo.models.latent import IMPORTANCE_SAMPLING
from genzoo.quality import FeatureNet, quality_scores
from genzoo.runs import build_model
from genzoo.training import compile_objectives, with_precision_chosen

# name -> (family, settings that differ from its defaults: the flags of genzoo train by
# their field names). Burda et al.'s presets: the small-batch path (20 images a step).
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: (name, {}) for name in MODELS},
    "gan-conv": ("gan", {"arch": "conv"}),
    "burda-1l": ("hvae", {"preset": "burda-1l"}),
    "burda-2l": ("hvae", {"preset": "burda-2l"}),
}
RECORDED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.LSTMCell)
# Products called as functions, outside the recorded layers (whose own go by F.linear,
# F.conv2d and the LSTM cell's kernel, none of these).
PRODUCTS = {
    torch.matmul,
    torch.bmm,
    torch.Tensor.__matmul__,
    torch.Tensor.matmul,
    torch.Tensor.bmm,
    F.scaled_dot_product_attention,
    torch.cdist,  # the quality scores' neighbours: a product and two norms
}


@dataclass
class Call:
    """One call of a recorded layer in the step: the layer, its input's shape and type,
    whether the input and the weights need a gradient, whether the output was
    backpropagated, and whether bf16 autocast was on (diffusion's steps and samples)."""

    layer: nn.Module
    shape: tuple[int, ...]
    dtype: torch.dtype
    input_grad: bool
    weight_grad: bool
    backward: bool
    autocast: bool


@dataclass
class ProductCall:
    """One call of a product function: the function, its tensors' shapes, which need a
    gradient, and whether the output was backpropagated."""

    func: Callable[..., torch.Tensor]
    shapes: list[tuple[int, ...]]
    dtype: torch.dtype
    grads: list[bool]
    backward: bool


class ProductRecorder(TorchFunctionMode):
    """Records every call of PRODUCTS while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ProductCall] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in PRODUCTS:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            shapes, grads = [tuple(a.shape) for a in tensors], [a.requires_grad for a in tensors]
            self.calls.append(ProductCall(func, shapes, out.dtype, grads, out.requires_grad))
        return out


def record_calls(
    step: Callable[[], object], model: nn.Module
) -> tuple[list[Call], list[ProductCall]]:
    """Run ``step`` once with hooks on the model's recorded layers and a recorder of the
    product functions; their calls in order."""
    calls: list[Call] = []

    def hook(layer: nn.Module, inputs: tuple, output: Any) -> None:
        x = inputs[0]
        out = output[0] if isinstance(output, tuple) else output
        autocast = torch.is_autocast_enabled(x.device.type)
        weight_grad = next(layer.parameters()).requires_grad  # not while it is frozen
        calls.append(
            Call(
                layer,
                tuple(x.shape),
                x.dtype,
                x.requires_grad,
                weight_grad,
                out.requires_grad,
                autocast,
            )
        )

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, RECORDED)]
    try:
        with ProductRecorder() as products:
            step()
    finally:
        for handle in handles:
            handle.remove()
    return calls, products.calls


class Operands:
    """Random tensors for the replays, one per shape and type, so that an evaluation's
    hundreds of same-shaped calls share them."""

    def __init__(self) -> None:
        self.tensors: dict[tuple, torch.Tensor] = {}

    def tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        key = (shape, dtype)
        if key not in self.tensors:
            self.tensors[key] = torch.randn(shape, dtype=dtype)
        return self.tensors[key]


def replay(call: Call, operands: Operands) -> Callable[[], None]:
    """The call's products alone, on random tensors of its shapes, in the type the call
    multiplied in (bf16 under autocast): no bias, no activation, no autograd; backward,
    where the step had one, as the products of the gradients it needed (the weight's, the
    input's)."""
    layer = call.layer
    dtype = torch.bfloat16 if call.autocast else call.dtype
    if isinstance(layer, nn.Linear | nn.LSTMCell):
        rows = math.prod(call.shape[:-1])
        if isinstance(layer, nn.Linear):
            sizes = [(layer.in_features, layer.out_features)]
        else:  # the input's and the hidden state's products, without the gates' arithmetic
            gates = 4 * layer.hidden_size
            sizes = [(layer.input_size, gates), (layer.hidden_size, gates)]
        pairs = [
            (operands.tensor((m, k), dtype), operands.tensor((k, n), dtype))
            for n_in, n_out in sizes
            for m, k, n in linear_layer_matmuls(
                rows, n_in, n_out, call.input_grad, call.backward, call.weight_grad
            )
        ]

        def products() -> None:
            for a, b in pairs:
                torch.mm(a, b)

        return products

    # A convolution (or a transposed one) without its bias, and its backward kernel for
    # the weight's gradient and, where needed, the input's.
    x = operands.tensor(call.shape, dtype)
    weight = layer.weight.detach().to(dtype)
    transposed = isinstance(layer, nn.ConvTranspose2d)
    conv = (layer.stride, layer.padding, layer.dilation, transposed, layer.output_padding)
    conv += (layer.groups,)
    grad = torch.randn_like(torch.ops.aten.convolution(x, weight, None, *conv))
    needed = [call.input_grad, call.weight_grad, False]  # input, weight, bias

    def convolutions() -> None:
        torch.ops.aten.convolution(x, weight, None, *conv)
        if call.backward:
            torch.ops.aten.convolution_backward(grad, x, weight, None, *conv, needed)

    return convolutions


def replay_product(call: ProductCall, operands: Operands) -> Callable[[], None]:
    """The product function on random tensors of the call's shapes; backward, where the
    step had one, as the products of the gradients wanted (G B^T for A, A^T G for B of a
    product A B). Attention's fused kernel has a fused backward of its own, taken by
    autograd (without accumulating into the operands)."""
    args = [operands.tensor(shape, call.dtype) for shape in call.shapes]
    if call.func is F.scaled_dot_product_attention:
        leaves = [a.detach().requires_grad_(g) for a, g in zip(args, call.grads, strict=True)]
        wanted = [a for a in leaves if a.requires_grad]

        def attention() -> None:
            out = F.scaled_dot_product_attention(*leaves)
            if call.backward:
                torch.autograd.grad(out, wanted, torch.ones_like(out))

        return attention

    a, b = args
    grad = torch.randn_like(call.func(a, b)) if call.backward else None

    def product() -> None:
        call.func(a, b)
        if call.backward and call.grads[0]:
            torch.matmul(grad, b.mT)
        if call.backward and call.grads[1]:
            torch.matmul(a.mT, grad)

    return product


def floor_job(
    calls: tuple[list[Call], list[ProductCall]], optimizers: list[torch.optim.Optimizer]
) -> Callable[[], None]:
    """Every recorded product in turn, then the optimizers' updates on copies of the
    parameters with gradients already in place."""
    layer_calls, product_calls = calls
    operands = Operands()
    products = [replay(c, operands) for c in layer_calls]
    products += [replay_product(c, operands) for c in product_calls]
    update = update_alone(optimizers)

    def run() -> None:
        for product in products:
            product()
        update()

    return run


def arm_jobs(
    name: str, data_dir: str | None, nll_images: int, compile_it: bool = False
) -> tuple[dict[str, Callable[[], object]], int]:
    """The step, sampling and (for the importance-sampled families) the likelihood of
    ``nll_images`` test images at the estimator's default K, each beside its floor (keys
    "step", "step floor", ...), compiled where the arm's defaults or ``compile_it`` say;
    and the batch size."""
    family, settings = ARMS[name]
    cfg = run_config(family, {**settings, "compile": True} if compile_it else settings)
    tc = cfg.train
    data = load_data(tc.dataset, tc.binarize, tc.val_size, data_dir)
    torch.manual_seed(0)
    model = build_model(cfg, data.image_shape)
    optimizers = model.configure_optimizers(tc.lr)
    takes_labels = isinstance(model, Conditional) and model.takes_labels()
    batch = next(iter(batches(data.train, tc.batch_size, data.binarize, labels=takes_labels)))
    x, labels = batch if takes_labels else (batch, None)
    model.train()
    # bf16 autocast where the loop would use it (diffusion's "auto" on this CPU).
    bf16 = with_precision_chosen(cfg, x.device).train.precision == "bf16"

    def step_of(
        model: GenerativeModel, optimizers: list[torch.optim.Optimizer]
    ) -> Callable[[], None]:
        """A training step of ``model`` as the loop takes it, the average's update after."""
        average = WeightAverage(model, tc.ema) if tc.ema else None

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model.train_step(x, optimizers, labels)
            if average is not None:
                average.update()

        return step

    step = step_of(model, optimizers)

    step()  # the optimizers' state exists before the floor copies it
    jobs = {"step": step, "step floor": floor_job(record_calls(step, model), optimizers)}
    if not model.ready_to_sample():
        model.after_training(data)  # the autoencoder's mixture, as when training ends
    model.eval()
    evaluations = {"sample": lambda: model.sample(tc.batch_size)}
    if getattr(model, "likelihood_estimator", None) is IMPORTANCE_SAMPLING:
        test = data.test.images[:nll_images]
        k = IMPORTANCE_SAMPLING.default_samples
        evaluations["nll"] = lambda: model.log_likelihood(test, k)
    for job_name, job in evaluations.items():
        no_grad_job = torch.no_grad()(job)
        jobs[job_name] = no_grad_job
        jobs[f"{job_name} floor"] = floor_job(record_calls(no_grad_job, model), [])
    model.train()
    if tc.compile:  # as the training loop runs it, after the floor's eager recording
        twin = copy.deepcopy(model)
        jobs["eager step"] = step_of(twin, twin.configure_optimizers(tc.lr))
        compile_objectives(model, torch.device("cpu"))
    return jobs, tc.batch_size


def quality_jobs(images: int, data_dir: str | None) -> dict[str, Callable[[], object]]:
    """The quality scores of ``images`` images (MNIST's training images stand in for
    samples: the scores' cost does not depend on what the images show) against as many
    test images, with an untrained feature net of the right shape, and their floor."""
    data = load_data("mnist", "none", 10000, data_dir)
    net = FeatureNet()
    fake, real = data.train.images[:images], data.test.images[:images]

    def scores() -> None:
        quality_scores(fake, real, data.val.images, net)

    return {"quality": scores, "quality floor": floor_job(record_calls(scores, net), [])}


def calls_in(job: Callable[[], object], seconds: float) -> int:
    """How many calls of ``job`` in a row take about ``seconds`` (at least one), by a call
    timed after a first one."""
    job()
    start = time.perf_counter()
    job()
    return max(1, math.ceil(seconds / (time.perf_counter() - start)))


def repeated(job: Callable[[], object], calls: int) -> Callable[[], None]:
    """``job`` ``calls`` times in a row: a training loop's steady state (its caches and
    allocator as one step leaves them for the next), not a lone call after other jobs."""

    def run() -> None:
        for _ in range(calls):
            job()

    return run


def ratios(best: dict[str, float]) -> str:
    """ "job ms / floor ms = ratio" for every job timed beside its floor."""
    return "  ".join(
        f"{job} {1000 * t:.1f} / {1000 * best[f'{job} floor']:.1f} = {t / best[f'{job} floor']:.2f}"
        for job, t in best.items()
        if f"{job} floor" in best
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="*", choices=tuple(ARMS), default=tuple(ARMS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--nll-images", type=int, default=10, help="test images of the NLL")
    parser.add_argument(
        "--compile", action="store_true", help="time every family compiled, as --compile"
    )
    parser.add_argument(
        "--seconds", type=float, default=0.1, help="each timing: calls in a row for this long"
    )
    parser.add_argument(
        "--quality", type=int, default=0, help="also time the quality scores of this many images"
    )
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    tune_process()
    torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, best of {args.rounds} interleaved rounds; ms, job / floor"
    )
    for name in args.families:
        jobs, batch_size = arm_jobs(name, args.data_dir, args.nll_images, args.compile)
        eager = ""
        if "eager step" in jobs:  # the first compiled step compiles
            start = time.perf_counter()
            jobs["step"]()
            eager = f", compiled in {time.perf_counter() - start:.0f} s"
        counts = {job_name: calls_in(job, args.seconds) for job_name, job in jobs.items()}
        runs = {job_name: repeated(job, counts[job_name]) for job_name, job in jobs.items()}
        best = {k: t / counts[k] for k, t in interleaved_best(runs, args.rounds).items()}
        if "eager step" in best:
            eager += f", uncompiled step {1000 * best['eager step']:.1f}"
        print(
            f"{name:<10} batch {batch_size:>3}  {ratios(best)}  "
            f"({batch_size / best['sample']:.0f} samples/s{eager})",
            flush=True,
        )
    if args.quality:  # a long job: one round, its first-call costs a negligible share
        best = interleaved_best(quality_jobs(args.quality, args.data_dir), 1, warm_up=False)
        print(f"quality scores of {args.quality} images: {ratios(best)}", flush=True)


if __name__ == "__main__":
    main()
