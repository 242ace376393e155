"""The aug+ pipeline of MoCo-v2 (docs/method.md#aug-plus) in torchvision transforms v2, and a faster
implementation of the same pipeline (``FastAugPlus``, opt-in through ``aug_impl='fast'``); the
split one whose photometric half runs batched on the device is pretrain/device_augment.py."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image
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


from pretrain.config import AUG_IMPLS  # noqa: E402  (named where configs are checked)


def aug_plus_for(image_size: int, impl: str = "torchvision", scale: tuple[float, float] = (0.2, 1.0)):
    """aug+ in the implementation ``impl`` (PretrainConfig.aug_impl): the torchvision reference,
    FastAugPlus, or the two-half GpuAugPlus (crop in the workers, the rest batched on the device)."""
    if impl == "torchvision":
        return aug_plus(image_size, scale)
    if impl == "fast":
        return FastAugPlus(image_size, scale)
    if impl == "gpu":
        from pretrain.device_augment import GpuAugPlus  # it builds on this module

        return GpuAugPlus(image_size, scale)
    raise ValueError(f"unknown aug_impl {impl!r}: expected one of {', '.join(AUG_IMPLS)}")


@lru_cache(maxsize=8)
def _reflect_taps(n: int, kernel_size: int) -> torch.Tensor:
    """Flat indices into an (n, n) matrix: entry [t, i] is row s * n + i, where s is the source
    pixel (reflect-padded, as torch's ``pad(mode='reflect')``) that tap t of output pixel i reads."""
    r = kernel_size // 2
    if r >= n:
        raise ValueError(f"blur kernel {kernel_size} needs an image side above {r}, got {n}")
    out = torch.arange(n)
    src = out[None, :] + torch.arange(kernel_size)[:, None] - r
    src = torch.where(src < 0, -src, src)
    src = torch.where(src >= n, 2 * (n - 1) - src, src)
    return (src * n + out[None, :]).reshape(-1)


def _blur_matrix(n: int, kernel_1d: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix M with x @ M = the 1-D reflect-padded convolution of the rows of x with the kernel."""
    k = kernel_1d.shape[0]
    weights = kernel_1d[:, None].expand(k, n).reshape(-1)
    return torch.zeros(n * n, dtype=kernel_1d.dtype).index_add_(0, _reflect_taps(n, k), weights).view(n, n)


def gaussian_kernel_1d(kernel_size: int, sigma: float) -> torch.Tensor:
    """torchvision v2's Gaussian kernel (``_get_gaussian_kernel1d``): softmax(-(x / sigma)^2) on
    ``kernel_size`` points spread over +-(kernel_size - 1) / (2 sqrt 2)."""
    lim = (kernel_size - 1) / (2.0 * 2.0**0.5)
    x = torch.linspace(-lim, lim, steps=kernel_size, dtype=torch.float32)
    return torch.softmax(x.div(sigma).pow(2).neg(), dim=0)


def separable_blur(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """The Gaussian blur of a (C, H, W) float image as two matrix products (rows, then columns).

    Equal (up to float summation order) to torchvision's ``gaussian_blur`` of the image, which
    convolves with the full ``kernel_size`` x ``kernel_size`` outer-product kernel: k^2 taps per
    pixel there, 2 n per pixel here, on a BLAS that is far faster than a grouped conv2d on a CPU.
    """
    kernel = gaussian_kernel_1d(kernel_size, sigma)
    c, h, w = image.shape
    rows = (image.reshape(c * h, w) @ _blur_matrix(w, kernel)).view(c, h, w)
    return torch.matmul(_blur_matrix(h, kernel).t(), rows)


class FastAugPlus:
    """aug+ with the same random draws as ``aug_plus`` (same order, same torch RNG), so the same
    seed gives the same crop, jitter, grey, blur sigma and flip, and therefore the same
    distribution of views. Faster where the reference is slow on a CPU:

    - the blur (p 0.5) runs as two matrix products on the float image instead of torchvision's
      PIL -> tensor -> 23 x 23 grouped conv2d -> PIL round trip;
    - after the jitter the image is converted to a tensor once; flip and normalisation then act
      on it in place.

    Crop, colour jitter and greyscale are torchvision's own PIL transforms (reused objects, so the
    RNG is consumed exactly as in the reference). Outputs equal the reference's, except that the
    blurred pixels are computed in another float summation order before being rounded to
    integers as the reference does: a pixel whose blurred value lies within float error of a
    .5 boundary can round the other way (one grey level). tests/pretrain/test_augment_distribution.py
    checks both the seeded equality and the distribution.
    """

    def __init__(self, image_size: int = 224, scale: tuple[float, float] = (0.2, 1.0)):
        self.image_size, self.scale = image_size, scale
        self.crop = v2.RandomResizedCrop(image_size, scale=scale, antialias=True)
        self.jitter = v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
        self.gray = v2.RandomGrayscale(p=0.2)
        self.kernel_size = blur_kernel(image_size)
        self.sigma, self.p_blur, self.p_flip = (0.1, 2.0), 0.5, 0.5
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __repr__(self) -> str:
        return f"FastAugPlus(image_size={self.image_size}, scale={self.scale})"

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = self.gray(self.jitter(self.crop(img)))
        if img.mode != "RGB":
            img = img.convert("RGB")
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).to(torch.float32)
        if torch.rand(1) < self.p_blur:  # v2.RandomApply draws rand(1) first, then GaussianBlur its sigma
            sigma = torch.empty(1).uniform_(self.sigma[0], self.sigma[1]).item()
            x = separable_blur(x, self.kernel_size, sigma).round_()
        if torch.rand(1) < self.p_flip:  # v2.RandomHorizontalFlip
            x = x.flip(-1)
        # v2.ToDtype(float32, scale=True) then v2.Normalize, with the same float operations
        return x.mul_(1.0 / 255).sub_(self.mean).div_(self.std)


def multi_crop(
    image_size: int,
    small_crops: int,
    small_size: int,
    large_scale: tuple[float, float],
    small_scale: tuple[float, float],
) -> list[v2.Compose]:
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
