"""The aug+ pipeline of MoCo-v2 (METHOD.md section 1) in torchvision transforms v2."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def blur_kernel(image_size: int) -> int:
    """An odd kernel about 10% of the image side (23 px at 224), as SimCLR/MoCo-v2 use."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def aug_plus(image_size: int = 224, scale: tuple[float, float] = (0.2, 1.0)) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=scale, antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(blur_kernel(image_size), sigma=(0.1, 2.0))], p=0.5),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def multi_crop(image_size: int, small_crops: int, small_size: int, large_scale: tuple[float, float],
               small_scale: tuple[float, float]) -> list[v2.Compose]:
    """SwAV/DINO multi-crop: 2 large crops of ``image_size`` then ``small_crops`` crops of ``small_size``,
    each with the aug+ photometric pipeline (one transform per view, in view order)."""
    large = aug_plus(image_size, large_scale)
    small = aug_plus(small_size, small_scale)
    return [large, large] + [small] * small_crops


def eval_transform(image_size: int = 224, resize: int | None = None) -> v2.Compose:
    """Resize(256/224 x size) + CenterCrop(size): the paper's validation transform at any scale."""
    resize = resize or round(image_size * 256 / 224)
    return v2.Compose(
        [
            v2.Resize(resize, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
