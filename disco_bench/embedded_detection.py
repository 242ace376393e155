"""The embedded detection dataset: scenes of shapes with boxes and instance masks, on disk in both
official layouts, so the VOC and COCO readers (and Detectron2) run on it unchanged.

Each image has a noisy, softly graded background and 1..max_objects non-overlapping filled shapes
(disc, square, triangle, cross, ...), each a polygon in a random colour, size, position and
rotation. The polygon is both the instance mask (COCO ``segmentation``) and, through its extent,
the box. Written as:

- ``VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/{trainval,test}.txt}`` (VOC XML,
  1-based inclusive pixel boxes);
- ``annotations/instances_{train,val}2017.json`` + ``train2017/`` + ``val2017/`` (polygon masks).

The VOC trainval split and COCO train2017 hold the same images, as do VOC test and COCO val2017.
The same config always gives the same bytes; an identical existing dataset is reused.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw

from disco_bench.embedded import write_once
from infra.errors import InputError
from infra.validation import Range, at_least, fraction, validate_fields


@dataclass
class EmbeddedDetectionConfig:
    classes: int = 3
    train_images: int = 64
    val_images: int = 24
    image_size: int = 128
    max_objects: int = 3
    min_object: float = 0.18  # object size as a fraction of the image side
    max_object: float = 0.4
    noise: float = 0.04  # std of Gaussian pixel noise
    seed: int = 0

    def __post_init__(self) -> None:
        validate_fields(self, FIELD_RULES)
        if self.min_object > self.max_object:
            raise InputError(
                f"min_object={self.min_object:g}, max_object={self.max_object:g}: expected min_object <= max_object"
            )


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    angles = phase + np.arange(n) * 2 * np.pi / n
    return radius * np.stack([np.sin(angles), -np.cos(angles)], axis=1)


def _cross() -> np.ndarray:
    w = 0.35
    return np.array(
        [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ],
        dtype=np.float64,
    )


def _star() -> np.ndarray:
    pts = _regular(10)
    pts[1::2] *= 0.45
    return pts


# Unit shapes (vertices in [-1, 1]^2); a class is a shape, so it is told apart by outline alone.
# Alphabetical, so the VOC reader's sorted class names and COCO's category ids agree.
SHAPES = {
    "cross": _cross,
    "disc": lambda: _regular(24),
    "hexagon": lambda: _regular(6),
    "square": lambda: np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64) * 0.85,
    "star": _star,
    "triangle": lambda: _regular(3),
}


def _place(shape: str, size: float, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(-0.4, 0.4)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return SHAPES[shape]() @ rot.T * (size / 2) + centre


def _background(n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] / n
    a, b = rng.uniform(0.2, 0.8, 3), rng.uniform(-0.25, 0.25, 3)
    img = a + b * (x[..., None] * np.cos(rng.uniform(0, 6.3)) + y[..., None] * np.sin(rng.uniform(0, 6.3)))
    return img + rng.normal(0, noise, (n, n, 3))


def _overlaps(box, boxes, margin: float) -> bool:
    return any(
        box[0] < b[2] + margin
        and b[0] < box[2] + margin
        and box[1] < b[3] + margin
        and b[1] < box[3] + margin
        for b in boxes
    )


def draw_scene(cfg: EmbeddedDetectionConfig, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """(RGB uint8 image, objects [{class, polygon (K, 2) float, box (x1, y1, x2, y2)}])."""
    n = cfg.image_size
    names = list(SHAPES)[: cfg.classes]
    img = _background(n, cfg.noise, rng)
    objects: list[dict] = []
    for _ in range(int(rng.integers(1, cfg.max_objects + 1))):
        for _attempt in range(20):  # rejection sampling for non-overlapping objects
            size = rng.uniform(cfg.min_object, cfg.max_object) * n
            centre = rng.uniform(size / 2 + 1, n - size / 2 - 1, 2)
            cls = int(rng.integers(cfg.classes))
            poly = np.clip(_place(names[cls], size, centre, rng), 0, n)
            box = (*poly.min(axis=0), *poly.max(axis=0))
            if not _overlaps(box, [o["box"] for o in objects], 2.0):
                objects.append({"class": cls, "polygon": poly, "box": tuple(float(v) for v in box)})
                break
    for obj in objects:
        canvas = Image.new("L", (n * 4, n * 4))  # 4x supersampling for smooth edges
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in obj["polygon"] * 4], fill=255)
        alpha = np.asarray(canvas.resize((n, n), Image.BOX), dtype=np.float64)[..., None] / 255
        colour = rng.uniform(0, 1, 3)
        while abs(colour.mean() - img.mean()) < 0.2:
            colour = rng.uniform(0, 1, 3)
        img = img * (1 - alpha) + (colour + rng.normal(0, cfg.noise, (n, n, 3))) * alpha
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), objects


def _voc_xml(stem: str, size: int, objects: list[dict], names: list[str]) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{stem}.jpg"
    sz = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = names[obj["class"]]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "0"
        bb = ET.SubElement(node, "bndbox")
        x1, y1, x2, y2 = obj["box"]
        # VOC pixels are 1-based and inclusive: 0-based start s -> s + 1, exclusive end e -> e
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bb, tag).text = str(int(round(value)))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _coco_json(images: list[tuple[int, str, list[dict]]], size: int, names: list[str]) -> str:
    anns = []
    for image_id, _, objects in images:
        for obj in objects:
            x1, y1, x2, y2 = obj["box"]
            poly = np.asarray(obj["polygon"])
            area = 0.5 * abs(
                np.dot(poly[:, 0], np.roll(poly[:, 1], 1)) - np.dot(poly[:, 1], np.roll(poly[:, 0], 1))
            )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": obj["class"] + 1,
                    "iscrowd": 0,
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round(float(area), 2),
                    "segmentation": [[round(float(v), 2) for v in poly.ravel()]],
                }
            )
    return json.dumps(
        {
            "info": {"description": "disco-bench embedded detection dataset"},
            "images": [{"id": i, "file_name": f, "width": size, "height": size} for i, f, _ in images],
            "annotations": anns,
            "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(names)],
        }
    )


def make_embedded_detection(out: str | Path, cfg: EmbeddedDetectionConfig, progress: bool = False) -> Path:
    """Write the dataset under ``out`` in both layouts (see the module docstring); return ``out``."""
    out = Path(out)
    names = list(SHAPES)[: cfg.classes]
    spec = {"kind": "disco-bench-embedded-detection", "version": 1, **asdict(cfg)}
    return write_once(out, spec, lambda tmp: _write_scenes(tmp, cfg, names))


def _write_scenes(tmp: Path, cfg: EmbeddedDetectionConfig, names: list[str]) -> None:
    """The same scenes in VOC (``VOCdevkit/VOC2007``) and COCO (``annotations/``, ``*2017/``) layouts."""
    voc = tmp / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    (tmp / "annotations").mkdir()
    image_id = 0
    for voc_set, coco_split, count in (
        ("trainval", "train2017", cfg.train_images),
        ("test", "val2017", cfg.val_images),
    ):
        (tmp / coco_split).mkdir()
        stems, images = [], []
        for i in range(count):
            image_id += 1
            rng = np.random.default_rng([cfg.seed, 0 if voc_set == "trainval" else 1, i])
            pixels, objects = draw_scene(cfg, rng)
            stem = f"{image_id:06d}"
            Image.fromarray(pixels).save(voc / "JPEGImages" / f"{stem}.jpg", quality=95)
            shutil.copyfile(voc / "JPEGImages" / f"{stem}.jpg", tmp / coco_split / f"{image_id:012d}.jpg")
            (voc / "Annotations" / f"{stem}.xml").write_text(_voc_xml(stem, cfg.image_size, objects, names))
            stems.append(stem)
            images.append((image_id, f"{image_id:012d}.jpg", objects))
        (voc / "ImageSets" / "Main" / f"{voc_set}.txt").write_text("".join(s + "\n" for s in stems))
        (tmp / "annotations" / f"instances_{coco_split}.json").write_text(
            _coco_json(images, cfg.image_size, names)
        )


# One rule per field (infra.validation); objects stay inside the image (size < side).
FIELD_RULES = {
    "classes": Range(low=1, high=len(SHAPES), integer=True),
    "train_images": at_least(1),
    "val_images": at_least(1),
    "image_size": at_least(32),
    "max_objects": at_least(1),
    "min_object": fraction(low_open=True, high_open=True),
    "max_object": fraction(low_open=True, high_open=True),
    "noise": Range(low=0.0),
    "seed": at_least(0),
}
