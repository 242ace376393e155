"""Helpers for the detection tests: the detectron2 requirement and detection data in the official formats
(random-init student checkpoints: tests.pretrain.helpers.save_student)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils


def require_detectron2():
    """Skip without detectron2 on a developer machine; in CI (CI set) its absence is a failure, since
    .ci/run installs it with scripts/install_detectron2.sh."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("detectron2 is not importable: CI must run scripts/install_detectron2.sh first")
        pytest.skip("detectron2 is not installed (run scripts/install_detectron2.sh)")


FEW_ROIS = 16
# Put first on a child's PYTHONPATH: its sitecustomize.py makes every process started with it (torchrun
# and each rank) score FEW_ROIS RoIs too, as score_few_rois does in the test's own process.
FEW_ROIS_STARTUP = Path(__file__).resolve().parent / "few_rois"


def few_rois(schedule_of):
    """``schedule_of`` (task.effective_schedule) with FEW_ROIS RoIs per training and per test image."""

    def schedule(cfg):
        return dataclasses.replace(
            schedule_of(cfg), rois_per_image=FEW_ROIS, test_proposals_per_image=FEW_ROIS
        )

    return schedule


def score_few_rois(monkeypatch) -> None:
    """Detection runs made in this process score FEW_ROIS RoIs per image. Detectron2's C4 head runs
    res5 on every RoI, and the schedule's floors (64 sampled RoIs per training image, 100 proposals
    per test image) make that most of a toy run's CPU; the records' form, the architecture, the
    weights carried and the error lines do not depend on how many RoIs the head sees."""
    from downstream.detection import task

    monkeypatch.setattr(task, "effective_schedule", few_rois(task.effective_schedule))


def few_rois_pythonpath() -> str:
    """PYTHONPATH for child processes whose Python processes all score FEW_ROIS RoIs: FEW_ROIS_STARTUP
    first, then the repository root (its sitecustomize imports ``tests``), then this process's entries."""
    root = str(FEW_ROIS_STARTUP.parents[2])
    return os.pathsep.join(filter(None, (str(FEW_ROIS_STARTUP), root, os.environ.get("PYTHONPATH"))))


# --- datasets written the way other tools write them ------------------------------------------------
# pycocotools encodes the masks (mask.encode, counts decoded to str as COCO's own files hold them),
# PIL writes PNG images in the modes exporters produce (RGB, L, RGBA, P); the category ids are not
# contiguous. Nothing here goes through the project's own dataset generator.

FOREIGN_CATEGORY_IDS = (3, 7, 11)  # COCO's own ids skip numbers too


def _scene(rng, size: int, max_objects: int):
    """(RGB uint8 image, [(category index, filled-shape mask bool (H, W))]): bright ellipses and
    rectangles on a dark noisy background; the shape's kind and its colour channel give the class."""
    pixels = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    objects = []
    canvas_used = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        w, h = (int(v) for v in rng.integers(size // 4, size // 2, 2))
        x, y = (int(v) for v in rng.integers(1, size - max(w, h) - 1, 2))
        cls = int(rng.integers(len(FOREIGN_CATEGORY_IDS)))
        layer = Image.new("L", (size, size))
        draw = ImageDraw.Draw(layer)
        if cls == 0:
            draw.ellipse((x, y, x + w, y + h), fill=1)
        elif cls == 1:
            draw.rectangle((x, y, x + w, y + h), fill=1)
        else:
            draw.polygon([(x + w / 2, y), (x + w, y + h), (x, y + h)], fill=1)
        mask = np.asarray(layer, dtype=bool) & ~canvas_used
        if mask.sum() < 16:
            continue
        canvas_used |= mask
        colour = np.array([60, 60, 60]) + 180 * (np.arange(3) == cls)
        pixels[mask] = colour.astype(np.uint8)
        objects.append((cls, mask))
    return pixels, objects


def _rle(mask: np.ndarray, compressed: bool) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    # uncompressed RLE as COCO writes crowd regions: run lengths in column-major order, starting with 0s
    flat = mask.astype(np.uint8).ravel(order="F")
    runs = np.diff(np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size])))
    runs = np.concatenate(([0], runs)) if flat[0] else runs
    return {"size": list(mask.shape), "counts": [int(r) for r in runs]}


