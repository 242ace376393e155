"""Every bad input we know of ends in one line ``error: ...`` naming the thing and what was expected,
exit code 2, and no partial output; docs/errors.md lists them with the messages, checked here.

Run with DISCO_BENCH_UPDATE_DOCS=1 to rewrite docs/errors.md from what the commands print.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from paper_records import written_record

from disco_bench.cli import main
from disco_bench.embedded import EmbeddedConfig, make_embedded
from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
from disco_bench.results import REQUIRED_FIELDS
from tests.pretrain.helpers import PlantsMarker, bomb_png, pretrain_args, save_student

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "errors.md"


@dataclass
class Case:
    what: str  # the bad input, as the docs list it
    argv: Callable[[Path], list[str]]  # builds the files it needs under the case folder; returns the command
    names: tuple[str, ...]  # what the message must name (after <tmp> substitution)
    untouched: bool = True  # the output folder must not even exist afterwards (else: no final.pt, no records)
    also: Callable[[Path, str], bool] | None = (
        None  # a check of its own, given the case folder and the message
    )


def data(tmp: Path) -> Path:
    """A fresh copy of a tiny ImageFolder (3 classes, 8 train + 4 val images each, 16 px) to spoil."""
    shared = tmp.parent / "shared-data"
    if not shared.exists():
        make_embedded(
            shared,
            EmbeddedConfig(classes=3, train_per_class=8, val_per_class=4, image_size=16),
            progress=False,
        )
    shutil.copytree(shared, tmp / "data")
    return tmp / "data"


def student(tmp: Path, **kwargs) -> Path:
    return Path(save_student(tmp / "student.pt", **kwargs))  # resnet10t, head 32 -> 16


def pretrain(tmp: Path, *extra: str, data_dir: Path | None = None) -> list[str]:
    return pretrain_args(
        data_dir or data(tmp),
        tmp / "out",
        *extra,
        student="resnet10t",
        epochs=1,
        batch_size=8,
        sets=(),
        save_every=None,
    )


def distil(tmp: Path, teacher: Path, *sets: str) -> list[str]:
    return pretrain(tmp, "--method", "disco", "--teacher-ckpt", str(teacher), "--set", "queue_size=16", *sets)


def evaluate(
    tmp: Path, ckpt: Path, *extra: str, task: str = "linear", data_dir: Path | None = None
) -> list[str]:
    return [
        "eval",
        task,
        "--ckpt",
        str(ckpt),
        "--data",
        str(data_dir or data(tmp)),
        "--image-size",
        "16",
        "--out",
        str(tmp / "out"),
        "--quiet",
        "--protocol",
        "fast",
        *extra,
    ]


def spoil_images(tmp: Path, how: str) -> Path:
    """Every image of one training class cut short (truncated) or overwritten with bytes of no format (corrupt)."""
    root = data(tmp)
    for png in sorted((root / "train").iterdir())[0].iterdir():
        raw = png.read_bytes()
        png.write_bytes(raw[: len(raw) // 2] if how == "truncated" else b"not an image" * 8)
    return root


def empty_class(tmp: Path) -> Path:
    root = data(tmp)
    folder = sorted((root / "train").iterdir())[1]
    shutil.rmtree(folder)
    folder.mkdir()
    return root


def teacher_missing_keys(tmp: Path) -> Path:
    ckpt = torch.load(student(tmp), weights_only=True)
    del ckpt["encoder"]["backbone"]["conv1.0.weight"]
    torch.save(ckpt, tmp / "teacher.pt")
    return tmp / "teacher.pt"


def foreign_last_checkpoint(tmp: Path) -> list[str]:
    """OUT/last.pt left by a run of another configuration, then --resume."""
    assert main(pretrain(tmp, "--set", "queue_size=16", "max_steps=1", "save_every_steps=1")) == 0
    (tmp / "out" / "final.pt").unlink()
    shutil.copy(tmp / "out" / "last.pt", tmp / "last.pt")
    shutil.rmtree(tmp / "out")
    (tmp / "out").mkdir()
    shutil.copy(tmp / "last.pt", tmp / "out" / "last.pt")
    return pretrain(tmp, "--resume", "--set", "queue_size=32", data_dir=tmp / "data")


def final_copied_to_last(tmp: Path) -> list[str]:
    """OUT/final.pt copied over OUT/last.pt: a checkpoint without the training state a resume needs."""
    argv = pretrain(tmp, "--set", "queue_size=16", "max_steps=1")
    assert main(argv) == 0
    shutil.copy(tmp / "out" / "final.pt", tmp / "out" / "last.pt")
    return argv


def teacher_inside_out(tmp: Path) -> list[str]:
    """The teacher is OUT/final.pt of the very folder the student run writes (and --restart clears)."""
    assert main(pretrain(tmp, "--set", "queue_size=16", "max_steps=1")) == 0
    teacher = ["--method", "disco", "--teacher-ckpt", str(tmp / "out" / "final.pt")]
    return pretrain(tmp, *teacher, "--set", "queue_size=16", "--restart", data_dir=tmp / "data")


def crafted(tmp: Path) -> Path:
    torch.save({"format": "disco-bench/1", "note": PlantsMarker(tmp / "marker")}, tmp / "crafted.pt")
    return tmp / "crafted.pt"


def truncated_checkpoint(tmp: Path) -> Path:
    raw = student(tmp).read_bytes()
    (tmp / "cut.pt").write_bytes(raw[: len(raw) // 2])
    return tmp / "cut.pt"


def not_a_checkpoint(tmp: Path, text: str, name: str) -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def nan_weights(tmp: Path) -> Path:
    """A student whose weights diverged (what a run without the save-time check could have written)."""
    ckpt = torch.load(student(tmp), weights_only=True)
    ckpt["encoder"]["backbone"]["layer1.0.conv1.weight"].fill_(float("nan"))
    torch.save(ckpt, tmp / "nan.pt")
    return tmp / "nan.pt"


def unfinished(tmp: Path) -> Path:
    """A mid-run last.pt: what pretrain writes every epoch before the run is done."""
    ckpt = torch.load(student(tmp), weights_only=True)
    torch.save(ckpt | {"done": False, "step": 3, "epoch": 0}, tmp / "last.pt")
    return tmp / "last.pt"


def out_is_a_file(tmp: Path) -> Path:
    (tmp / "out").write_text("my notes")
    return tmp / "out"


def data_make(tmp: Path, *sets: str) -> list[str]:
    return [
        "data",
        "make",
        "--out",
        str(tmp / "out"),
        "--quiet",
        "--set",
        "classes=2",
        "train_per_class=1",
        "val_per_class=1",
        *sets,
    ]


def foreign_folder(tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("keep me")
    return data_make(tmp)


def broken_link(tmp: Path) -> Path:
    root = data(tmp)
    (sorted((root / "train").iterdir())[0] / "99999.png").symlink_to(tmp / "gone.png")
    return root


def record_value_abc(tmp: Path) -> list[str]:
    """A results.jsonl whose one record has the value "abc" (edited by hand, or written by another tool)."""
    (tmp / "out").mkdir()
    record = {f: "x" for f in REQUIRED_FIELDS} | {"id": "r1", "value": "abc", "seed": 0, "protocol": {}}
    record |= {"task": "linear", "metric": "top1"}
    (tmp / "out" / "results.jsonl").write_text(json.dumps(record) + "\n")
    return ["report", "--out", str(tmp / "out")]


def suite_file(tmp: Path, step: str) -> list[str]:
    text = (
        "name: tiny\n"
        "datasets:\n"
        "  d: {kind: imagefolder, path: d, generate: {classes: 3, train_per_class: 8, val_per_class: 4, image_size: 16}}\n"
        "steps:\n" + step
    )
    (tmp / "suite.yaml").write_text(text)
    return ["run", "--suite", str(tmp / "suite.yaml"), "--out", str(tmp / "out"), "--quiet"]


def detection_set(tmp: Path) -> Path:
    """The embedded detection set (2 + 2 scenes of 32 px, one object each) under ``tmp/det``."""
    root = tmp / "det"
    make_embedded_detection(
        root, EmbeddedDetectionConfig(train_images=2, val_images=2, image_size=32, max_objects=1)
    )
    return root


def detection_eval(tmp: Path, root: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "detection",
        "--ckpt",
        str(student(tmp)),
        "--data",
        str(root),
        "--out",
        str(tmp / "out"),
        "--quiet",
        *extra,
    ]


def detection(tmp: Path, fmt: str) -> list[str]:
    root = detection_set(tmp)
    if fmt == "voc":
        xml = sorted((root / "VOCdevkit" / "VOC2007" / "Annotations").iterdir())[0]
        xml.write_text(re.sub(r"<xmax>\d+</xmax>", "<xmax>40</xmax>", xml.read_text(), count=1))
    else:
        ann = root / "annotations" / "instances_train2017.json"
        coco = json.loads(ann.read_text())
        coco["annotations"][0]["bbox"] = [-6.0, 2.0, 10.0, 10.0]
        ann.write_text(json.dumps(coco))
    return detection_eval(tmp, root, "--set", f"det_dataset={fmt}", "det_backend=torchvision")


def detection_spoiled(tmp: Path, how: str, *extra: str) -> list[str]:
    """The embedded detection set in its COCO layout with one thing spoiled (issue 18: user data)."""
    root = detection_set(tmp)
    ann = root / "annotations" / "instances_train2017.json"
    coco = json.loads(ann.read_text())
    if how == "missing image":
        (root / "train2017" / coco["images"][-1]["file_name"]).unlink()
    elif how == "no bbox":
        del coco["annotations"][0]["bbox"]
    elif how == "rle size":
        coco["annotations"][0]["segmentation"] = {"size": [8, 8], "counts": "04"}
    ann.write_text(json.dumps(coco))
    return detection_eval(tmp, root, "--dataset", "coco", "--backend", "torchvision", *extra)


# --- records, data and inputs another tool or a user made (reliability) -----------------------------


def a_record(**fields) -> dict:
    """A valid linear top-1 record, as a run writes it, with ``fields`` changed."""
    return written_record() | fields  # edited after the run wrote it (its id stays the run's)


def report_of(tmp: Path, *records: dict | bytes) -> list[str]:
    (tmp / "out").mkdir()
    lines = [r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode() for r in records]
    (tmp / "out" / "results.jsonl").write_bytes(b"".join(lines))
    return ["report", "--out", str(tmp / "out")]


def changed_data_resume(tmp: Path) -> list[str]:
    """A finished run (its last.pt kept), then a class folder of its data deleted, then the same command."""
    argv = pretrain(tmp, "--set", "queue_size=16")
    assert main(argv) == 0
    shutil.rmtree(sorted((tmp / "data" / "train").iterdir())[-1])
    return argv


def replaced_generated_image(tmp: Path) -> list[str]:
    assert main(data_make(tmp)) == 0
    image = sorted((tmp / "out" / "train").rglob("*.png"))[0]
    image.write_bytes(b"the user's own image")
    return data_make(tmp, "seed=3")


def bomb_in(root: Path, split: str = "train") -> Path:
    bomb_png(sorted(sorted((root / split).iterdir())[0].iterdir())[0])
    return root


def bomb_detection(tmp: Path) -> list[str]:
    root = detection_set(tmp)
    coco = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    bomb_png(root / "train2017" / coco["images"][0]["file_name"])
    return detection_eval(tmp, root, "--dataset", "coco", "--backend", "torchvision")


def val_classes_differ(tmp: Path) -> Path:
    root = data(tmp)
    folder = sorted((root / "val").iterdir())[0]
    folder.rename(folder.with_name("zebra"))
    return root


def coco_spoiled(tmp: Path, how: str) -> list[str]:
    root = detection_set(tmp)
    ann = root / "annotations" / "instances_train2017.json"
    coco = json.loads(ann.read_text())
    if how == "duplicate image id":
        coco["images"][1]["id"] = coco["images"][0]["id"]
    elif how == "duplicate annotation id":
        coco["annotations"][1]["id"] = coco["annotations"][0]["id"]
    elif how == "file_name escaping":
        val = json.loads((root / "annotations" / "instances_val2017.json").read_text())
        coco["images"][0]["file_name"] = "../val2017/" + val["images"][0]["file_name"]
    elif how == "NaN bbox":
        coco["annotations"][0]["bbox"][2] = float("nan")
    elif how == "string category_id":
        assert 1 in {c["id"] for c in coco["categories"]}  # the string names a category that exists
        coco["annotations"][0]["category_id"] = "1"
    ann.write_text(json.dumps(coco))
    return detection_eval(tmp, root, "--dataset", "coco", "--backend", "torchvision")


def voc_unknown_object(tmp: Path) -> list[str]:
    """The embedded set's VOC layout with its class names replaced by VOC's, but one misspelt."""
    root = detection_set(tmp)
    names = iter(["person", "dog", "cat", "car", "bus", "cow", "horse", "sheep", "bird", "boat"])
    renamed: dict[str, str] = {}
    for n, xml in enumerate(sorted((root / "VOCdevkit" / "VOC2007" / "Annotations").iterdir())):
        text = xml.read_text()
        for name in re.findall(r"<name>([^<]+)</name>", text):
            renamed.setdefault(name, next(names))
        text = re.sub(r"<name>([^<]+)</name>", lambda m: f"<name>{renamed[m.group(1)]}</name>", text)
        if n == 0:
            text = re.sub(r"<name>[^<]+</name>", "<name>persn</name>", text, count=1)
        xml.write_text(text)
    return detection_eval(tmp, root, "--dataset", "voc", "--backend", "torchvision")


def timm_state_dict(tmp: Path) -> Path:
    """A timm network's plain state dict (no architecture named in it, not a torchvision ResNet)."""
    from pretrain.models import build_backbone

    torch.save(build_backbone("resnet10t").state_dict(), tmp / "timm.pth")
    return tmp / "timm.pth"


