"""The process settings of cpu.py: no page faults a step, denormals flushed to zero."""

import platform
import subprocess
import sys

import pytest

# A few Adam steps of a 784-500-784 MLP, batch 128: each step frees and re-allocates
# 1.5 MiB weight gradients and activations. Prints the minor page faults per step after
# a warm-up (which may fault while the heap grows).
STEPS = """
import resource, sys
import torch
from genzoo.cpu import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(784, 500), torch.nn.ReLU(), torch.nn.Linear(500, 784))
opt = torch.optim.Adam(net.parameters())
x = torch.rand(128, 784)
def step():
    opt.zero_grad(set_to_none=True)
    ((net(x) - x) ** 2).mean().backward()
    opt.step()
for _ in range(20):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40)
"""


def faults_per_step(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults_of_repeated_steps():
    # The control: without it, every step maps fresh pages for its gradients (each 1.5 MiB
    # gradient alone is ~380 pages), which is what the function is for.
    default = faults_per_step("default")
    assert default > 100
    # Kept: a few stray faults at most (Python's own small-object arenas), not hundreds.
    assert faults_per_step("keep") < default / 20


# After tune_process, a parallel operation on denormals gives zeros in every thread's
# share (a million elements: split over torch's threads); before it, the denormals.
DENORMALS = """
import sys
import torch
from genzoo.cpu import tune_process
if sys.argv[1] == "tune":
    tune_process()
x = torch.full((1_000_000,), 1e-39)  # float32: below 1.18e-38, a denormal
print(int(((x * 1.0) == 0).sum()))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="an x86 mode")
def test_tune_process_flushes_denormals_in_every_thread():
    def zeros(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", DENORMALS, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    assert zeros("default") == 0
    assert zeros("tune") == 1_000_000
