"""Detection metrics against hand-computed values, dataset readers on the embedded layouts, schedules."""

from __future__ import annotations

import numpy as np
import pytest

from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
from downstream.config import EvalConfig
from downstream.detection.data import Annotation, DetectionSet, ImageRecord, read_detection, read_train_test
from downstream.detection.metrics import (
    Prediction,
    coco_ap,
    detection_metrics,
    encode_masks,
    metric_names,
    voc_map,
    voc_metrics,
)
from downstream.detection.schedule import effective_schedule
from downstream.detection.task import aggregate
from infra.errors import InputError


def _square(x1, y1, x2, y2):
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def _gt(boxes_per_image, size=100, difficult=()):
    images = []
    for i, boxes in enumerate(boxes_per_image):
        anns = [
            Annotation(tuple(float(v) for v in b[:4]), b[4], (i, j) in difficult, _square(*b[:4]))
            for j, b in enumerate(boxes)
        ]
        images.append(ImageRecord(i, f"{i}.jpg", size, size, anns))
    return DetectionSet("hand", ["a", "b"], images, has_masks=True)


def _masks(boxes, size=100):
    out = np.zeros((len(boxes), size, size), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        out[k, y1:y2, x1:x2] = True
    return encode_masks(out)  # as the backends keep them


def test_perfect_predictions_give_ap_100_for_boxes_masks_and_voc():
    boxes = [[(10, 10, 40, 50, 0), (60, 20, 90, 80, 1)], [(5, 5, 30, 30, 1)]]
    gt = _gt(boxes)
    preds = [
        Prediction(
            i,
            np.array([b[:4] for b in img], float),
            np.ones(len(img)),
            np.array([b[4] for b in img]),
            _masks([b[:4] for b in img]),
        )
        for i, img in enumerate(boxes)
    ]
    metrics = detection_metrics(gt, preds, masks=True, dataset="coco")
    assert metrics == pytest.approx({k: 100.0 for k in metrics})
    assert (
        tuple(metrics)
        == metric_names("coco", True)
        == ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75")
    )
    voc = detection_metrics(gt, preds, masks=False, dataset="voc")
    assert voc == pytest.approx({"AP": 100.0, "AP50": 100.0, "AP75": 100.0}) and tuple(voc) == metric_names(
        "voc", False
    )


def _known_case():
    """One class, two objects; detections by score: hit, miss (nowhere), hit.
    Precision/recall after each: (1, 1/2), (1/2, 1/2), (2/3, 1)."""
    gt = _gt([[(10, 10, 40, 40, 0)], [(50, 50, 90, 90, 0)]])
    preds = [
        Prediction(
            0, np.array([[10, 10, 40, 40], [60, 0, 70, 5]], float), np.array([0.9, 0.8]), np.array([0, 0])
        ),
        Prediction(1, np.array([[50, 50, 90, 90]], float), np.array([0.7]), np.array([0])),
    ]
    return gt, preds


def test_hand_made_case_gives_the_hand_computed_aps():
    gt, preds = _known_case()
    # COCO: 101 recall points; r in [0, .50] -> precision 1 (51 points), r in [.51, 1] -> 2/3 (50 points).
    # Exact boxes match at every IoU threshold, so AP = AP50 = AP75.
    coco = (51 * 1.0 + 50 * 2 / 3) / 101 * 100
    assert coco_ap(gt, preds, "bbox") == pytest.approx({"AP": coco, "AP50": coco, "AP75": coco}, abs=1e-6)
    # VOC2007 11-point: recall 0..0.5 (6 points) -> 1, recall 0.6..1 (5 points) -> 2/3
    assert voc_map(gt, preds) == pytest.approx((6 + 5 * 2 / 3) / 11 * 100)
    # area under the envelope: 0.5 * 1 + 0.5 * 2/3
    assert voc_map(gt, preds, use_07_metric=False) == pytest.approx((0.5 + 0.5 * 2 / 3) * 100)
    # exact boxes: the same at every IoU threshold, so AP (mean over .50:.95) = AP50 = AP75
    ap = (6 + 5 * 2 / 3) / 11 * 100
    assert voc_metrics(gt, preds) == pytest.approx({"AP": ap, "AP50": ap, "AP75": ap})


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
    both = [
        Prediction(
            0, np.array([[10, 10, 40, 40], [60, 60, 90, 90]], float), np.array([0.9, 0.95]), np.array([0, 0])
        )
    ]
    assert voc_map(gt, only_easy) == pytest.approx(100.0)
    assert voc_map(gt, both) == pytest.approx(100.0)
    missed_easy = [Prediction(0, np.array([[60, 60, 90, 90]], float), np.array([0.9]), np.array([0]))]
    assert voc_map(gt, missed_easy) == pytest.approx(0.0)  # the difficult hit counts for nothing
    assert coco_ap(gt, both)["AP"] == pytest.approx(100.0)


def test_voc_ap_averages_iou_050_to_095_like_detectron2():
    gt = _gt([[(0, 0, 40, 40, 0)], [(0, 0, 40, 40, 1)]])
    # class a: IoU 2/3 (a hit at .50 .. .65, 4 of 10 thresholds); class b: IoU 0.8 (hit at .50 .. .75, 6 of 10)
    preds = [
        Prediction(0, np.array([[8, 0, 48, 40]], float), np.array([0.9]), np.array([0])),
        Prediction(1, np.array([[0, 0, 40, 32]], float), np.array([0.9]), np.array([1])),
    ]
    ap = voc_metrics(gt, preds)
    assert ap == pytest.approx({"AP": (40.0 + 60.0) / 2, "AP50": 100.0, "AP75": 50.0})


def test_voc_iou_exactly_at_the_threshold_is_a_miss_unlike_coco():
    gt = _gt([[(0, 0, 40, 40, 0)]])
    half = [
        Prediction(0, np.array([[0, 0, 40, 20]], float), np.array([0.9]), np.array([0]))
    ]  # IoU exactly 0.5
    assert voc_map(gt, half, 0.5) == 0.0  # the devkit needs IoU > 0.5
    assert coco_ap(gt, half)["AP50"] == pytest.approx(100.0)  # pycocotools takes IoU >= 0.5


def test_voc_11_point_samples_recall_as_the_devkit_does():
    # ten objects, three found: recall reaches 3/10, which is below the devkit's sample point
    # np.arange(0, 1.1, 0.1)[3] = 0.30000000000000004, so only recall 0, 0.1, 0.2 score: AP = 3/11
    gt = _gt([[(10 * i, 0, 10 * i + 8, 8, 0)] for i in range(10)])
    preds = [
        Prediction(i, np.array([[10 * i, 0, 10 * i + 8, 8]], float), np.array([0.9 - i / 10]), np.array([0]))
        for i in range(3)
    ]
    assert voc_map(gt, preds) == pytest.approx(3 / 11 * 100)


def test_a_detection_on_a_crowd_region_is_neither_hit_nor_miss_as_in_pycocotools():
    from pycocotools import mask as mask_utils

    crowd = np.zeros((100, 100), np.uint8)
    crowd[50:90, 50:90] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    images = [
        ImageRecord(
            0,
            "0.png",
            100,
            100,
            [
                Annotation((10.0, 10.0, 40.0, 40.0), 0, segmentation=_square(10, 10, 40, 40)),
                Annotation(
                    (50.0, 50.0, 90.0, 90.0),
                    0,
                    segmentation={"size": [100, 100], "counts": rle["counts"].decode()},
                    crowd=True,
                ),
            ],
        )
    ]
    gt = DetectionSet("crowd", ["a", "b"], images, has_masks=True)
    hit = np.array([[10, 10, 40, 40]], float)
    on_crowd = np.array([[55, 55, 85, 85]], float)  # inside the crowd region: ignored, not a false positive
    preds = [
        Prediction(
            0,
            np.concatenate([on_crowd, hit]),
            np.array([0.95, 0.9]),
            np.array([0, 0]),
            _masks([(55, 55, 85, 85), (10, 10, 40, 40)]),
        )
    ]
    assert detection_metrics(gt, preds, masks=True) == pytest.approx(
        {k: 100.0 for k in metric_names("coco", True)}
    )
    elsewhere = [
        Prediction(
            0,
            np.concatenate([np.array([[0, 60, 30, 90]], float), hit]),
            np.array([0.95, 0.9]),
            np.array([0, 0]),
            _masks([(0, 60, 30, 90), (10, 10, 40, 40)]),
        )
    ]
    # the same detection away from the crowd is a false positive ranked first: precision 1/2 at recall 1
    assert coco_ap(gt, elsewhere)["AP50"] == pytest.approx(50.0)


def test_no_detections_give_zero():
    gt, _ = _known_case()
    empty = [
        Prediction(
            i, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), encode_masks(np.zeros((0, 100, 100), bool))
        )
        for i in (0, 1)
    ]
    assert set(detection_metrics(gt, empty, masks=True).values()) == {0.0}
    assert set(detection_metrics(gt, empty, masks=False, dataset="voc").values()) == {0.0}