CASES = [
    Case(
        "missing dataset folder",
        lambda t: pretrain(t, data_dir=t / "missing"),
        ("<tmp>/missing/train", "expected"),
    ),
    Case(
        "empty class folder",
        lambda t: pretrain(t, data_dir=empty_class(t)),
        ("<tmp>/data/train/", "expected"),
    ),
    Case(
        "corrupt image (not an image at all)",
        lambda t: pretrain(t, data_dir=spoil_images(t, "corrupt")),
        ("<tmp>/data/train/", ".png", "expected"),
        untouched=False,
    ),
    Case(
        "truncated image, read in a DataLoader worker (workers=2)",
        lambda t: pretrain(t, "--set", "workers=2", data_dir=spoil_images(t, "truncated")),
        ("<tmp>/data/train/", ".png", "expected"),
        untouched=False,
    ),
    Case("missing checkpoint file", lambda t: evaluate(t, t / "nope.pt"), ("<tmp>/nope.pt", "expected")),
    Case(
        "truncated checkpoint file",
        lambda t: evaluate(t, truncated_checkpoint(t)),
        ("<tmp>/cut.pt", "expected"),
    ),
    Case(
        "checkpoint that runs code when unpickled",
        lambda t: evaluate(t, crafted(t)),
        ("<tmp>/crafted.pt", "expected"),
    ),
    Case(
        "teacher checkpoint of the wrong architecture",
        lambda t: distil(t, student(t), "dim=16") + ["--teacher", "resnet18"],
        ("<tmp>/student.pt", "resnet18"),
    ),
    Case(
        "teacher checkpoint with a missing key",
        lambda t: distil(t, teacher_missing_keys(t), "dim=16"),
        ("<tmp>/teacher.pt", "conv1.0.weight"),
    ),
    Case(
        "a teacher given to a method that takes none",
        lambda t: pretrain(t, "--method", "moco", "--teacher-ckpt", str(t / "teacher.pt")),
        ("--teacher-ckpt <tmp>/teacher.pt", "'moco' takes no teacher"),
    ),
    Case(
        "a teacher architecture given to a method that takes no teacher",
        lambda t: pretrain(t, "--method", "moco", "--teacher", "resnet50"),
        ("--teacher resnet50", "'moco' takes no teacher"),
    ),
    Case(
        "a setting the method does not read (lambda for MoCo-v2 alone)",
        lambda t: pretrain(t, "--method", "moco", "--set", "distill_weight=5"),
        ("--set distill_weight=5", "'moco' does not read distill_weight"),
    ),
    Case(
        "a detection setting given to eval linear",
        lambda t: evaluate(t, t / "x.pt", "--trials", "3"),
        ("--trials 3", "eval linear does not read det_trials"),
    ),
    Case(
        "a paper-protocol setting under the fast protocol",
        lambda t: evaluate(t, t / "x.pt", "--protocol", "fast", "--epochs", "3"),
        ("--epochs 3", "under protocol fast does not read epochs"),
    ),
    Case(
        "a KD setting without a KD teacher",
        lambda t: evaluate(t, t / "x.pt", "--set", "kd_alpha=0.3"),
        ("--set kd_alpha=0.3", "without a KD teacher"),
    ),
    Case(
        "teacher embedding 16 wide, student dim 128",
        lambda t: distil(t, student(t)),
        ("<tmp>/student.pt", "dim=16"),
    ),
    Case(
        "--resume from a last.pt of another configuration",
        foreign_last_checkpoint,
        ("<tmp>/out/last.pt",),
        untouched=False,
    ),
    Case(
        "unknown model",
        lambda t: pretrain(t, "--student", "resnet_eighteen"),
        ("resnet_eighteen", "expected"),
    ),
    Case("unknown method", lambda t: pretrain(t, "--method", "mocco"), ("mocco", "moco")),
    Case("unknown task", lambda t: ["eval", "lineer", "--ckpt", "x.pt", "--data", "d"], ("lineer", "linear")),
    Case("unknown suite", lambda t: ["run", "--suite", "smok", "--out", str(t / "out")], ("smok", "smoke")),
    Case(
        "run --dataset: a key the suite does not have",
        lambda t: [*suite_file(t, "  - {id: s, kind: init}\n"), "--dataset", f"e={t}"],
        ("--dataset e=", "no dataset 'e'", "its datasets: d"),
    ),
    Case(
        "run --dataset: not KEY=PATH",
        lambda t: [*suite_file(t, "  - {id: s, kind: init}\n"), "--dataset", "mydata"],
        ("--dataset mydata", "expected KEY=PATH"),
    ),
    Case(
        "run --reuse: a folder without a run's records",
        lambda t: [*suite_file(t, "  - {id: s, kind: init}\n"), "--reuse", str(t)],
        ("--reuse <tmp>", "holding results.jsonl"),
    ),
    Case(
        "suite YAML: typo'd step key",
        lambda t: suite_file(t, "  - {id: s, kind: pretrain, wiht: {method: moco}}\n"),
        ("wiht", "with"),
    ),
    Case(
        "suite YAML: typo'd setting of a step",
        lambda t: suite_file(
            t, "  - {id: s, kind: pretrain, with: {method: moco, student: resnet10t, data: d, epochz: 1}}\n"
        ),
        ("epochz", "epochs"),
    ),
    Case(
        "VOC box outside the image",
        lambda t: detection(t, "voc"),
        ("<tmp>/det/VOCdevkit/VOC2007/Annotations/", "xmax=40"),
    ),
    Case(
        "COCO box outside the image",
        lambda t: detection(t, "coco"),
        ("instances_train2017.json", "[-6, 2, 10, 10]"),
    ),
    Case(
        "COCO image file missing (checked before training, sampled or not)",
        lambda t: detection_spoiled(t, "missing image"),
        ("<tmp>/det/train2017/", "not found", "coco_2017_train"),
    ),
    Case(
        "COCO annotation without a bbox",
        lambda t: detection_spoiled(t, "no bbox"),
        ("instances_train2017.json", "annotation 1", "'bbox'"),
    ),
    Case(
        "COCO RLE mask of another size than its image",
        lambda t: detection_spoiled(t, "rle size"),
        ("instances_train2017.json", "RLE size [8, 8]", "[32, 32]"),
    ),
    Case(
        "detection loss not finite (det_lr=1e12, no clipping)",
        lambda t: detection_spoiled(
            t,
            "nothing",
            "--max-iter",
            "4",
            "--image-size",
            "32",
            "--set",
            "det_lr=1e12",
            "det_clip_grad=0",
            "det_batch_size=2",
        ),
        ("not finite at iteration", "loss_", "det_lr", "det_clip_grad"),
        untouched=False,
    ),
    Case(
        "--batch-size 0",
        lambda t: pretrain(t, "--batch-size", "0"),
        ("batch_size=0", "expected an integer >= 1"),
    ),
    Case(
        "--batch-size -4",
        lambda t: pretrain(t, "--batch-size", "-4"),
        ("batch_size=-4", "expected an integer >= 1"),
    ),
    Case(
        "--epochs 0 (would write an untrained final.pt)",
        lambda t: pretrain(t, "--epochs", "0"),
        ("epochs=0", "expected an integer >= 1"),
    ),
    Case(
        "--set with the same key twice",
        lambda t: pretrain(t, "--set", "seed=1", "--set", "seed=2"),
        ("seed", "1 and 2", "expected each key once"),
    ),
    Case(
        "unknown model, one character off",
        lambda t: pretrain(t, "--student", "efficientnet_bo"),
        ("efficientnet_bo", "did you mean: efficientnet_b0"),
    ),
    Case(
        "--out is an existing file (pretrain)",
        lambda t: pretrain(t) if out_is_a_file(t) else [],
        ("<tmp>/out",),
        untouched=False,
    ),
    Case(
        "--out is an existing file (run)",
        lambda t: ["run", "--suite", "smoke", "--out", str(out_is_a_file(t)), "--quiet"],
        ("<tmp>/out",),
        untouched=False,
    ),
    Case(
        "--out is an existing file (data make)",
        lambda t: data_make(t) if out_is_a_file(t) else [],
        ("--out <tmp>/out", "expected a folder"),
        untouched=False,
    ),
    Case(
        "data make into a folder it did not generate",
        foreign_folder,
        ("<tmp>/out", "not generated", "nothing"),
        untouched=False,
        also=lambda t, err: (
            nothing_beside(t / "out")
            and err
            == (
                "error: <tmp>/out exists and was not generated by disco-bench (no readable dataset.json); "
                "expected a new or empty folder, so nothing in it was changed\n"
            )
        ),
    ),
    Case(
        "data make: a class list past the last pattern",
        lambda t: [
            "data",
            "make",
            "--out",
            str(t / "out"),
            "--quiet",
            "--set",
            "classes=3",
            "class_offset=9",
        ],
        ("class_offset + classes = 12", "expected at most 11"),
    ),
    Case(
        "data make: a selection split that leaves no training image",
        lambda t: data_make(t, "carve_val_per_class=1"),
        ("carve_val_per_class=1", "expected fewer than train_per_class (1)"),
    ),
    Case(
        "run --set epochs=1 (no step-kind scope)",
        lambda t: ["run", "--suite", "smoke", "--out", str(t / "out"), "--set", "epochs=1"],
        ("--set epochs: a suite override needs a step-kind scope: pretrain., eval. (e.g. pretrain.epochs)",),
    ),
    Case(
        "eval --image-size 0",
        lambda t: evaluate(t, t / "x.pt", "--image-size", "0"),
        ("image_size=0", "expected"),
    ),
    Case(
        "text file given as a checkpoint",
        lambda t: evaluate(t, not_a_checkpoint(t, "hello\n", "notes.pt")),
        ("<tmp>/notes.pt", "not a torch checkpoint", "expected"),
    ),
    Case(
        "JSON file given as a checkpoint",
        lambda t: evaluate(t, not_a_checkpoint(t, '{"epoch": 3}', "ckpt.json")),
        ("<tmp>/ckpt.json", "not a torch checkpoint", "expected"),
    ),
    Case(
        "checkpoint with NaN weights",
        lambda t: evaluate(t, nan_weights(t)),
        ("<tmp>/nan.pt", "NaN/Inf", "layer1.0.conv1.weight", "expected finite"),
    ),
    Case(
        "teacher checkpoint with NaN weights",
        lambda t: distil(t, nan_weights(t), "dim=16"),
        ("<tmp>/nan.pt", "NaN/Inf"),
    ),
    Case(
        "unfinished checkpoint (a mid-run last.pt) without --allow-unfinished",
        lambda t: evaluate(t, unfinished(t)),
        ("<tmp>/last.pt", "unfinished", "--allow-unfinished"),
    ),
    Case(
        "image listed in a class folder is a broken link",
        lambda t: pretrain(t, data_dir=broken_link(t)),
        ("99999.png", "expected every image"),
    ),
    Case(
        'report of a record whose value is "abc"',
        record_value_abc,
        ("<tmp>/out/results.jsonl:1", "'value'", "expected a number"),
        untouched=False,
    ),
    Case(
        "NaN loss in training (base_lr=1e30)",
        lambda t: pretrain(t, "--set", "base_lr=1e30", "save_every_steps=1", "queue_size=16"),
        ("step 2", "<tmp>/out/last.pt (step 1)"),
        untouched=False,
    ),
    Case(
        "amp=bf16 on a CPU at 16 px (a strided convolution sees a 1x1 map)",
        lambda t: pretrain(t, "--set", "amp=bf16", "queue_size=16"),
        ("amp='bf16'", "16 px", "backbone.layer4.0.conv1", "amp='none'"),
    ),
    Case(
        "OUT/last.pt is a copy of final.pt (no training state)",
        final_copied_to_last,
        ("<tmp>/out/last.pt", "no training state", "--restart"),
    ),
    Case(
        "--teacher-ckpt is OUT/final.pt of the run's own --out (with --restart)",
        teacher_inside_out,
        ("--teacher-ckpt <tmp>/out/final.pt", "inside --out <tmp>/out", "outside the output folder"),
    ),
    Case(
        "report of a record whose top-1 is 250 (%)",
        lambda t: report_of(t, a_record(value=250.0)),
        ("<tmp>/out/results.jsonl:1", "'top1'", "[0, 100]"),
        untouched=False,
    ),
    Case(
        "report of a record whose value is NaN",
        lambda t: report_of(t, a_record(value=float("nan"))),
        ("<tmp>/out/results.jsonl:1", "'value' is nan", "finite"),
        untouched=False,
    ),
    Case(
        'report of a record of task "lineer"',
        lambda t: report_of(t, a_record(task="lineer")),
        ("<tmp>/out/results.jsonl:1", "'task'", "linear"),
        untouched=False,
    ),
    Case(
        "report of a record with an integer id",
        lambda t: report_of(t, a_record(id=7)),
        ("<tmp>/out/results.jsonl:1", "'id' is 7"),
        untouched=False,
    ),
    Case(
        "report of a record with a string protocol",
        lambda t: report_of(t, a_record(protocol="paper")),
        ("<tmp>/out/results.jsonl:1", "'protocol'", "an object"),
        untouched=False,
    ),
    Case(
        "report of two different records with one id",
        lambda t: report_of(t, a_record(), a_record(value=60.0)),
        ("<tmp>/out/results.jsonl:2", "line 1"),
        untouched=False,
    ),
    Case(
        "report of a binary results.jsonl",
        lambda t: report_of(t, b"\x89PNG\r\n\x1a\n\xff\xfe"),
        ("<tmp>/out/results.jsonl", "not a text file"),
        untouched=False,
    ),
    Case(
        "report --out of a folder that does not exist",
        lambda t: ["report", "--out", str(t / "out")],
        ("--out <tmp>/out", "not found"),
    ),
    Case(
        "resume after the data changed (a class folder deleted)",
        changed_data_resume,
        ("<tmp>/out/last.pt", "trained on other data", "<tmp>/data/train", "--restart"),
        untouched=False,
    ),
    Case(
        "run --set eval.ckpt= a file that is not there",
        lambda t: (
            suite_file(t, "  - {id: e, kind: eval, task: knn, with: {ckpt: x, data: d}}\n")
            + ["--set", f"eval.ckpt={t}/nope.pt"]
        ),
        ("--set eval.ckpt=<tmp>/nope.pt", "not found"),
    ),
    Case(
        "suite YAML: a step with one key twice",
        lambda t: suite_file(t, "  - {id: s, kind: pretrain, with: {epochs: 1, epochs: 2}}\n"),
        ("<tmp>/suite.yaml", "'epochs' appears twice"),
    ),
    Case(
        "data make over a generated set in which the user replaced an image",
        replaced_generated_image,
        ("<tmp>/out", "did not write", "train/"),
        also=lambda t, err: nothing_beside(t / "out"),
    ),
    Case(
        "image past PIL's decompression-bomb limit (pretrain)",
        lambda t: pretrain(t, data_dir=bomb_in(data(t))),
        ("<tmp>/data/train/", "too large to decode", "decompression-bomb"),
        untouched=False,
    ),
    Case(
        "image past PIL's decompression-bomb limit (eval)",
        lambda t: evaluate(t, student(t), data_dir=bomb_in(data(t), "val")),
        ("<tmp>/data/val/", "too large to decode"),
        untouched=False,
    ),
    Case(
        "image past PIL's decompression-bomb limit (detection)",
        bomb_detection,
        ("<tmp>/det/train2017/", "too large to decode"),
        untouched=False,
    ),
    Case(
        "--set seed=9223372036854775807",
        lambda t: pretrain(t, "--set", "seed=9223372036854775807"),
        ("seed=9223372036854775807", "<= 4294967295"),
    ),
    Case("--image-size 1", lambda t: pretrain(t, "--image-size", "1"), ("image_size=1", ">= 2")),
    Case("a folder as --ckpt", lambda t: evaluate(t, t), ("<tmp>", "is a folder")),
    Case(
        "/dev/null as --ckpt", lambda t: evaluate(t, Path("/dev/null")), ("/dev/null", "not a regular file")
    ),
    Case(
        "class folders differ between train and val",
        lambda t: evaluate(t, student(t), data_dir=val_classes_differ(t)),
        ("only in train: checker", "only in val: zebra"),
        untouched=False,
    ),
    Case(
        "--out inside --data",
        lambda t: pretrain_args(data(t), t / "data" / "train" / "run", student="resnet10t", epochs=1),
        ("--out <tmp>/data/train/run", "inside --data <tmp>/data"),
    ),
    Case(
        "COCO: two images with one id",
        lambda t: coco_spoiled(t, "duplicate image id"),
        ("instances_train2017.json: images[1]", "expected each image id once"),
    ),
    Case(
        "COCO: two annotations with one id",
        lambda t: coco_spoiled(t, "duplicate annotation id"),
        ("instances_train2017.json: annotations[1]", "expected each annotation id once"),
    ),
    Case(
        "COCO: file_name ../val2017/... (a validation image in training)",
        lambda t: coco_spoiled(t, "file_name escaping"),
        ("'../val2017/", "lies outside <tmp>/det/train2017"),
    ),
    Case(
        "COCO: a NaN in a bbox",
        lambda t: coco_spoiled(t, "NaN bbox"),
        ("annotation 1 bbox", "NaN"),
    ),
    Case(
        'COCO: category_id "1" (a string)',
        lambda t: coco_spoiled(t, "string category_id"),
        ('category_id "1"', "not an integer"),
    ),
    Case(
        "VOC: an object named outside the class list (persn)",
        voc_unknown_object,
        ("'persn'", "did you mean 'persn' -> 'person'", "classes.txt"),
    ),
    Case(
        "a timm state dict (no architecture named) for eval",
        lambda t: evaluate(t, timm_state_dict(t)),
        ("<tmp>/timm.pth", "pretrain --teacher ARCH", "'arch': TIMM_NAME"),
    ),
]


