"""Detection datasets read from their official layouts on disk.

- Pascal VOC: ``ROOT/VOCdevkit/VOC2007|VOC2012/{Annotations,JPEGImages,ImageSets/Main}`` (ROOT may
  also be the VOCdevkit folder itself). Paper protocol: train on VOC07 trainval + VOC12 trainval
  (VOC2012 is used when present), test on VOC07 test. Boxes only.
  A VOC2007-only layout trains on VOC2007 trainval alone: a stated fallback (a ``note:`` line, and the
  record's ``train_set`` says ``voc_2007_trainval``). ``difficult`` objects are kept for training and
  ignored by the evaluation, as in Detectron2's VOC loader and evaluator.
- COCO: ``ROOT/annotations/instances_{train,val}2017.json`` with images in ``train2017/`` and
  ``val2017/``. Every form the format allows: polygons, RLE (compressed or not), ``iscrowd=1``
  (left out of training, matched as crowd by pycocotools), images without annotations, any category
  ids (mapped to contiguous indices in id order), images of any PIL mode (read as RGB).
  Degenerate annotations (a box of zero width or height; with masks, a segmentation that covers
  nothing: no polygon of 3+ points, or an empty RLE) are dropped, as Detectron2 drops them, and
  counted in :attr:`DetectionSet.dropped`.

Both readers return a :class:`DetectionSet`: absolute xyxy boxes in 0-based pixel coordinates,
contiguous 0-based class indices, and per-object segmentations in COCO's encoding. Before anything
trains, every image file either split refers to is checked to exist and to have the size its
annotation states (:func:`check_images`).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from pycocotools import mask as mask_utils

from infra.errors import InputError
from pretrain.data import too_large

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
DATASETS = ("voc", "coco")
SPLITS = ("train", "test")


@dataclass
class Annotation:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in absolute 0-based pixels
    category: int  # 0-based index into DetectionSet.classes
    difficult: bool = False  # VOC "difficult": trained on, ignored by the metrics
    segmentation: list | dict | None = None  # COCO polygons [[x, y, ...], ...] or an RLE dict
    crowd: bool = False  # COCO iscrowd=1: left out of training, matched as crowd by the metrics

    @property
    def ignored(self) -> bool:
        """Neither a hit nor a miss in evaluation (VOC difficult, COCO crowd)."""
        return self.difficult or self.crowd


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
    dropped: dict[str, int] = field(default_factory=dict)  # degenerate annotations left out, by reason
    note: str = ""  # a stated fallback (VOC2012 absent), recorded with the results


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
    raise InputError(
        f"{root}: no VOCdevkit/VOC2007 folder (expected the official VOC layout VOCdevkit/VOC2007/Annotations ...)"
    )


def _xml_text(node: ET.Element, tag: str, source: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise InputError(f"{source}: missing <{tag}> (expected a Pascal VOC annotation)")
    return child.text.strip()


def _xml_number(node: ET.Element, tag: str, source: Path) -> float:
    text = _xml_text(node, tag, source)
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{source}: <{tag}> is {text!r}, expected a number") from None


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
    width, height = int(_xml_number(size, "width", xml_path)), int(_xml_number(size, "height", xml_path))
    objects = []
    for obj in tree.findall("object"):
        name = _xml_text(obj, "name", xml_path)
        bb = obj.find("bndbox")
        if bb is None:
            raise InputError(f"{xml_path}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (_xml_number(bb, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult = obj.find("difficult") is not None and _xml_text(obj, "difficult", xml_path) == "1"
        # VOC pixel indices are 1-based and inclusive; shift the top-left corner to 0-based
        # (the bottom-right then marks the exclusive end), as Detectron2's VOC loader does.
        box = (x1 - 1.0, y1 - 1.0, x2, y2)
        problem = box_problem(box, width, height)
        if problem:
            raise InputError(
                f"{xml_path}: object {name!r} has bndbox xmin={x1:g} ymin={y1:g} xmax={x2:g} ymax={y2:g}, "
                f"but {problem}; expected 1 <= xmin <= xmax <= {width} and 1 <= ymin <= ymax <= {height}"
            )
        objects.append((name, box, difficult))
    return width, height, objects


VOC_CLASSES_FILE = "classes.txt"  # a custom set's class list, one name a line, in VOCdevkit/


def _voc_class_list(names: set[str], devkit: Path) -> list[str]:
    """``VOCdevkit/classes.txt`` when there is one; else the 20 official classes when the annotations
    use them, or the names found, sorted, when they use none of them. Official names beside others
    are refused: a misspelt object ('persn') would otherwise silently become a class of its own."""
    listed = devkit / VOC_CLASSES_FILE
    if listed.is_file():
        return [line.strip() for line in listed.read_text().splitlines() if line.strip()]
    official = set(VOC_CLASSES)
    if names <= official:
        return list(VOC_CLASSES)
    if names & official:
        outside = sorted(names - official)
        near = {n: difflib.get_close_matches(n, VOC_CLASSES, n=1) for n in outside}
        guesses = ", ".join(f"{n!r} -> {m[0]!r}" for n, m in near.items() if m)
        raise InputError(
            f"{devkit}: object names {', '.join(map(repr, outside))} are not Pascal VOC classes, while "
            f"{len(names & official)} others are{f' (did you mean {guesses}?)' if guesses else ''}; "
            f"expected the 20 VOC classes, or a custom set's class list in {listed} (one name a line)"
        )
    return sorted(names)


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
                raise InputError(
                    f"{xml_path} not found (listed in {year_dir}/ImageSets/Main/{image_set}.txt)"
                )
            raw.append((year_dir / "JPEGImages" / f"{stem}.jpg", *_voc_objects(xml_path)))
    if not raw:
        raise InputError(
            f"{devkit}: the VOC {split} lists ({', '.join(f'VOC{y}/ImageSets/Main/{s}.txt' for y, s in parts)}) "
            "name no image"
        )
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
                raise InputError(
                    f"{path.name}: object {obj_name!r} is not among the dataset's classes ({', '.join(classes)})"
                )
            anns.append(Annotation(box, index[obj_name], difficult))
        images.append(ImageRecord(image_id, path, width, height, anns))
    return DetectionSet(name, classes, images, has_masks=False)


def read_voc(root: str | Path, split: str, classes: list[str] | None = None) -> DetectionSet:
    """One split; ``classes`` defaults to the 20 official ones, or the names this split uses, sorted."""
    name, raw = _voc_raw(root, split)
    return _voc_set(name, raw, classes or _voc_class_list(_voc_names(raw), voc_devkit(root)))


def read_voc_train_test(root: str | Path) -> tuple[DetectionSet, DetectionSet]:
    """Both splits with one class list (official, or every name either split uses, sorted)."""
    (train_name, train_raw), (test_name, test_raw) = _voc_raw(root, "train"), _voc_raw(root, "test")
    classes = _voc_class_list(_voc_names(train_raw) | _voc_names(test_raw), voc_devkit(root))
    train = _voc_set(train_name, train_raw, classes)
    if "2012" not in train_name:
        train.note = (
            f"{voc_devkit(root)} has no VOC2012: trained on VOC2007 trainval only (the paper trains on "
            "VOC07+12 trainval)"
        )
        print(f"note: {train.note}", file=sys.stderr)
    return train, _voc_set(test_name, test_raw, classes)


# --- COCO ---------------------------------------------------------------------------------------


def coco_files(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation json, image folder) for 'train' (train2017) or 'test' (val2017)."""
    if split not in SPLITS:
        raise InputError(f"COCO split {split!r}: expected one of {', '.join(SPLITS)}")
    coco_split = "train2017" if split == "train" else "val2017"
    root = Path(root)
    return root / "annotations" / f"instances_{coco_split}.json", root / coco_split


