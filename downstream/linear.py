"""Linear evaluation on an ImageFolder dataset (ImageNet protocol, METHOD.md section 5)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms import v2

from downstream.backbone import default_probe_lr, load_backbone
from downstream.config import EvalConfig
from downstream.probe import ProbeData, run_probe
from downstream.result import Measurement, TaskResult
from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from pretrain.data import image_folder


def train_transform(image_size: int) -> v2.Compose:
    return v2.Compose([
        v2.RandomResizedCrop(image_size, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def image_folder_probe_data(root: str, image_size: int) -> ProbeData:
    root = Path(root)
    train_aug = image_folder(root / "train", train_transform(image_size))
    train_plain = image_folder(root / "train", eval_transform(image_size))
    val = image_folder(root / "val", eval_transform(image_size))
    if train_aug.classes != val.classes:
        from pretrain.errors import InputError

        raise InputError(f"class folders differ between {root / 'train'} and {root / 'val'}")
    return ProbeData(train_aug, train_plain, val, len(train_aug.classes))


def run(cfg: EvalConfig, progress: bool = True) -> TaskResult:
    backbone, info = load_backbone(cfg.ckpt)
    data = image_folder_probe_data(cfg.data, cfg.image_size)
    lr = cfg.lr if cfg.lr is not None else default_probe_lr(info["arch"])
    acc, details = run_probe(backbone, data, cfg, lr, progress)
    dataset = Path(cfg.data).name
    return TaskResult(
        task="linear",
        measurements=[Measurement("top1", acc[1], dataset), Measurement("top5", acc[5], dataset)],
        protocol=cfg.protocol_dict() | details,
        source=info,
    )
