"""The embedded smoke suite end to end through the CLI, shortened with --set overrides."""

from __future__ import annotations

import json
import shutil

import pytest

from disco_bench.cli import main
from disco_bench.results import REQUIRED_FIELDS
from disco_bench.suite import load_suite

# every step still runs (and writes its records) on the suite's data sets; only the work per step
# shrinks: smaller inputs, one epoch or iteration, a short L-BFGS fit
FAST = [
    "--quiet",
    "--set",
    "pretrain.max_steps=2",
    "pretrain.batch_size=16",
    "pretrain.image_size=16",
    "eval.image_size=16",
    "eval.epochs=1",
    "eval.fast_max_iter=20",
    "eval.det_max_iter=1",
    "eval.det_image_size=32",
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    code = main(["run", "--suite", "smoke", "--out", str(out), *FAST])
    return out, code


def test_smoke_suite_runs_and_writes_a_leaderboard(smoke_run):
    out, code = smoke_run
    assert code == 0
    board = (out / "LEADERBOARD.md").read_text()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for label in ("teacher", "student-moco", "student-disco"):
        top1 = next(
            r["value"]
            for r in records
            if r["task"] == "linear" and r["label"] == label and r["metric"] == "top1"
        )
        rows = [
            line
            for line in board.splitlines()
            if line.startswith("|") and label in line and f"{top1:.2f}" in line
        ]
        assert rows, f"no leaderboard row shows {label}'s top-1 {top1:.2f}"


def test_every_record_has_the_contract_fields(smoke_run):
    out, _ = smoke_run
    lines = (out / "results.jsonl").read_text().splitlines()
    assert lines
    for line in lines:
        rec = json.loads(line)
        assert not [f for f in REQUIRED_FIELDS if f not in rec]
        assert isinstance(rec["value"], float)
        assert isinstance(rec["protocol"], dict) and rec["protocol"]
    steps = {json.loads(line)["step"] for line in lines}
    assert steps == {s.id for s in load_suite("smoke").steps}


def test_second_run_skips_every_step(smoke_run, capsys):
    out, _ = smoke_run
    before = (out / "results.jsonl").read_text()
    capsys.readouterr()
    assert main(["run", "--suite", "smoke", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    n_steps = len(load_suite("smoke").steps)
    assert printed.count("skipped, already done") == n_steps, printed
    assert f"0 ran, {n_steps} already done, 0 failed" in printed
    assert (out / "results.jsonl").read_text() == before


def test_dry_run_lists_steps_and_runs_nothing(tmp_path, capsys):
    assert main(["run", "--suite", "smoke", "--out", str(tmp_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    for step in load_suite("smoke").steps:
        assert step.id in printed
    assert not (tmp_path / "results.jsonl").exists()


def test_missing_data_root_is_one_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert (
        main(
            [
                "run",
                "--suite",
                "smoke",
                "--out",
                str(tmp_path / "out"),
                "--data-root",
                str(missing),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "not found" in err[0]
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_empty_class_folder_is_one_clear_error(tmp_path, capsys, tiny_imagefolder):
    root = tmp_path / "root"
    shutil.copytree(tiny_imagefolder, root / "embedded")
    empty = sorted((root / "embedded" / "train").iterdir())[1]
    shutil.rmtree(empty)
    empty.mkdir()
    assert (
        main(["run", "--suite", "smoke", "--out", str(tmp_path / "out"), "--data-root", str(root), "--quiet"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty class folder" in err[0] and str(empty) in err[0]
    assert not (tmp_path / "out" / "results.jsonl").exists()
