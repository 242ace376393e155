"""Every bad input we know of ends in one line ``error: ...`` naming the thing and what was expected,
exit code 2, and no partial output; docs/errors.md lists them with the messages, checked here.

Run with DISCO_BENCH_UPDATE_DOCS=1 to rewrite docs/errors.md from what the commands print.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from disco_bench.cli import main
from disco_bench.embedded import EmbeddedConfig, make_embedded
from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
from tests.downstream.conftest import save_random_encoder

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "errors.md"


@dataclass
class Case:
    what: str  # the bad input, as the docs list it
    argv: Callable[[Path], list[str]]  # builds the files it needs under the case folder; returns the command
    names: tuple[str, ...]  # what the message must name (after <tmp> substitution)
    untouched: bool = True  # the output folder must not even exist afterwards (else: no final.pt, no records)


def data(tmp: Path) -> Path:
    """A fresh copy of a tiny ImageFolder (3 classes, 8 train + 4 val images each, 16 px) to spoil."""
    shared = tmp.parent / "shared-data"
    if not shared.exists():
        make_embedded(shared, EmbeddedConfig(classes=3, train_per_class=8, val_per_class=4, image_size=16), progress=False)
    shutil.copytree(shared, tmp / "data")
    return tmp / "data"


def student(tmp: Path, **kwargs) -> Path:
    return save_random_encoder(tmp / "student.pt", **kwargs)  # resnet10t, head 32 -> 16


def pretrain(tmp: Path, *extra: str, data_dir: Path | None = None) -> list[str]:
    return ["pretrain", "--method", "moco", "--student", "resnet10t", "--data", str(data_dir or data(tmp)),
            "--epochs", "1", "--batch-size", "8", "--image-size", "16", "--out", str(tmp / "out"), "--quiet", *extra]


def distil(tmp: Path, teacher: Path, *sets: str) -> list[str]:
    return pretrain(tmp, "--method", "disco", "--teacher-ckpt", str(teacher), "--set", "queue_size=16", *sets)


def evaluate(tmp: Path, ckpt: Path, *extra: str, task: str = "linear") -> list[str]:
    return ["eval", task, "--ckpt", str(ckpt), "--data", str(data(tmp)), "--image-size", "16", "--out", str(tmp / "out"),
            "--quiet", "--protocol", "fast", *extra]


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


class PlantsMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def crafted(tmp: Path) -> Path:
    torch.save({"format": "disco-bench/1", "note": PlantsMarker(tmp / "marker")}, tmp / "crafted.pt")
    return tmp / "crafted.pt"


def truncated_checkpoint(tmp: Path) -> Path:
    raw = student(tmp).read_bytes()
    (tmp / "cut.pt").write_bytes(raw[: len(raw) // 2])
    return tmp / "cut.pt"


def suite_file(tmp: Path, step: str) -> list[str]:
    text = (
        "name: tiny\n"
        "datasets:\n"
        "  d: {kind: imagefolder, path: d, generate: {classes: 3, train_per_class: 8, val_per_class: 4, image_size: 16}}\n"
        "steps:\n" + step
    )
    (tmp / "suite.yaml").write_text(text)
    return ["run", "--suite", str(tmp / "suite.yaml"), "--out", str(tmp / "out"), "--quiet"]


def detection(tmp: Path, fmt: str) -> list[str]:
    root = tmp / "det"
    make_embedded_detection(root, EmbeddedDetectionConfig(train_images=2, val_images=2, image_size=32, max_objects=1))
    if fmt == "voc":
        xml = sorted((root / "VOCdevkit" / "VOC2007" / "Annotations").iterdir())[0]
        xml.write_text(re.sub(r"<xmax>\d+</xmax>", "<xmax>40</xmax>", xml.read_text(), count=1))
    else:
        ann = root / "annotations" / "instances_train2017.json"
        coco = json.loads(ann.read_text())
        coco["annotations"][0]["bbox"] = [-6.0, 2.0, 10.0, 10.0]
        ann.write_text(json.dumps(coco))
    return ["eval", "detection", "--ckpt", str(student(tmp)), "--data", str(root), "--out", str(tmp / "out"), "--quiet",
            "--set", f"det_dataset={fmt}", "det_backend=torchvision"]


CASES = [
    Case("missing dataset folder", lambda t: pretrain(t, data_dir=t / "missing"), ("<tmp>/missing/train", "expected")),
    Case("empty class folder", lambda t: pretrain(t, data_dir=empty_class(t)), ("<tmp>/data/train/", "expected")),
    Case("corrupt image (not an image at all)", lambda t: pretrain(t, data_dir=spoil_images(t, "corrupt")),
         ("<tmp>/data/train/", ".png", "expected"), untouched=False),
    Case("truncated image, read in a DataLoader worker (workers=2)",
         lambda t: pretrain(t, "--set", "workers=2", data_dir=spoil_images(t, "truncated")),
         ("<tmp>/data/train/", ".png", "expected"), untouched=False),
    Case("missing checkpoint file", lambda t: evaluate(t, t / "nope.pt"), ("<tmp>/nope.pt", "expected")),
    Case("truncated checkpoint file", lambda t: evaluate(t, truncated_checkpoint(t)), ("<tmp>/cut.pt", "expected")),
    Case("checkpoint that runs code when unpickled", lambda t: evaluate(t, crafted(t)), ("<tmp>/crafted.pt", "expected")),
    Case("teacher checkpoint of the wrong architecture", lambda t: distil(t, student(t), "dim=16") + ["--teacher", "resnet18"],
         ("<tmp>/student.pt", "resnet18")),
    Case("teacher checkpoint with a missing key", lambda t: distil(t, teacher_missing_keys(t), "dim=16"),
         ("<tmp>/teacher.pt", "conv1.0.weight")),
    Case("teacher embedding 16 wide, student dim 128", lambda t: distil(t, student(t)), ("<tmp>/student.pt", "dim=16")),
    Case("--resume from a last.pt of another configuration", foreign_last_checkpoint, ("<tmp>/out/last.pt",),
         untouched=False),
    Case("unknown model", lambda t: pretrain(t, "--student", "resnet_eighteen"), ("resnet_eighteen", "expected")),
    Case("unknown method", lambda t: pretrain(t, "--method", "mocco"), ("mocco", "moco")),
    Case("unknown task", lambda t: ["eval", "lineer", "--ckpt", "x.pt", "--data", "d"], ("lineer", "linear")),
    Case("unknown suite", lambda t: ["run", "--suite", "smok", "--out", str(t / "out")], ("smok", "smoke")),
    Case("suite YAML: typo'd step key", lambda t: suite_file(t, "  - {id: s, kind: pretrain, wiht: {method: moco}}\n"),
         ("wiht", "with")),
    Case("suite YAML: typo'd setting of a step", lambda t: suite_file(
        t, "  - {id: s, kind: pretrain, with: {method: moco, student: resnet10t, data: d, epochz: 1}}\n"),
         ("epochz", "epochs")),
    Case("VOC box outside the image", lambda t: detection(t, "voc"), ("<tmp>/det/VOCdevkit/VOC2007/Annotations/", "xmax=40")),
    Case("COCO box outside the image", lambda t: detection(t, "coco"), ("instances_train2017.json", "[-6, 2, 10, 10]")),
    Case("NaN loss in training (base_lr=1e30)", lambda t: pretrain(t, "--set", "base_lr=1e30", "save_every_steps=1",
                                                                    "queue_size=16"),
         ("step 2", "<tmp>/out/last.pt (step 1)"), untouched=False),
]


def run_case(case: Case, tmp: Path) -> tuple[int, str]:
    tmp.mkdir()
    argv = case.argv(tmp)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
    return code, err.getvalue()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    base = tmp_path_factory.mktemp("errors")
    found = {}
    for n, case in enumerate(CASES):
        code, err = run_case(case, base / f"case{n}")
        found[case.what] = (code, err.replace(str(base / f"case{n}"), "<tmp>"), base / f"case{n}")
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_is_one_line_naming_it_with_no_partial_output(case, outcomes):
    code, err, folder = outcomes[case.what]
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for name in case.names:
        assert name in err, f"{name!r} not in {err!r}"
    out = folder / "out"
    if case.untouched:
        assert not out.exists(), sorted(str(p) for p in out.rglob("*"))
    else:
        assert not (out / "final.pt").exists() and not (out / "results.jsonl").exists()
    assert not (folder / "marker").exists()


def shown(message: str) -> str:
    """The message as the table shows it: a long list of valid keys (every config field, which grows
    as fields are added) is abbreviated, so adding a field does not make the doc stale."""
    def abbreviate(m: re.Match) -> str:
        keys = m.group(1).split(", ")
        return m.group(0) if len(keys) <= 12 else f"valid keys: {', '.join(keys[:3])}, ... ({len(keys) // 10 * 10}+ in all)"
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
        "NaN loss) keeps only the `last.pt` of its completed steps, which `--resume` continues from.\n\n"
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
    assert DOC.exists() and DOC.read_text() == text, "docs/errors.md is stale: rerun with DISCO_BENCH_UPDATE_DOCS=1"
