"""aug+ split in two halves (``aug_impl='gpu'``): DataLoader workers read, decode and crop/flip each
view into uint8 and draw its photometric parameters; the training process applies colour jitter,
greyscale, blur and normalisation to the whole batch on its device, each sample with its own
parameters (docs/method.md#aug-plus, docs/architecture.md).

The random draws are the reference's (``pretrain.augment.aug_plus``): the same torch RNG calls in
the same order per view (crop, jitter gate, jitter order and factors, greyscale gate, blur gate and
sigma, flip), made in the worker under the per-sample seed of ``MultiViewDataset``. So a view is
still a function of (seed, epoch, index): resume stays exact, and the same seed gives the same
crop, flip and parameters as aug+. The pixels differ from aug+ by rounding only: aug+ rounds to
uint8 after each PIL operation, this path works in float from the crop on (and may decode the JPEG
at a reduced size first; see ``CropViews.reduction``). tests/pretrain/test_augment_distribution.py
checks the draws and the distribution against aug+.

Built on plain batched torch ops rather than a library (docs/method.md#aug-plus says why): the
kernels follow torchvision's tensor kernels (``torchvision.transforms.v2.functional``), which take
one factor per call; here every factor is a per-sample tensor.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD, blur_kernel

# One row of parameters per view, in this column order (float32; gates are 0/1)
JITTER, BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3, 4
ORDER = slice(5, 9)  # torchvision's fn_idx: 0 brightness, 1 contrast, 2 saturation, 3 hue
GRAY, SIGMA = 9, 10  # SIGMA 0: no blur
NUM_PARAMS = 11

JITTER_P, JITTER_STRENGTH, HUE_RANGE = 0.8, 0.4, 0.1
GRAY_P, BLUR_P, BLUR_SIGMA, FLIP_P = 0.2, 0.5, (0.1, 2.0), 0.5
# the JPEG DCT scales libjpeg (PIL's draft mode) can decode at, largest reduction first
REDUCTIONS = (8, 4, 2, 1)


def draw_photometric() -> torch.Tensor:
    """The photometric parameters of one view, drawn as aug+'s transforms draw them."""
    row = [0.0] * NUM_PARAMS  # a list, made a tensor once: per-element tensor writes cost more than the draws
    if torch.rand(1) < JITTER_P:  # v2.RandomApply(ColorJitter): rand(1) >= p skips
        row[ORDER] = torch.randperm(4).tolist()  # ColorJitter.make_params: order, then the factors
        lo, hi = 1 - JITTER_STRENGTH, 1 + JITTER_STRENGTH
        for col in (BRIGHTNESS, CONTRAST, SATURATION):
            row[col] = torch.empty(1).uniform_(lo, hi).item()
        row[HUE] = torch.empty(1).uniform_(-HUE_RANGE, HUE_RANGE).item()
        row[JITTER] = 1.0
    if torch.rand(1) < GRAY_P:  # v2.RandomGrayscale
        row[GRAY] = 1.0
    if torch.rand(1) < BLUR_P:  # v2.RandomApply(GaussianBlur): the gate, then the sigma
        row[SIGMA] = torch.empty(1).uniform_(*BLUR_SIGMA).item()
    return torch.tensor(row, dtype=torch.float32)


class CropViews:
    """The CPU half: ``views(img, n)`` decodes the image once and returns ``n`` views as
    (uint8 3 x H x W tensor, parameter row). Called under the sample's seed (MultiViewDataset)."""

    def __init__(self, image_size: int = 224, scale: tuple[float, float] = (0.2, 1.0)):
        self.image_size, self.scale = image_size, scale
        crop = v2.RandomResizedCrop(image_size, scale=scale, antialias=True)
        # the crop box aug+ would draw (older torchvision releases name the method _get_params)
        self.crop_params = getattr(crop, "make_params", None) or crop._get_params

    def __repr__(self) -> str:
        return f"CropViews(image_size={self.image_size}, scale={self.scale})"

    def reduction(self, boxes: list[dict]) -> int:
        """The largest DCT reduction (8, 4, 2 or 1) that keeps every crop at least ``image_size``
        pixels on each side: decoding at 1/r then costs far less and the resize still only shrinks,
        so the view loses no detail it would have kept (the antialiased resize removes it anyway)."""
        smallest = min(min(b["height"], b["width"]) for b in boxes)
        return next((r for r in REDUCTIONS if smallest / r >= self.image_size), 1)

    def views(self, img: Image.Image, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``img`` opened but not yet decoded (``Image.open``): its size is known from the header."""
        width, height = img.size
        draws = []
        for _ in range(n):  # aug+ order per view: crop, photometric, flip
            box = self.crop_params([img])
            row = draw_photometric()
            flip = bool(torch.rand(1) < FLIP_P)
            draws.append((box, row, flip))
        r = self.reduction([box for box, _, _ in draws])
        if r > 1:
            img.draft("RGB", (math.ceil(width / r), math.ceil(height / r)))
        if img.mode != "RGB":  # greyscale, palette, CMYK...: resample in RGB, as aug+ does
            img = img.convert("RGB")
        pixels = as_tensor(img).permute(2, 0, 1)[None]  # (1, 3, H, W), channels_last in memory
        sx, sy = width / img.size[0], height / img.size[1]
        out = []
        for box, row, flip in draws:
            # the crop in decoded pixels (whole pixels: a reduced decode shifts it by under half one)
            top, left = round(box["top"] / sy), round(box["left"] / sx)
            bottom, right = round((box["top"] + box["height"]) / sy), round((box["left"] + box["width"]) / sx)
            # torch's uint8 antialiased bilinear resize: PIL's algorithm (aug+ resizes with PIL),
            # about twice as fast on channels_last uint8
            view = F.interpolate(
                pixels[:, :, top : max(bottom, top + 1), left : max(right, left + 1)],
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            if flip:
                view = view.flip(-1)
            out.append((view[0], row))  # (3, H, W), contiguous: it crosses as it is
        return out


def as_tensor(img: Image.Image) -> torch.Tensor:
    """The decoded RGB image as a (H, W, 3) uint8 tensor sharing PIL's bytes (one copy, not two):
    read-only, which torch warns about, but nothing writes to it (every view is a new tensor)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(img))


