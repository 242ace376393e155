"""Detection datasets as users bring them: COCO files written by pycocotools/PIL (every annotation
form the format allows), VOC difficult objects and layouts, and the checks that run before training."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
from downstream.detection.data import read_train_test
from downstream.detection.torchvision_backend import DetectionTrainData
from infra.errors import InputError
from tests.downstream.detection_helpers import FOREIGN_CATEGORY_IDS, write_foreign_coco


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign") / "coco"
    counts = write_foreign_coco(root, train_images=6, val_images=3)
    return root, counts


def test_every_coco_form_is_read_with_degenerate_annotations_dropped_and_counted(foreign):
    root, counts = foreign
    train, test = read_train_test("coco", root)
    raw = json.loads((root / "annotations/instances_train2017.json").read_text())
    # ids 11, 7, 3 in the file (neither contiguous nor sorted) -> classes 0, 1, 2 in id order
    assert train.classes == [f"shape{c}" for c in FOREIGN_CATEGORY_IDS] == test.classes
    assert len(train.images) == counts["train2017"]["images"] and train.has_masks
    forms = {
        (
            "polygon"
            if isinstance(a.segmentation, list)
            else "rle"
            if isinstance(a.segmentation["counts"], str)
            else "rle_uncompressed"
        )
        for img in train.images
        for a in img.annotations
    }
    assert forms == {"polygon", "rle", "rle_uncompressed"}
    assert train.dropped == {"zero-area box": 1, "empty segmentation": 1} and test.dropped == {}
    kept = sum(len(img.annotations) for img in train.images)
    assert kept == counts["train2017"]["annotations"] - 2
    assert [len(img.annotations) for img in train.images][-1] == 0  # the image without annotations is kept
    crowd = [a for img in train.images for a in img.annotations if a.crowd]
    assert len(crowd) == 1 and crowd[0].ignored and not crowd[0].difficult
    # every kept mask decodes to the pixels the file's bbox encloses (category mapping checked through the file)
    by_id = {a["id"]: a for a in raw["annotations"]}
    first = next(a for a in by_id.values() if not a["iscrowd"] and a["area"] > 0)
    img = next(i for i in train.images if i.image_id == first["image_id"])
    ann = img.annotations[0]
    assert train.classes[ann.category] == f"shape{first['category_id']}"
    assert ann.box == pytest.approx(
        (
            first["bbox"][0],
            first["bbox"][1],
            first["bbox"][0] + first["bbox"][2],
            first["bbox"][1] + first["bbox"][3],
        )
    )


def test_training_targets_leave_crowd_out_and_read_every_image_mode_as_rgb(foreign):
    root, _ = foreign
    train, _ = read_train_test("coco", root)
    modes = {Image.open(img.path).mode for img in train.images}
    assert modes == {"RGB", "L", "RGBA", "P"}
    data = DetectionTrainData(train, masks=True, seed=0)
    for i, img in enumerate(train.images):
        image, target = data[i]
        assert image.shape == (3, img.height, img.width) and image.dtype == torch.float32
        kept = [a for a in img.annotations if not a.crowd]
        assert target["labels"].tolist() == [a.category + 1 for a in kept]  # 0 is the background
        assert len(target["boxes"]) == len(target["masks"]) == len(kept)
        for mask, a in zip(target["masks"], kept):
            x1, y1, x2, y2 = a.box
            area = mask_utils.area(mask_utils.encode(np.asfortranarray(mask.numpy())))
            assert area > 0 and area <= (x2 - x1) * (y2 - y1) + 1e-6


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_a_missing_image_is_an_error_before_training_even_if_never_sampled(foreign, tmp_path):
    root = _copy(foreign[0], tmp_path / "coco")
    victim = sorted((root / "train2017").iterdir())[-1]  # the image without annotations: never a target
    victim.unlink()
    with pytest.raises(InputError, match=rf"{victim} not found: coco_2017_train refers to it"):
        read_train_test("coco", root)


def test_an_image_of_another_size_than_annotated_is_named(foreign, tmp_path):
    root = _copy(foreign[0], tmp_path / "coco")
    victim = sorted((root / "val2017").iterdir())[0]
    Image.new("RGB", (20, 24)).save(victim)
    with pytest.raises(InputError, match=rf"{victim} is 20x24 pixels, but coco_2017_val says 32x32"):
        read_train_test("coco", root)


@pytest.mark.parametrize(
    "spoil,message",
    [
        (lambda d: d["annotations"][0].pop("bbox"), r"annotation 1: missing key 'bbox'"),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, "x", 4]),
            r"annotation 1 bbox: \[1, 2, \"x\", 4\] is not a list of 4 numbers",
        ),
        (
            lambda d: d["annotations"][0].update(segmentation={"counts": "abc"}),
            r"annotation 1: segmentation .* is neither polygons",
        ),
        (
            lambda d: d["annotations"][0].update(segmentation={"counts": [1, 2], "size": [8, 8]}),
            r"RLE size \[8, 8\] differs",
        ),
        (lambda d: d["images"][0].pop("width"), r"images\[0\]: missing key 'width'"),
        (lambda d: d.update(annotations={}), r"missing list 'annotations'"),
    ],
)
def test_malformed_coco_entries_are_one_line_errors(foreign, tmp_path, spoil, message):
    root = _copy(foreign[0], tmp_path / "coco")
    path = root / "annotations/instances_train2017.json"
    data = json.loads(path.read_text())
    spoil(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        read_train_test("coco", root)


# --- VOC -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    cfg = EmbeddedDetectionConfig(
        classes=2, train_images=3, val_images=2, image_size=32, max_objects=2, min_object=0.3, max_object=0.4
    )
    return make_embedded_detection(tmp_path_factory.mktemp("voc") / "det", cfg)


def _mark_difficult(root, split_list: str):
    ann_dir = root / "VOCdevkit/VOC2007/Annotations"
    stem = (root / f"VOCdevkit/VOC2007/ImageSets/Main/{split_list}.txt").read_text().split()[0]
    xml = ann_dir / f"{stem}.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))


def test_voc_difficult_objects_are_trained_on_and_flagged_for_evaluation(voc_root, tmp_path, capsys):
    root = _copy(voc_root, tmp_path / "det")
    _mark_difficult(root, "trainval")
    train, test = read_train_test("voc", root)
    difficult = [a for a in train.images[0].annotations if a.difficult]
    assert len(difficult) == 1 and difficult[0].ignored and not difficult[0].crowd
    _, target = DetectionTrainData(train, masks=False, seed=0)[0]
    assert len(target["boxes"]) == len(train.images[0].annotations)  # the difficult one is a training target
    # the stated fallback: VOC2007 alone, said on stderr and kept in the set for the record
    assert train.name == "voc_2007_trainval" and "no VOC2012: trained on VOC2007 trainval only" in train.note
    assert "note: " in capsys.readouterr().err


def test_voc_2012_folder_without_its_list_is_an_error(voc_root, tmp_path):
    root = _copy(voc_root, tmp_path / "det")
    (root / "VOCdevkit/VOC2012/Annotations").mkdir(parents=True)
    with pytest.raises(InputError, match=r"VOC2012/ImageSets/Main/trainval.txt not found"):
        read_train_test("voc", root)


def test_voc_07_plus_12_trains_on_both_years(voc_root, tmp_path):
    root = _copy(voc_root, tmp_path / "det")
    shutil.copytree(root / "VOCdevkit/VOC2007", root / "VOCdevkit/VOC2012")
    train, test = read_train_test("voc", root)
    assert train.name == "voc_2007_trainval+2012_trainval" and not train.note
    assert len(train.images) == 6 and len(test.images) == 2


def test_a_voc_coordinate_that_is_no_number_is_named(voc_root, tmp_path):
    root = _copy(voc_root, tmp_path / "det")
    xml = sorted((root / "VOCdevkit/VOC2007/Annotations").iterdir())[0]
    text = xml.read_text()
    start = text.index("<xmin>") + len("<xmin>")
    xml.write_text(text[:start] + "left" + text[text.index("</xmin>") :])
    with pytest.raises(InputError, match=rf"{xml}: <xmin> is 'left', expected a number"):
        read_train_test("voc", root)


def _rename_objects(root, names: dict[str, str]) -> None:
    for xml in (root / "VOCdevkit/VOC2007/Annotations").iterdir():
        text = xml.read_text()
        for old, new in names.items():
            text = text.replace(f"<name>{old}</name>", f"<name>{new}</name>")
        xml.write_text(text)


def test_voc_official_names_beside_others_are_refused_unless_classes_txt_lists_them(voc_root, tmp_path):
    """A misspelt object ('persn') once became a class of its own; a custom set that uses an official
    name beside its own lists its classes in VOCdevkit/classes.txt."""
    root = _copy(voc_root, tmp_path / "det")
    found = sorted(
        {
            n
            for x in (root / "VOCdevkit/VOC2007/Annotations").iterdir()
            for n in re.findall(r"<name>([^<]+)</name>", x.read_text())
        }
    )
    assert len(found) == 2
    _rename_objects(root, {found[0]: "person", found[1]: "helmet"})
    with pytest.raises(
        InputError, match=r"object names 'helmet' are not Pascal VOC classes, while 1 others are"
    ):
        read_train_test("voc", root)
    (root / "VOCdevkit" / "classes.txt").write_text("helmet\nperson\n")
    train, test = read_train_test("voc", root)
    assert train.classes == test.classes == ["helmet", "person"]
    _rename_objects(root, {"helmet": "helmett"})  # outside the listed classes: refused, named
    with pytest.raises(
        InputError, match=r"object 'helmett' is not among the dataset's classes \(helmet, person\)"
    ):
        read_train_test("voc", root)
