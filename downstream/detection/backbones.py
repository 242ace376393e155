"""Students as multi-scale detection backbones: timm ``features_only`` models carrying the
pretrained weights.

timm's feature extractors keep the module names of the full model (``FeatureListNet`` for ResNets,
``EfficientNetFeatures`` / ``MobileNetV3Features`` for the others) and only drop what follows the
last stage (``conv_head``, ``bn2``, the classifier), so the student's backbone state dict maps onto
them key for key. Every feature key must be found with the right shape, and every dropped key must
belong to that post-stage head; anything else is an InputError. ``freeze_batchnorm`` (det_norm=frozen)
serves both detection backends.
"""

from __future__ import annotations

import timm
from timm.layers import BatchNormAct2d
from timm.layers import freeze_batch_norm_2d as timm_freeze_batch_norm_2d
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from downstream.backbone import load_backbone
from infra.checkpoint import load_state_strict
from infra.errors import InputError
from pretrain.models import EXTRA_ARCHS, resolve_arch

# Top-level modules after the last feature stage (pooled-feature head), which features_only drops.
POST_STAGE_MODULES = ("conv_head", "bn2", "fc", "classifier", "head", "global_pool", "norm_head")
FPN_OUT_INDICES = (1, 2, 3, 4)  # strides 4, 8, 16, 32 (timm index 0 is the stride-2 stem output)


def build_features(arch: str, out_indices: tuple[int, ...] = FPN_OUT_INDICES) -> nn.Module:
    """A randomly initialised timm ``features_only`` model for ``arch`` (never downloads)."""
    arch = resolve_arch(arch)
    if arch in EXTRA_ARCHS:
        raise InputError(
            f"arch {arch!r} has no features_only form: detection backbones need a timm model name"
        )
    try:
        return timm.create_model(arch, pretrained=False, features_only=True, out_indices=out_indices)
    except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
        raise InputError(
            f"arch {arch!r} cannot give multi-scale features (timm features_only): {exc}"
        ) from exc


def load_features_state(features: nn.Module, backbone_state: dict, source: str) -> list[str]:
    """Load the student's backbone weights into ``features``; return the (post-stage) keys dropped."""
    own = features.state_dict()
    dropped = sorted(k for k in backbone_state if k not in own)
    stray = [k for k in dropped if not k.startswith(tuple(m + "." for m in POST_STAGE_MODULES))]
    if stray:
        raise InputError(
            f"{source}: backbone keys with no place in the feature extractor: {', '.join(stray[:6])}"
            f"{f' ... ({len(stray)} in all)' if len(stray) > 6 else ''}"
        )
    load_state_strict(features, {k: v for k, v in backbone_state.items() if k in own}, source)
    return dropped


def load_features(ckpt: str, out_indices: tuple[int, ...] = FPN_OUT_INDICES) -> tuple[nn.Module, dict]:
    """(features_only model with the checkpoint's weights, info) for any supported checkpoint."""
    backbone, info = load_backbone(ckpt)
    features = build_features(info["arch"], out_indices)
    dropped = load_features_state(features, backbone.state_dict(), f"checkpoint {ckpt}")
    info = dict(info, features_dropped=sorted({k.split(".")[0] for k in dropped}))
    return features, info


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d holding its statistics (det_norm=frozen).
    timm's BatchNormAct2d (MobileNetV3, EfficientNet) also holds the activation that follows it: it
    becomes timm's FrozenBatchNormAct2d, keeping that activation (a plain FrozenBatchNorm2d dropped it)."""
    for name, child in module.named_children():
        if isinstance(child, BatchNormAct2d):
            setattr(module, name, timm_freeze_batch_norm_2d(child))
        elif isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module
