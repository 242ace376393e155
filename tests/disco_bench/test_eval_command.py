"""``eval`` from the command line: the files it lists at the end, and ``--baseline random-init``."""

from __future__ import annotations

import json

from disco_bench.cli import main
from infra.checkpoint import file_sha256
from pretrain.teachers import load_encoder
from tests.pretrain.helpers import save_student


def records_of(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_eval_lists_every_file_it_wrote(tiny_imagefolder, tmp_path, capsys):
    ckpt = save_student(tmp_path / "student.pt")
    out = tmp_path / "out"
    argv = ["eval", "tsne", "--ckpt", ckpt, "--data", str(tiny_imagefolder), "--classes", "3"]
    assert main([*argv, "--per-class", "4", "--image-size", "16", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out.splitlines()
    wrote = sorted(line.removeprefix("wrote: ") for line in printed if line.startswith("wrote: "))
    on_disk = sorted(str(p) for p in (out / "eval" / "tsne").rglob("*") if p.is_file())
    assert (
        wrote == on_disk and any(w.endswith(".png") for w in wrote) and any(w.endswith(".csv") for w in wrote)
    )
    assert f"records: {out / 'results.jsonl'}" in printed


def test_baseline_random_init_adds_the_floor_of_the_same_architecture(tiny_imagefolder, tmp_path, capsys):
    ckpt = save_student(tmp_path / "student.pt", arch="resnet10t", seed=3)
    out = tmp_path / "out"
    argv = ["eval", "knn", "--ckpt", ckpt, "--data", str(tiny_imagefolder), "--image-size", "16"]
    assert main([*argv, "--baseline", "random-init", "--out", str(out), "--quiet"]) == 0
    floor = out / "eval" / "knn" / "random-init" / "resnet10t-seed0.pt"
    info = load_encoder(floor)[1]
    assert (info["arch"], info["method"]) == ("resnet10t", "random-init")
    records = records_of(out)
    # the student is itself a random init (seed 3); the floor is drawn with the eval's seed (0)
    assert {r["checkpoint_sha256"] for r in records} == {file_sha256(ckpt), file_sha256(floor)}
    assert {r["student"] for r in records} == {"resnet10t"}
    printed = capsys.readouterr().out
    assert "(random-init floor)" in printed and f"wrote: {floor}" in printed


def test_baseline_of_a_comparing_task_is_one_more_panel(tiny_imagefolder, tmp_path):
    ckpt = save_student(tmp_path / "student.pt")
    out = tmp_path / "out"
    argv = [
        "eval",
        "tsne",
        "--ckpt",
        ckpt,
        "--data",
        str(tiny_imagefolder),
        "--classes",
        "3",
        "--per-class",
        "4",
    ]
    assert main([*argv, "--image-size", "16", "--baseline", "random-init", "--out", str(out), "--quiet"]) == 0
    labels = {r["extra"]["ckpt"] for r in records_of(out)}
    assert len(labels) == 2 and any(label.startswith("random-init") for label in labels)


def test_baseline_of_an_unreadable_checkpoint_is_one_line(tiny_imagefolder, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    argv = ["eval", "knn", "--ckpt", str(bad), "--data", str(tiny_imagefolder), "--baseline", "random-init"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --baseline random-init: cannot read the architecture")
