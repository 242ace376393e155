"""Ctrl-C of ``run --jobs 2``: the terminal sends SIGINT to every process of the run; the run ends
with its one "interrupted" line and nothing after it (the step processes once died mid-exit and the
resource tracker warned of "leaked semaphore objects").

The steps never end on their own (a million epochs): the SIGINT comes once both are training,
whatever the machine's speed."""

from __future__ import annotations

import os
import signal

import pytest

from tests.crash_helpers import python, wait_for

pytestmark = pytest.mark.slow

SUITE = """\
name: two
datasets:
  d: {kind: imagefolder, path: d, generate: {classes: 3, train_per_class: 8, val_per_class: 4, image_size: 16}}
defaults:
  pretrain: {method: moco, student: test_resnet, epochs: 1000000, batch_size: 4, image_size: 16,
             queue_size: 16, key_momentum: 0.9}
steps:
  - {id: a, kind: pretrain, with: {data: d, seed: 0}}
  - {id: b, kind: pretrain, with: {data: d, seed: 1}}
"""


def test_ctrl_c_of_parallel_steps_ends_with_the_interrupted_line_alone(tmp_path):
    (tmp_path / "suite.yaml").write_text(SUITE)
    out = tmp_path / "out"
    run = python(
        ["-m", "disco_bench", "run", "--suite", str(tmp_path / "suite.yaml"), "--out", str(out), "--jobs", "2",
         "--quiet"],
        start_new_session=True,  # its own process group: the SIGINT below reaches the run alone, as Ctrl-C would
    )  # fmt: skip
    try:
        # both steps training (their progress bars, and with them their locks, exist)
        wait_for(
            run,
            lambda: all((out / "checkpoints" / s / "log.csv").exists() for s in "ab"),
            "both steps training",
            timeout=240,
        )
        os.killpg(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 130
    assert err == "interrupted; run the same command again to resume\n", err
