"""Exceptions for problems a user can fix (bad flag, missing file, corrupt data, divergence).

The CLI prints their message on one line and exits with their ``exit_code``, without a
traceback; anything else that escapes is a bug and keeps its traceback. ``user_errors``
turns the two problems Python reports in its own types, a folder that cannot be made or
read and memory that runs out, into one, so the API raises what the CLI prints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")


class GenzooError(Exception):
    """A problem with the user's input or files; the message names the problem and the fix."""

    exit_code = 2


class TrainingDiverged(GenzooError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1


class RunFailed(GenzooError):
    """A process of a data-parallel run died; the last good checkpoint is kept."""

    exit_code = 1


def out_of_memory(err: Exception) -> bool:
    """CUDA reports an OutOfMemoryError; the CPU allocator a RuntimeError that says so."""
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in str(err)


@contextmanager
def user_errors() -> Iterator[None]:
    """Raise a file or folder that cannot be made or read (an OSError that names it), and
    memory that runs out, as GenzooError with the line that says what to fix; any other
    error (a broken pipe, a lost connection between processes, a bug) keeps its type and
    traceback."""
    try:
        yield
    except GenzooError:
        raise
    except OSError as err:
        if err.filename is None:
            raise
        # mkdir over a file says "File exists": name the real problem
        why = (
            "a file is in the way of a folder"
            if isinstance(err, FileExistsError | NotADirectoryError)
            else err.strerror or err
        )
        raise GenzooError(f"cannot use {err.filename}: {why}") from err
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not out_of_memory(err):
            raise
        raise GenzooError("out of memory; choose smaller sizes or batches") from err


def raises_user_errors(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` with ``user_errors`` around its body (the API's public functions)."""

    @functools.wraps(function)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        with user_errors():
            return function(*args, **kwargs)

    return wrapped
