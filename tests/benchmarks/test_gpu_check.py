"""benchmarks/gpu_check.py: its CPU dry run goes through every stage (torchrun with 2 gloo processes on
JPEGs through aug_impl=gpu, the loader alone, the step alone, the teacher, the paper probe, both
Detectron2 models) and prints the table and which of loader and step limits; the peak is looked up
by the device's exact name; asking for CUDA where there is none is one error line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_check import main

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
STAGES = [
    "pretrain (DisCo, torchrun, bf16, channels_last, aug_impl=gpu)",
    "loader alone (one process, aug_impl=gpu)",
    "step alone (one process, synthetic inputs)",
    "teacher forward (batched views, bf16)",
    "linear probe (paper protocol, 1 epoch)",
    "Detectron2 Faster R-CNN C4 (VOC)",
    "Detectron2 Mask R-CNN C4 (COCO)",
]


@pytest.mark.slow
def test_dry_run_goes_through_every_stage(tmp_path, capsys):
    pytest.importorskip("detectron2", reason="the Detectron2 stages need it (CI installs it)")
    out = tmp_path / "table.md"
    # the script's main in this process (what the command runs after its imports); its pretrain stage
    # still starts 2 processes of its own through torchrun
    code = main(["--dry-run", "--work", str(tmp_path / "work"), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err[-3000:]
    rows = {
        cells[0]: cells
        for line in out.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| stage")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert list(rows) == STAGES
    for name, (_, images, seconds, per_s, *_rest) in rows.items():
        assert int(images) > 0 and float(seconds) > 0, name
        assert float(per_s) == pytest.approx(
            int(images) / float(seconds), rel=0.01 + 0.001 / float(seconds)
        ), name
    # 2 processes (the gathers cross them), the steady-state steps only: 4 steps, the first left out
    assert "backend gloo, 2 processes" in rows[STAGES[0]][-1]
    assert "steady-state steps 3 of 4" in rows[STAGES[0]][-1] and int(rows[STAGES[0]][1]) == 3 * 8
    assert (
        float(rows[STAGES[0]][4]) > float(rows[STAGES[3]][4]) > 0
    )  # a training step costs more than a teacher forward
    assert re.search(
        r"^per process: loader [0-9.e+]+ img/s vs step [0-9.e+]+ img/s: the (loader|step) limits",
        out.read_text(),
        re.M,
    )
    assert re.search(r"^Device: CPU; peak n/a", out.read_text(), re.M)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_error_line():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: --device cuda: no CUDA device is visible (use --dry-run to check the CPU paths)"
    ]


def test_the_peak_is_the_exact_device_names_and_unknown_names_get_none(monkeypatch):
    from benchmarks import gpu_check

    cuda = torch.device("cuda", 0)
    for name, peak in (
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
    ):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, name=name: name)
        assert gpu_check.peak_tflops(cuda) == (name, peak)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 Future Edition")
    assert gpu_check.peak_tflops(cuda) == ("NVIDIA H100 Future Edition", None)  # no guess from "H100"


def test_steady_state_leaves_out_the_first_quarter_of_the_steps():
    from benchmarks import gpu_check

    # 8 steps: the first 2 (start-up) are left out; 6 steps of 10 images in stamps[7] - stamps[1]
    assert gpu_check.steady([5.0, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0], 10) == (60, 3.0)
