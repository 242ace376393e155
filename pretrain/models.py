"""Backbones (timm, uniform API) and projection heads (docs/method.md#pretraining).

A backbone maps images to pooled features of width ``feature_dim(backbone)``; timm's
``num_classes=0`` gives exactly that for every family (ResNet, EfficientNet, MobileNet, ViT).
"""

from __future__ import annotations

import difflib

import timm
import torch.nn.functional as F
from torch import nn

from infra.errors import InputError

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
    """SwAV's ResNet-50 x2: every width of ResNet-50 doubled (stem 128, bottlenecks 128..1024, output 4096).

    timm's ResNet fixes a plain 7x7 stem at 64 channels, so the stem and the two layer1.0 convs
    that read it are rebuilt at 128; the key names stay torchvision's (conv1, bn1, layer1.0.conv1,
    layer1.0.downsample.0), which SwAV's resnet50w2 also uses.
    """
    from timm.models.resnet import Bottleneck, ResNet

    net = ResNet(Bottleneck, [3, 4, 6, 3], channels=(128, 256, 512, 1024), **kwargs)
    stem = 128
    net.conv1 = nn.Conv2d(net.conv1.in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(stem)
    first = net.layer1[0]
    first.conv1 = nn.Conv2d(stem, first.conv1.out_channels, kernel_size=1, bias=False)
    first.downsample[0] = nn.Conv2d(stem, first.downsample[0].out_channels, kernel_size=1, bias=False)
    for conv in (net.conv1, first.conv1, first.downsample[0]):
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as timm initialises convs
    return net


# Architectures timm does not name; each builder takes timm-style kwargs (num_classes, ...).
EXTRA_ARCHS = {"resnet50w2": _resnet50w2}


# Characters one is easily typed or read for another ('efficientnet_bo' for 'efficientnet_b0').
LOOKALIKES = str.maketrans({"o": "0", "O": "0", "l": "1", "I": "1", "i": "1", "-": "_"})


def suggest_names(name: str, names: list[str], n: int = 5) -> list[str]:
    """The ``n`` names closest to ``name``: difflib's ratio, ties broken by the ratio with look-alike
    characters folded (o/0, l/1, -/_), then by length difference and name. (``get_close_matches``
    alone breaks ties by reverse alphabetical order: 'efficientnet_bo' got b8, b7, b6 but not b0.)"""
    matcher = difflib.SequenceMatcher(b=name)
    folded = difflib.SequenceMatcher(b=name.translate(LOOKALIKES))
    scored = []
    for candidate in names:
        matcher.set_seq1(candidate)
        if matcher.real_quick_ratio() < 0.5 or matcher.quick_ratio() < 0.5:
            continue
        ratio = matcher.ratio()
        if ratio < 0.5:
            continue
        folded.set_seq1(candidate.translate(LOOKALIKES))
        scored.append((-max(ratio, folded.ratio()), -ratio, abs(len(candidate) - len(name)), candidate))
    return [c for *_, c in sorted(scored)[:n]]


def resolve_arch(name: str) -> str:
    name = ALIASES.get(name, name)
    if name in EXTRA_ARCHS or name in timm.list_models():
        return name
    close = suggest_names(name, sorted(set(timm.list_models()) | set(EXTRA_ARCHS) | set(ALIASES)), n=10)
    choices = list(dict.fromkeys(ALIASES.get(c, c) for c in close))[:5]  # an alias is shown as what it names
    hint = f"; did you mean: {', '.join(choices)}" if choices else ""
    raise InputError(
        f"unknown model {name!r}: expected a timm model name or one of {sorted(EXTRA_ARCHS)}{hint}"
    )


# timm modules whose ViTs take ``dynamic_img_size``: built that way, a ViT-Tiny student runs at the
# embedded suites' 32-96 px as well as at 224 px, with the same state-dict shapes (the position
# embedding is interpolated per forward), so its checkpoints and DINO's ViT teachers load unchanged.
DYNAMIC_SIZE_MODULES = ("timm.models.vision_transformer", "timm.models.deit")


def build_backbone(name: str, **kwargs) -> nn.Module:
    """A randomly initialised backbone returning pooled features (no classifier). Never downloads."""
    arch = resolve_arch(name)
    kwargs = {"num_classes": 0, **kwargs}
    if arch in EXTRA_ARCHS:
        return EXTRA_ARCHS[arch](**kwargs)
    if timm.models.model_entrypoint(arch).__module__ in DYNAMIC_SIZE_MODULES and "img_size" not in kwargs:
        kwargs.setdefault("dynamic_img_size", True)
    return timm.create_model(arch, pretrained=False, **kwargs)


# (block kind, blocks per stage, stem width, first bottleneck width) -> name, for torchvision-layout ResNets.
RESNET_LAYOUTS = {
    ("basic", (2, 2, 2, 2), 64, 64): "resnet18",
    ("basic", (3, 4, 6, 3), 64, 64): "resnet34",
    ("bottleneck", (3, 4, 6, 3), 64, 64): "resnet50",
    ("bottleneck", (3, 4, 23, 3), 64, 64): "resnet101",
    ("bottleneck", (3, 8, 36, 3), 64, 64): "resnet152",
    ("bottleneck", (3, 4, 6, 3), 64, 128): "wide_resnet50_2",
    ("bottleneck", (3, 4, 6, 3), 128, 128): "resnet50w2",
}


def infer_resnet_arch(state: dict) -> str | None:
    """The ResNet a torchvision-layout state dict (``conv1``, ``layer1.0.conv1`` ...) belongs to, or
    None. Lets SwAV/DINO/torchvision files, which do not name their arch, load without one."""
    if "conv1.weight" not in state or "layer1.0.conv1.weight" not in state:
        return None
    blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    stem = int(state["conv1.weight"].shape[0])
    width = int(state["layer1.0.conv1.weight"].shape[0])
    return RESNET_LAYOUTS.get((kind, blocks, stem, width))


def feature_dim(backbone: nn.Module) -> int:
    """Width of the pooled features. MobileNet-v3 pools then widens (960 -> 1280), so timm keeps
    that in ``head_hidden_size``; elsewhere it equals ``num_features``."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def _activation(name: str) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "relu" else nn.GELU()


ACTIVATIONS = ("relu", "gelu")


class ProjectionHead(nn.Module):
    """An MLP of ``layers`` Linear layers: Linear(in, hidden) -> [BN1d] -> act -> ... -> Linear(hidden, out).

    MoCo-v2 heads (students and teachers) are 2 layers, ReLU, no BN; SwAV-family teacher heads
    add BN; DINO heads are 3 layers with GELU (and BN for ResNet backbones). The Sequential
    indices match those repositories' key layouts (``net.0``, ``net.2`` / ``net.0``, ``net.1``,
    ``net.3``), so their weights load by renaming the prefix only. ``hidden=0`` means a single
    Linear(in, out) (the "no hidden layer" row of Tab. 4).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int = 128,
        batchnorm: bool = False,
        layers: int = 2,
        activation: str = "relu",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise InputError(
                f"unknown head activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}"
            )
        layers = 1 if hidden <= 0 else layers
        if layers < 1:
            raise InputError(f"a projection head needs at least 1 layer, got {layers}")
        widths = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        modules: list[nn.Module] = []
        for i in range(layers):
            modules.append(nn.Linear(widths[i], widths[i + 1]))
            if i < layers - 1:
                if batchnorm:
                    modules.append(nn.BatchNorm1d(widths[i + 1]))
                modules.append(_activation(activation))
        self.net = nn.Sequential(*modules)
        self.in_dim, self.hidden, self.out_dim = in_dim, (hidden if layers > 1 else 0), out_dim
        self.batchnorm, self.layers, self.activation = batchnorm, layers, activation

    def spec(self) -> dict:
        """What rebuilds this head (stored in checkpoints next to its weights)."""
        return {
            "in_dim": self.in_dim,
            "hidden": self.hidden,
            "out_dim": self.out_dim,
            "batchnorm": self.batchnorm,
            "layers": self.layers,
            "activation": self.activation,
        }

    def forward(self, x):
        return self.net(x)


class Encoder(nn.Module):
    """Backbone + projection head, returning L2-normalised embeddings.

    ``head=None`` is a backbone-only encoder (a plain torchvision/timm state dict): it serves
    evaluation, which drops the head anyway, but not a teacher, whose embedding is the head's.
    """

    def __init__(self, backbone: nn.Module, head: ProjectionHead | None):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def out_dim(self) -> int:
        return self.head.out_dim if self.head is not None else feature_dim(self.backbone)

    def forward(self, x):
        feats = self.backbone(x)
        return F.normalize(self.head(feats) if self.head is not None else feats, dim=1)