def _field(entry: dict, key: str, where: str):
    if not isinstance(entry, dict) or key not in entry:
        raise InputError(f"{where}: missing key {key!r} (expected a COCO instances entry)")
    return entry[key]


def _number_list(value, n: int | None, where: str) -> list[float]:
    if (
        not isinstance(value, list)
        or (n is not None and len(value) != n)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise InputError(f"{where}: {json.dumps(value)[:60]} is not a list of {n or 'some'} numbers")
    if not all(math.isfinite(v) for v in value):  # NaN passes every comparison of the box check
        raise InputError(
            f"{where}: {json.dumps(value)[:60]} holds a NaN or infinite number; expected finite numbers"
        )
    return [float(v) for v in value]


def _coco_id(value, what: str, where: str) -> int:
    """An image, annotation or category id: an integer (a string "1" is not the category 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: {what} {json.dumps(value)} is not an integer; expected an integer id")
    return value


def _inside(file_name: str, image_dir: Path, where: str) -> Path:
    """``image_dir / file_name``, refused when the name leads out of the split's image folder (an
    absolute path or ``../val2017/...``: training on another split's images)."""
    normal = os.path.normpath(file_name)
    if os.path.isabs(normal) or normal == ".." or normal.startswith(".." + os.sep):
        raise InputError(
            f"{where}: file_name {file_name!r} lies outside {image_dir}; expected a path inside the "
            "split's image folder"
        )
    return image_dir / normal


def _segmentation(segm, height: int, width: int, where: str) -> list | dict | None:
    """The usable part of a COCO segmentation, or None if it covers nothing.

    Polygons keep the rings of 3+ points (an even number of coordinates, as Detectron2 keeps them);
    an RLE (compressed: ``counts`` a string, or uncompressed: a list of run lengths) must be of the
    image's size and cover at least one pixel."""
    if segm is None or segm == []:
        return None
    if isinstance(segm, list):
        rings = [_number_list(ring, None, where) for ring in segm]
        rings = [r for r in rings if len(r) >= 6 and len(r) % 2 == 0]
        return rings or None
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = _number_list(segm["size"], 2, f"{where} segmentation size")
        if size != [float(height), float(width)]:
            raise InputError(
                f"{where}: RLE size {segm['size']} differs from the image's [height, width] "
                f"[{height}, {width}]"
            )
        try:
            rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
            area = float(mask_utils.area(rle))
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"{where}: segmentation is not a readable RLE ({exc})") from exc
        return segm if area > 0 else None
    raise InputError(
        f"{where}: segmentation {json.dumps(segm)[:60]} is neither polygons nor an RLE dict "
        "with 'counts' and 'size'"
    )


