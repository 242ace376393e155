"""Disk full or read-only output folder while a checkpoint or the log is written: the previous
checkpoint survives intact, no temp file is left, and the one-line error says what happened. A run
refused before its first step leaves the output folder as it found it."""

from __future__ import annotations

import csv
import errno
import os
import tempfile

import pytest
import torch

import infra.checkpoint as checkpoint
from disco_bench.cli import main
from infra.checkpoint import safe_load
from infra.outlock import output_lock
from tests.crash_helpers import leftovers
from tests.pretrain.helpers import pretrain_args, save_student


def fail_on_call(monkeypatch, module, name: str, err: int, write_half: bool = False, call: int = 2) -> None:
    """``module.name`` raises OSError ``err`` on its ``call``-th call (after half a file when ``write_half``)."""
    real, calls = getattr(module, name), []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            if write_half:  # the disk fills up part-way through the file
                args[1].write(b"\x00" * 100)
            raise OSError(err, os.strerror(err))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


@pytest.mark.parametrize("err, patch", [(errno.ENOSPC, "torch.save"), (errno.EROFS, "tempfile.mkstemp")])
def test_a_failed_checkpoint_write_keeps_the_previous_one(
    err, patch, tiny_imagefolder, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    if patch == "torch.save":  # disk full part-way through the second checkpoint
        fail_on_call(monkeypatch, torch, "save", err, write_half=True)
    else:  # the folder became read-only: the temp file cannot even be created
        fail_on_call(
            monkeypatch, tempfile, "mkstemp", err, call=3
        )  # after log.csv's header and the 1st checkpoint
    code = main(pretrain_args(tiny_imagefolder, out, epochs=1))
    err_text = capsys.readouterr().err
    assert code == 2
    assert (
        err_text
        == f"error: cannot write {out / 'last.pt'}: {os.strerror(err)}; the previous file is unchanged\n"
    )
    assert safe_load(out / "last.pt")["step"] == 1  # the checkpoint before the failed one, whole
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "last.pt",
        "log.csv",
    ]  # no temp file, no final.pt
    assert leftovers(out) == []


def test_a_full_disk_while_logging_is_one_line_and_keeps_the_checkpoint(
    tiny_imagefolder, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    # DictWriter.writerow writes the header, then one row per step: the 4th call is step 3's row
    fail_on_call(monkeypatch, csv.DictWriter, "writerow", errno.ENOSPC, call=4)
    assert main(pretrain_args(tiny_imagefolder, out, epochs=1)) == 2
    assert capsys.readouterr().err == (
        f"error: cannot write {out / 'log.csv'}: No space left on device; the checkpoints are unchanged\n"
    )
    assert safe_load(out / "last.pt")["step"] == 2
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["last.pt", "log.csv"]
    assert leftovers(out) == []


def test_a_full_disk_for_the_lock_file_is_one_line(tmp_path, monkeypatch):
    fail_on_call(monkeypatch, os, "fsync", errno.ENOSPC, call=1)
    expected = (
        f"cannot use {tmp_path / 'out'} as the output folder: cannot write "
        r"\.disco-bench\.lock \(No space left"
    )
    with pytest.raises(checkpoint.InputError, match=expected), output_lock(tmp_path / "out"):
        pass
    assert list(tmp_path.iterdir()) == []


def bad_inputs(tmp_path, data) -> dict[str, list[str]]:
    """Commands refused before their first step (each found by a different stage of the set-up)."""
    teacher = save_student(tmp_path / "teacher.pt", "resnet10t")  # a 16-d teacher
    return {
        "missing dataset": pretrain_args(tmp_path / "missing", tmp_path / "out", epochs=1),
        "unknown student": [*pretrain_args(data, tmp_path / "out", epochs=1), "--student", "resnet_eighteen"],
        "teacher of another width": [
            *pretrain_args(data, tmp_path / "out", epochs=1),
            "--method",
            "disco",
            "--teacher-ckpt",
            teacher,
        ],
    }


@pytest.mark.parametrize("folder", ["new", "with files", "with files, --restart"])
@pytest.mark.parametrize("case", ["missing dataset", "unknown student", "teacher of another width"])
def test_a_run_refused_before_its_first_step_leaves_the_output_folder_as_it_was(
    case, folder, tiny_imagefolder, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = bad_inputs(tmp_path, tiny_imagefolder)[case]
    if folder != "new":  # another run's checkpoint and log, and a file of the user's
        out.mkdir()
        for name, text in (("last.pt", "old run"), ("log.csv", "step\n1\n"), ("notes.txt", "mine")):
            (out / name).write_text(text)
    before = {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else None
    assert main([*argv, "--restart"] if "restart" in folder else argv) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert ({p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else None) == before


def test_records_that_cannot_be_written_leave_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.jsonl"
    checkpoint.atomic_write_text(target, '{"old": 1}\n')
    fail_on_call(monkeypatch, os, "fsync", errno.ENOSPC)
    os.fsync(os.open(target, os.O_RDONLY))  # the first call passes
    with pytest.raises(
        checkpoint.InputError, match="No space left on device; the previous file is unchanged"
    ):
        checkpoint.atomic_write_text(target, '{"new": 2}\n')
    assert target.read_text() == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]


class FillsUp:
    """A file that takes ``room`` bytes, then fails every write with ENOSPC, as a full disk does."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_the_real_torch_save_on_a_full_disk_is_one_line(tiny_imagefolder, tmp_path, capsys, monkeypatch):
    """torch.save itself (not a stand-in raising OSError) turns ENOSPC into ``RuntimeError:
    unexpected pos`` when its zip writer closes; that is still the disk-full line, not a traceback."""
    out, real_fdopen, opened = tmp_path / "run", os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        opened.append(1)
        return FillsUp(handle, 4096) if len(opened) == 3 else handle  # log.csv's header, step 1, step 2

    monkeypatch.setattr(os, "fdopen", fdopen)
    assert main(pretrain_args(tiny_imagefolder, out, epochs=1)) == 2
    assert capsys.readouterr().err == (
        f"error: cannot write {out / 'last.pt'}: No space left on device; the previous file is unchanged\n"
    )
    monkeypatch.undo()
    assert safe_load(out / "last.pt")["step"] == 1
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["last.pt", "log.csv"]
    assert leftovers(out) == []


def test_written_files_get_the_mode_of_a_plain_open(tmp_path):
    """mkstemp makes 0600 files: a checkpoint or record that teammates cannot read. Written files
    get 0666 minus the umask, as open() gives."""
    written = checkpoint.atomic_write_text(tmp_path / "results.jsonl", "{}\n")
    assert written.stat().st_mode & 0o777 == 0o666 & ~checkpoint.UMASK
