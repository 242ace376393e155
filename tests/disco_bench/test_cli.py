"""Command-line surface: subcommands, help, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from disco_bench.cli import main


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "disco_bench", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "pretrain", "eval", "report", "data", "list"):
        assert cmd in out


@pytest.mark.parametrize("cmd", ["run", "pretrain", "eval", "report", "data", "list"])
def test_each_subcommand_has_help(cmd):
    proc = subprocess.run([sys.executable, "-m", "disco_bench", cmd, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage" in proc.stdout


def test_unknown_suite_lists_choices(capsys):
    assert main(["run", "--suite", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "smoke" in err[0]


def test_unknown_task_lists_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "nope", "--ckpt", "x", "--data", "y"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "linear" in err[0]


def test_unknown_model_is_one_line(tmp_path, capsys, tiny_imagefolder):
    code = main(["pretrain", "--method", "moco", "--student", "resnet_eighteen", "--data", str(tiny_imagefolder),
                 "--out", str(tmp_path), "--epochs", "1", "--batch-size", "8", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resnet_eighteen" in err[0]


def test_typo_in_set_names_the_key(tmp_path, capsys, tiny_imagefolder):
    code = main(["pretrain", "--method", "moco", "--student", "resnet10t", "--data", str(tiny_imagefolder),
                 "--out", str(tmp_path), "--quiet", "--set", "queue_sise=8"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "queue_sise" in err and "queue_size" in err


def test_data_make_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["data", "make", "--out", str(out), "--set", "classes=3", "train_per_class=2", "val_per_class=1"]) == 0
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.png")) and len(files_a) == 9
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
