"""Records written by hand (not by the project) the way a paper-setting run records them: DisCo and
MoCo-v2 students distilled / pre-trained 200 epochs on 8 processes x 32 images, probed with the
paper's linear protocol. Tests vary one field at a time."""

from __future__ import annotations

import copy

RUN_8X32 = {
    "processes": 8,
    "per_process_batch": 32,
    "accelerator": "cuda NVIDIA A100-SXM4-40GB",
    "threads": 8,
    "versions": {"python": "3.11.9", "torch": "2.4.0", "torchvision": "0.19.0", "timm": "1.0.9"},
}
MOCO_PRETRAIN = {
    "method": "moco",
    "student": "resnet18",
    "epochs": 200,
    "batch_size": 256,
    "image_size": 224,
    "base_lr": 0.03,
    "sgd_momentum": 0.9,
    "weight_decay": 0.0001,
    "schedule": "cosine",
    "seed": 0,
    "amp": "none",
    "channels_last": False,
    "aug_impl": "torchvision",
    "max_steps": 0,
    "dim": 128,
    "hidden": 512,
    "queue_size": 65536,
    "key_momentum": 0.999,
    "temperature": 0.2,
    "shuffle_bn_splits": 2,
    "run": RUN_8X32,
}
MOCO_TEACHER_FILE = {
    "arch": "resnet50",
    "format": "moco",
    "sha256": "0f6c6e0b2b1e",
    "head": {
        "in_dim": 2048,
        "hidden": 2048,
        "out_dim": 128,
        "batchnorm": False,
        "layers": 2,
        "activation": "relu",
    },
}
# a distiller also records its teacher's settings and the DisCo term's (MoCo-v2 alone reads neither)
DISCO_PRETRAIN = MOCO_PRETRAIN | {
    "method": "disco",
    "hidden": 2048,
    "teacher": None,
    "teacher_ckpt": MOCO_TEACHER_FILE,
    "teacher_amp": "none",
    "teacher_channels_last": False,
    "distill_weight": 1.0,
    "distill_reduction": "sum",
    "teacher_bn": "eval",
}
LINEAR_PAPER = {
    "protocol": "paper",
    "epochs": 100,
    "image_size": 224,
    "batch_size": 256,
    "lr": 30.0,
    "lr_milestones": [0.6, 0.8],
    "weight_decay": 0.0,
    "seed": 0,
    "solver": "sgd",
    "head_init_std": 0.01,
    "milestones_epochs": [60, 80],
    "train_images": 1281167,
    "device": "cuda",
    "world_size": 8,
    "amp": "bfloat16",
    "channels_last": True,
}
RUN_EVAL = RUN_8X32 | {"per_process_batch": 32}


def linear_record(
    method: str = "disco",
    value: float = 61.0,
    seed: int = 0,
    student: str = "resnet18",
    metric: str = "top1",
    rid: str = "r",
) -> dict:
    pretrain = copy.deepcopy(DISCO_PRETRAIN if method == "disco" else MOCO_PRETRAIN) | {
        "student": student,
        "seed": seed,
    }
    return {
        "id": f"{rid}{seed}",
        "task": "linear",
        "metric": metric,
        "value": value,
        "student": student,
        "teacher": "resnet50" if method == "disco" else None,
        "method": method,
        "dataset": "imagenet",
        "split": "val",
        "seed": seed,
        "protocol": {"eval": copy.deepcopy(LINEAR_PAPER), "pretrain": pretrain},
        "config_hash": "cfg",
        "checkpoint_sha256": f"sha{seed}",
        "code_version": "0.1.0",
        "started_at": "t0",
        "finished_at": "t1",
        "hardware": "hw",
        "step": f"linear-{method}-r50-{student}",
        "label": None,
        "extra": None,
        "artifacts": None,
        "run": copy.deepcopy(RUN_EVAL),
    }


def written_record(metric: str = "top1", value: float = 51.5, task: str = "linear", **fields) -> dict:
    """A valid record as ``disco_bench.results.make_records`` writes it (a small linear probe of a
    MoCo-v2 ResNet-18 by default), with ``fields`` changed: the raw material of record-reading tests."""
    from disco_bench.results import make_records
    from downstream.result import Measurement, TaskResult

    result = TaskResult(task, [Measurement(metric, value, "embedded")], {"lr": 30.0})
    (rec,) = make_records(
        result,
        student="resnet18",
        teacher=None,
        method="moco",
        seed=0,
        protocol={"lr": 30.0},
        config_hash="abc123",
        checkpoint_sha256=None,
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:00:00+00:00",
        step="linear-moco",
        run={"processes": 1},
    )
    return rec | fields
