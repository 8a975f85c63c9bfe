"""Ctrl-C and SIGTERM: one way to stop a command.

A person stops a command with Ctrl-C (SIGINT), a job scheduler with SIGTERM (then
SIGKILL after a grace period). genzoo treats them alike: under ``sigterm_as_ctrl_c``
SIGTERM raises KeyboardInterrupt as Ctrl-C does, so that the one path that handles an
interruption (say what is kept and the command that continues, exit with INTERRUPTED)
handles both. A training loop takes both over with ``on_stop_signals`` and stops at its
next batch boundary, or at once within an epoch's validation and quality probe, after a
checkpoint (training.py); the launcher of a data-parallel run
passes them on to its processes (distributed.py).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType

# The exit status of a command stopped by Ctrl-C or SIGTERM: 128 + SIGINT, what shells
# report for Ctrl-C.
INTERRUPTED = 128 + signal.SIGINT

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], object]


@contextmanager
def on_signals(signals: tuple[signal.Signals, ...], handler: Handler) -> Iterator[None]:
    """``handler`` for ``signals`` inside the block, the previous handlers after.

    A signal ignored on entry stays ignored (a background job of a script ignores
    Ctrl-C). Only the main thread may set handlers (and Python runs them there only);
    in another thread this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    taken = [s for s in signals if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, handler) for s in taken}
    try:
        yield
    finally:
        for s, earlier in previous.items():
            signal.signal(s, earlier)


def on_stop_signals(handler: Handler) -> AbstractContextManager[None]:
    """``handler`` for Ctrl-C and SIGTERM alike inside the block."""
    return on_signals(STOP_SIGNALS, handler)


def sigterm_as_ctrl_c() -> AbstractContextManager[None]:
    """SIGTERM raises KeyboardInterrupt inside the block, as Ctrl-C does."""
    return on_signals((signal.SIGTERM,), signal.default_int_handler)
