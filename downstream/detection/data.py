"""Detection datasets read from their official layouts on disk.

- Pascal VOC: ``ROOT/VOCdevkit/VOC2007|VOC2012/{Annotations,JPEGImages,ImageSets/Main}`` (ROOT may
  also be the VOCdevkit folder itself). Paper protocol: train on VOC07 trainval + VOC12 trainval
  (VOC2012 is used when present), test on VOC07 test. Boxes only.
- COCO: ``ROOT/annotations/instances_{train,val}2017.json`` with images in ``train2017/`` and
  ``val2017/``. Boxes and instance masks (polygons or RLE).

Both readers return a :class:`DetectionSet`: absolute xyxy boxes in 0-based pixel coordinates,
contiguous 0-based class indices, and per-object segmentations in COCO's encoding.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.errors import InputError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
DATASETS = ("voc", "coco")
SPLITS = ("train", "test")


@dataclass
class Annotation:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in absolute 0-based pixels
    category: int  # 0-based index into DetectionSet.classes
    difficult: bool = False  # VOC "difficult" (or COCO iscrowd): ignored by the metrics
    segmentation: list | dict | None = None  # COCO polygons [[x, y, ...], ...] or an RLE dict


@dataclass
class ImageRecord:
    image_id: int
    path: Path
    width: int
    height: int
    annotations: list[Annotation] = field(default_factory=list)


@dataclass
class DetectionSet:
    name: str  # e.g. "voc_2007_test", "coco_2017_val"
    classes: list[str]
    images: list[ImageRecord]
    has_masks: bool


# Boxes may reach this far past the image border: COCO's float boxes overshoot by rounding, and
# detectors clip them anyway. Anything further is a broken annotation, which stops the read.
BOX_TOLERANCE_PX = 1.0


def box_problem(box: tuple[float, float, float, float], width: int, height: int) -> str | None:
    """Why xyxy ``box`` (0-based pixels) is no box of a ``width`` x ``height`` image, or None if it is."""
    x1, y1, x2, y2 = box
    if x2 < x1 or y2 < y1:
        return "its far corner is before its near corner"
    tol = BOX_TOLERANCE_PX
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        return f"it lies outside the {width}x{height} image"
    return None


# --- Pascal VOC ---------------------------------------------------------------------------------


def voc_devkit(root: str | Path) -> Path:
    root = Path(root)
    for candidate in (root / "VOCdevkit", root):
        if (candidate / "VOC2007").is_dir():
            return candidate
    raise InputError(f"{root}: no VOCdevkit/VOC2007 folder (expected the official VOC layout VOCdevkit/VOC2007/Annotations ...)")


def _xml_text(node: ET.Element, tag: str, source: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise InputError(f"{source}: missing <{tag}> (expected a Pascal VOC annotation)")
    return child.text.strip()


def _voc_image_ids(year_dir: Path, image_set: str) -> list[str]:
    listing = year_dir / "ImageSets" / "Main" / f"{image_set}.txt"
    if not listing.is_file():
        raise InputError(f"{listing} not found (expected the VOC image list ImageSets/Main/{image_set}.txt)")
    return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]


def _voc_objects(xml_path: Path) -> tuple[int, int, list[tuple[str, tuple[float, ...], bool]]]:
    try:
        tree = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise InputError(f"{xml_path}: not a readable VOC annotation ({exc})") from exc
    size = tree.find("size")
    if size is None:
        raise InputError(f"{xml_path}: missing <size> (expected a Pascal VOC annotation)")
    width, height = int(_xml_text(size, "width", xml_path)), int(_xml_text(size, "height", xml_path))
    objects = []
    for obj in tree.findall("object"):
        name = _xml_text(obj, "name", xml_path)
        bb = obj.find("bndbox")
        if bb is None:
            raise InputError(f"{xml_path}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (float(_xml_text(bb, t, xml_path)) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult = obj.find("difficult") is not None and _xml_text(obj, "difficult", xml_path) == "1"
        # VOC pixel indices are 1-based and inclusive; shift the top-left corner to 0-based
        # (the bottom-right then marks the exclusive end), as Detectron2's VOC loader does.
        box = (x1 - 1.0, y1 - 1.0, x2, y2)
        problem = box_problem(box, width, height)
        if problem:
            raise InputError(f"{xml_path}: object {name!r} has bndbox xmin={x1:g} ymin={y1:g} xmax={x2:g} ymax={y2:g}, "
                             f"but {problem}; expected 1 <= xmin <= xmax <= {width} and 1 <= ymin <= ymax <= {height}")
        objects.append((name, box, difficult))
    return width, height, objects


def _voc_class_list(names: set[str]) -> list[str]:
    """The 20 official classes when the annotations use them; otherwise the names found, sorted."""
    return list(VOC_CLASSES) if names <= set(VOC_CLASSES) else sorted(names)


def _voc_raw(root: str | Path, split: str) -> tuple[str, list]:
    """(set name, [(image path, width, height, objects)]) for 'train' (VOC2007 trainval + VOC2012
    trainval if present) or 'test' (VOC2007 test)."""
    devkit = voc_devkit(root)
    if split == "train":
        parts = [(year, "trainval") for year in ("2007", "2012") if (devkit / f"VOC{year}").is_dir()]
    elif split == "test":
        parts = [("2007", "test")]
    else:
        raise InputError(f"VOC split {split!r}: expected one of {', '.join(SPLITS)}")
    raw = []
    for year, image_set in parts:
        year_dir = devkit / f"VOC{year}"
        for stem in _voc_image_ids(year_dir, image_set):
            xml_path = year_dir / "Annotations" / f"{stem}.xml"
            if not xml_path.is_file():
                raise InputError(f"{xml_path} not found (listed in {year_dir}/ImageSets/Main/{image_set}.txt)")
            raw.append((year_dir / "JPEGImages" / f"{stem}.jpg", *_voc_objects(xml_path)))
    return "voc_" + "+".join(f"{y}_{s}" for y, s in parts), raw


def _voc_names(raw: list) -> set[str]:
    return {name for *_, objs in raw for name, _, _ in objs}


def _voc_set(name: str, raw: list, classes: list[str]) -> DetectionSet:
    index = {c: i for i, c in enumerate(classes)}
    images = []
    for image_id, (path, width, height, objs) in enumerate(raw):
        anns = []
        for obj_name, box, difficult in objs:
            if obj_name not in index:
                raise InputError(f"{path.name}: class {obj_name!r} is not among the dataset's classes ({', '.join(classes)})")
            anns.append(Annotation(box, index[obj_name], difficult))
        images.append(ImageRecord(image_id, path, width, height, anns))
    return DetectionSet(name, classes, images, has_masks=False)


def read_voc(root: str | Path, split: str, classes: list[str] | None = None) -> DetectionSet:
    """One split; ``classes`` defaults to the 20 official ones, or the names this split uses, sorted."""
    name, raw = _voc_raw(root, split)
    return _voc_set(name, raw, classes or _voc_class_list(_voc_names(raw)))


def read_voc_train_test(root: str | Path) -> tuple[DetectionSet, DetectionSet]:
    """Both splits with one class list (official, or every name either split uses, sorted)."""
    (train_name, train_raw), (test_name, test_raw) = _voc_raw(root, "train"), _voc_raw(root, "test")
    classes = _voc_class_list(_voc_names(train_raw) | _voc_names(test_raw))
    return _voc_set(train_name, train_raw, classes), _voc_set(test_name, test_raw, classes)


# --- COCO ---------------------------------------------------------------------------------------


def coco_files(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation json, image folder) for 'train' (train2017) or 'test' (val2017)."""
    if split not in SPLITS:
        raise InputError(f"COCO split {split!r}: expected one of {', '.join(SPLITS)}")
    coco_split = "train2017" if split == "train" else "val2017"
    root = Path(root)
    return root / "annotations" / f"instances_{coco_split}.json", root / coco_split


