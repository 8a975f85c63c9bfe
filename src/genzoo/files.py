"""Generic file work, in one low-level home: atomic writes, JSON, arrays, bytes and
safetensors weights, file digests, a lock for read-modify-writes, and where genzoo keeps
what it builds once (the cache folder).

Every writer here goes through ``atomic_write``: the file is written to a temporary name
and renamed, so a reader never sees half a file. A write that fails (a full disk, no
permission) removes its temporary file and raises ``WriteFailed`` with one line naming
the file system and the file; an interrupted one (Ctrl-C) removes it too. Nothing here
knows about runs, datasets or models; it imports nothing from genzoo but its errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save
from torch import nn

from genzoo.errors import GenzooError


def cache_root() -> Path:
    """Where genzoo keeps what it downloads or builds once: ``$GENZOO_CACHE`` if set, else
    ``$XDG_CACHE_HOME/genzoo`` (``~/.cache/genzoo``)."""
    if os.environ.get("GENZOO_CACHE"):
        return Path(os.environ["GENZOO_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "genzoo"


# ----------------------------------------------------------------------------- writing


class WriteFailed(GenzooError):
    """A file could not be written (full disk, no permission); nothing half-written stays."""


_write_numbers = itertools.count()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename tmp to ``path`` (atomic on POSIX and Windows). If
    either fails or is interrupted (Ctrl-C), the temporary file is removed and the old
    ``path`` stays as it was. Each write has a temporary name of its own (process id and
    a count), so two writers of one file (two ``genzoo eval`` of one run) never write into
    each other's."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{next(_write_numbers)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        _kill_hook()
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # e.g. its folder could not be made
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise WriteFailed(write_problem(path, err)) from None
        raise


_writes = 0


def _kill_hook() -> None:
    """Test hook: with GENZOO_KILL_AT_WRITE=N in the environment the process kills itself
    (SIGKILL) after writing its N-th temporary file and before renaming it, the worst
    instant for a kill (tests/test_kill.py)."""
    global _writes
    at = os.environ.get("GENZOO_KILL_AT_WRITE")
    if at:
        _writes += 1
        if _writes == int(at):
            os.kill(os.getpid(), signal.SIGKILL)


def write_problem(path: Path, err: Exception) -> str:
    """The one line that says why writing ``path`` failed, and what to do about it."""
    if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left" in str(err):
        return f"no space left on {_mount_point(path)} while writing {path}"
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: {err.strerror}; choose a writable folder"
    if isinstance(err, FileExistsError | NotADirectoryError):  # mkdir over a file
        return f"cannot write {path}: a file is in the way of a folder ({err.filename})"
    return f"cannot write {path}: {err}"


def _mount_point(path: Path) -> str:
    """The file system a path lies on, as the user knows it: its mount point."""
    path = path.absolute()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


@contextlib.contextmanager
def updating(path: Path) -> Iterator[None]:
    """Hold an exclusive OS lock (flock) for ``path``'s read-modify-write inside the block:
    another process or thread updating it waits, so that neither writes over what the
    other has just added. The lock is on a hidden side file (``.NAME.lock``, left in
    place): ``path`` itself is replaced by each atomic write, and a lock on the file
    replaced would not exclude a writer that opened the new one. A killed holder
    releases it."""
    lock = path.with_name(f".{path.name}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # noqa: SIM115 - closed below, which releases the lock
    except OSError as err:
        raise WriteFailed(write_problem(path, err)) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits for the other writer
        yield


def write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def write_bytes(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; return its SHA-256, taken from the bytes in
    memory rather than by reading the file back."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def write_array(path: Path, array: np.ndarray) -> None:
    """An array as ``.npy``, or as ``.npz`` (compressed, under the name ``samples``),
    atomically."""

    def write(tmp: Path) -> None:
        # Through a file object: given a name, numpy would add its own suffix to tmp's.
        with open(tmp, "wb") as f:
            if path.suffix.lower() == ".npz":
                np.savez_compressed(f, samples=array)
            else:
                np.save(f, array)

    atomic_write(path, write)


def save_weights(path: Path, module: nn.Module, metadata: dict[str, str]) -> str:
    """A module's state dict as a safetensors file (atomically), with string ``metadata``:
    the one weights writer, for checkpoints and the quality-net cache alike. Returns the
    file's SHA-256."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    # Serialized in memory, then written by Python, so a full disk is an OSError (ENOSPC)
    # here rather than an opaque error from inside the serializer.
    return write_bytes(path, save(tensors, metadata=metadata))


# ----------------------------------------------------------------------------- reading


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise GenzooError(f"cannot read {path}: {err}") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; anything else is a damaged file."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise GenzooError(f"{path} is not a genzoo file (no JSON object); regenerate it")
    return value


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in blocks (the files run to tens of megabytes)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
