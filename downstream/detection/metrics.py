"""Detection metrics, each computed the way the paper's numbers were (Detectron2's evaluators).

- COCO (``box_AP``, ``box_AP50``, ``box_AP75``, ``mask_AP``, ...): pycocotools' COCOeval, crowd
  annotations matched as crowd.
- Pascal VOC (``AP``, ``AP50``, ``AP75``): Detectron2's PASCAL VOC evaluator. Per class, detections
  are matched greedily by score to the ground truth of largest IoU (a hit when IoU > threshold and
  the object is not yet taken); the AP is the VOC2007 11-point metric (precision envelope sampled at
  recall 0, 0.1, ..., 1.0); mAP averages the classes; ``AP`` averages mAP over IoU 0.50:0.95 in
  steps of 0.05. ``difficult`` objects are neither hits nor misses. A class absent from the test
  split has no AP and is left out of the mean (Detectron2 would divide by zero there).

All values are percentages (100.0 = perfect), as Detectron2 and the papers report them.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from downstream.detection.data import DetectionSet


@dataclass
class Prediction:
    """Detections for one image: xyxy boxes (K, 4), scores (K,), 0-based labels (K,), and masks as
    K compressed COCO RLEs (``encode_masks``): a full-resolution boolean mask is 1 MB at 800 x 1333,
    its RLE a few hundred bytes, so predictions for a whole COCO split fit in memory and cross
    processes cheaply."""

    image_id: int
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: list[dict] | None = None


def encode_masks(masks: np.ndarray) -> list[dict]:
    """(K, H, W) boolean masks as K compressed COCO RLEs (counts as text, as in a results file);
    called as each image's masks are produced, so no more than one image's raw masks exist at once."""
    if len(masks) == 0:
        return []
    pixels = masks.view(np.uint8) if masks.dtype == np.bool_ else masks.astype(np.uint8)  # bool: no copy
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(pixels, 0, -1)))  # (H, W, K), column-major
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _gt_area(ann, box, height: int, width: int, iou_type: str) -> float:
    if iou_type == "segm" and ann.segmentation:
        return float(mask_utils.area(_to_rle(ann.segmentation, height, width)))
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _to_rle(segmentation, height: int, width: int) -> dict:
    if isinstance(segmentation, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def coco_ground_truth(gt: DetectionSet, iou_type: str = "bbox") -> COCO:
    """An in-memory pycocotools COCO object for ``gt`` (category ids are 1-based class indices)."""
    images, anns = [], []
    for img in gt.images:
        images.append({"id": img.image_id, "width": img.width, "height": img.height})
        for a in img.annotations:
            x1, y1, x2, y2 = a.box
            ann = {
                "id": len(anns) + 1,
                "image_id": img.image_id,
                "category_id": a.category + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "iscrowd": int(a.ignored),
                "area": _gt_area(a, a.box, img.height, img.width, iou_type),
            }
            if iou_type == "segm":
                ann["segmentation"] = a.segmentation or [[x1, y1, x2, y1, x2, y2, x1, y2]]
            anns.append(ann)
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(gt.classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_results(predictions: list[Prediction], iou_type: str) -> list[dict]:
    """Detections in COCO's result format (xywh boxes or RLE masks, 1-based category ids)."""
    out = []
    for p in predictions:
        for k in range(len(p.scores)):
            res = {"image_id": p.image_id, "category_id": int(p.labels[k]) + 1, "score": float(p.scores[k])}
            if iou_type == "bbox":
                x1, y1, x2, y2 = (float(v) for v in p.boxes[k])
                res["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            else:
                res["segmentation"] = dict(p.masks[k])
            out.append(res)
    return out


def coco_ap(gt: DetectionSet, predictions: list[Prediction], iou_type: str = "bbox") -> dict[str, float]:
    """{'AP', 'AP50', 'AP75'} in percent for ``iou_type`` 'bbox' or 'segm' (pycocotools COCOeval)."""
    if iou_type == "segm" and any(p.masks is None for p in predictions):
        raise ValueError("mask AP needs predictions with masks")
    results = coco_results(predictions, iou_type)
    if not results:  # pycocotools cannot load an empty result list
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    coco_gt = coco_ground_truth(gt, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # stats: [AP@[.5:.95], AP@.5, AP@.75, ...]; -1 means no ground truth at all
    return {name: max(float(ev.stats[i]), 0.0) * 100.0 for i, name in enumerate(("AP", "AP50", "AP75"))}


# --- Pascal VOC (Detectron2's PascalVOCDetectionEvaluator) ------------------------------------------

VOC_IOU_THRESHOLDS = tuple(t / 100 for t in range(50, 100, 5))  # 0.50, 0.55, ..., 0.95


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Area under the precision envelope; VOC2007's 11-point version samples recall 0, 0.1, ..., 1."""
    if use_07_metric:
        # np.arange, not linspace: the same sample points (0.30000000000000004, ...) as the VOC devkit
        return float(
            sum(
                precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in np.arange(0.0, 1.1, 0.1)
            )
            / 11.0
        )
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([0.0], precision, [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]  # envelope: best precision at any higher recall
    steps = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix1, iy1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    ix2, iy2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def _class_ap(
    gt: DetectionSet, predictions: list[Prediction], cls: int, iou_thr: float, use_07: bool
) -> float | None:
    truth = {}
    for img in gt.images:
        anns = [a for a in img.annotations if a.category == cls]
        truth[img.image_id] = (
            np.array([a.box for a in anns], dtype=np.float64).reshape(-1, 4),
            np.array([a.ignored for a in anns], dtype=bool),
            np.zeros(len(anns), dtype=bool),
        )
    n_positive = sum(int((~d).sum()) for _, d, _ in truth.values())
    if n_positive == 0:
        return None  # the class does not occur in this split: no AP to average
    dets = [
        (float(p.scores[k]), p.image_id, p.boxes[k])
        for p in predictions
        for k in range(len(p.scores))
        if int(p.labels[k]) == cls
    ]
    dets.sort(key=lambda d: -d[0])
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for i, (_, image_id, box) in enumerate(dets):
        boxes, difficult, used = truth.get(image_id, (np.zeros((0, 4)), np.zeros(0, bool), np.zeros(0, bool)))
        if len(boxes) == 0:
            fp[i] = 1
            continue
        ious = _iou(np.asarray(box, dtype=np.float64), boxes)
        j = int(ious.argmax())
        if ious[j] <= iou_thr:  # the devkit's test is IoU > threshold
            fp[i] = 1
        elif difficult[j]:
            continue  # matched an ignored object: neither right nor wrong
        elif used[j]:
            fp[i] = 1  # duplicate detection
        else:
            tp[i], used[j] = 1, True
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / n_positive
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07)


def voc_map(
    gt: DetectionSet, predictions: list[Prediction], iou_thr: float = 0.5, use_07_metric: bool = True
) -> float:
    """Mean over classes of the per-class AP at IoU ``iou_thr``, in percent."""
    aps = [
        ap
        for c in range(len(gt.classes))
        if (ap := _class_ap(gt, predictions, c, iou_thr, use_07_metric)) is not None
    ]
    return float(np.mean(aps)) * 100.0 if aps else 0.0


def voc_metrics(gt: DetectionSet, predictions: list[Prediction]) -> dict[str, float]:
    """{'AP', 'AP50', 'AP75'} in percent, as Detectron2's PASCAL VOC evaluator reports them on VOC2007 test."""
    maps = {t: voc_map(gt, predictions, t) for t in VOC_IOU_THRESHOLDS}
    return {"AP": float(np.mean(list(maps.values()))), "AP50": maps[0.5], "AP75": maps[0.75]}


def metric_names(dataset: str, masks: bool) -> tuple[str, ...]:
    """What a run on ``dataset`` ('voc' or 'coco') records: the names Table 2 of the leaderboard reads."""
    if dataset == "voc":
        return ("AP", "AP50", "AP75")
    return ("box_AP", "box_AP50", "box_AP75") + (("mask_AP", "mask_AP50", "mask_AP75") if masks else ())


def detection_metrics(
    gt: DetectionSet, predictions: list[Prediction], masks: bool, dataset: str = "coco"
) -> dict[str, float]:
    """Every number a run reports: VOC AP/AP50/AP75 on ``voc``; box (and mask) AP/AP50/AP75 on ``coco``."""
    if dataset == "voc":
        out = voc_metrics(gt, predictions)
    else:
        out = {f"box_{k}": v for k, v in coco_ap(gt, predictions, "bbox").items()}
        if masks:
            out |= {f"mask_{k}": v for k, v in coco_ap(gt, predictions, "segm").items()}
    return out
