"""FastAugPlus (aug_impl='fast') against the torchvision reference aug+: same random draws, same
distribution of views. Statistical checks only; no timing here (benchmarks/augment.py times them)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp

from pretrain.augment import (
    FastAugPlus,
    aug_plus,
    aug_plus_for,
    blur_kernel,
    gaussian_kernel_1d,
    separable_blur,
)
from pretrain.device_augment import GpuAugPlus

SIZE = 32
ONE_LEVEL = 1 / 255 / min((0.229, 0.224, 0.225))  # one grey level after normalisation


def structured_image(width: int = 80, height: int = 60, seed: int = 0) -> Image.Image:
    """Colour gradients plus noise: a view's channel means depend on where the crop falls and its
    standard deviations on the crop's scale and on the blur, so the statistics below see both."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([255 * x / width, 255 * y / height, 127 + 100 * np.sin(x / 5) * np.cos(y / 7)], axis=2)
    rgb += rng.normal(0, 20, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def test_separable_blur_matches_torchvision_gaussian_blur():
    from torchvision.transforms.v2 import functional as TF

    img = torch.rand(3, 20, 27) * 255
    for k, sigma in ((3, 0.3), (9, 1.7), (23, 2.0)):
        if k // 2 >= 20:
            continue
        ref = TF.gaussian_blur(img, [k, k], [sigma, sigma])
        assert torch.allclose(separable_blur(img, k, sigma), ref, atol=1e-3), (k, sigma)
    assert torch.isclose(gaussian_kernel_1d(23, 1.0).sum(), torch.tensor(1.0))


@pytest.mark.parametrize("seed", range(12))
def test_same_seed_gives_the_same_view(seed):
    """Same draws in the same order: equal views, up to a rounding tie after the blur (one grey level)."""
    img = structured_image(seed=seed)
    torch.manual_seed(seed)
    ref = aug_plus(SIZE)(img)
    after_ref = torch.rand(1)
    torch.manual_seed(seed)
    ours = FastAugPlus(SIZE)(img)
    after_ours = torch.rand(1)
    assert ours.shape == ref.shape == (3, SIZE, SIZE) and ours.dtype == ref.dtype == torch.float32
    assert torch.equal(after_ref, after_ours)  # the RNG advanced by exactly as many draws
    diff = (ours - ref).abs()
    assert diff.max() <= ONE_LEVEL + 1e-5
    assert (diff > 1e-6).float().mean() < 0.01


def view_stats(transform, seeds) -> np.ndarray:
    img = structured_image()
    rows = []
    for s in seeds:
        torch.manual_seed(s)
        v = transform(img)
        rows.append(torch.cat([v.mean(dim=(1, 2)), v.std(dim=(1, 2))]).numpy())
    return np.stack(rows)


N = 300


def ks_pvalues(a: np.ndarray, b: np.ndarray) -> list[float]:
    return [ks_2samp(a[:, c], b[:, c]).pvalue for c in range(a.shape[1])]


def test_independent_views_have_the_same_distribution():
    """Two-sample KS tests on per-view channel means and stds, from disjoint seeds (independent samples).

    Six tests at alpha = 1e-3 each: a false alarm has probability below 0.6%. The reference
    pipeline with another crop scale must fail the same test (the test has power at this N).
    """
    ours = view_stats(FastAugPlus(SIZE), range(N))
    ref = view_stats(aug_plus(SIZE), range(N, 2 * N))
    assert min(ks_pvalues(ours, ref)) > 1e-3
    shifted = view_stats(aug_plus(SIZE, scale=(0.6, 1.0)), range(2 * N, 3 * N))
    assert min(ks_pvalues(shifted, ref)) < 1e-3


def test_aug_impl_selects_the_pipeline():
    assert isinstance(aug_plus_for(SIZE, "fast"), FastAugPlus)
    assert not isinstance(aug_plus_for(SIZE, "torchvision"), FastAugPlus)
    assert isinstance(aug_plus_for(SIZE, "gpu"), GpuAugPlus)
    with pytest.raises(ValueError, match="aug_impl"):
        aug_plus_for(SIZE, "dali")


# --- aug_impl='gpu': the worker half (crop, flip, parameters) and the batched device half ----------


def gpu_views(img: Image.Image, n: int, size: int = SIZE, aug: GpuAugPlus | None = None) -> torch.Tensor:
    """``n`` views of ``img`` through both halves of GpuAugPlus, under the caller's torch seed."""
    aug = aug or GpuAugPlus(size)
    views = aug.views(img.copy(), n)
    return aug.on_device(torch.stack([v for v, _ in views]), torch.stack([p for _, p in views]))


@pytest.mark.parametrize("seed", range(12))
def test_gpu_path_draws_what_aug_plus_draws(seed):
    """Same draws in the same order as aug+ for two views: the RNG ends in the same state and the
    views differ only by aug+'s uint8 rounding after each PIL operation (a few grey levels)."""
    img = structured_image(seed=seed)
    torch.manual_seed(seed)
    ref = torch.stack([aug_plus(SIZE)(img) for _ in range(2)])
    after_ref = torch.rand(1)
    torch.manual_seed(seed)
    ours = gpu_views(img, 2)
    assert torch.equal(torch.rand(1), after_ref)
    assert ours.shape == ref.shape == (2, 3, SIZE, SIZE) and ours.dtype == torch.float32
    diff = (ours - ref).abs()
    assert diff.mean() < 3 * ONE_LEVEL and diff.max() < 40 * ONE_LEVEL


def test_gpu_path_has_the_distribution_of_aug_plus():
    """The KS test of FastAugPlus above, on the GPU path's views (its device half run on the CPU)."""

    def one_view(img):
        return gpu_views(img, 1)[0]

    ours = view_stats(one_view, range(N))
    ref = view_stats(aug_plus(SIZE), range(N, 2 * N))
    assert min(ks_pvalues(ours, ref)) > 1e-3


def test_each_photometric_operation_matches_torchvision_per_sample():
    """Every batched operation, with a different factor per sample, equals torchvision's tensor
    kernel called on each sample with its own factor."""
    from torchvision.transforms.v2 import functional as TF

    from pretrain.device_augment import BRIGHTNESS, CONTRAST, HUE, NUM_PARAMS, SATURATION, DeviceAugPlus

    x = torch.rand(4, 3, 9, 11)
    params = torch.zeros(4, NUM_PARAMS)
    params[:, BRIGHTNESS] = torch.tensor([0.6, 1.0, 1.3, 1.4])
    params[:, CONTRAST] = torch.tensor([0.6, 0.8, 1.2, 1.4])
    params[:, SATURATION] = torch.tensor([0.6, 0.9, 1.1, 1.4])
    params[:, HUE] = torch.tensor([-0.1, -0.03, 0.05, 0.1])
    ours = (DeviceAugPlus._brightness, DeviceAugPlus._contrast, DeviceAugPlus._saturation, DeviceAugPlus._hue)
    refs = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for op, ref_op, col in zip(ours, refs, (BRIGHTNESS, CONTRAST, SATURATION, HUE), strict=True):
        expected = torch.stack([ref_op(x[i], params[i, col].item()) for i in range(4)])
        assert torch.allclose(op(x, params), expected, atol=1e-5), ref_op.__name__


def test_the_device_half_applies_order_gates_and_blur_per_sample():
    """A batch mixing every gate and jitter order equals torchvision's functional pipeline run on
    each sample with its parameters (order of ColorJitter, greyscale, blur, normalisation)."""
    from torchvision.transforms.v2 import functional as TF

    from pretrain.device_augment import (
        BRIGHTNESS,
        GRAY,
        HUE,
        JITTER,
        NUM_PARAMS,
        ORDER,
        SIGMA,
        DeviceAugPlus,
    )

    b, size = 6, 30
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=gen)
    params = torch.zeros(b, NUM_PARAMS)
    params[:, JITTER] = torch.tensor([1, 1, 1, 0, 1, 0.0])
    params[:, BRIGHTNESS : HUE + 1] = torch.tensor([1.3, 0.7, 1.2, 0.08]).repeat(b, 1)
    params[:, ORDER] = torch.stack([torch.randperm(4, generator=gen) for _ in range(b)]).float()
    params[:, GRAY] = torch.tensor([0, 1, 0, 1, 0, 0.0])
    params[:, SIGMA] = torch.tensor([0, 0.7, 1.9, 0, 0, 1.2])
    ours = DeviceAugPlus(size)(pixels, params)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(b):
        x = pixels[i].float() / 255
        if params[i, JITTER]:
            for op in params[i, ORDER].long().tolist():
                x = ops[op](x, params[i, BRIGHTNESS + op].item())
        if params[i, GRAY]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if params[i, SIGMA]:
            k = blur_kernel(size)
            x = TF.gaussian_blur(x, [k, k], [params[i, SIGMA].item()] * 2)
        x = TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        assert torch.allclose(ours[i], x, atol=1e-4), i


