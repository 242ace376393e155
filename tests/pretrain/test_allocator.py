"""pretrain.allocator: with freed memory kept mapped, training steps stop page-faulting once warm
(measured in fresh interpreters, whose allocator settings are untouched)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

STEPS = """
import resource, sys, timm, torch
torch.set_num_threads(1)
if sys.argv[1] == "kept":
    from pretrain.allocator import keep_freed_memory
    assert keep_freed_memory()
model = timm.create_model("efficientnet_b0", num_classes=0)
x = torch.randn(8, 3, 64, 64)
def step():
    model(x).sum().backward()
    model.zero_grad(set_to_none=True)
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_kept_memory_stops_the_page_faults_of_each_step():
    default, kept = page_faults("default"), page_faults("kept")
    assert default > 2_000, default  # glibc's defaults hand pages back and fault them in again every step
    assert kept < default / 20, (kept, default)
