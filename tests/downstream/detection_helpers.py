"""Helpers for the detection tests: random-init student checkpoints and the detectron2 requirement."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from pretrain.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save
from pretrain.models import Encoder, ProjectionHead, build_backbone, feature_dim
from pretrain.train import export_encoder


def save_student(path, arch: str, seed: int = 0):
    """A random-init encoder exported exactly as pre-training exports its student."""
    torch.manual_seed(seed)
    backbone = build_backbone(arch)
    encoder = Encoder(backbone, ProjectionHead(feature_dim(backbone), 32, 16))
    payload = {"format": CHECKPOINT_FORMAT, "kind": "pretrain", "done": True, "config": {"method": "random-init"},
               "protocol": {}, "encoder": export_encoder(SimpleNamespace(student=encoder), SimpleNamespace(student=arch))}
    return str(atomic_torch_save(payload, path))


def require_detectron2():
    """Skip without detectron2 on a developer machine; in CI (CI set) its absence is a failure, since
    .ci/run installs it with scripts/install_detectron2.sh."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("detectron2 is not importable: CI must run scripts/install_detectron2.sh first")
        pytest.skip("detectron2 is not installed (run scripts/install_detectron2.sh)")
