"""``run --launcher torchrun --nproc 2`` and ``python -m disco_bench step`` end to end on a tiny suite
(one pre-training on 2 gloo processes, one fast linear probe): the records have the same fields as
a local run's, and a finished suite run again is skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

SUITE = """\
name: tiny-torchrun
description: one MoCo-v2 pre-training and a fast linear probe, at toy size
datasets:
  shapes:
    kind: imagefolder
    path: shapes
    generate: {classes: 2, train_per_class: 8, val_per_class: 4, image_size: 16, seed: 0}
defaults:
  pretrain: {epochs: 1, batch_size: 8, image_size: 16, queue_size: 16, key_momentum: 0.9, device: cpu}
  eval: {protocol: fast, image_size: 16, device: cpu, fast_max_iter: 20}
steps:
  - {id: moco, kind: pretrain, label: MoCo-v2, with: {method: moco, student: resnet10t, data: shapes}}
  - {id: linear-moco, kind: eval, task: linear, label: MoCo-v2, with: {ckpt: "@moco", data: shapes}}
"""


def in_process(*args: str) -> None:
    """The CLI in this process: the local run and the step command need no process of their own."""
    from disco_bench.cli import main

    assert main(list(args)) == 0


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "disco_bench", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def shape(recs: list[dict]) -> dict:
    """(step, metric) -> the record's keys and its protocol's keys: what must not depend on the launcher."""
    return {(r["step"], r["metric"]): (sorted(r), sorted(r["protocol"])) for r in recs}


@pytest.mark.slow
def test_torchrun_suite_and_step_command_give_records_of_the_local_form(tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    common = ["--suite", str(suite), "--quiet"]  # the data set is generated under each OUT/data

    in_process("run", *common, "--out", str(tmp_path / "local"))
    cli("run", *common, "--out", str(tmp_path / "ddp"), "--launcher", "torchrun", "--nproc", "2")
    local, ddp = records(tmp_path / "local"), records(tmp_path / "ddp")
    assert {r["step"] for r in ddp} == {"moco", "linear-moco"}
    assert shape(ddp) == shape(local)
    pre = next(r for r in ddp if r["step"] == "moco" and r["metric"] == "final_loss")
    assert pre["protocol"]["batch_size"] == 8  # the global batch, split 4 + 4 over the processes
    # rank 0's log of the torchrun step, its records handed back through the step command's file
    assert (tmp_path / "ddp" / "logs" / "moco.torchrun.log").exists()
    assert json.loads((tmp_path / "ddp" / "logs" / "moco.records.json").read_text())[0]["step"] == "moco"

    # the step command on its own (one process, the data the local run generated), records appended to OUT/results.jsonl
    out = tmp_path / "step"
    capsys.readouterr()
    in_process(
        "step",
        "--suite",
        str(suite),
        "--step",
        "moco",
        "--out",
        str(out),
        "--data-root",
        str(tmp_path / "local" / "data"),
        "--quiet",
    )
    assert "moco: " in capsys.readouterr().out
    assert shape(records(out)) == {k: v for k, v in shape(local).items() if k[0] == "moco"}