def _polygon(mask: np.ndarray) -> list[list[float]]:
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return [[float(x1), float(y1), float(x2), float(y1), float(x2), float(y2), float(x1), float(y2)]]


def write_foreign_coco(
    root,
    train_images: int = 6,
    val_images: int = 3,
    size: int = 32,
    max_objects: int = 2,
    forms: tuple[str, ...] = ("rle", "rle_uncompressed", "polygon"),
    modes: tuple[str, ...] = ("RGB", "L", "RGBA", "P"),
    extras: bool = True,
    seed: int = 0,
):
    """A COCO dataset under ``root`` as other tools write it: PNG images cycling through ``modes``,
    masks cycling through ``forms``. With ``extras``, each split also gets an image without
    annotations, a crowd region (uncompressed RLE, iscrowd=1) and, in train, one zero-area box and
    one annotation with an empty segmentation. Returns {split: {"images": n, "annotations": n}}."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = {}
    next_id = [1, 1]
    for split, n in (("train2017", train_images), ("val2017", val_images)):
        (root / split).mkdir(exist_ok=True)
        images, anns = [], []
        for i in range(n + (1 if extras else 0)):
            image_id, next_id[0] = next_id[0] * 10, next_id[0] + 1  # sparse image ids too
            pixels, objects = (
                _scene(rng, size, max_objects)
                if i < n
                else (rng.integers(0, 60, (size, size, 3)).astype(np.uint8), [])
            )
            mode = modes[i % len(modes)]
            im = Image.fromarray(pixels)
            im = im.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else im.convert(mode)
            file_name = f"img_{image_id:05d}.png"
            im.save(root / split / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
            for k, (cls, mask) in enumerate(objects):
                form = forms[(i + k) % len(forms)]
                segm = _polygon(mask) if form == "polygon" else _rle(mask, form == "rle")
                x, y, w, h = (
                    float(v)
                    for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
                )
                anns.append(
                    {
                        "id": next_id[1],
                        "image_id": image_id,
                        "category_id": FOREIGN_CATEGORY_IDS[cls],
                        "bbox": [x, y, w, h],
                        "area": float(mask.sum()),
                        "iscrowd": 0,
                        "segmentation": segm,
                    }
                )
                next_id[1] += 1
        if extras:
            crowd = np.zeros((size, size), bool)
            crowd[: size // 4, : size // 4] = True
            first = images[0]["id"]
            extra = [
                {
                    "bbox": [0.0, 0.0, size / 4, size / 4],
                    "iscrowd": 1,
                    "segmentation": _rle(crowd, False),
                    "area": float(crowd.sum()),
                }
            ]
            if split == "train2017":
                extra += [
                    {
                        "bbox": [5.0, 5.0, 0.0, 4.0],
                        "iscrowd": 0,
                        "segmentation": [[5.0, 5.0, 5.0, 9.0, 5.0, 7.0]],
                        "area": 0.0,
                    },
                    {"bbox": [2.0, 2.0, 6.0, 6.0], "iscrowd": 0, "segmentation": [], "area": 0.0},
                ]
            for e in extra:
                anns.append(
                    {"id": next_id[1], "image_id": first, "category_id": FOREIGN_CATEGORY_IDS[0], **e}
                )
                next_id[1] += 1
        cats = [
            {"id": c, "name": f"shape{c}", "supercategory": "shape"} for c in reversed(FOREIGN_CATEGORY_IDS)
        ]
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats})
        )
        counts[split] = {"images": len(images), "annotations": len(anns)}
    return counts
