"""A suite SIGKILLed mid-way (inside a pre-training step, then right after a step's records were
written) and restarted redoes only the unfinished steps; results.jsonl never holds a partial or
duplicate record."""

from __future__ import annotations

import pytest

from disco_bench import results
from disco_bench.cli import main
from infra.checkpoint import safe_load
from tests.crash_helpers import finish, kill_after_writes, start

pytestmark = pytest.mark.slow

SUITE = """\
name: crash
datasets:
  d: {kind: imagefolder, path: d, generate: {classes: 3, train_per_class: 8, val_per_class: 4, image_size: 16}}
defaults:
  pretrain: {epochs: 2, batch_size: 8, image_size: 16, queue_size: 16, key_momentum: 0.9, save_every_steps: 1}
  eval: {protocol: fast, image_size: 16, fast_max_iter: 20, device: cpu}
steps:
  - {id: a, kind: pretrain, with: {method: moco, student: test_resnet, data: d}}
  - {id: b, kind: eval, task: linear, with: {ckpt: "@a", data: d}}
  - {id: c, kind: eval, task: knn, with: {ckpt: "@a", data: d}}
"""


def check_records(path) -> list[dict]:
    """Every line a whole record (read_records raises otherwise) and no record twice."""
    records = results.read_records(path)
    assert len({r["id"] for r in records}) == len(records)
    return records


def in_process(args: list[str], capsys) -> str:
    """The CLI in this process (a run nobody kills needs no process of its own); what it printed."""
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def test_a_killed_suite_redoes_only_unfinished_steps(tmp_path, capsys):
    (tmp_path / "suite.yaml").write_text(SUITE)
    out = tmp_path / "out"
    args = [
        "run",
        "--suite",
        str(tmp_path / "suite.yaml"),
        "--out",
        str(out),
        "--quiet",
        "--set",
        "pretrain.max_steps=5",
    ]

    kill_after_writes(start(args), out / "checkpoints" / "a" / "last.pt", writes=2)  # inside step a
    assert not (out / "results.jsonl").exists()
    assert safe_load(out / "checkpoints" / "a" / "last.pt")["step"] >= 2

    kill_after_writes(start(args), out / "results.jsonl", writes=1)  # right after step a's records
    after_a = check_records(out / "results.jsonl")
    assert {r["step"] for r in after_a} == {"a"}

    log = in_process(args, capsys)
    assert "[1/3] a: skipped, already done" in log
    assert "[2/3] b: finished" in log and "[3/3] c: finished" in log
    assert "0 failed or skipped" in log
    final = check_records(out / "results.jsonl")
    assert [r for r in final if r["step"] == "a"] == after_a  # step a was not redone
    assert {r["step"] for r in final} == {"a", "b", "c"}
    assert safe_load(out / "checkpoints" / "a" / "final.pt")["step"] == 5


def test_an_edited_step_starts_afresh_and_keeps_the_previous_runs_folder(tmp_path, capsys):
    """The suite's step ``a`` ran at 2 epochs; the suite now says 3: its finished folder (last.pt of
    the 2-epoch run) is set aside, never deleted, and the new run trains from step 0 to its end."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    args = ["run", "--suite", str(suite), "--out", str(out), "--quiet", "--only", "a"]
    finish(start(args))
    first = safe_load(out / "checkpoints" / "a" / "final.pt")
    suite.write_text(SUITE.replace("pretrain: {epochs: 2,", "pretrain: {epochs: 3,"))
    log = finish(start(args))
    (kept,) = [p for p in (out / "checkpoints").iterdir() if p.name.startswith("a.superseded-")]
    assert f"that run is kept in {kept}" in log
    assert safe_load(kept / "final.pt")["step"] == first["step"]  # the 2-epoch run, untouched
    assert safe_load(out / "checkpoints" / "a" / "final.pt")["step"] == first["step"] * 3 // 2
    assert in_process(args, capsys).count("skipped, already done") == 1  # the same config again: done