def test_trials_aggregate_to_mean_and_sample_std():
    ms = aggregate([{"box_AP50": 10.0}, {"box_AP50": 20.0}, {"box_AP50": 30.0}], "voc")
    assert [(m.metric, m.value) for m in ms] == [("box_AP50", 20.0), ("box_AP50_std", 10.0)]
    assert ms[0].extra["per_trial"] == [10.0, 20.0, 30.0]
    assert [(m.metric, m.value) for m in aggregate([{"box_AP": 5.0}], "voc")] == [("box_AP", 5.0)]


# --- datasets ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def det_root(tmp_path_factory):
    cfg = EmbeddedDetectionConfig(
        classes=3, train_images=6, val_images=3, image_size=64, max_objects=2, min_object=0.3, max_object=0.45
    )
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
    cfg = EmbeddedDetectionConfig(
        classes=3, train_images=6, val_images=3, image_size=64, max_objects=2, min_object=0.3, max_object=0.45
    )
    again = make_embedded_detection(tmp_path / "again", cfg)
    for rel in (
        "annotations/instances_train2017.json",
        "VOCdevkit/VOC2007/Annotations/000001.xml",
        "val2017/000000000009.jpg",
    ):
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
    (root / "VOCdevkit/VOC2007/Annotations/000001.xml").write_text(
        "<annotation><object><name>disc</name></object>"
    )
    with pytest.raises(InputError, match=r"000001.xml: not a readable VOC annotation"):
        read_detection("voc", root, "train")


