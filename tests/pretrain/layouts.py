"""Writers of teacher checkpoints in the exact key layouts of the repositories that publish them
(docs/method.md#teacher-checkpoints), built from a backbone's torchvision/timm-layout state dict."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from infra.checkpoint import CHECKPOINT_FORMAT
from pretrain.models import Encoder, ProjectionHead, build_backbone, feature_dim


def prefixed(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter and BN running stat non-default values, so a load that skipped any
    key would show up as a numeric difference."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=gen)
                tensor.copy_(noise + 0.5 if "running_var" in name else (noise - 0.5) * 0.2)
    return module


def moco_head(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


def swav_head(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
    )


def dino_mlp(in_dim: int, hidden: int, bottleneck: int, use_bn: bool) -> nn.Sequential:
    """DINOHead.mlp with nlayers=3: Linear-[BN]-GELU-Linear-[BN]-GELU-Linear."""
    bn = (lambda: [nn.BatchNorm1d(hidden)]) if use_bn else (lambda: [])
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        *bn(),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        *bn(),
        nn.GELU(),
        nn.Linear(hidden, bottleneck),
    )


def moco_checkpoint(
    arch: str, hidden: int, out_dim: int, seed: int = 0, queue_value: float = 1.0
) -> tuple[dict, nn.Module, nn.Module]:
    """main_moco.py's checkpoint: {'epoch', 'arch', 'state_dict', 'optimizer'} with module.encoder_q/_k,
    fc.0/fc.2 MLP, queue and queue_ptr. Returns (checkpoint, backbone, head)."""
    backbone = randomised(build_backbone(arch), seed)
    head = randomised(moco_head(feature_dim(backbone), hidden, out_dim), seed + 1)
    q = backbone.state_dict() | prefixed(head.state_dict(), "fc.")
    k = {name: value + 1.0 for name, value in q.items()}
    state = prefixed(q, "module.encoder_q.") | prefixed(k, "module.encoder_k.")
    state["module.queue"] = torch.full((out_dim, 16), queue_value)  # MoCo stores the queue as (dim, K)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    ckpt = {"epoch": 200, "arch": arch, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}
    return ckpt, backbone, head


def swav_state(
    arch: str, hidden: int, out_dim: int, prototypes: int = 10, seed: int = 0
) -> tuple[dict, nn.Module, nn.Module]:
    """SwAV's released file: a raw state dict, module.-prefixed, projection_head (Linear-BN-ReLU-Linear), prototypes."""
    backbone = randomised(build_backbone(arch), seed)
    head = randomised(swav_head(feature_dim(backbone), hidden, out_dim), seed + 1)
    state = backbone.state_dict() | prefixed(head.state_dict(), "projection_head.")
    state["prototypes.weight"] = torch.randn(prototypes, out_dim)
    return prefixed(state, "module."), backbone, head


def dino_checkpoint(
    arch: str, hidden: int, bottleneck: int, use_bn: bool, seed: int = 0, dino_arch: str | None = None
) -> tuple[dict, nn.Module, nn.Module]:
    """DINO's checkpoint.pth: {'student': module.backbone/head, 'teacher': backbone/head, 'args', ...};
    head = mlp + weight-normed last_layer (weight_g, weight_v)."""
    backbone = randomised(build_backbone(arch), seed)
    mlp = randomised(dino_mlp(feature_dim(backbone), hidden, bottleneck, use_bn), seed + 1)
    last = {"last_layer.weight_g": torch.ones(32, 1), "last_layer.weight_v": torch.randn(32, bottleneck)}
    teacher = prefixed(backbone.state_dict(), "backbone.") | prefixed(
        prefixed(mlp.state_dict(), "mlp.") | last, "head."
    )
    student = prefixed({k: v + 1.0 for k, v in teacher.items()}, "module.")
    args = argparse.Namespace(
        arch=dino_arch or arch, patch_size=16, out_dim=32, use_bn_in_head=use_bn, lr=0.0005
    )
    ckpt = {
        "student": student,
        "teacher": teacher,
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 100,
        "args": args,
        "dino_loss": {"center": torch.zeros(1, 32)},
    }
    return ckpt, backbone, mlp


def own_checkpoint(arch: str, hidden: int, out_dim: int, seed: int = 0) -> tuple[dict, Encoder]:
    """This project's final.pt layout, as pretrain.train writes it."""
    backbone = randomised(build_backbone(arch), seed)
    head = randomised(ProjectionHead(feature_dim(backbone), hidden, out_dim), seed + 1)
    enc = {
        "arch": arch,
        "backbone": backbone.state_dict(),
        "head": head.state_dict(),
        "feature_dim": head.in_dim,
        "hidden": hidden,
        "dim": out_dim,
        "head_spec": head.spec(),
    }
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "kind": "pretrain",
        "done": True,
        "config": {"method": "moco"},
        "protocol": {"method": "moco"},
        "step": 1,
        "epoch": 1,
        "encoder": enc,
        "teacher": None,
        "epoch_means": [],
    }
    return ckpt, Encoder(backbone, head)