def _coco_image(img, index: int, ann_file: Path) -> tuple[int, str, int, int]:
    where = f"{ann_file}: images[{index}]"
    image_id, file_name = _coco_id(_field(img, "id", where), "id", where), _field(img, "file_name", where)
    width, height = _field(img, "width", where), _field(img, "height", where)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise InputError(f"{where}: width {width!r} and height {height!r} must be positive integers")
    if not isinstance(file_name, str) or not file_name:
        raise InputError(f"{where}: file_name {file_name!r} must be a non-empty string")
    return image_id, file_name, width, height


def read_coco(root: str | Path, split: str) -> DetectionSet:
    ann_file, image_dir = coco_files(root, split)
    if not ann_file.is_file():
        raise InputError(
            f"{ann_file} not found (expected COCO's annotations/instances_{{train,val}}2017.json)"
        )
    if not image_dir.is_dir():
        raise InputError(f"{image_dir} not found (expected COCO's image folder beside annotations/)")
    try:
        data = json.loads(ann_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{ann_file}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{ann_file}: holds a {type(data).__name__}, expected a COCO instances object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"{ann_file}: missing list {key!r} (expected a COCO instances file)")
    cats = sorted(
        data["categories"],
        key=lambda c: _coco_id(_field(c, "id", f"{ann_file}: categories"), "id", f"{ann_file}: categories"),
    )
    index = {c["id"]: i for i, c in enumerate(cats)}  # any ids (COCO's skip 12, 26, ...) -> 0..K-1
    images_by_id, entry_of = {}, {}
    for i, img in enumerate(data["images"]):
        image_id, file_name, width, height = _coco_image(img, i, ann_file)
        where = f"{ann_file}: images[{i}]"
        if image_id in images_by_id:
            raise InputError(
                f"{where}: id {image_id} is already images[{entry_of[image_id]}]'s; expected each image id once"
            )
        images_by_id[image_id] = ImageRecord(image_id, _inside(file_name, image_dir, where), width, height)
        entry_of[image_id] = i
    raw, annotation_at = [], {}
    for i, ann in enumerate(data["annotations"]):
        where = f"{ann_file}: annotation {ann.get('id', f'#{i}') if isinstance(ann, dict) else f'#{i}'}"
        if isinstance(ann, dict) and "id" in ann:
            ann_id = _coco_id(ann["id"], "id", where)
            if ann_id in annotation_at:
                raise InputError(
                    f"{ann_file}: annotations[{i}]: id {ann_id} is already annotations[{annotation_at[ann_id]}]'s; "
                    "expected each annotation id once"
                )
            annotation_at[ann_id] = i
        category = _coco_id(_field(ann, "category_id", where), "category_id", where)
        image_id = _coco_id(_field(ann, "image_id", where), "image_id", where)
        if category not in index:
            raise InputError(f"{where} has unknown category_id {category}")
        if image_id not in images_by_id:
            raise InputError(f"{where} refers to unknown image_id {image_id}")
        raw.append((where, ann, images_by_id[image_id], index[category]))
    has_masks = any(ann.get("segmentation") for _, ann, _, _ in raw)
    dropped = {"zero-area box": 0, "empty segmentation": 0}
    for where, ann, img, category in raw:
        x, y, w, h = _number_list(_field(ann, "bbox", where), 4, f"{where} bbox")
        problem = box_problem((x, y, x + w, y + h), img.width, img.height)
        if problem:
            raise InputError(
                f"{where} has bbox [{x:g}, {y:g}, {w:g}, {h:g}] on image {img.image_id}, but {problem}; "
                f"expected x, y >= 0, w, h >= 0, x + w <= {img.width} and y + h <= {img.height}"
            )
        segm = _segmentation(ann.get("segmentation"), img.height, img.width, where) if has_masks else None
        if w <= 0 or h <= 0:
            dropped["zero-area box"] += 1
        elif has_masks and segm is None:
            dropped["empty segmentation"] += 1
        else:
            img.annotations.append(
                Annotation(
                    (x, y, x + w, y + h), category, segmentation=segm, crowd=bool(ann.get("iscrowd", 0))
                )
            )
    images = [images_by_id[k] for k in sorted(images_by_id)]
    name = f"coco_2017_{'train' if split == 'train' else 'val'}"
    classes = [str(_field(c, "name", f"{ann_file}: category {c['id']}")) for c in cats]
    return DetectionSet(name, classes, images, has_masks, {k: v for k, v in dropped.items() if v})


