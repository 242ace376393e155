"""Small helpers the method tests share: a tiny frozen teacher and config, one SGD step, random
views, and before/after snapshots of a module's state."""

from __future__ import annotations

import torch

from pretrain.config import PretrainConfig
from pretrain.methods.base import FrozenTeacher
from pretrain.models import Encoder, ProjectionHead, build_backbone, feature_dim


def tiny_teacher(arch: str = "resnet10t", dim: int = 16, seed: int = 1, layers: int = 2, **backbone_kwargs) -> FrozenTeacher:
    torch.manual_seed(seed)
    backbone = build_backbone(arch, **backbone_kwargs)
    activation = "gelu" if layers == 3 else "relu"
    return FrozenTeacher(Encoder(backbone, ProjectionHead(feature_dim(backbone), 32, dim, layers=layers, activation=activation)))


def tiny_cfg(method: str, **overrides) -> PretrainConfig:
    base = dict(method=method, student="resnet10t", image_size=32, batch_size=4, queue_size=16, dim=16, hidden=32,
                key_momentum=0.9, swav_prototypes=8, dino_out_dim=12)
    return PretrainConfig(**(base | overrides))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module, prefix: str = "") -> list[str]:
    """Names (under ``prefix``) of state tensors that differ from ``before``."""
    return [k for k, v in module.state_dict().items() if k.startswith(prefix) and not torch.equal(v, before[k])]


def sgd_step(method: torch.nn.Module, views: list[torch.Tensor], lr: float = 0.1) -> dict[str, torch.Tensor]:
    """One training step as pretrain.train runs it: forward, backward, SGD on the trainable parameters."""
    method.train()
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    terms = method(views)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    opt.step()
    return terms


def random_views(n: int, batch: int = 4, size: int = 32, small: int = 16, large: int = 2, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size if i < large else small, size if i < large else small, generator=gen) for i in range(n)]


def assert_teacher_untouched(method, before: dict[str, torch.Tensor]) -> None:
    assert changed(before, method, "teacher.") == []
    assert all(not p.requires_grad for p in method.teacher.parameters())
