"""keep_freed_memory: repeated training steps stop touching new pages (Linux, glibc)."""

import subprocess
import sys

import pytest

# A few Adam steps of a 784-500-784 MLP, batch 128: each step frees and re-allocates
# 1.5 MiB weight gradients and activations. Prints the minor page faults per step after
# a warm-up (which may fault while the heap grows).
STEPS = """
import resource, sys
import torch
from genzoo.memory import keep_freed_memory
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
