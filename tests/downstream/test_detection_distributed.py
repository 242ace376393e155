"""Detection fine-tuning across processes: ``run --launcher torchrun --nproc 2`` (gloo, CPU, one thread
per process) runs a suite's detection steps on 2 processes with both backends (torchvision with DDP
on embedded VOC scenes, Detectron2's C4 Faster/Mask R-CNN with its all-reduce SyncBN on embedded
COCO scenes); the global batch of 2 trains as 1 image per process; records are written once (by
rank 0), say ``processes: 2``, and have the form of a one-process run's."""

from __future__ import annotations

import faulthandler
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from disco_bench.cli import main
from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
from disco_bench.launchers import runs_distributed
from downstream.detection.distributed import per_process_batch, rank_seed
from infra.distributed import DistInfo
from infra.errors import InputError
from tests.downstream.detection_helpers import (
    FEW_ROIS,
    few_rois_pythonpath,
    require_detectron2,
    score_few_rois,
)
from tests.pretrain.helpers import save_student

VOC = {"AP", "AP50", "AP75"}
COCO = {"box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75"}

SUITE = """\
name: tiny-detection-ddp
description: a random-init ResNet-18 fine-tuned as a detector by both backends, at toy size
datasets:
  det: {kind: coco, path: det}
  student: {kind: file, path: student.pt}
defaults:
  eval: {device: cpu, det_max_iter: 2, det_image_size: 64, det_batch_size: 2, det_lr: 0.005}
steps:
  - {id: student, kind: checkpoint, label: student, with: {data: student}}
  - {id: det-tv, kind: eval, task: detection, label: torchvision,
     with: {ckpt: "@student", data: det, det_dataset: voc, det_backend: torchvision}}
  - {id: det-d2, kind: eval, task: detection, label: detectron2,
     with: {ckpt: "@student", data: det, det_dataset: coco, det_backend: detectron2}}
"""


def shape(records: list[dict]) -> dict:
    """(step, metric) -> the record's keys and its eval protocol's keys: what must not depend on the launcher."""
    return {(r["step"], r["metric"]): (sorted(r), sorted(r["protocol"].get("eval", {}))) for r in records}


def test_the_global_batch_splits_evenly_or_is_refused():
    two = DistInfo(rank=1, world_size=2)
    assert per_process_batch(32, DistInfo()) == 32
    assert per_process_batch(32, two) == 16
    with pytest.raises(InputError, match=r"^det_batch_size=3: .* split evenly over 2 processes"):
        per_process_batch(3, two)
    # rank 0 keeps the one-process data seed; the other ranks draw other images
    assert rank_seed(5, DistInfo(rank=0, world_size=2)) == 5 and rank_seed(5, two) != 5


def test_detection_steps_run_on_every_torchrun_process_whatever_the_probe_protocol():
    step = SimpleNamespace(kind="eval", task="detection")
    assert runs_distributed(step, SimpleNamespace(protocol="fast"))
    assert not runs_distributed(SimpleNamespace(kind="eval", task="knn"), SimpleNamespace(protocol="paper"))