def jpeg(width: int, height: int, seed: int = 0) -> Image.Image:
    buf = io.BytesIO()
    structured_image(width, height, seed).save(buf, "JPEG", quality=90)
    buf.seek(0)
    return Image.open(buf)


def test_reduced_jpeg_decoding_keeps_each_crop_at_least_the_output_size():
    aug = GpuAugPlus(64).cpu_half
    assert aug.reduction([{"height": 600, "width": 520}, {"height": 300, "width": 900}]) == 4
    assert aug.reduction([{"height": 600, "width": 520}, {"height": 127, "width": 900}]) == 1
    assert aug.reduction([{"height": 40, "width": 40}]) == 1  # an upscaled crop: full size
    # a 1600 x 1200 JPEG at 64 px: the decoded image is reduced, and the views are those of the
    # fully decoded image up to the DCT-domain downscale (mean well under a few grey levels)
    for seed in range(4):
        torch.manual_seed(seed)
        reduced = gpu_views_of_open(jpeg(1600, 1200, seed), 64)
        torch.manual_seed(seed)
        full = gpu_views(jpeg(1600, 1200, seed).convert("RGB"), 2, size=64)
        assert (reduced - full).abs().mean() < 4 * ONE_LEVEL


def gpu_views_of_open(img: Image.Image, size: int) -> torch.Tensor:
    """Both halves on a lazily opened file (so draft mode can act), checking it did."""
    aug = GpuAugPlus(size)
    full_size = img.size
    views = aug.views(img, 2)
    assert img.size[0] < full_size[0]  # every crop of these sides allows at least a 1/2 decode
    return aug.on_device(torch.stack([v for v, _ in views]), torch.stack([p for _, p in views]))


def test_the_device_half_never_reads_a_value_back_to_the_host(monkeypatch):
    """Every per-sample choice is a mask or a factor: on a GPU the batch is augmented without a sync."""
    from pretrain.device_augment import NUM_PARAMS, SIGMA, DeviceAugPlus

    aug = DeviceAugPlus(SIZE)
    pixels = torch.randint(0, 256, (4, 3, SIZE, SIZE), dtype=torch.uint8)
    params = torch.rand(4, NUM_PARAMS)
    params[:, SIGMA] = torch.tensor([0.0, 0.5, 1.0, 2.0])

    def read_back(*_args, **_kwargs):
        raise AssertionError("a device value was read on the host")

    for name in ("__bool__", "__int__", "__float__", "item", "tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, read_back)
    out = aug(pixels, params)
    monkeypatch.undo()
    assert out.shape == (4, 3, SIZE, SIZE) and torch.isfinite(out).all()
