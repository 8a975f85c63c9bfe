"""One training step of every family at its defaults against the step's floor, and
sampling throughput.

For each family (the defaults of ``genzoo train NAME``, plus the conv GAN):

  1. the step: ``model.train_step`` on one batch of the family's default size, from the
     project's own data path (binarization included), the averaged weights' update after
     it where the family averages, as the loop does;
  2. its floor: the same step's products alone, on random tensors of the same shapes:
     every convolution, transposed convolution, linear layer and LSTM cell the step calls
     (recorded by forward hooks) and every matrix product outside them (``@``, bmm,
     attention's scaled dot products: DRAW's filterbanks, the U-Net's attention; recorded
     by a torch function mode), forward, and backward where the step backpropagates
     through them (the weights' gradients always, an input's where it needs one), plus
     the optimizer's update alone on parameters of the same shapes;
  3. sampling: images per second of ``model.sample`` (diffusion at its default sampler
     and steps).

Jobs alternate round by round (``interleaved_best`` of bench_vae.py), the best of each
kept, so that a drift of a shared machine reaches a step and its floor alike.

    GENZOO_DATA=../shared/data python benchmarks/bench_families.py [--families diffusion]
"""

from __future__ import annotations

import argparse
import copy
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from bench_vae import interleaved_best
from torch import nn
from torch.overrides import TorchFunctionMode

from genzoo.averaging import WeightAverage
from genzoo.config import TrainConfig
from genzoo.cpu import tune_process
from genzoo.data import batches, load_data
from genzoo.models import MODELS
from genzoo.models.base import Conditional
from genzoo.runs import RunConfig, build_model

# name -> (family, model settings that differ from its defaults)
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: (name, {}) for name in MODELS},
    "gan-conv": ("gan", {"arch": "conv"}),
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
}


@dataclass
class Call:
    """One call of a recorded layer in the step: the layer, its input's shape, whether
    the input needs a gradient and whether the output was backpropagated."""

    layer: nn.Module
    shape: tuple[int, ...]
    input_grad: bool
    backward: bool


@dataclass
class ProductCall:
    """One call of a product function: the function, its tensors' shapes, which need a
    gradient, and whether the output was backpropagated."""

    func: Callable[..., torch.Tensor]
    shapes: list[tuple[int, ...]]
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
            self.calls.append(ProductCall(func, shapes, grads, out.requires_grad))
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
        calls.append(Call(layer, tuple(x.shape), x.requires_grad, out.requires_grad))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, RECORDED)]
    try:
        with ProductRecorder() as products:
            step()
    finally:
        for handle in handles:
            handle.remove()
    return calls, products.calls


def replay(call: Call) -> Callable[[], None]:
    """The call's products alone: a fresh copy of the layer on a random input of the same
    shape, forward and (where the step had one) backward."""
    layer = copy.deepcopy(call.layer)
    x = torch.randn(call.shape, requires_grad=call.input_grad)
    if isinstance(layer, nn.LSTMCell):  # its two products, without the gates' arithmetic
        h = torch.randn(call.shape[0], layer.hidden_size, requires_grad=call.input_grad)

        def forward() -> torch.Tensor:
            return F.linear(x, layer.weight_ih) + F.linear(h, layer.weight_hh)

    else:

        def forward() -> torch.Tensor:
            return layer(x)

    return forward_and_backward(forward, call.backward)


def replay_product(call: ProductCall) -> Callable[[], None]:
    """The product function on random tensors of the call's shapes."""
    args = [torch.randn(s, requires_grad=g) for s, g in zip(call.shapes, call.grads, strict=True)]
    return forward_and_backward(lambda: call.func(*args), call.backward)


def forward_and_backward(forward: Callable[[], torch.Tensor], backward: bool) -> Callable[[], None]:
    def run() -> None:
        out = forward()
        if backward:
            out.backward(torch.ones_like(out))

    return run


def floor_job(
    calls: tuple[list[Call], list[ProductCall]], optimizers: list[torch.optim.Optimizer]
) -> Callable[[], None]:
    """Every recorded product in turn, then the optimizers' updates on copies of the
    parameters with gradients already in place."""
    layer_calls, product_calls = calls
    products = [replay(call) for call in layer_calls] + [replay_product(c) for c in product_calls]
    updates = []
    for optimizer in optimizers:
        twin = copy.deepcopy(optimizer)  # its parameters, gradients and state copied
        for group in twin.param_groups:
            for p in group["params"]:
                p.grad = torch.randn_like(p)
        updates.append(twin.step)

    def run() -> None:
        for product in products:
            product()
        for update in updates:
            update()

    return run


def arm_jobs(name: str, data_dir: str | None) -> tuple[dict[str, Callable[[], object]], int]:
    """The step, its floor and sampling of one arm; and the batch size."""
    family, changes = ARMS[name]
    spec = MODELS[family]
    tc = TrainConfig(**spec.training_defaults())
    cfg = RunConfig(family, tc, spec.config(**changes))
    data = load_data(tc.dataset, tc.binarize, tc.val_size, data_dir)
    torch.manual_seed(0)
    model = build_model(cfg, data.image_shape)
    optimizers = model.configure_optimizers(tc.lr)
    average = WeightAverage(model, tc.ema) if tc.ema else None
    takes_labels = isinstance(model, Conditional) and model.takes_labels()
    batch = next(iter(batches(data.train, tc.batch_size, data.binarize, labels=takes_labels)))
    x, labels = batch if takes_labels else (batch, None)
    model.train()

    def step() -> None:
        model.train_step(x, optimizers, labels)
        if average is not None:
            average.update()

    step()  # the optimizers' state exists before the floor copies it
    floor = floor_job(record_calls(step, model), optimizers)
    if not model.ready_to_sample():
        model.after_training(data)  # the autoencoder's mixture, as when training ends

    def sample() -> None:
        with torch.no_grad():
            model.eval()
            model.sample(tc.batch_size)
            model.train()

    return {"step": step, "floor": floor, "sample": sample}, tc.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", choices=tuple(ARMS), default=tuple(ARMS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    tune_process()
    torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, best of {args.rounds} interleaved rounds"
    )
    print(f"{'family':<12}{'batch':>6}{'step ms':>10}{'floor ms':>10}{'ratio':>7}{'samples/s':>11}")
    for name in args.families:
        jobs, batch_size = arm_jobs(name, args.data_dir)
        best = interleaved_best(jobs, args.rounds)
        ratio = best["step"] / best["floor"]
        print(
            f"{name:<12}{batch_size:>6}{1000 * best['step']:>10.1f}"
            f"{1000 * best['floor']:>10.1f}{ratio:>7.2f}{batch_size / best['sample']:>11.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