def read_coco(root: str | Path, split: str) -> DetectionSet:
    ann_file, image_dir = coco_files(root, split)
    if not ann_file.is_file():
        raise InputError(f"{ann_file} not found (expected COCO's annotations/instances_{{train,val}}2017.json)")
    if not image_dir.is_dir():
        raise InputError(f"{image_dir} not found (expected COCO's image folder beside annotations/)")
    try:
        data = json.loads(ann_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{ann_file}: not readable JSON ({exc})") from exc
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise InputError(f"{ann_file}: missing key {key!r} (expected a COCO instances file)")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    by_image: dict[int, list[Annotation]] = {img["id"]: [] for img in data["images"]}
    images_by_id = {img["id"]: img for img in data["images"]}
    for ann in data["annotations"]:
        if ann["category_id"] not in index:
            raise InputError(f"{ann_file}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
        if ann["image_id"] not in by_image:
            raise InputError(f"{ann_file}: annotation {ann.get('id')} refers to unknown image_id {ann['image_id']}")
        x, y, w, h = ann["bbox"]
        img = images_by_id[ann["image_id"]]
        problem = box_problem((x, y, x + w, y + h), img["width"], img["height"])
        if problem:
            raise InputError(f"{ann_file}: annotation {ann.get('id')} has bbox [{x:g}, {y:g}, {w:g}, {h:g}] on image "
                             f"{ann['image_id']}, but {problem}; expected x, y >= 0, w, h >= 0, x + w <= {img['width']} "
                             f"and y + h <= {img['height']}")
        by_image[ann["image_id"]].append(
            Annotation((x, y, x + w, y + h), index[ann["category_id"]], bool(ann.get("iscrowd", 0)), ann.get("segmentation"))
        )
    images = [
        ImageRecord(img["id"], image_dir / img["file_name"], img["width"], img["height"], by_image[img["id"]])
        for img in sorted(data["images"], key=lambda i: i["id"])
    ]
    has_masks = any(a.segmentation for img in images for a in img.annotations)
    return DetectionSet(f"coco_2017_{'train' if split == 'train' else 'val'}", [c["name"] for c in cats], images, has_masks)


def read_detection(dataset: str, root: str | Path, split: str) -> DetectionSet:
    """Read ``split`` ('train' or 'test') of ``dataset`` ('voc' or 'coco') under ``root``."""
    if dataset == "voc":
        return read_voc(root, split)
    if dataset == "coco":
        return read_coco(root, split)
    raise InputError(f"detection dataset {dataset!r}: expected one of {', '.join(DATASETS)}")


def read_train_test(dataset: str, root: str | Path) -> tuple[DetectionSet, DetectionSet]:
    """Both splits, with the test split using the train split's class list."""
    if dataset == "voc":
        train, test = read_voc_train_test(root)
    else:
        train, test = read_detection(dataset, root, "train"), read_detection(dataset, root, "test")
    if test.classes != train.classes:
        raise InputError(f"{root}: train and test class lists differ ({train.classes} vs {test.classes})")
    if not train.images or not test.images:
        raise InputError(f"{root}: {dataset} has {len(train.images)} train and {len(test.images)} test images; both must be > 0")
    return train, test


def check_voc(root: str | Path) -> None:
    """Cheap layout check (no annotation parsing): VOC2007 test + trainval lists and their folders."""
    devkit = voc_devkit(root)
    year = devkit / "VOC2007"
    for sub in ("Annotations", "JPEGImages"):
        if not (year / sub).is_dir():
            raise InputError(f"{year / sub} not found (expected the official VOC layout VOCdevkit/VOC2007/{sub})")
    for image_set in ("trainval", "test"):
        _voc_image_ids(year, image_set)


def check_coco(root: str | Path) -> None:
    """Cheap layout check: both instances files and both image folders exist."""
    for split in SPLITS:
        ann_file, image_dir = coco_files(root, split)
        if not ann_file.is_file():
            raise InputError(f"{ann_file} not found (expected COCO's annotations/instances_{{train,val}}2017.json)")
        if not image_dir.is_dir():
            raise InputError(f"{image_dir} not found (expected COCO's image folder beside annotations/)")
