"""One short fine-tuning + evaluation per backend on the embedded detection dataset, through the CLI,
writing records; and the timm feature extractor carrying the student's weights."""

from __future__ import annotations

import json

import pytest
import torch

from disco_bench.cli import main
from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
from downstream.backbone import load_backbone
from downstream.detection.backbones import load_features, load_features_state
from pretrain.errors import InputError
from tests.downstream.detection_helpers import require_detectron2, save_student

BOX = {"box_AP", "box_AP50", "box_AP75", "voc_AP50"}
MASK = {"mask_AP", "mask_AP50", "mask_AP75"}


@pytest.fixture(scope="module")
def det_data(tmp_path_factory):
    cfg = EmbeddedDetectionConfig(classes=2, train_images=4, val_images=2, image_size=48, max_objects=1, min_object=0.4,
                                  max_object=0.6)
    return str(make_embedded_detection(tmp_path_factory.mktemp("det") / "det", cfg))


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    root = tmp_path_factory.mktemp("students")
    return {arch: save_student(root / f"{arch}.pt", arch) for arch in ("mobilenetv3_small_050", "resnet18")}


def _eval(ckpt, data, out, dataset, backend, *extra):
    argv = ["eval", "detection", "--ckpt", ckpt, "--data", data, "--dataset", dataset, "--backend", backend,
            "--max-iter", "2", "--image-size", "48", "--out", str(out), "--quiet",
            "--set", "det_batch_size=2", "det_lr=0.005", "det_clip_grad=1.0", *extra]
    assert main(argv) == 0
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _check(records, metrics, arch, dataset):
    assert {r["metric"] for r in records} == metrics
    for r in records:
        assert r["task"] == "detection" and r["student"] == arch and r["split"] == "test"
        assert r["dataset"] == f"det/{dataset}" and 0.0 <= r["value"] <= 100.0
        schedule = r["protocol"]["eval"]["schedule"]
        assert schedule["max_iter"] == 2 and schedule["test_min_size"] == 48 and schedule["batch_size"] == 2


def test_torchvision_mask_rcnn_on_embedded_coco(det_data, students, tmp_path):
    records = _eval(students["mobilenetv3_small_050"], det_data, tmp_path, "coco", "torchvision")
    _check(records, BOX | MASK, "mobilenetv3_small_050", "coco")
    assert records[0]["protocol"]["eval"]["model"] == "Mask R-CNN"


def test_detectron2_faster_rcnn_c4_resnet18_on_embedded_voc(det_data, students, tmp_path):
    require_detectron2()
    records = _eval(students["resnet18"], det_data, tmp_path, "voc", "detectron2")
    _check(records, BOX, "resnet18", "voc")
    detail = records[0]["protocol"]["eval"]["trial_details"][0]
    assert detail["arch_path"] == "C4" and detail["norm_effective"] == "BN"
    assert not [k for k in detail["random_init"] if k.startswith(("backbone", "roi_heads.res5"))]


def test_detectron2_mask_rcnn_timm_fpn_on_embedded_coco(det_data, students, tmp_path):
    require_detectron2()
    records = _eval(students["mobilenetv3_small_050"], det_data, tmp_path, "coco", "detectron2")
    _check(records, BOX | MASK, "mobilenetv3_small_050", "coco")
    assert records[0]["protocol"]["eval"]["trial_details"][0]["arch_path"] == "timm+FPN"


def test_bad_dataset_flag_is_one_line(students, tmp_path, capsys):
    assert main(["eval", "detection", "--ckpt", students["resnet18"], "--data", str(tmp_path), "--dataset", "coco",
                 "--quiet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "instances_train2017.json not found" in err


def test_feature_extractor_carries_every_stage_weight(students):
    body, info = load_features(students["mobilenetv3_small_050"])
    assert info["features_dropped"] == ["conv_head"]  # the 1x1 conv after the last stage, used only for pooling
    backbone, _ = load_backbone(students["mobilenetv3_small_050"])
    full = backbone.state_dict()
    for k, v in body.state_dict().items():
        assert torch.equal(v, full[k]), k
    with pytest.raises(InputError, match="no place in the feature extractor: blocks.99.weight"):
        load_features_state(body, dict(full, **{"blocks.99.weight": torch.zeros(1)}), "test")
