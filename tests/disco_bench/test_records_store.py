"""results.jsonl: a redone measurement replaces its record (same id) instead of adding a second one;
a different measurement is kept beside it; the file is always whole JSON lines."""

from __future__ import annotations

import json

from disco_bench.results import append_records, make_records, read_records
from downstream.result import Measurement, TaskResult


def records(
    value: float,
    seed: int = 0,
    started: str = "2026-01-01T00:00:00+00:00",
    metrics=("top1", "top5"),
    step: str = "linear-moco",
) -> list[dict]:
    result = TaskResult(
        "linear", [Measurement(m, value + i, "embedded") for i, m in enumerate(metrics)], {"lr": 30.0}
    )
    return make_records(
        result,
        student="resnet18",
        teacher=None,
        method="moco",
        seed=seed,
        protocol={"lr": 30.0},
        config_hash="abc123",
        checkpoint_sha256=None,
        started_at=started,
        finished_at=started,
        step=step,
        run={"processes": 1},
    )


def test_a_redone_step_replaces_its_records_in_place_of_adding(tmp_path):
    path = tmp_path / "results.jsonl"
    first = records(50.0)
    append_records(path, first)
    redo = records(61.0, started="2026-02-02T00:00:00+00:00")  # the same step measured again, later
    assert [r["id"] for r in redo] == [
        r["id"] for r in first
    ]  # the id is what was measured, not when or what came out
    append_records(path, redo)
    stored = read_records(path)
    assert len(stored) == 2
    assert {r["metric"]: r["value"] for r in stored} == {"top1": 61.0, "top5": 62.0}
    assert {r["started_at"] for r in stored} == {"2026-02-02T00:00:00+00:00"}


def test_other_measurements_are_kept_beside_the_replaced_one(tmp_path):
    path = tmp_path / "results.jsonl"
    append_records(path, records(50.0, seed=0))
    append_records(path, records(40.0, seed=1))  # another seed: another measurement
    append_records(path, records(30.0, step="linear-disco"))  # another step
    append_records(path, records(55.0, seed=0, metrics=("top1",)))  # seed 0's top-1 redone alone
    stored = [(r["step"], r["seed"], r["metric"], r["value"]) for r in read_records(path)]
    assert sorted(stored) == sorted(
        [
            ("linear-moco", 0, "top5", 51.0),
            ("linear-moco", 1, "top1", 40.0),
            ("linear-moco", 1, "top5", 41.0),
            ("linear-disco", 0, "top1", 30.0),
            ("linear-disco", 0, "top5", 31.0),
            ("linear-moco", 0, "top1", 55.0),
        ]
    )
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["id"] for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "results.jsonl"
    ]  # no temp file left by the atomic rewrite
