"""Running a frozen backbone: where (device, torchrun rank), how fast (AMP, channels_last on GPU
only) and feature extraction in large batches without grad."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from infra.distributed import AMP_DTYPES, DistInfo, init_distributed, pick_device


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dist: DistInfo = DistInfo()
    amp: torch.dtype | None = None  # autocast dtype of the backbone forward; None: fp32
    channels_last: bool = False

    def describe(self) -> dict:
        """What a record should say about how the numbers were computed."""
        return {
            "device": self.device.type,
            "world_size": self.dist.world_size,
            "amp": str(self.amp).removeprefix("torch.") if self.amp else "none",
            "channels_last": self.channels_last,
        }


def make_runtime(
    device: str = "auto", amp: str = "bf16", channels_last: bool = True, distributed: bool = False
) -> Runtime:
    """The device (``cuda:LOCAL_RANK`` under torchrun), and AMP / channels_last only where it is a GPU."""
    dev = pick_device(device)
    dist_info = init_distributed(dev.type) if distributed else DistInfo()
    if dev.type == "cuda" and dist_info.enabled:
        dev = torch.device("cuda", dist_info.local_rank)
    on_gpu = dev.type == "cuda"
    return Runtime(dev, dist_info, AMP_DTYPES[amp] if on_gpu else None, channels_last and on_gpu)


def place_backbone(backbone: nn.Module, rt: Runtime) -> nn.Module:
    """Eval mode (BN statistics fixed) on the runtime's device and memory format."""
    backbone.eval().to(rt.device)
    if rt.channels_last:
        backbone.to(memory_format=torch.channels_last)
    return backbone


def freeze_backbone(backbone: nn.Module, rt: Runtime) -> nn.Module:
    """Placed as above, and no parameter takes a gradient (probing must not train it)."""
    place_backbone(backbone, rt)
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone


@torch.no_grad()
def backbone_features(backbone: nn.Module, images: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Pooled features in float32 on ``rt.device``."""
    images = images.to(rt.device, non_blocking=True)
    if rt.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(rt.device.type, dtype=rt.amp) if rt.amp else nullcontext():
        return backbone(images).float()


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device | Runtime,
    workers: int = 0,
    desc: str = "features",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, C) float32 on CPU, labels (N,)) in dataset order.

    ``device`` may be a bare device (then bf16 autocast and channels_last on GPU) or a Runtime.
    """
    rt = device if isinstance(device, Runtime) else make_runtime(str(device))
    place_backbone(backbone, rt)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=rt.device.type == "cuda",
    )
    feats, labels = [], []
    for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False):
        feats.append(backbone_features(backbone, images, rt).cpu())
        labels.append(torch.as_tensor(targets))
    return torch.cat(feats), torch.cat(labels)
