"""Keep freed memory in the process, so a training step does not page-fault (glibc).

PyTorch's CPU allocator takes every tensor from ``malloc`` and hands it back on release.
glibc serves large blocks (from 128 KiB, a threshold it moves with what it sees) with a
fresh ``mmap`` and returns them with ``munmap``, and trims the top of its heap when enough
is free there. A training step of a small MLP frees and re-allocates its activations and
weight gradients (1.5 MiB for a 784 x 500 layer) every step, so each step maps and zeroes
new pages: 150-180 page faults a step for the 784-500-20 VAE, measured, and none once
both thresholds are raised, which keeps those blocks in the heap for the next step to
reuse (benchmarks/README.md has the epoch times). PyTorch's performance guide reaches
the same end by swapping in jemalloc or tcmalloc.

The cost is that a process keeps the memory of its peak step instead of returning it;
blocks of 32 MiB and more (the datasets) still come and go through ``mmap``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

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
