"""Detection metrics against hand-computed values, dataset readers on the embedded layouts, schedules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
from downstream.config import EvalConfig
from downstream.detection.data import Annotation, DetectionSet, ImageRecord, read_detection, read_train_test
from downstream.detection.metrics import Prediction, coco_ap, detection_metrics, voc_ap50
from downstream.detection.schedule import effective_schedule
from downstream.detection.task import aggregate
from pretrain.errors import InputError


def _square(x1, y1, x2, y2):
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def _gt(boxes_per_image, size=100, difficult=()):
    images = []
    for i, boxes in enumerate(boxes_per_image):
        anns = [Annotation(tuple(float(v) for v in b[:4]), b[4], (i, j) in difficult, _square(*b[:4]))
                for j, b in enumerate(boxes)]
        images.append(ImageRecord(i, f"{i}.jpg", size, size, anns))
    return DetectionSet("hand", ["a", "b"], images, has_masks=True)


def _masks(boxes, size=100):
    out = np.zeros((len(boxes), size, size), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        out[k, y1:y2, x1:x2] = True
    return out


def test_perfect_predictions_give_ap_100_for_boxes_masks_and_voc():
    boxes = [[(10, 10, 40, 50, 0), (60, 20, 90, 80, 1)], [(5, 5, 30, 30, 1)]]
    gt = _gt(boxes)
    preds = [Prediction(i, np.array([b[:4] for b in img], float), np.ones(len(img)), np.array([b[4] for b in img]),
                        _masks([b[:4] for b in img])) for i, img in enumerate(boxes)]
    metrics = detection_metrics(gt, preds, masks=True)
    assert metrics == pytest.approx({k: 100.0 for k in metrics})
    assert set(metrics) == {"box_AP", "box_AP50", "box_AP75", "voc_AP50", "mask_AP", "mask_AP50", "mask_AP75"}


def _known_case():
    """One class, two objects; detections by score: hit, miss (nowhere), hit.
    Precision/recall after each: (1, 1/2), (1/2, 1/2), (2/3, 1)."""
    gt = _gt([[(10, 10, 40, 40, 0)], [(50, 50, 90, 90, 0)]])
    preds = [Prediction(0, np.array([[10, 10, 40, 40], [60, 0, 70, 5]], float), np.array([0.9, 0.8]), np.array([0, 0])),
             Prediction(1, np.array([[50, 50, 90, 90]], float), np.array([0.7]), np.array([0]))]
    return gt, preds


def test_hand_made_case_gives_the_hand_computed_aps():
    gt, preds = _known_case()
    # COCO: 101 recall points; r in [0, .50] -> precision 1 (51 points), r in [.51, 1] -> 2/3 (50 points).
    # Exact boxes match at every IoU threshold, so AP = AP50 = AP75.
    coco = (51 * 1.0 + 50 * 2 / 3) / 101 * 100
    assert coco_ap(gt, preds, "bbox") == pytest.approx({"AP": coco, "AP50": coco, "AP75": coco}, abs=1e-6)
    # VOC2007 11-point: recall 0..0.5 (6 points) -> 1, recall 0.6..1 (5 points) -> 2/3
    assert voc_ap50(gt, preds) == pytest.approx((6 + 5 * 2 / 3) / 11 * 100)
    # area under the envelope: 0.5 * 1 + 0.5 * 2/3
    assert voc_ap50(gt, preds, use_07_metric=False) == pytest.approx((0.5 + 0.5 * 2 / 3) * 100)


def test_box_shifted_between_iou_thresholds_counts_for_ap50_not_ap75():
    gt = _gt([[(0, 0, 40, 40, 0)]])
    # IoU of (8, 0, 48, 40) with (0, 0, 40, 40) = 32*40 / (2*1600 - 1280) = 2/3: a hit at .5, a miss at .75
    preds = [Prediction(0, np.array([[8, 0, 48, 40]], float), np.array([0.9]), np.array([0]))]
    ap = coco_ap(gt, preds, "bbox")
    assert ap["AP50"] == pytest.approx(100.0) and ap["AP75"] == pytest.approx(0.0)
    assert ap["AP"] == pytest.approx(100.0 * 4 / 10)  # thresholds .50, .55, .60, .65 of the ten pass


def test_difficult_objects_are_neither_hits_nor_misses():
    gt = _gt([[(10, 10, 40, 40, 0), (60, 60, 90, 90, 0)]], difficult={(0, 1)})
    only_easy = [Prediction(0, np.array([[10, 10, 40, 40]], float), np.array([0.9]), np.array([0]))]
    both = [Prediction(0, np.array([[10, 10, 40, 40], [60, 60, 90, 90]], float), np.array([0.9, 0.95]), np.array([0, 0]))]
    assert voc_ap50(gt, only_easy) == pytest.approx(100.0)
    assert voc_ap50(gt, both) == pytest.approx(100.0)
    assert coco_ap(gt, both)["AP"] == pytest.approx(100.0)


def test_no_detections_give_zero():
    gt, _ = _known_case()
    empty = [Prediction(i, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), np.zeros((0, 100, 100), bool)) for i in (0, 1)]
    assert set(detection_metrics(gt, empty, masks=True).values()) == {0.0}


def test_trials_aggregate_to_mean_and_sample_std():
    ms = aggregate([{"box_AP50": 10.0}, {"box_AP50": 20.0}, {"box_AP50": 30.0}], "voc")
    assert [(m.metric, m.value) for m in ms] == [("box_AP50", 20.0), ("box_AP50_std", 10.0)]
    assert ms[0].extra["per_trial"] == [10.0, 20.0, 30.0]
    assert [(m.metric, m.value) for m in aggregate([{"box_AP": 5.0}], "voc")] == [("box_AP", 5.0)]


# --- datasets ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def det_root(tmp_path_factory):
    cfg = EmbeddedDetectionConfig(classes=3, train_images=6, val_images=3, image_size=64, max_objects=2, min_object=0.3,
                                  max_object=0.45)
    return make_embedded_detection(tmp_path_factory.mktemp("det") / "embedded-det", cfg)


def test_voc_and_coco_layouts_describe_the_same_objects(det_root):
    for split in (0, 1):
        voc, coco = read_train_test("voc", det_root)[split], read_train_test("coco", det_root)[split]
        assert voc.classes == coco.classes == ["cross", "disc", "hexagon"]
        assert len(voc.images) == len(coco.images) == (6 if split == 0 else 3)
        for v, c in zip(voc.images, coco.images):
            assert v.path.read_bytes() == c.path.read_bytes()
            assert [a.category for a in v.annotations] == [a.category for a in c.annotations]
            for a, b in zip(v.annotations, c.annotations):  # VOC rounds to whole pixels
                assert np.abs(np.subtract(a.box, b.box)).max() <= 1.0
                assert b.segmentation and not a.segmentation
    assert coco.has_masks and not voc.has_masks


def test_polygon_masks_fill_their_boxes(det_root):
    from pycocotools import mask as mask_utils

    img = read_detection("coco", det_root, "train").images[0]
    for ann in img.annotations:
        rle = mask_utils.merge(mask_utils.frPyObjects(ann.segmentation, img.height, img.width))
        x, y, w, h = mask_utils.toBbox(rle)
        assert np.allclose((x, y, x + w, y + h), ann.box, atol=1.0)


def test_generation_is_deterministic_and_reused(det_root, tmp_path):
    cfg = EmbeddedDetectionConfig(classes=3, train_images=6, val_images=3, image_size=64, max_objects=2, min_object=0.3,
                                  max_object=0.45)
    again = make_embedded_detection(tmp_path / "again", cfg)
    for rel in ("annotations/instances_train2017.json", "VOCdevkit/VOC2007/Annotations/000001.xml",
                "val2017/000000000009.jpg"):
        assert (again / rel).read_bytes() == (det_root / rel).read_bytes()
    stamp = (det_root / "dataset.json").stat().st_mtime_ns
    make_embedded_detection(det_root, cfg)
    assert (det_root / "dataset.json").stat().st_mtime_ns == stamp


def test_missing_files_name_the_path(det_root, tmp_path):
    with pytest.raises(InputError, match=r"annotations/instances_train2017.json not found"):
        read_train_test("coco", tmp_path)
    with pytest.raises(InputError, match=r"no VOCdevkit/VOC2007"):
        read_train_test("voc", tmp_path)
    with pytest.raises(InputError, match="expected one of voc, coco"):
        read_detection("lvis", det_root, "train")


def test_broken_voc_annotation_is_one_line(det_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(det_root, root)
    (root / "VOCdevkit/VOC2007/Annotations/000001.xml").write_text("<annotation><object><name>disc</name></object>")
    with pytest.raises(InputError, match=r"000001.xml: not a readable VOC annotation"):
        read_detection("voc", root, "train")


# --- schedules ----------------------------------------------------------------------------------------


def test_paper_schedule_is_the_default_and_shortening_scales_it():
    voc = effective_schedule(EvalConfig(det_dataset="voc"))
    assert (voc.max_iter, voc.batch_size, voc.lr, voc.warmup_iters, voc.steps) == (48_000, 32, 0.1, 200, (18_000, 22_200))
    assert (voc.train_min_size, voc.test_min_size) == ((400, 800), 800)
    coco = effective_schedule(EvalConfig(det_dataset="coco"))
    assert (coco.max_iter, coco.lr, coco.train_min_size) == (180_000, 0.11, (600, 800))
    short = effective_schedule(EvalConfig(det_dataset="voc", det_max_iter=4800, det_image_size=160, det_batch_size=8))
    assert (short.max_iter, short.steps, short.warmup_iters) == (4800, (1800, 2220), 20)
    assert short.lr == pytest.approx(0.1 * 8 / 32)
    assert (short.train_min_size, short.test_min_size, short.max_size) == ((160, 160), 160, 267)
    # budgets scale with the image area (160 px: 1/25 of 800 px), with floors
    assert (voc.rois_per_image, voc.proposals_per_image, voc.test_proposals_per_image, voc.detections_per_image) == (
        512, 2000, 1000, 100)
    assert (short.rois_per_image, short.proposals_per_image, short.test_proposals_per_image,
            short.detections_per_image) == (64, 256, 100, 20)
    big = effective_schedule(EvalConfig(det_dataset="coco", det_image_size=400))
    assert (big.rois_per_image, big.proposals_per_image, big.test_proposals_per_image, big.detections_per_image) == (
        128, 500, 250, 25)
    assert short.lr_factor(0) == pytest.approx(0.001) and short.lr_factor(1800) == pytest.approx(0.1)
    assert short.lr_factor(2220) == pytest.approx(0.01)


@pytest.mark.parametrize("field,value,message", [
    ("det_dataset", "lvis", "det_dataset 'lvis'"), ("det_backend", "mmdet", "det_backend 'mmdet'"),
    ("det_norm", "gn", "det_norm 'gn'"), ("det_trials", 0, "det_trials 0"), ("det_max_iter", 0, "det_max_iter 0"),
])
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(InputError, match=message):
        effective_schedule(dataclasses.replace(EvalConfig(), **{field: value}))
