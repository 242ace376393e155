"""Load the backbone of a student or teacher checkpoint for evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the leaderboard reads default_probe_lr without torch
    from torch import nn


def load_backbone(ckpt: str) -> tuple[nn.Module, dict]:
    """(backbone, info): the pretrained backbone (projection head dropped) and what the file says."""
    from pretrain.teachers import load_encoder

    encoder, info = load_encoder(ckpt)
    return encoder.backbone, info


def default_probe_lr(arch: str) -> float:
    """docs/method.md#linear: lr 30 for ResNets, 3 for EfficientNet/MobileNet (and others)."""
    return 30.0 if arch.startswith(("resnet", "wide_resnet", "resnext")) else 3.0
