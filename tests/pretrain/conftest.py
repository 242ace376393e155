"""Fixtures of the pre-training tests."""

from __future__ import annotations

import pytest
import torch

from tests.pretrain.helpers import TEACHER_QUEUE_VALUE
from tests.pretrain.layouts import moco_checkpoint


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory) -> str:
    """A main_moco.py checkpoint of a resnet10t teacher (hidden 64, 128-d) with its own queue, every
    entry TEACHER_QUEUE_VALUE."""
    ckpt, _, _ = moco_checkpoint("resnet10t", hidden=64, out_dim=128, queue_value=TEACHER_QUEUE_VALUE)
    path = tmp_path_factory.mktemp("teacher") / "moco_teacher.pth.tar"
    torch.save(ckpt, path)
    return str(path)
