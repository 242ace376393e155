"""det_norm=frozen must not change what the backbone computes: timm's BatchNormAct2d (MobileNetV3,
EfficientNet) carries its activation, which a plain FrozenBatchNorm2d would drop."""

import pytest
import torch

from downstream.detection.backbones import build_features, freeze_batchnorm

# every CNN student of the paper (its ViT students have no detection path) and the cpu suite's nets
STUDENTS = ["efficientnet_b0", "efficientnet_b1", "mobilenetv3_large_100", "resnet18", "resnet34"]


@pytest.mark.parametrize("arch", [*STUDENTS, "mobilenetv3_small_050", "resnet14t"])
def test_frozen_batchnorm_keeps_the_eval_function(arch):
    torch.manual_seed(0)
    body = build_features(arch).eval()
    for m in body.modules():  # non-trivial statistics, so a dropped activation or stat shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = body(x)
        frozen = freeze_batchnorm(body).eval()
        after = frozen(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
