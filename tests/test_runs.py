"""The run folder's guarantees: atomic checkpoints with a fallback, clean failures of
writes, the one-writer lock."""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from genzoo import files, runs
from genzoo.errors import GenzooError
from genzoo.files import WriteFailed
from genzoo.runs import (
    checkpoint_files,
    load_checkpoint,
    lock_run,
    save_checkpoint,
    unlock_run,
)


def saved(run: Path, epoch: int, step: int = 0) -> nn.Linear:
    """Save a checkpoint of a small model whose weights all equal ``epoch``."""
    model = nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(epoch)
    save_checkpoint(run, "last", model, {"epoch": epoch, "step": step, "note": "x"})
    return model


def loaded_epoch(run: Path) -> tuple[int, float]:
    model = nn.Linear(3, 2)
    state = load_checkpoint(run, "last", model)
    return state["epoch"], model.weight[0, 0].item()


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.rglob("*") if p.name.endswith(".tmp"))


def test_newest_and_previous_pairs_are_kept_and_older_ones_removed(tmp_path: Path) -> None:
    for epoch in (1, 2, 3):
        saved(tmp_path, epoch)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [
        "last-000002.safetensors",
        "last-000002.state.pt",
        "last-000003.safetensors",
        "last-000003.state.pt",
        "last.json",
    ]
    assert loaded_epoch(tmp_path) == (3, 3.0)


@pytest.mark.parametrize("damage", ["truncate weights", "delete state", "tamper state"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, capsys, damage: str
) -> None:
    saved(tmp_path, 1)
    saved(tmp_path, 2)
    weights, state = checkpoint_files(tmp_path, "last")
    if damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[:50])
    elif damage == "delete state":
        state.unlink()
    else:  # a valid state file from another point: the pair no longer belongs together
        torch.save({"epoch": 2, "step": 0, "note": "tampered"}, state)
    assert loaded_epoch(tmp_path) == (1, 1.0)
    assert "damaged" in capsys.readouterr().err
    weights_1, _ = checkpoint_files(tmp_path, "last")
    assert weights_1 == weights  # loading repairs nothing silently; the manifest is unchanged


def test_when_every_pair_is_damaged_the_error_names_the_files(tmp_path: Path) -> None:
    saved(tmp_path, 1)
    weights, _ = checkpoint_files(tmp_path, "last")
    weights.write_bytes(b"junk")
    with pytest.raises(GenzooError, match=r"corrupt.*last-000001\.safetensors"):
        loaded_epoch(tmp_path)


def test_a_malicious_pickle_is_refused_not_run(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    saved(tmp_path, 1)
    _, state = checkpoint_files(tmp_path, "last")
    state.write_bytes(pickle.dumps(Exploit()))
    manifest = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    manifest["entries"][0]["sha256"][state.name] = files.file_digest(state, "sha256")
    (tmp_path / "checkpoints" / "last.json").write_text(json.dumps(manifest))
    with pytest.raises(GenzooError, match="corrupt") as info:
        loaded_epoch(tmp_path)
    assert "\n" not in str(info.value) and not (tmp_path / "pwned").exists()


def test_a_kill_between_the_two_files_leaves_the_previous_checkpoint_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved(tmp_path, 1)

    def dies(obj, target):  # after the weights file, before the state file
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        saved(tmp_path, 2)
    monkeypatch.undo()
    assert loaded_epoch(tmp_path) == (1, 1.0)


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved(tmp_path, 1)

    write_bytes = Path.write_bytes

    def no_space(path: Path, data: bytes) -> int:
        if ".state.pt." in path.name and path.name.endswith(".tmp"):
            write_bytes(path, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(WriteFailed, match=r"no space left on /.* while writing .*state\.pt"):
        saved(tmp_path, 2)
    monkeypatch.undo()
    assert leftovers(tmp_path) == [] and loaded_epoch(tmp_path) == (1, 1.0)


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteFailed, match=r"cannot write .*file/checkpoints"):
        saved(tmp_path / "file", 1)  # its checkpoints folder would lie inside a file


def test_write_problems_name_the_cause() -> None:
    path = Path("/x/y.json")
    assert "choose a writable folder" in files.write_problem(
        path, PermissionError(errno.EACCES, "Permission denied")
    )
    assert files.write_problem(path, OSError(errno.ENOSPC, "No space left on device")).startswith(
        "no space left on /"
    )


def test_checkpoints_of_the_earlier_layout_still_load(tmp_path: Path) -> None:
    model = saved(tmp_path, 4)
    weights, state = checkpoint_files(tmp_path, "last")
    folder = tmp_path / "checkpoints"
    os.replace(weights, folder / "last.safetensors")
    os.replace(state, folder / "last.state.pt")
    (folder / "last.json").unlink()
    assert loaded_epoch(tmp_path) == (4, 4.0)
    save_checkpoint(tmp_path, "last", model, {"epoch": 5, "step": 0})
    assert not (folder / "last.safetensors").exists()  # replaced by the new layout


def test_a_second_writer_is_refused_with_the_first_ones_pid(
    tmp_path: Path, lock_held_elsewhere
) -> None:
    with lock_held_elsewhere(tmp_path) as pid:  # noqa: SIM117 - the inner one needs pid
        with pytest.raises(GenzooError, match=f"another genzoo process \\(PID {pid}\\)"):
            lock_run(tmp_path)
    lock_run(tmp_path)
    unlock_run(tmp_path)


def test_two_writers_of_one_file_never_write_into_each_others_temporary_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "eval.json"

    def first(tmp: Path) -> None:  # a second writer finishes while the first is writing
        tmp.write_text("first")
        files.atomic_write(path, lambda other: other.write_text("second"))

    files.atomic_write(path, first)
    assert path.read_text() == "first"  # the last rename wins, and neither write failed
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]
