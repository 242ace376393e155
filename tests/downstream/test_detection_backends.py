"""Both backends end to end through the CLI, on data other tools wrote (every COCO annotation form,
PNG images in four PIL modes) and on the embedded scenes: records with the metric names Table 2
reads, training that learns, a diverging loss as one error line, and the timm feature extractor
carrying the student's weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from disco_bench.cli import main
from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
from downstream.backbone import load_backbone
from downstream.config import EvalConfig
from downstream.detection.backbones import load_features, load_features_state
from downstream.detection.data import read_train_test
from downstream.detection.schedule import effective_schedule
from downstream.detection.torchvision_backend import build_detector, precise_bn, train_detector
from infra.errors import InputError
from tests.downstream.detection_helpers import require_detectron2, score_few_rois, write_foreign_coco
from tests.pretrain.helpers import save_student

VOC = {"AP", "AP50", "AP75"}
BOX = {"box_AP", "box_AP50", "box_AP75"}
MASK = {"mask_AP", "mask_AP50", "mask_AP75"}
BACKENDS = ["torchvision", "detectron2"]


@pytest.fixture(scope="module")
def det_data(tmp_path_factory):
    cfg = EmbeddedDetectionConfig(
        classes=2, train_images=4, val_images=2, image_size=48, max_objects=1, min_object=0.4, max_object=0.6
    )
    return str(make_embedded_detection(tmp_path_factory.mktemp("det") / "det", cfg))


@pytest.fixture(scope="module")
def foreign_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign") / "users-coco"
    write_foreign_coco(root, train_images=4, val_images=2, size=32)
    return str(root)


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    root = tmp_path_factory.mktemp("students")
    return {arch: save_student(root / f"{arch}.pt", arch) for arch in ("mobilenetv3_small_050", "resnet18")}


@pytest.fixture
def few_rois(monkeypatch):
    score_few_rois(monkeypatch)


def _argv(ckpt, data, out, dataset, backend, *sets, size=48, max_iter=2):
    settings = {"det_batch_size": "2", "det_lr": "0.005"} | dict(s.split("=", 1) for s in sets)
    return [
        "eval",
        "detection",
        "--ckpt",
        ckpt,
        "--data",
        data,
        "--dataset",
        dataset,
        "--backend",
        backend,
        "--max-iter",
        str(max_iter),
        "--image-size",
        str(size),
        "--out",
        str(out),
        "--quiet",
        "--set",
        *(f"{k}={v}" for k, v in settings.items()),
    ]


def _eval(*args, **kwargs):
    assert main(_argv(*args, **kwargs)) == 0
    return [json.loads(line) for line in (args[2] / "results.jsonl").read_text().splitlines()]


def _check(records, metrics, arch, dataset_folder):
    assert {r["metric"] for r in records} == metrics
    for r in records:
        assert r["task"] == "detection" and r["student"] == arch and r["split"] == "test"
        assert r["dataset"] == dataset_folder and 0.0 <= r["value"] <= 100.0
        schedule = r["protocol"]["eval"]["schedule"]
        assert schedule["max_iter"] == 2 and schedule["batch_size"] == 2 and schedule["precise_bn_iters"] == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco_written_by_other_tools_trains_and_evaluates(
    backend, foreign_coco, students, tmp_path, few_rois
):
    if backend == "detectron2":
        require_detectron2()
    records = _eval(students["resnet18"], foreign_coco, tmp_path, "coco", backend, size=32)
    _check(records, BOX | MASK, "resnet18", "users-coco")
    protocol = records[0]["protocol"]["eval"]
    assert protocol["model"] == "Mask R-CNN" and protocol["det_head"] == "extranorm"
    assert protocol["dropped_annotations"] == {
        "train": {"zero-area box": 1, "empty segmentation": 1},
        "test": {},
    }
    detail = protocol["trial_details"][0]
    assert detail["precise_bn_layers"] > 0 and len(detail["loss_curve"]) == 2
    if backend == "detectron2":
        assert detail["mask_format"] == "bitmask" and detail["roi_head"] == "Res5ROIHeadsExtraNorm"


def test_torchvision_voc_records_the_voc_metrics(det_data, students, tmp_path):
    records = _eval(students["mobilenetv3_small_050"], det_data, tmp_path, "voc", "torchvision")
    _check(records, VOC, "mobilenetv3_small_050", "det")
    protocol = records[0]["protocol"]["eval"]
    assert protocol["evaluator"].startswith("Detectron2 PASCAL VOC") and "VOC2012" in protocol["fallback"]


def test_detectron2_faster_rcnn_c4_resnet18_on_embedded_voc(det_data, students, tmp_path, few_rois):
    require_detectron2()
    records = _eval(students["resnet18"], det_data, tmp_path, "voc", "detectron2")
    _check(records, VOC, "resnet18", "det")
    detail = records[0]["protocol"]["eval"]["trial_details"][0]
    assert detail["arch_path"] == "C4" and detail["norm_effective"] == "BN"
    assert not [
        k
        for k in detail["random_init"]
        if k.startswith("backbone") or k.startswith("roi_heads.res5.") and k != "roi_heads.res5.norm"
    ]


def test_detectron2_mask_rcnn_timm_fpn_on_embedded_coco(det_data, students, tmp_path):
    require_detectron2()
    records = _eval(students["mobilenetv3_small_050"], det_data, tmp_path, "coco", "detectron2")
    _check(records, BOX | MASK, "mobilenetv3_small_050", "det")
    assert records[0]["protocol"]["eval"]["trial_details"][0]["arch_path"] == "timm+FPN"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_diverging_loss_is_one_error_line_with_exit_2(
    backend, det_data, students, tmp_path, capsys, few_rois
):
    if backend == "detectron2":
        require_detectron2()
    argv = _argv(
        students["resnet18"],
        det_data,
        tmp_path / "out",
        "coco",
        backend,
        "det_lr=1e12",
        "det_clip_grad=0",
        max_iter=6,
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: detection loss is not finite at iteration ")
    assert "loss_" in err[0] and "lower det_lr" in err[0] and "det_clip_grad" in err[0]
    assert not (tmp_path / "out").exists()  # no record, no converted weights, nothing left behind


def test_fine_tuning_lowers_the_loss(det_data, students):
    """12 iterations on the embedded scenes: the loss of the last five is well below the first five."""
    cfg = EvalConfig(
        det_dataset="coco", det_max_iter=12, det_image_size=48, det_batch_size=2, det_lr=0.02, device="cpu"
    )
    schedule = effective_schedule(cfg)
    train, _ = read_train_test("coco", det_data)
    body, _ = load_features(students["mobilenetv3_small_050"])
    torch.manual_seed(0)
    model = build_detector(body, len(train.classes), True, schedule)
    losses = train_detector(model, train, True, schedule, seed=0, progress=False)
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_precise_bn_sets_running_statistics_to_the_average_over_training_batches(det_data, students):
    cfg = EvalConfig(det_dataset="coco", det_max_iter=3, det_image_size=48, det_batch_size=2, device="cpu")
    schedule = effective_schedule(cfg)
    train, _ = read_train_test("coco", det_data)
    body, _ = load_features(students["mobilenetv3_small_050"])
    model = build_detector(body, len(train.classes), True, schedule)
    bn = next(m for m in model.backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    momentum, seen = bn.momentum, []
    hook = bn.register_forward_hook(
        lambda m, inputs, out: seen.append(inputs[0].detach().mean(dim=(0, 2, 3)))
    )
    assert precise_bn(model, train, True, schedule, seed=0) > 0
    hook.remove()
    assert len(seen) == schedule.precise_bn_iters == 3
    # a cumulative average over the 3 batches, not an exponential one, and the momentum is put back
    assert torch.allclose(bn.running_mean, torch.stack(seen).mean(dim=0), atol=1e-5)
    assert bn.momentum == momentum and int(bn.num_batches_tracked) == 3


def test_bad_dataset_flag_is_one_line(students, tmp_path, capsys):
    assert (
        main(
            [
                "eval",
                "detection",
                "--ckpt",
                students["resnet18"],
                "--data",
                str(tmp_path),
                "--dataset",
                "coco",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "instances_train2017.json not found" in err


def test_feature_extractor_carries_every_stage_weight(students):
    body, info = load_features(students["mobilenetv3_small_050"])
    assert info["features_dropped"] == [
        "conv_head"
    ]  # the 1x1 conv after the last stage, used only for pooling
    backbone, _ = load_backbone(students["mobilenetv3_small_050"])
    full = backbone.state_dict()
    for k, v in body.state_dict().items():
        assert torch.equal(v, full[k]), k
    with pytest.raises(InputError, match="no place in the feature extractor: blocks.99.weight"):
        load_features_state(body, dict(full, **{"blocks.99.weight": torch.zeros(1)}), "test")
