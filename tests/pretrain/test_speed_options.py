"""The speed options of issue 9: off by default, recorded in the protocol, and (where they keep the
numbers) equal to the plain code. No timing here: benchmarks/ measures speed."""

from __future__ import annotations

import copy

import pytest
import torch

from pretrain.config import PretrainConfig
from pretrain.methods.base import FrozenTeacher, momentum_update
from pretrain.models import Encoder, ProjectionHead, build_backbone, feature_dim
from pretrain.train import build_method, train_step
from tests.pretrain.test_method_step import teacher_ckpt, tiny_cfg, views_for  # noqa: F401 (fixture)


def test_speed_options_are_off_by_default_and_recorded():
    cfg = PretrainConfig(method="disco")
    protocol = cfg.protocol()
    assert (protocol["aug_impl"], protocol["teacher_amp"], protocol["teacher_channels_last"]) == ("torchvision", "none", False)
    assert (protocol["amp"], protocol["channels_last"]) == ("none", False)
    fast = PretrainConfig(method="disco", aug_impl="fast", teacher_amp="bf16", teacher_channels_last=True).protocol()
    assert (fast["aug_impl"], fast["teacher_amp"], fast["teacher_channels_last"]) == ("fast", "bf16", True)


def test_multi_tensor_momentum_update_equals_the_per_parameter_loop():
    torch.manual_seed(0)
    source = build_backbone("resnet10t")
    target = copy.deepcopy(source)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
        for b in source.buffers():
            b.add_(1) if b.is_floating_point() else b.add_(3)
    expected = copy.deepcopy(target)
    with torch.no_grad():
        for p_t, p_s in zip(expected.parameters(), source.parameters(), strict=True):
            p_t.mul_(0.99).add_(p_s, alpha=0.01)
        for b_t, b_s in zip(expected.buffers(), source.buffers(), strict=True):
            b_t.copy_(b_s)
    momentum_update(target, source, 0.99)
    for (name, a), b in zip(target.state_dict().items(), expected.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def teacher_encoder() -> Encoder:
    torch.manual_seed(0)
    backbone = build_backbone("resnet10t")
    return Encoder(backbone, ProjectionHead(feature_dim(backbone), 32, 16))


def test_teacher_channels_last_keeps_the_numbers_and_bf16_stays_close():
    x = torch.randn(4, 3, 32, 32)
    plain = FrozenTeacher(teacher_encoder())(x)
    cl = FrozenTeacher(teacher_encoder(), channels_last=True)
    assert cl.encoder.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(cl(x), plain, atol=1e-5)
    bf16 = FrozenTeacher(teacher_encoder(), amp="bf16", channels_last=True)(x)
    assert bf16.dtype == torch.float32 and bf16.shape == plain.shape
    assert torch.allclose(bf16, plain, atol=0.05)  # bf16 keeps about 3 significant digits
    with pytest.raises(ValueError, match="teacher_amp"):
        FrozenTeacher(teacher_encoder(), amp="int8")


def test_train_step_with_the_fast_options_trains_disco(teacher_ckpt):  # noqa: F811
    method, _ = build_method(tiny_cfg("disco", teacher_ckpt, teacher_amp="bf16", teacher_channels_last=True))
    method.train()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    before = copy.deepcopy(method.encoder_q.state_dict())
    values = train_step(method, views_for(method), opt, scaler, torch.autocast("cpu", enabled=False))
    assert set(values) == {"loss", "loss_con", "loss_dis"} and all(isinstance(v, float) for v in values.values())
    assert any(not torch.equal(before[k], v) for k, v in method.encoder_q.state_dict().items())


def test_train_step_returns_a_non_finite_loss_without_stepping(teacher_ckpt):  # noqa: F811
    method, _ = build_method(tiny_cfg("moco", None))
    method.train()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    before = {k: v.detach().clone() for k, v in method.encoder_q.named_parameters()}
    views = [torch.full((8, 3, 16, 16), float("nan")) for _ in range(2)]
    values = train_step(method, views, opt, torch.amp.GradScaler("cuda", enabled=False), torch.autocast("cpu", enabled=False))
    assert values["loss"] != values["loss"]  # NaN
    assert all(torch.equal(before[k], v) for k, v in method.encoder_q.named_parameters())  # no optimiser step
