"""benchmarks/gpu_check.py: its CPU dry run goes through every stage (torchrun over gloo, the teacher,
the paper probe, both Detectron2 models, JPEG decode + aug+) and prints the table; asking for CUDA
where there is none is one error line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
STAGES = [
    "pretrain (DisCo, torchrun, bf16, channels_last)",
    "teacher forward (batched views, bf16)",
    "linear probe (paper protocol, 1 epoch)",
    "Detectron2 Faster R-CNN C4 (VOC)",
    "Detectron2 Mask R-CNN C4 (COCO)",
    "JPEG decode (cpu) + aug+",
]


@pytest.mark.slow
def test_dry_run_goes_through_every_stage(tmp_path):
    pytest.importorskip("detectron2", reason="the Detectron2 stages need it (CI installs it)")
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--work", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
    assert "backend gloo, 2 steps" in rows[STAGES[0]][-1]
    assert (
        float(rows[STAGES[0]][4]) > float(rows[STAGES[1]][4]) > 0
    )  # a training step costs more than a teacher forward
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