# --- schedules ----------------------------------------------------------------------------------------


def test_paper_schedule_is_the_default_and_shortening_scales_it():
    voc = effective_schedule(EvalConfig(det_dataset="voc"))
    assert (voc.max_iter, voc.batch_size, voc.lr, voc.warmup_iters, voc.steps) == (
        48_000,
        32,
        0.1,
        200,
        (18_000, 22_200),
    )
    assert (voc.train_min_size, voc.test_min_size) == ((400, 800), 800)
    coco = effective_schedule(EvalConfig(det_dataset="coco"))
    assert (coco.max_iter, coco.lr, coco.train_min_size) == (180_000, 0.11, (600, 800))
    short = effective_schedule(
        EvalConfig(det_dataset="voc", det_max_iter=4800, det_image_size=160, det_batch_size=8)
    )
    # warm-up: the paper's 200 scaled to 20, but at least a fifth of the run, capped at the paper's 200
    assert (short.max_iter, short.steps, short.warmup_iters) == (4800, (1800, 2220), 200)
    assert short.lr == pytest.approx(0.1 * 8 / 32)
    assert (short.train_min_size, short.test_min_size, short.max_size) == ((160, 160), 160, 267)
    # budgets scale with the image area (160 px: 1/25 of 800 px), with floors
    assert (
        voc.rois_per_image,
        voc.proposals_per_image,
        voc.test_proposals_per_image,
        voc.detections_per_image,
    ) == (512, 2000, 1000, 100)
    assert (
        short.rois_per_image,
        short.proposals_per_image,
        short.test_proposals_per_image,
        short.detections_per_image,
    ) == (64, 256, 100, 20)
    big = effective_schedule(EvalConfig(det_dataset="coco", det_image_size=400))
    assert (
        big.rois_per_image,
        big.proposals_per_image,
        big.test_proposals_per_image,
        big.detections_per_image,
    ) == (128, 500, 250, 25)
    assert short.lr_factor(0) == pytest.approx(0.001) and short.lr_factor(1800) == pytest.approx(0.1)
    assert short.lr_factor(2220) == pytest.approx(0.01)


def test_short_schedules_warm_up_clip_and_average_bn_over_what_the_run_has():
    paper = effective_schedule(EvalConfig(det_dataset="coco"))
    assert (paper.warmup_iters, paper.clip_grad, paper.precise_bn_iters) == (
        1000,
        0.0,
        200,
    )  # the paper: no clipping
    short = effective_schedule(EvalConfig(det_dataset="coco", det_max_iter=20, det_image_size=128))
    # 1000 * 20 / 180k rounds to 0: a run that jumps to full lr on random heads diverges, so a short
    # run keeps a warm-up of at least WARMUP_MIN_FRACTION of its iterations and clips the gradient
    assert (short.warmup_iters, short.clip_grad, short.precise_bn_iters) == (4, 10.0, 20)
    assert [short.lr_factor(i) for i in range(5)] == pytest.approx([0.001, 0.25075, 0.5005, 0.75025, 1.0])
    assert effective_schedule(EvalConfig(det_dataset="coco", det_max_iter=2)).warmup_iters == 1
    assert (
        effective_schedule(EvalConfig(det_dataset="coco", det_max_iter=20, det_clip_grad=0.0)).clip_grad
        == 0.0
    )
    assert effective_schedule(EvalConfig(det_dataset="voc", det_clip_grad=3.0)).clip_grad == 3.0


def test_too_small_detection_image_is_named():
    # the config refuses it, so every command that builds one does
    with pytest.raises(InputError, match="det_image_size=16: expected null or an integer >= 32"):
        EvalConfig(det_image_size=16)


def test_on_a_cpu_an_unset_detection_batch_is_the_cpu_default_and_the_lr_follows():
    from downstream.config import CPU_DETECTION_BATCH

    on_cpu = EvalConfig(det_dataset="voc").for_device(on_gpu=False)
    assert on_cpu.det_batch_size == CPU_DETECTION_BATCH == 4
    assert effective_schedule(on_cpu).lr == pytest.approx(0.1 * 4 / 32)  # 0.0125
    assert (
        EvalConfig().for_device(on_gpu=True).det_batch_size is None
    )  # the paper's 32: GPU records unchanged
    assert EvalConfig(det_batch_size=16).for_device(on_gpu=False).det_batch_size == 16  # a given batch stays
