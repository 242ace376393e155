"""The pre-training data is part of what a run records: ``protocol.data`` = name, fingerprint (sha256
over the sorted relative path and byte size of every train/ image) and absolute path, in the
checkpoint and so in every record evaluated from it; a CLI run and a suite run of the same data
record the same name and fingerprint; a resume on changed data is refused, naming it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from disco_bench.cli import main
from infra.checkpoint import safe_load
from pretrain.data import data_identity, fingerprint_images, image_folder
from tests.pretrain.helpers import pretrain_args


def test_the_fingerprint_is_the_sha256_of_sorted_relative_paths_and_sizes(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "y.png").write_bytes(b"12345")
    (tmp_path / "a" / "x.png").write_bytes(b"123")
    paths = [str(tmp_path / "b" / "y.png"), str(tmp_path / "a" / "x.png")]
    assert fingerprint_images(tmp_path, paths) == hashlib.sha256(b"a/x.png\t3\nb/y.png\t5\n").hexdigest()


def fingerprint(root: Path) -> str:
    return data_identity(root, [p for p, _ in image_folder(root / "train").samples])["fingerprint"]


@pytest.mark.parametrize("change", ["image added", "image removed", "image resized", "class renamed"])
def test_the_fingerprint_changes_with_the_images_but_not_with_the_folder_name(
    tiny_imagefolder, tmp_path, change
):
    data = Path(shutil.copytree(tiny_imagefolder, tmp_path / "copy"))
    assert fingerprint(data) == fingerprint(tiny_imagefolder)  # another place, the same images
    first_class = sorted((data / "train").iterdir())[0]
    image = sorted(first_class.iterdir())[0]
    if change == "image added":
        shutil.copy(image, first_class / "zz-extra.png")
    elif change == "image removed":
        image.unlink()
    elif change == "image resized":
        image.write_bytes(image.read_bytes() + b"\0")
    else:
        first_class.rename(first_class.with_name("renamed"))
    assert fingerprint(data) != fingerprint(tiny_imagefolder)


def test_a_cli_run_records_its_data_in_the_checkpoint(tiny_imagefolder, tmp_path):
    assert main(pretrain_args(tiny_imagefolder, tmp_path / "out", "--epochs", "1")) == 0
    protocol = safe_load(tmp_path / "out" / "final.pt")["protocol"]
    assert protocol["data"] == {
        "name": "embedded",
        "fingerprint": fingerprint(tiny_imagefolder),
        "path": str(Path(tiny_imagefolder).resolve()),
    }


def test_a_suite_run_and_a_cli_run_of_the_same_data_record_the_same_name_and_fingerprint(
    tiny_imagefolder, tmp_path
):
    (tmp_path / "suite.yaml").write_text(
        "name: tiny\n"
        "datasets:\n"
        "  embedded: {kind: imagefolder, generate: {classes: 3, train_per_class: 8, val_per_class: 4, "
        "image_size: 16}}\n"
        "steps:\n"
        "  - {id: s, kind: pretrain, with: {method: moco, student: test_resnet, data: embedded, epochs: 1,\n"
        "                                   batch_size: 4, image_size: 16, queue_size: 16, key_momentum: 0.9}}\n"
    )
    out = tmp_path / "out"
    assert main(["run", "--suite", str(tmp_path / "suite.yaml"), "--out", str(out), "--quiet"]) == 0
    assert main(pretrain_args(tiny_imagefolder, tmp_path / "cli", "--epochs", "1")) == 0
    suite = safe_load(out / "checkpoints" / "s" / "final.pt")["protocol"]["data"]
    cli = safe_load(tmp_path / "cli" / "final.pt")["protocol"]["data"]
    assert (suite["name"], suite["fingerprint"]) == (cli["name"], cli["fingerprint"])
    assert suite["path"] == str((out / "data" / "embedded").resolve())
    records = [r for r in (out / "results.jsonl").read_text().splitlines() if r]
    assert all('"fingerprint": "' + cli["fingerprint"] + '"' in r for r in records)


def test_a_finished_run_asked_again_reports_the_speed_it_measured(tiny_pretrain_cfg):
    """A suite step killed after final.pt but before its records runs again and gets the summary of
    the finished run: its images_per_s must be the measured one, not lost."""
    from pretrain.train import pretrain

    first = pretrain(tiny_pretrain_cfg, progress=False)
    again = pretrain(tiny_pretrain_cfg, progress=False)
    assert first["images_per_s"] and again["images_per_s"] == first["images_per_s"]
