"""Disk full or read-only output folder while a checkpoint is written: the previous checkpoint
survives intact, no temp file is left, and the one-line error says what happened."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest
import torch

import pretrain.checkpoint as checkpoint
from disco_bench.cli import main
from pretrain.checkpoint import safe_load


def pretrain_args(data, out) -> list[str]:
    return ["pretrain", "--method", "moco", "--student", "test_resnet", "--data", str(data), "--epochs", "1",
            "--batch-size", "4", "--image-size", "16", "--out", str(out), "--quiet",
            "--set", "queue_size=16", "key_momentum=0.9", "save_every_steps=1"]


def fail_on_second_call(monkeypatch, module, name: str, err: int, write_half: bool = False) -> None:
    real, calls = getattr(module, name), []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            if write_half:  # the disk fills up part-way through the file
                args[1].write(b"\x00" * 100)
            raise OSError(err, os.strerror(err))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


@pytest.mark.parametrize("err, patch", [(errno.ENOSPC, "torch.save"), (errno.EROFS, "tempfile.mkstemp")])
def test_a_failed_checkpoint_write_keeps_the_previous_one(err, patch, tiny_imagefolder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    if patch == "torch.save":  # disk full part-way through the second checkpoint
        fail_on_second_call(monkeypatch, torch, "save", err, write_half=True)
    else:  # the folder became read-only: the temp file cannot even be created
        fail_on_second_call(monkeypatch, tempfile, "mkstemp", err)
    code = main(pretrain_args(tiny_imagefolder, out))
    err_text = capsys.readouterr().err
    assert code == 2
    assert err_text == f"error: cannot write {out / 'last.pt'}: {os.strerror(err)}; the previous file is unchanged\n"
    assert safe_load(out / "last.pt")["step"] == 1  # the checkpoint before the failed one, whole
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["last.pt", "log.csv"]  # no temp file, no final.pt


def test_records_that_cannot_be_written_leave_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.jsonl"
    checkpoint.atomic_write_text(target, '{"old": 1}\n')
    fail_on_second_call(monkeypatch, os, "fsync", errno.ENOSPC)
    os.fsync(os.open(target, os.O_RDONLY))  # the first call passes
    with pytest.raises(checkpoint.InputError, match="No space left on device; the previous file is unchanged"):
        checkpoint.atomic_write_text(target, '{"new": 2}\n')
    assert target.read_text() == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]
