"""Backbones (timm, uniform API) and projection heads (METHOD.md section 1).

A backbone maps images to pooled features of width ``feature_dim(backbone)``; timm's
``num_classes=0`` gives exactly that for every family (ResNet, EfficientNet, MobileNet, ViT).
"""

from __future__ import annotations

import difflib

import timm
import torch.nn.functional as F
from torch import nn

from pretrain.errors import InputError

# Names the paper uses, mapped to timm names. Any other timm model name is accepted as is.
ALIASES = {
    "efficientnet-b0": "efficientnet_b0",
    "efficientnet-b1": "efficientnet_b1",
    "mobilenet-v3-large": "mobilenetv3_large_100",
    "mobilenetv3_large": "mobilenetv3_large_100",
    "vit-tiny": "vit_tiny_patch16_224",
    "vit-small": "vit_small_patch16_224",
    "xcit-tiny": "xcit_tiny_12_p16_224",
    "xcit-small": "xcit_small_12_p16_224",
}


def _resnet50w2(**kwargs) -> nn.Module:
    """SwAV's ResNet-50 x2: every width of ResNet-50 doubled (stem 128, output 4096)."""
    from timm.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [3, 4, 6, 3], channels=(128, 256, 512, 1024), stem_width=128, **kwargs)


# Architectures timm does not name; each builder takes timm-style kwargs (num_classes, ...).
EXTRA_ARCHS = {"resnet50w2": _resnet50w2}


def resolve_arch(name: str) -> str:
    name = ALIASES.get(name, name)
    if name in EXTRA_ARCHS or name in timm.list_models():
        return name
    choices = difflib.get_close_matches(name, timm.list_models() + list(EXTRA_ARCHS), n=5, cutoff=0.5)
    hint = f"; did you mean: {', '.join(choices)}" if choices else ""
    raise InputError(f"unknown model {name!r}: expected a timm model name or one of {sorted(EXTRA_ARCHS)}{hint}")


def build_backbone(name: str, **kwargs) -> nn.Module:
    """A randomly initialised backbone returning pooled features (no classifier). Never downloads."""
    arch = resolve_arch(name)
    kwargs = {"num_classes": 0, **kwargs}
    if arch in EXTRA_ARCHS:
        return EXTRA_ARCHS[arch](**kwargs)
    return timm.create_model(arch, pretrained=False, **kwargs)


def feature_dim(backbone: nn.Module) -> int:
    """Width of the pooled features. MobileNet-v3 pools then widens (960 -> 1280), so timm keeps
    that in ``head_hidden_size``; elsewhere it equals ``num_features``."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


class ProjectionHead(nn.Module):
    """Linear(in, hidden) -> [BN1d] -> ReLU -> Linear(hidden, out).

    MoCo-v2 heads (students and teachers) have no BN; SwAV-family teacher heads have BN.
    ``hidden=0`` means a single Linear(in, out) (the "no hidden layer" row of Tab. 4).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int = 128, batchnorm: bool = False):
        super().__init__()
        if hidden <= 0:
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim))
        else:
            layers = [nn.Linear(in_dim, hidden)]
            if batchnorm:
                layers.append(nn.BatchNorm1d(hidden))
            layers += [nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)]
            self.net = nn.Sequential(*layers)
        self.in_dim, self.hidden, self.out_dim = in_dim, hidden, out_dim

    def forward(self, x):
        return self.net(x)


class Encoder(nn.Module):
    """Backbone + projection head, returning L2-normalised embeddings."""

    def __init__(self, backbone: nn.Module, head: ProjectionHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x):
        return F.normalize(self.head(self.backbone(x)), dim=1)
