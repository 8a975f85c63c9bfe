"""Ctrl-C and SIGTERM: one way to stop a command.

A person stops a command with Ctrl-C (SIGINT), a job scheduler with SIGTERM (then
SIGKILL after a grace period). genzoo treats them alike: under ``sigterm_as_ctrl_c``
(every command runs under it) SIGTERM raises KeyboardInterrupt as Ctrl-C does, so that
the one path that handles an interruption (say what is kept and the command that
continues, exit with INTERRUPTED) handles both, whatever exception the interruption
surfaced as (``stop_wins``). A training loop takes both over with ``on_stop_signals``
and stops at its next batch boundary, or at once within an epoch's validation and
quality probe, after a checkpoint (training.py); the launcher of a data-parallel run
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

# How many stop signals have reached a handler set by ``on_signals`` in this process.
_stops_received = 0


def _counting(handler: Handler) -> Handler:
    def counted(signum: int, frame: FrameType | None) -> object:
        global _stops_received
        if signum in STOP_SIGNALS:
            _stops_received += 1
        return handler(signum, frame)

    return counted


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
    previous = {s: signal.signal(s, _counting(handler)) for s in taken}
    try:
        yield
    finally:
        for s, earlier in previous.items():
            signal.signal(s, earlier)


def on_stop_signals(handler: Handler) -> AbstractContextManager[None]:
    """``handler`` for Ctrl-C and SIGTERM alike inside the block."""
    return on_signals(STOP_SIGNALS, handler)


@contextmanager
def stop_wins() -> Iterator[None]:
    """Any exception that leaves the block after a stop signal came leaves it as
    KeyboardInterrupt (from the exception). The handler's KeyboardInterrupt is raised
    wherever Python code runs, and in code called back from a C extension it may come
    out as another type: matplotlib's transforms, through pybind11, turn it into a
    TypeError. The person asked for the stop; it is not a bug to report."""
    received = _stops_received
    try:
        yield
    except Exception as err:
        if _stops_received == received:
            raise
        raise KeyboardInterrupt from err


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block, as Ctrl-C does, and a stop
    ends the block as KeyboardInterrupt whatever it surfaced as (``stop_wins``)."""
    with on_stop_signals(signal.default_int_handler), stop_wins():
        yield
