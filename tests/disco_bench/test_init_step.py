"""The ``init`` step kind: a randomly initialised student saved as pre-training saves one, probed by
the same linear step as any checkpoint, and recognised by the claims as the random-init floor."""

from __future__ import annotations

import yaml

from disco_bench.leaderboard.table import tidy
from disco_bench.results import read_records
from disco_bench.runner import run_suite
from disco_bench.suite import load_suite
from pretrain.teachers import load_encoder

SUITE = {
    "name": "init-floor",
    "datasets": {
        "tiny": {
            "kind": "imagefolder",
            "path": "tiny",
            "generate": {
                "classes": 3,
                "train_per_class": 6,
                "val_per_class": 3,
                "image_size": 16,
                "seed": 4,
                "carve_val_per_class": 2,
            },
        },
    },  # fmt: skip
    "defaults": {"eval": {"protocol": "fast", "image_size": 16}},
    "steps": [
        {"id": "init", "kind": "init", "with": {"student": "resnet10t", "seed": 3, "hidden": 64}},
        {"id": "probe", "kind": "eval", "task": "linear", "with": {"ckpt": "@init", "data": "tiny"}},
    ],
}


def test_init_step_writes_a_loadable_random_student_and_its_probe_is_the_floor(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    out = tmp_path / "out"
    lines: list[str] = []
    assert run_suite(load_suite(str(path)), out, None, {}, progress=False, echo=lines.append) == 0, lines
    encoder, info = load_encoder(str(out / "checkpoints" / "init" / "final.pt"), None)
    assert info["arch"] == "resnet10t" and encoder.head.hidden == 64
    records = read_records(out / "results.jsonl")
    (made,) = [r for r in records if r["step"] == "init"]
    assert made["method"] == "random-init" and made["seed"] == 3 and made["task"] == "checkpoint"
    probe = [r for r in records if r["step"] == "probe" and r["metric"] == "top1"]
    assert len(probe) == 1 and probe[0]["checkpoint_sha256"] == made["checkpoint_sha256"]
    row = tidy(records).set_index("id").loc[probe[0]["id"]]
    assert (
        row.method == "random-init" and row.random_init and row.pretrained_on is None
    )  # the floor, in every context
    # the carved set: 4 training and 2 selection images per class (the carve's own test checks the bytes)
    assert len(list((out / "data" / "tiny" / "train").rglob("*.png"))) == 12
    assert len(list((out / "data" / "tiny" / "val").rglob("*.png"))) == 6
