"""Peak memory and time of COCO mask evaluation at COCO scale, with a synthetic predictor.

    python benchmarks/detection_eval.py [--images 5000] [--detections 100] [--height 800] [--width 1333] [--json]

Writes a COCO instances file of ``--images`` images of ``--height`` x ``--width`` px (``--objects``
rectangle polygons each, 80 categories) and reads it with the project's reader (``read_coco``).
A synthetic predictor then gives every image ``--detections`` full-resolution boolean masks (the
shape a Mask R-CNN pastes them in), which are RLE-encoded as they are produced
(``downstream.detection.metrics.encode_masks``, as both backends do), and the predictions are
evaluated with ``detection_metrics`` (pycocotools COCOeval, boxes and masks).

Prints the peak resident memory of this process above what it held once the ground truth was
read (``ru_maxrss``), next to what the raw masks of every image would take, and the times.
At full size (5,000 images, the default) the encoding alone takes about 0.3 s per image on one
CPU core: run it where there is time; tests/downstream/test_detection_eval_memory.py runs small
sizes and checks that the peak does not grow with the number of images.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks._common import load_average, section_header, write_readme_section  # noqa: E402
from downstream.detection.data import read_coco  # noqa: E402
from downstream.detection.metrics import Prediction, detection_metrics, encode_masks  # noqa: E402

CLASSES = 80


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_annotations(root: Path, images: int, objects: int, height: int, width: int, seed: int = 0) -> None:
    """A COCO val2017 layout (annotation file, empty image folder) of rectangle objects."""
    rng = np.random.default_rng(seed)
    anns = []
    for image_id in range(images):
        for _ in range(objects):
            w, h = rng.integers(16, width // 4), rng.integers(16, height // 4)
            x, y = rng.integers(0, width - w), rng.integers(0, height - h)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, CLASSES + 1)),
                    "bbox": [int(x), int(y), int(w), int(h)],
                    "segmentation": [
                        [int(x), int(y), int(x + w), int(y), int(x + w), int(y + h), int(x), int(y + h)]
                    ],
                    "area": int(w * h),
                    "iscrowd": 0,
                }
            )
    data = {
        "images": [
            {"id": i, "file_name": f"{i:012d}.jpg", "width": width, "height": height} for i in range(images)
        ],
        "annotations": anns,
        "categories": [{"id": c + 1, "name": f"class{c}"} for c in range(CLASSES)],
    }
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))


def synthetic_prediction(record, detections: int, rng: np.random.Generator) -> Prediction:
    """``detections`` scored boxes with their full-resolution masks: the ground truth's boxes
    jittered, then random ones; masks RLE-encoded at once, as the backends do."""
    truth = [a.box for a in record.annotations]
    boxes = np.zeros((detections, 4))
    masks = np.zeros((detections, record.height, record.width), dtype=bool)
    for k in range(detections):
        if k < len(truth):
            x1, y1, x2, y2 = (np.array(truth[k]) + rng.normal(0, 3, 4)).clip(
                0, [record.width, record.height] * 2
            )
        else:
            x1, y1 = rng.uniform(0, record.width - 20), rng.uniform(0, record.height - 20)
            x2, y2 = (
                min(record.width, x1 + rng.uniform(10, 300)),
                min(record.height, y1 + rng.uniform(10, 300)),
            )
        boxes[k] = x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)
        masks[k, int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = True
    labels = np.array([a.category for a in record.annotations][:detections] + [0] * detections)[:detections]
    scores = np.sort(rng.uniform(0.05, 1.0, detections))[::-1]
    return Prediction(record.image_id, boxes, scores, labels, encode_masks(masks))


def measure(images: int, detections: int, height: int, width: int, objects: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        write_annotations(Path(tmp), images, objects, height, width)
        gt = read_coco(tmp, "test")
    setup = peak_rss_mib()
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    predictions = [synthetic_prediction(record, detections, rng) for record in gt.images]
    t1 = time.perf_counter()
    metrics = detection_metrics(gt, predictions, masks=True, dataset="coco")
    t2 = time.perf_counter()
    peak = peak_rss_mib()
    return {
        "images": images,
        "detections_per_image": detections,
        "size": [height, width],
        "peak_above_setup_mib": round(peak - setup, 1),
        "peak_mib": round(peak, 1),
        "raw_masks_gib": round(images * detections * height * width / 2**30, 1),
        "rle_mib": round(sum(len(r["counts"]) for p in predictions for r in p.masks) / 2**20, 1),
        "predict_and_encode_s": round(t1 - t0, 1),
        "evaluate_s": round(t2 - t1, 1),
        "mask_AP": round(metrics["mask_AP"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument(
        "--objects", type=int, default=7, help="ground-truth objects per image (COCO: about 7)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line instead of the text")
    parser.add_argument(
        "--write-readme", action="store_true", help="also write benchmarks/README.md's section"
    )
    args = parser.parse_args(argv)
    load_before = load_average()
    out = measure(args.images, args.detections, args.height, args.width, args.objects)
    if args.json:
        print(json.dumps(out))
        return 0
    line = (
        f"{out['images']} images x {out['detections_per_image']} detections at {args.height}x{args.width}: "
        f"peak memory {out['peak_above_setup_mib']:.0f} MiB above the ground truth's "
        f"({out['peak_mib']:.0f} MiB in all; the raw masks would take {out['raw_masks_gib']:.1f} GiB, "
        f"their RLEs take {out['rle_mib']:.1f} MiB); predict + encode {out['predict_and_encode_s']:.1f} s, "
        f"evaluate {out['evaluate_s']:.1f} s; mask AP {out['mask_AP']:.2f}"
    )
    print(line)
    if args.write_readme:
        write_readme_section("detection_eval", f"{section_header('cpu', load_before)}\n{line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
