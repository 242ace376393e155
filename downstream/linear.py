"""Linear evaluation on an ImageFolder dataset (ImageNet protocol, docs/method.md#linear)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms import v2

from downstream.backbone import default_probe_lr, load_backbone
from downstream.config import EvalConfig
from downstream.probe import ProbeData, linear_probe
from downstream.result import DEGENERATE, Measurement, TaskResult
from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from pretrain.data import check_same_classes, image_folder


def train_transform(image_size: int) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def image_folder_probe_data(root: str, image_size: int) -> ProbeData:
    root = Path(root)
    train_aug = image_folder(root / "train", train_transform(image_size))
    train_plain = image_folder(root / "train", eval_transform(image_size))
    val = image_folder(root / "val", eval_transform(image_size))
    check_same_classes(train_aug.classes, val.classes, root / "train", root / "val")
    return ProbeData(train_aug, train_plain, val, len(train_aug.classes))


def topk_result(task: str, acc: dict[int, float], dataset: str, protocol: dict, source: dict) -> TaskResult:
    """The TaskResult of a classification probe: top-1 and top-5 on the validation split. The probe's
    degenerate-state sentences (``protocol['degenerate']``) go to the result, not the protocol: they
    describe this run, not a setting to compare on."""
    protocol = dict(protocol)
    flags = protocol.pop(DEGENERATE, [])
    return TaskResult(
        task=task,
        measurements=[Measurement("top1", acc[1], dataset), Measurement("top5", acc[5], dataset)],
        protocol=protocol,
        source=source,
        degenerate=flags,
    )


def evaluate(cfg: EvalConfig, progress: bool = True) -> TaskResult:
    backbone, info = load_backbone(cfg.ckpt)
    data = image_folder_probe_data(cfg.data, cfg.image_size)
    lr = cfg.lr if cfg.lr is not None else default_probe_lr(info["arch"])
    acc, details = linear_probe(backbone, data, cfg, lr, progress)
    return topk_result("linear", acc, Path(cfg.data).name, cfg.protocol_dict("linear") | details, info)
