"""Multi-crop as SwAV and DINO use it: 2 large crops at ``image_size`` plus ``multicrop_small_crops``
small ones (``multicrop_*`` settings), the per-view transforms for the data loader, and an encoder
forward that batches the views of one size together."""

from __future__ import annotations

import torch
from torch import nn

from infra.errors import InputError
from pretrain.augment import multi_crop


def multicrop_views(cfg) -> int:
    """The number of views a multi-crop method trains on (2 without small crops); checks the sizes."""
    if cfg.multicrop_small_crops and not 0 < cfg.multicrop_small_size <= cfg.image_size:
        raise InputError(
            f"multicrop_small_size: expected 1..image_size ({cfg.image_size}), got {cfg.multicrop_small_size}"
        )
    return 2 + cfg.multicrop_small_crops


class MultiCropMixin:
    """``view_transforms`` for a method with a ``cfg``: one transform per view with small crops,
    None (aug+ for both views, the DisCo testbed's views) without."""

    def view_transforms(self):
        cfg = self.cfg
        if not cfg.multicrop_small_crops:
            return None
        return multi_crop(
            cfg.image_size,
            cfg.multicrop_small_crops,
            cfg.multicrop_small_size,
            cfg.multicrop_large_scale,
            cfg.multicrop_small_scale,
        )


def encode_by_size(encoder: nn.Module, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """encoder(view) for each view; consecutive views of one size share one forward (and so their
    BN statistics), as SwAV's and DINO's multi-crop wrappers do."""
    out, start = [], 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape == views[start].shape:
            end += 1
        out += list(encoder(torch.cat(views[start:end])).chunk(end - start))
        start = end
    return out
