"""Every kind of paper cell can be filled: the steps the ``full`` suite names for a cell run at
miniature size (real step code, real records) and the record matches the cell on every field
except the scale ones (epochs, iterations, image size, batch and process layout, dataset size).

One cell per distinct kind of step chain (pre-training method x teacher kind x eval task); the
rest of each table differs only in the student or teacher architecture, which the suite lookup
test (tests/disco_bench/test_suite.py) checks for every cell.
"""

from __future__ import annotations

import pytest
import torch

from disco_bench.config import parse_overrides
from disco_bench.embedded import EmbeddedConfig, make_embedded
from disco_bench.leaderboard.matching import differences, for_student, identity_matches
from disco_bench.leaderboard.paper import paper_tables
from disco_bench.results import read_records
from disco_bench.runner import run_suite
from disco_bench.suite import load_suite
from tests.pretrain.layouts import dino_checkpoint, moco_checkpoint, swav_state

# Fields that only set the size of a run (what a miniature run must change) -- never anything else.
SCALE = {
    "pretrain.epochs",
    "pretrain.max_steps",
    "pretrain.image_size",
    "pretrain.batch_size",
    "pretrain.run.processes",
    "pretrain.run.per_process_batch",
    "eval.epochs",
    "eval.milestones_epochs",
    "eval.image_size",
    "eval.batch_size",
    "eval.train_images",
}
MINIATURE = parse_overrides(
    [
        "pretrain.epochs=1",
        "pretrain.batch_size=8",
        "pretrain.image_size=16",
        "eval.epochs=1",
        "eval.batch_size=8",
        "eval.image_size=16",
        "pretrain.workers=0",
        "eval.workers=0",
    ]
)  # workers: runtime, not protocol
# (table, column, student): one cell per kind of step chain
CELLS = [
    ("table1", "moco", "resnet18"),
    ("table1", "seed-r50", "resnet18"),
    ("table1", "disco-r50", "resnet18"),
    ("table1_top5", "moco", "resnet18"),
    ("teachers", "moco", "resnet50"),
    ("table3", "disco-star", "resnet18"),
    ("table4", "h512", "resnet18"),
    ("ablation_distill_only", "distill-only", "resnet18"),
    ("table5", "at", "resnet18"),
    ("table5", "rkd", "resnet18"),
    ("table5", "at-disco", "resnet18"),
    ("table5", "rkd-disco", "resnet18"),
    ("table5", "kd", "resnet18"),
    ("table5", "kd-disco", "resnet18"),
    ("other_teachers", "swav", "resnet18"),
]


def column(table_key: str, col_key: str):
    table = next(t for t in paper_tables() if t.key == table_key)
    return table, next(c for c in table.columns if c.key == col_key)


def step_for(table, col, student) -> str:
    """The step paper_numbers.yaml names for the cell (test_suite checks it exists in full)."""
    return col.step_id(student)


def miniature_root(tmp_path_factory, name: str):
    """A fresh data root holding a miniature ImageNet (2 classes, 4 train + 2 val images each, 16 px)."""
    root = tmp_path_factory.mktemp(name)
    make_embedded(
        root / "imagenet",
        EmbeddedConfig(classes=2, train_per_class=4, val_per_class=2, image_size=16),
        progress=False,
    )
    return root


def run_cells(tmp_path_factory, root, cells, overrides, out_name: str) -> list[dict]:
    """Run every step the ``cells`` need, once, from the full suite with ``overrides``; their records."""
    steps = sorted({step_for(*column(t, c), s) for t, c, s in cells})
    out = tmp_path_factory.mktemp(out_name)
    lines: list[str] = []
    code = run_suite(load_suite("full"), out, root, overrides, progress=False, echo=lines.append, only=steps)
    assert code == 0, "\n".join(lines)
    return read_records(out / "results.jsonl")


def fills_the_cell(records, table_key: str, col_key: str, student: str, scale: set[str]) -> dict:
    """The record of the cell's step and metric, checked to match the cell on every field beyond ``scale``."""
    table, col = column(table_key, col_key)
    step = step_for(table, col, student)
    record = next(r for r in records if r["step"] == step and r["metric"] == col.metric)
    assert identity_matches(
        record, table, col, student
    )  # metric names and dataset names agree with the block
    beyond_scale = {
        path: d
        for path, d in differences(record, for_student(col.fields, table.task, student)).items()
        if path not in scale
    }
    assert beyond_scale == {}, beyond_scale
    return record


@pytest.fixture(scope="module")
def miniature_records(tmp_path_factory):
    """Run every step the cells need, once, from the full suite, at miniature size."""
    root = miniature_root(tmp_path_factory, "data_root")
    (root / "teachers").mkdir()
    ckpt, _, _ = moco_checkpoint(
        "resnet50", hidden=2048, out_dim=128
    )  # main_moco.py's layout, random weights
    torch.save(ckpt, root / "teachers" / "moco_v2_200ep_pretrain.pth.tar")
    state, _, _ = swav_state("resnet50", hidden=2048, out_dim=128)  # SwAV's released layout
    torch.save(state, root / "teachers" / "swav_800ep_pretrain.pth.tar")
    return run_cells(tmp_path_factory, root, CELLS, MINIATURE, "out")