def nothing_beside(folder: Path) -> bool:
    """Nothing left beside ``folder`` in its case folder: no partial set, lock or old copy."""
    return [p.name for p in folder.parent.iterdir() if p != folder] == []


def contents(out: Path) -> dict[str, bytes] | None:
    """What the user had at --out before the command (None: nothing), to check it is left as it was."""
    if out.is_file():
        return {"": out.read_bytes()}
    return (
        {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        if out.exists()
        else None
    )


def run_case(case: Case, tmp: Path) -> tuple[int, str, dict[str, bytes] | None]:
    tmp.mkdir()
    argv = case.argv(tmp)
    before = contents(tmp / "out")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
    return code, err.getvalue(), before


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str, Path, dict[str, bytes] | None]]:
    base = tmp_path_factory.mktemp("errors")
    found = {}
    for n, case in enumerate(CASES):
        code, err, before = run_case(case, base / f"case{n}")
        found[case.what] = (code, err.replace(str(base / f"case{n}"), "<tmp>"), base / f"case{n}", before)
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_is_one_line_naming_it_with_no_partial_output(case, outcomes):
    code, err, folder, before = outcomes[case.what]
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "weights_only=False" not in err and ": ;" not in err
    for name in case.names:
        assert name in err, f"{name!r} not in {err!r}"
    out = folder / "out"
    if before is not None:  # the user's --out (a folder or a file) is left exactly as it was
        assert contents(out) == before
    elif case.untouched:
        assert not out.exists(), sorted(str(p) for p in out.rglob("*"))
    else:
        assert not (out / "final.pt").exists() and not (out / "results.jsonl").exists()
    assert not (folder / "marker").exists()
    assert case.also is None or case.also(folder, err), err