@pytest.mark.slow
def test_both_backends_fine_tune_on_two_processes_and_record_once(tmp_path, monkeypatch):
    require_detectron2()
    data = tmp_path / "data"
    make_embedded_detection(
        data / "det",
        EmbeddedDetectionConfig(
            classes=2,
            train_images=4,
            val_images=2,
            image_size=64,
            max_objects=1,
            min_object=0.4,
            max_object=0.6,
        ),
    )
    save_student(data / "student.pt", "resnet18")
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    # the one-process run, in this process (the form of its records is what the 2-process run must match);
    # both runs score few RoIs (the torchrun job through its processes' start-up)
    score_few_rois(monkeypatch)
    local = [
        "run",
        "--suite",
        str(suite),
        "--data-root",
        str(data),
        "--out",
        str(tmp_path / "local"),
        "--quiet",
    ]
    assert main(local) == 0
    # the torchrun run, launched from this process: its torchrun jobs and their ranks are processes
    # of their own (tests/disco_bench/test_torchrun_suite.py runs the whole command as one too)
    monkeypatch.setenv("PYTHONPATH", few_rois_pythonpath())
    ddp = [*local[:-2], str(tmp_path / "ddp"), "--quiet", "--launcher", "torchrun", "--nproc", "2"]
    # a rendezvous or collective that hangs ends this test process (with every thread's stack), not CI's clock
    faulthandler.dump_traceback_later(600, exit=True)
    try:
        code = main(ddp)
    finally:
        faulthandler.cancel_dump_traceback_later()
    logs = sorted((tmp_path / "ddp" / "logs").glob("*.torchrun.log"))
    assert code == 0, "\n".join(f"{p.name}:\n{p.read_text()[-3000:]}" for p in logs)
    runs = {
        name: [json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]
        for name in ("local", "ddp")
    }
    # the same records, field for field and protocol key for protocol key, as one process writes
    assert shape(runs["ddp"]) == shape(runs["local"])
    assert {
        (
            r["run"]["processes"],
            r["run"]["per_process_batch"],
            r["protocol"]["eval"]["schedule"]["rois_per_image"],
        )
        for r in runs["local"]
        if r["task"] == "detection"
    } == {(1, 2, FEW_ROIS)}
    records = runs["ddp"]
    by_step = {s: [r for r in records if r["step"] == s] for s in ("det-tv", "det-d2")}
    # each metric once: only rank 0 handed records back
    assert sorted(r["metric"] for r in by_step["det-tv"]) == sorted(VOC)
    assert sorted(r["metric"] for r in by_step["det-d2"]) == sorted(COCO)
    for step, recs in by_step.items():
        for r in recs:
            assert r["run"]["processes"] == 2, step
            assert r["run"]["per_process_batch"] == 1, step  # the global batch 2 split over 2 processes
            assert r["protocol"]["eval"]["schedule"]["batch_size"] == 2, step
            assert r["protocol"]["eval"]["schedule"]["rois_per_image"] == FEW_ROIS, step
            assert 0.0 <= r["value"] <= 100.0, step
    details = {s: recs[0]["protocol"]["eval"]["trial_details"][0] for s, recs in by_step.items()}
    assert (
        details["det-tv"]["norm_effective"] == "BN (per process, 2 processes; torch has SyncBN on CUDA only)"
    )
    assert details["det-d2"]["norm_effective"] == "naiveSyncBN"  # Detectron2's all-reduce SyncBN, over gloo
    assert all(len(d["loss_curve"]) == 2 for d in details.values())


def _shard_and_gather(rank: int, world: int, init_file: str, results) -> None:
    import numpy as np
    import torch.distributed as dist

    from downstream.detection.data import DetectionSet, ImageRecord
    from downstream.detection.distributed import gather_on_main, share_from_main, test_shard
    from downstream.detection.metrics import Prediction, encode_masks

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        procs = DistInfo(rank=rank, world_size=world)
        test = DetectionSet(
            "t", ["a"], [ImageRecord(i, Path(f"{i}.jpg"), 8, 6) for i in (7, 3, 9, 1, 4)], True
        )
        shard = test_shard(test, procs)
        mask = np.zeros((1, 6, 8), bool)
        mine = [
            Prediction(r.image_id, np.zeros((1, 4)), np.ones(1), np.zeros(1, int), encode_masks(mask))
            for r in shard.images
        ]
        gathered = gather_on_main(mine, test, procs)
        metric = share_from_main({"from": rank} if rank == 0 else None)
        results[rank] = (
            [r.image_id for r in shard.images],
            None if gathered is None else [p.image_id for p in gathered],
            metric,
        )
    finally:
        dist.destroy_process_group()


def test_each_rank_predicts_its_share_and_rank_0_alone_gathers_them_in_test_order(tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(
            _shard_and_gather,
            args=(2, str(tmp_path / "init"), results),
            nprocs=2,
            join=True,
            start_method="fork",
        )
        (shard0, all0, metric0), (shard1, all1, metric1) = results[0], results[1]
    assert shard0 == [7, 9, 4] and shard1 == [3, 1]  # every image once, split over the ranks
    assert all0 == [7, 3, 9, 1, 4] and all1 is None  # rank 0 gathers, in the test set's order
    assert metric0 == metric1 == {"from": 0}  # the metrics rank 0 computed, on every rank