@pytest.mark.slow
@pytest.mark.parametrize(("table_key", "col_key", "student"), CELLS)
def test_the_full_suites_step_fills_the_cell_up_to_scale(miniature_records, table_key, col_key, student):
    record = fills_the_cell(miniature_records, table_key, col_key, student, SCALE)
    # and the scale fields are what the miniature run changed, not silently dropped
    assert record["protocol"]["pretrain"].get("epochs", 1) == 1 and record["protocol"]["eval"]["epochs"] == 1


# Detection at miniature size: one trial of one iteration on one 32 px image (Detectron2, as the paper; its
# C4 head runs res5 on every sampled RoI, so the iterations, batch and size set this fixture's time)
DETECTION_SCALE = SCALE | {
    "eval.det_trials",
    "eval.det_max_iter",
    "eval.det_image_size",
    "eval.det_batch_size",
    "eval.det_clip_grad",
    "eval.schedule.max_iter",
    "eval.schedule.batch_size",
    "eval.schedule.lr",
    "eval.schedule.warmup_iters",
    "eval.schedule.steps",
    "eval.test_images",
    "eval.classes",
    "eval.fallback",
}  # the miniature VOC has no VOC2012: trains on 2007
# a detection step reads no probe setting (a --set that no step of the run reads is refused)
DETECTION_MINIATURE = {k: v for k, v in MINIATURE.items() if k.startswith("pretrain.")} | parse_overrides(
    [
        "eval.workers=0",
        "eval.det_trials=1",
        "eval.det_max_iter=1",
        "eval.det_image_size=32",
        "eval.det_batch_size=1",
    ]
)
DETECTION_CELLS = [
    ("voc07_detection", "moco-ap50", "resnet34"),
    ("coco_detection", "moco-mask-ap", "resnet34"),
]


@pytest.fixture(scope="module")
def miniature_detection_records(tmp_path_factory):
    pytest.importorskip("detectron2")
    from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection

    root = miniature_root(tmp_path_factory, "det_root")
    scenes = make_embedded_detection(
        tmp_path_factory.mktemp("scenes") / "det",
        EmbeddedDetectionConfig(train_images=4, val_images=2, image_size=64),
    )
    (scenes / "VOCdevkit").rename(root / "VOCdevkit")
    scenes.rename(root / "coco")  # annotations/, train2017/, val2017/: COCO's layout
    return run_cells(tmp_path_factory, root, DETECTION_CELLS, DETECTION_MINIATURE, "det_out")


@pytest.mark.slow
@pytest.mark.parametrize(("table_key", "col_key", "student"), DETECTION_CELLS)
def test_the_full_suites_detection_step_fills_the_cell_up_to_scale(
    miniature_detection_records, table_key, col_key, student
):
    fills_the_cell(miniature_detection_records, table_key, col_key, student, DETECTION_SCALE)


# The SwAV and DINO testbeds: multi-crop students, a SwAV-layout and a DINO-layout teacher file
TESTBED_MINIATURE = MINIATURE | parse_overrides(["pretrain.multicrop_small_size=16"])  # one ViT patch
TESTBED_CELLS = [
    ("swav_testbed", "swav", "efficientnet_b0"),
    ("swav_testbed", "swav-disco", "efficientnet_b0"),
    ("dino_testbed", "dino", "vit_tiny_patch16_224"),
    ("dino_testbed", "dino-disco", "vit_tiny_patch16_224"),
]


@pytest.fixture(scope="module")
def miniature_testbed_records(tmp_path_factory):
    root = miniature_root(tmp_path_factory, "testbed_root")
    (root / "teachers").mkdir()
    state, _, _ = swav_state("resnet50", hidden=2048, out_dim=128)
    torch.save(state, root / "teachers" / "swav_800ep_pretrain.pth.tar")
    ckpt, _, _ = dino_checkpoint(
        "vit_small_patch16_224", hidden=2048, bottleneck=256, use_bn=False, dino_arch="vit_small"
    )
    torch.save(ckpt, root / "teachers" / "dino_deitsmall16_pretrain_full_checkpoint.pth")
    return run_cells(tmp_path_factory, root, TESTBED_CELLS, TESTBED_MINIATURE, "testbed_out")


@pytest.mark.slow
@pytest.mark.parametrize(("table_key", "col_key", "student"), TESTBED_CELLS)
def test_the_full_suites_testbed_step_fills_the_cell_up_to_scale(
    miniature_testbed_records, table_key, col_key, student
):
    fills_the_cell(miniature_testbed_records, table_key, col_key, student, SCALE)