def check_images(ds: DetectionSet) -> None:
    """Every image file of ``ds`` exists, is an image, and has the size its annotation states:
    checked before training starts, so a missing file fails now rather than when (if ever) it is drawn."""
    missing = [img.path for img in ds.images if not img.path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(
            f"{missing[0]} not found{more}: {ds.name} refers to it; expected every image file the "
            "annotations list"
        )
    for img in ds.images:
        try:
            with Image.open(img.path) as im:
                size = im.size
        except Image.DecompressionBombError as exc:
            raise too_large(img.path, exc) from exc
        except OSError as exc:
            raise InputError(f"{img.path}: not a readable image ({exc}); {ds.name} refers to it") from exc
        if size != (img.width, img.height):
            raise InputError(
                f"{img.path} is {size[0]}x{size[1]} pixels, but {ds.name} says {img.width}x{img.height}; "
                "expected the annotation's width and height"
            )


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
        raise InputError(
            f"{root}: {dataset} has {len(train.images)} train and {len(test.images)} test images; both must be > 0"
        )
    check_images(train)
    check_images(test)
    return train, test


def check_voc(root: str | Path) -> None:
    """Cheap layout check (no annotation parsing): VOC2007 test + trainval lists and their folders."""
    devkit = voc_devkit(root)
    year = devkit / "VOC2007"
    for sub in ("Annotations", "JPEGImages"):
        if not (year / sub).is_dir():
            raise InputError(
                f"{year / sub} not found (expected the official VOC layout VOCdevkit/VOC2007/{sub})"
            )
    for image_set in ("trainval", "test"):
        _voc_image_ids(year, image_set)


def check_coco(root: str | Path) -> None:
    """Cheap layout check: both instances files and both image folders exist."""
    for split in SPLITS:
        ann_file, image_dir = coco_files(root, split)
        if not ann_file.is_file():
            raise InputError(
                f"{ann_file} not found (expected COCO's annotations/instances_{{train,val}}2017.json)"
            )
        if not image_dir.is_dir():
            raise InputError(f"{image_dir} not found (expected COCO's image folder beside annotations/)")
