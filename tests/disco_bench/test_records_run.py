"""Every record says what ran it: processes, per-process batch, accelerator, torch threads and
library versions (``run``; a pre-training's own in ``protocol.pretrain.run``), and a record that
is not a record is one error line."""

from __future__ import annotations

import json
from importlib import metadata

import torch

from disco_bench.cli import main
from disco_bench.results import make_records, read_records
from disco_bench.steps import pretrain_records
from downstream.result import Measurement, TaskResult
from pretrain.train import pretrain

RUN_KEYS = {"processes", "per_process_batch", "accelerator", "threads", "versions"}


def one_record(**kwargs) -> dict:
    result = TaskResult("linear", [Measurement("top1", 50.0, "toy")], {"lr": 3.0})
    (rec,) = make_records(
        result,
        student="resnet18",
        teacher=None,
        method="moco",
        seed=0,
        protocol={"eval": {}},
        config_hash="c",
        checkpoint_sha256=None,
        started_at="t0",
        finished_at="t1",
        **kwargs,
    )
    return rec


def test_a_record_carries_the_thread_count_it_was_computed_with():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = one_record()
        torch.set_num_threads(2)
        two = one_record()
    finally:
        torch.set_num_threads(before)
    assert set(one["run"]) == RUN_KEYS and one["run"]["threads"] == 1 and two["run"]["threads"] == 2
    assert one["run"]["processes"] == 1 and one["run"]["accelerator"].startswith("cpu ")
    assert set(one["run"]["versions"]) == {"python", "torch", "torchvision", "timm"}
    assert one["run"]["versions"]["torch"] == metadata.version("torch") and one["run"]["versions"][
        "timm"
    ] == metadata.version("timm")


def test_a_pretraining_records_its_processes_and_per_process_batch(tiny_pretrain_cfg):
    summary = pretrain(tiny_pretrain_cfg, progress=False)
    run = summary["protocol"]["run"]
    assert run["processes"] == 1 and run["per_process_batch"] == tiny_pretrain_cfg.batch_size == 8
    assert run["threads"] == torch.get_num_threads()
    records = pretrain_records(tiny_pretrain_cfg, summary, config_hash="c", started_at="t0", finished_at="t1")
    assert all(r["run"] == run and r["protocol"]["run"] == run for r in records)
    saved = torch.load(summary["checkpoint"], weights_only=True)
    assert (
        saved["protocol"]["run"] == run
    )  # an eval of this checkpoint records it under protocol.pretrain.run


def test_a_record_whose_value_is_not_a_number_is_one_error_line(tmp_path, capsys):
    good = one_record()
    bad = good | {"id": "bad1", "value": "abc"}
    (tmp_path / "results.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert main(["report", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {tmp_path / 'results.jsonl'}:2 record bad1: field 'value' is \"abc\"; expected a number"
    ]
    assert not (tmp_path / "LEADERBOARD.md").exists()


def test_records_written_before_the_run_field_existed_still_read(tmp_path):
    old = one_record()
    del old["run"]
    (tmp_path / "results.jsonl").write_text(json.dumps(old) + "\n")
    assert read_records(tmp_path / "results.jsonl") == [old]


def test_a_results_degenerate_sentences_reach_every_records_extra():
    from disco_bench.results import make_records
    from downstream.result import Measurement, TaskResult

    result = TaskResult(
        "linear",
        [Measurement("top1", 50.0, "d"), Measurement("top5", 90.0, "d", extra={"degenerate": ["own"]})],
        {},
        degenerate=["shared"],
    )
    recs = make_records(
        result,
        student="s",
        teacher=None,
        method="m",
        seed=0,
        protocol={},
        config_hash="h",
        checkpoint_sha256=None,
        started_at="t",
        finished_at="t",
        run={},
    )
    assert [r["extra"]["degenerate"] for r in recs] == [["shared"], ["own", "shared"]]
    plain = make_records(
        TaskResult("linear", [Measurement("top1", 50.0, "d")], {}),
        student="s",
        teacher=None,
        method="m",
        seed=0,
        protocol={},
        config_hash="h",
        checkpoint_sha256=None,
        started_at="t",
        finished_at="t",
        run={},
    )
    assert plain[0]["extra"] is None


def test_a_pretraining_ended_by_max_steps_is_labelled_by_its_steps(tiny_pretrain_cfg):
    import dataclasses

    from disco_bench.steps import cut_short_flags, pretrain_records
    from pretrain.teachers import load_encoder
    from pretrain.train import pretrain

    # 24 images at batch 8: 3 steps per epoch, 2 epochs = 6 planned; max_steps 2 ends it early
    cfg = dataclasses.replace(tiny_pretrain_cfg, epochs=2, max_steps=2)
    summary = pretrain(cfg, progress=False)
    assert (summary["steps"], summary["planned_steps"]) == (2, 6)
    (rec, *_) = pretrain_records(cfg, summary, config_hash="h", started_at="t", finished_at="t")
    assert rec["extra"]["degenerate"] == [
        "pre-training ended by max_steps after 2 of 6 steps (33% of its epochs)"
    ]
    info = load_encoder(summary["checkpoint"])[1]
    assert (info["steps"], info["planned_steps"]) == (2, 6)  # what an eval of this checkpoint flags
    assert cut_short_flags(6, 6) == [] and cut_short_flags(2, None) == []