# --- the device half ----------------------------------------------------------------------------


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma of (B, 3, H, W), torchvision's weights."""
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend`` with a per-sample ratio (B,): ratio x + (1 - ratio) other, clamped."""
    ratio = ratio.view(-1, 1, 1, 1)
    return (ratio * x + (1 - ratio) * other).clamp_(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each sample's hue by ``shift`` (B,) turns: HSV hue + shift, same S and V, as
    torchvision's ``adjust_hue`` (its RGB -> HSV -> RGB, written as one closed form)."""
    maxc, _ = x.max(dim=1, keepdim=True)
    minc, _ = x.min(dim=1, keepdim=True)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = x.unbind(dim=1)
    r, g, b = r.unsqueeze(1), g.unsqueeze(1), b.unsqueeze(1)
    hue6 = torch.where(
        maxc == r,
        ((g - b) / safe).remainder(6),
        torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4),
    )
    hue6 = (hue6 + 6 * shift.view(-1, 1, 1, 1)).remainder(6)
    # HSV -> RGB: channel n (5 red, 3 green, 1 blue) is V - C clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + hue6).remainder(6)
    return maxc - chroma * torch.minimum(k, 4 - k).clamp(0, 1)


def gaussian_kernels(kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """(B, kernel_size) torchvision Gaussian kernels, one per sigma; sigma 0 gives the identity
    (a centred delta), so unblurred samples pass through the same batched convolution unchanged."""
    lim = (kernel_size - 1) / (2.0 * 2.0**0.5)
    pos = torch.linspace(-lim, lim, kernel_size, device=sigma.device, dtype=torch.float32)
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    kernels = torch.softmax(-((pos[None, :] / safe[:, None]) ** 2), dim=1)
    delta = torch.zeros(kernel_size, device=sigma.device)
    delta[kernel_size // 2] = 1.0
    return torch.where((sigma > 0)[:, None], kernels, delta)


def batched_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable reflect-padded Gaussian blur of (B, C, H, W), a kernel per sample (grouped convs)."""
    b, c, h, w = x.shape
    k = gaussian_kernels(kernel_size, sigma).repeat_interleave(c, dim=0)  # (B C, k)
    pad = kernel_size // 2
    flat = x.reshape(1, b * c, h, w)
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


class DeviceAugPlus:
    """The device half: ``(uint8 (B, 3, H, W), params (B, NUM_PARAMS)) -> normalised (B, 3, H, W)``
    float32 on the input's device (the training loop gives it the run's memory format). No host
    sync: every per-sample choice is a mask or a factor, never a branch on a device value."""

    def __init__(self, image_size: int = 224):
        self.kernel_size = blur_kernel(image_size)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return f"DeviceAugPlus(kernel_size={self.kernel_size})"

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = pixels.float().div_(255)
        params = params.to(x.device, torch.float32)
        jitter = params[:, JITTER] > 0
        order = params[:, ORDER]
        for slot in range(4):  # ColorJitter applies its four operations in a per-sample order
            for op, apply in enumerate((self._brightness, self._contrast, self._saturation, self._hue)):
                chosen = (jitter & (order[:, slot] == op)).view(-1, 1, 1, 1)
                x = torch.where(chosen, apply(x, params), x)
        x = torch.where((params[:, GRAY] > 0).view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
        x = batched_blur(x, params[:, SIGMA], self.kernel_size)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x - mean) / std

    @staticmethod
    def _brightness(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return _blend(x, torch.zeros_like(x[:, :1]), params[:, BRIGHTNESS])

    @staticmethod
    def _contrast(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), params[:, CONTRAST])

    @staticmethod
    def _saturation(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return _blend(x, _gray(x), params[:, SATURATION])

    @staticmethod
    def _hue(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return adjust_hue(x, params[:, HUE])


class GpuAugPlus:
    """``aug_impl='gpu'``: the two halves of aug+ at one image size. ``MultiViewDataset`` calls
    ``views`` in its workers (it reads the file itself, so the JPEG can be decoded reduced);
    the training loop calls ``on_device`` on each view's batch after the transfer."""

    def __init__(self, image_size: int = 224, scale: tuple[float, float] = (0.2, 1.0)):
        self.cpu_half = CropViews(image_size, scale)
        self.on_device = DeviceAugPlus(image_size)

    def __repr__(self) -> str:
        return f"GpuAugPlus({self.cpu_half!r}, {self.on_device!r})"

    def views(self, img: Image.Image, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.cpu_half.views(img, n)