def shown(message: str) -> str:
    """The message as the table shows it: a long list of valid keys (every config field, which grows
    as fields are added) is abbreviated, so adding a field does not make the doc stale."""

    def abbreviate(m: re.Match) -> str:
        keys = m.group(1).split(", ")
        return (
            m.group(0)
            if len(keys) <= 12
            else f"valid keys: {', '.join(keys[:3])}, ... ({len(keys) // 10 * 10}+ in all)"
        )

    return re.sub(r"valid keys: ([^;]+)$", abbreviate, message.strip()).replace("|", "&#124;")


def render(outcomes) -> str:
    rows = "".join(f"| {what} | `{shown(outcomes[what][1])}` |\n" for what in (c.what for c in CASES))
    return (
        "# Bad inputs and the errors they give\n\n"
        "Generated by `tests/disco_bench/test_errors.py` (which fails when this file differs from what the\n"
        "commands print; `DISCO_BENCH_UPDATE_DOCS=1 pytest tests/disco_bench/test_errors.py` rewrites it).\n"
        "`<tmp>` stands for the folder the test ran in.\n\n"
        "Every case exits with code 2 after one line on stderr, and leaves no partial output: no\n"
        "`final.pt`, no record in `results.jsonl`, and, where the input is checked before any work\n"
        "starts, no output folder at all. A run stopped part-way (a corrupt image met in training, a\n"
        "NaN loss) keeps only the `last.pt` of its completed steps, which a rerun (the default) continues from.\n\n"
        "Policies:\n\n"
        "- Corrupt or truncated image: **stop** at the first one, naming the file (skipping would change\n"
        "  the dataset a number is measured on). The same holds with DataLoader workers (`workers>0`):\n"
        "  the worker's error reaches the command line as the same one line. Truncated files are never\n"
        "  padded (PIL's `LOAD_TRUNCATED_IMAGES` stays off).\n"
        "- Detection boxes may overshoot the image by at most 1 pixel (rounding in COCO's float boxes);\n"
        "  anything further stops the read, naming the annotation.\n"
        "- NaN/Inf loss: stop, naming the step (counted from 1, as in `log.csv`) and the last checkpoint,\n"
        "  which never holds NaN/Inf weights (a save checks them first and refuses).\n"
        "- Checkpoints load with `torch.load(weights_only=True)` only; a file asking to build any\n"
        "  Python object other than tensors and plain containers is refused, and nothing in it runs.\n"
        "- Config values: every field of the typed configs (`PretrainConfig`, `EvalConfig`, the `data make`\n"
        "  config) has one rule (type, then range or choices) checked whenever the config is built, so a\n"
        "  flag, a `--set`, a suite step and Python code get the same message naming the field, the value\n"
        "  and what is expected (`tests/disco_bench/test_field_validation.py` tries a bad value of every\n"
        "  field on every command; `--set queue_size=0` gives `error: --set queue_size=0: expected an\n"
        "  integer >= 1`; a flag gives it without `--set`). `--set` may be repeated (the pairs merge; one\n"
        "  key twice is an error); in a suite (`run`, `step`) every key names its step kind (`pretrain.`,\n"
        "  `eval.`).\n"
        "- Settings that do not apply: each field declares which methods (or tasks, and probe protocols)\n"
        "  read it; a flag, `--set` or suite step `with` giving one the method, task or protocol does not\n"
        "  read is refused, naming what reads it. A suite's `defaults` and a suite-wide `--set` give a\n"
        "  setting to every step of a kind: a step that does not read it is built and recorded without it.\n"
        "- Checkpoints: a file that is not a torch checkpoint, weights holding NaN/Inf, or a mid-run\n"
        "  `last.pt` are refused when loaded; `eval --allow-unfinished` evaluates the last, and its\n"
        "  records carry `protocol.pretrain.unfinished` (step and epoch).\n"
        "- `data make` builds beside the target (in `.SET.XXXX.disco-bench-partial`, marked inside; only\n"
        "  such folders are ever swept) and swaps in only a complete set; it replaces only a set it\n"
        "  generated that holds nothing else (its manifest keeps each file's sha256, so an image the user\n"
        "  replaced counts as theirs), and refuses any other folder without touching it. Two at once on\n"
        "  one set: the second is refused (`.SET.disco-bench.lock` beside it), as are two `pretrain`,\n"
        "  `eval`, `run` or `step` on one `--out`.\n"
        "- Records: `report`, and every append to `results.jsonl`, checks each record: field types, a\n"
        "  known task, a finite value in its metric's range (accuracies and AP in [0, 100], MI bits >= 0,\n"
        "  silhouette in [-1, 1]). A line repeated exactly counts once; two different records with one id\n"
        "  are an error.\n"
        "- ImageFolder: images in subfolders of a class folder belong to the class; a file of a type not\n"
        "  read (an `anim.gif`, a `notes.txt`) is left out with one `warning:` line counting them.\n"
        "- Pre-training data: every checkpoint, and so every record, holds `protocol.data` (name,\n"
        "  fingerprint: sha256 over the sorted relative path and byte size of the train/ images, path); a\n"
        "  resume on a folder whose images changed is refused.\n"
        "- VOC class names: the 20 official ones, or a custom set's own (none of the 20, or listed in\n"
        "  `VOCdevkit/classes.txt`); official names beside others are refused (a misspelt `persn`).\n"
        "- Disk full or read-only output folder: every file is written to a temp sibling and renamed\n"
        "  into place, so the previous checkpoint or `results.jsonl` survives; the error is\n"
        "  `cannot write PATH: No space left on device; the previous file is unchanged` (or\n"
        "  `Read-only file system`).\n\n"
        "| bad input | message |\n|---|---|\n" + rows
    )


def test_docs_errors_md_lists_every_case_with_its_message(outcomes):
    text = render(outcomes)
    if os.environ.get("DISCO_BENCH_UPDATE_DOCS") == "1":
        DOC.write_text(text)
    assert DOC.exists() and DOC.read_text() == text, (
        "docs/errors.md is stale: rerun with DISCO_BENCH_UPDATE_DOCS=1"
    )
