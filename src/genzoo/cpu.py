"""Two process-wide settings that keep CPU training at its speed; ``tune_process`` sets both.

Freed memory kept for reuse (glibc). PyTorch's CPU allocator takes every tensor from
``malloc`` and hands it back on release. glibc serves large blocks (from 128 KiB, a
threshold it moves with what it sees) with a fresh ``mmap`` and returns them with
``munmap``, and trims the top of its heap when enough is free there. A training step of
a small MLP frees and re-allocates its activations and weight gradients (1.5 MiB for a
784 x 500 layer) every step, so each step maps and zeroes new pages: 150-180 page faults
a step for the 784-500-20 VAE, measured, and none once both thresholds are raised, which
keeps those blocks in the heap for the next step to reuse. PyTorch's performance guide
reaches the same end by swapping in jemalloc or tcmalloc. The cost: a process keeps the
memory of its peak step instead of returning it (blocks of 32 MiB and more, the
datasets, still come and go through ``mmap``).

Denormal numbers flushed to zero. Adam's first moment decays by beta1 = 0.9 a step
wherever a gradient is zero (the always-black border pixels of MNIST give the decoder
such weights), and after about 800 steps it falls below 1.2e-38 into float32's denormal
range, where x86 arithmetic is some hundred times slower: the VAE's optimizer step went
from 0.55 to 1.7 ms after two epochs. Flushing denormals to zero (the processor's FTZ and
DAZ modes) keeps it at 0.55 ms; values below 1e-38 matter to none of these models.
Threads inherit the mode from the thread that starts them, so set it before the first
parallel operation starts torch's thread pool.

Figures in benchmarks/README.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest accepted value on 64-bit machines
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks below 32 MiB for reuse; True if it took.

    A no-op returning False elsewhere (macOS, Windows, musl): call it once, early, in the
    process that trains (the ``genzoo`` command does).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt
        return False
    # mallopt returns 1 on success, 0 on a rejected value.
    mmap_taken = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(mmap_taken and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def flush_denormals() -> bool:
    """Treat float denormals as zero from now on, in this thread and the threads it
    starts; True where the processor supports it (x86 with SSE3)."""
    return torch.set_flush_denormal(True)


def tune_process() -> None:
    """Both settings, for a process that trains or evaluates: call it early, before the
    first parallel tensor operation (the ``genzoo`` command does)."""
    keep_freed_memory()
    flush_denormals()
