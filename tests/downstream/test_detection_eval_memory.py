"""COCO-scale mask evaluation keeps its memory bounded: predictions hold RLEs made as each image's
masks are produced (never every image's full-resolution masks), so the peak does not grow with the
number of images. benchmarks/detection_eval.py at small sizes, in fresh processes (peak RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ONE_IMAGE_MIB = 100 * 800 * 1333 / 2**20  # one image's raw masks: 100 detections at 800 x 1333


def peak(images: int) -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "detection_eval.py"), "--images", str(images), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_peak_memory_of_mask_evaluation_does_not_grow_with_the_images():
    small, large = peak(1), peak(4)
    assert small["mask_AP"] > 50 and large["mask_AP"] > 50  # a real evaluation: most detections hit
    # the 3 more images' raw masks would add 3 x 102 MiB; their RLEs add well under 1 MiB
    assert large["peak_above_setup_mib"] - small["peak_above_setup_mib"] < 0.5 * ONE_IMAGE_MIB
    # the transient peak is one image's masks being encoded (the bool array and its column-major copy)
    assert large["peak_above_setup_mib"] < 3 * ONE_IMAGE_MIB
