"""benchmarks/loader.py: on an ImageFolder it times every data path and ends with the comparison
line; on JPEGs it writes itself too; a folder that is no ImageFolder is one error line.

The timings run the script's ``main`` in the test process (what ``python benchmarks/loader.py ARGS`` runs
after its imports), sparing ~5 s of importing torch each; the error case runs it as a command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.loader import main

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "loader.py"

TINY = ["--images", "3", "--size", "32", "--repeats", "1", "--warmup", "0", "--batch", "2"]
LAST = re.compile(r"cpu-side samples/s per core: [0-9.]+ \(gpu path\) vs [0-9.]+ \(torchvision aug\+\)")


@pytest.fixture()
def run(capsys):
    def run(*args: str) -> SimpleNamespace:
        code = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def test_times_each_path_of_an_image_folder_and_ends_with_the_comparison(run, tiny_imagefolder):
    proc = run("--data", str(tiny_imagefolder), *TINY)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert LAST.fullmatch(lines[-1])
    for row in ("decode only", "aug_impl=torchvision", "aug_impl=fast", "aug_impl=gpu", "| cpu, 1 thread |"):
        assert row in proc.stdout
    assert f"ImageFolder {tiny_imagefolder / 'train'}" in proc.stdout


def test_writes_imagenet_like_jpegs_without_data(run):
    proc = run("--generate", "3", "--source-size", "80x60", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "3 generated JPEGs of 80x60 px" in proc.stdout and LAST.fullmatch(proc.stdout.splitlines()[-1])


def test_a_folder_without_classes_is_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path), *TINY],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout.count("error") == 0
    assert proc.stderr.strip().startswith("error: no class folders in") and proc.stderr.count("\n") == 1
