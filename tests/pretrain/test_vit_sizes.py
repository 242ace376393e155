"""ViT students at the embedded suites' small image sizes: built with a dynamic image size, they
train at 32 px and their checkpoints load into a freshly built backbone for evaluation."""

from __future__ import annotations

import torch

from infra.checkpoint import load_state_strict
from pretrain.models import build_backbone


def test_a_vit_runs_at_small_and_full_size_with_the_same_state_dict_shapes():
    vit = build_backbone("vit_tiny_patch16_224", depth=1)
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 192)
    assert vit(torch.randn(1, 3, 224, 224)).shape == (1, 192)
    fresh = build_backbone("vit_tiny_patch16_224", depth=1)
    load_state_strict(fresh, vit.state_dict(), "vit checkpoint")  # no key or shape left behind
    x = torch.randn(2, 3, 48, 48)
    assert torch.equal(fresh.eval()(x), vit.eval()(x))
