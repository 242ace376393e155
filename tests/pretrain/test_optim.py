"""pretrain/optim.py: LARS against a hand-computed update, DINO's clipping, the schedules against
hand-computed values, and which recipe each method gets."""

from __future__ import annotations

import math

import pytest
import torch

from infra.errors import InputError
from pretrain.methods import METHODS
from pretrain.models import build_backbone
from pretrain.optim import LARS, ClippedAdamW, apply_schedule, build_optimizer, family, warmup_cosine
from tests.pretrain.helpers import tiny_cfg


def test_lars_step_matches_hand_computed_update():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))  # |p| = 5
    opt = LARS([p], lr=2.0, momentum=0.9, weight_decay=0.1, trust_coefficient=0.001, eps=0.0)
    p.grad = torch.tensor([0.6, 0.8], dtype=torch.float64)  # |g| = 1
    opt.step()
    # ratio = 0.001 * 5 / (1 + 0.1 * 5) = 1/300; d = (g + 0.1 p) / 300 = (0.9, 1.2) / 300 = (0.003, 0.004)
    assert p.tolist() == pytest.approx([3.0 - 2 * 0.003, 4.0 - 2 * 0.004], rel=1e-12)
    p.grad = torch.tensor([0.0, 2.0], dtype=torch.float64)  # |g| = 2; p = (2.994, 3.992)
    opt.step()
    p_norm = math.hypot(2.994, 3.992)
    ratio = 0.001 * p_norm / (2 + 0.1 * p_norm)
    d = [(0.0 + 0.1 * 2.994) * ratio, (2.0 + 0.1 * 3.992) * ratio]
    buf = [0.9 * 0.003 + d[0], 0.9 * 0.004 + d[1]]
    assert p.tolist() == pytest.approx([2.994 - 2 * buf[0], 3.992 - 2 * buf[1]], rel=1e-12)


def test_lars_leaves_zero_norm_and_gradient_free_parameters_as_sgd_would():
    zero = torch.nn.Parameter(torch.zeros(2))
    frozen = torch.nn.Parameter(torch.ones(2))
    opt = LARS([zero, frozen], lr=0.5, momentum=0.9, weight_decay=0.1)
    zero.grad = torch.tensor([1.0, -2.0])  # |p| = 0: the plain gradient, no decay
    opt.step()
    assert zero.tolist() == [-0.5, 1.0] and frozen.tolist() == [1.0, 1.0] and frozen not in opt.state


def test_clipped_adamw_clips_each_parameter_on_its_own():
    big, small = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = ClippedAdamW([big, small], clip=3.0, lr=0.0, weight_decay=0.0)
    big.grad, small.grad = torch.tensor([30.0, 40.0]), torch.tensor([0.3, 0.4])
    opt.step()
    assert big.grad.tolist() == pytest.approx([3.0 * 30 / (50 + 1e-6), 3.0 * 40 / (50 + 1e-6)], rel=1e-6)
    assert small.grad.tolist() == [pytest.approx(0.3), pytest.approx(0.4)]  # under the norm: untouched


def test_warmup_cosine_matches_hand_values():
    # 4 warm-up steps from 0.1 to 1.0 (linspace: 0.1, 0.4, 0.7, 1.0), then 4 cosine steps to 0
    got = [warmup_cosine(s, 8, 4, 0.1, 1.0, 0.0) for s in range(8)]
    expected = [
        0.1,
        0.4,
        0.7,
        1.0,
        1.0,
        0.5 * (1 + math.cos(math.pi / 4)),
        0.5,
        0.5 * (1 + math.cos(3 * math.pi / 4)),
    ]
    assert got == pytest.approx(expected, abs=1e-12)


def test_schedules_per_family():
    per_epoch = 10
    swav = tiny_cfg("swav", batch_size=512, epochs=20, swav_warmup_epochs=2)
    model = METHODS["swav"](swav, build_backbone("resnet10t"))
    opt = build_optimizer(swav, model)
    assert isinstance(opt, LARS) and opt.param_groups[0]["weight_decay"] == 1e-6
    apply_schedule(opt, swav, 0, per_epoch)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.2 * 0.0625)  # 0.6 x 512/256, warm-up from 1/16 of it
    apply_schedule(opt, swav, 19, per_epoch)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.2)
    apply_schedule(opt, swav, 200, per_epoch)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.2e-3)

    dino = tiny_cfg("dino", batch_size=256, epochs=20, student="resnet10t")
    model = METHODS["dino"](dino, build_backbone("resnet10t"))
    opt = build_optimizer(dino, model)
    assert isinstance(opt, ClippedAdamW) and opt.clip == 3.0
    decayed, plain = opt.param_groups
    assert all(p.dim() > 1 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    apply_schedule(opt, dino, 0, per_epoch)
    assert (decayed["lr"], decayed["weight_decay"], plain["weight_decay"]) == (0.0, pytest.approx(0.04), 0.0)
    apply_schedule(opt, dino, 100, per_epoch)  # warm-up done (100 steps), half-way through the decay schedule
    assert decayed["lr"] == pytest.approx(5e-4) and decayed["weight_decay"] == pytest.approx(0.22)

    moco = tiny_cfg("moco", batch_size=256, epochs=4)
    opt = build_optimizer(moco, METHODS["moco"](moco, build_backbone("resnet10t")))
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["weight_decay"] == 1e-4
    apply_schedule(opt, moco, 25, per_epoch)  # epoch 2 of 4: the per-epoch cosine
    assert opt.param_groups[0]["lr"] == pytest.approx(0.03 * 0.5)


def test_recipe_per_method_and_bad_choice():
    assert {name: family(tiny_cfg(name)) for name in METHODS} == {
        name: "lars" if name.startswith("swav") else "adamw" if name.startswith("dino") else "sgd"
        for name in METHODS
    }
    assert family(tiny_cfg("swav+disco", swav_optimizer="sgd")) == "sgd"
    with pytest.raises(InputError, match="dino_optimizer='lars': expected one of adamw, sgd"):
        tiny_cfg("dino", dino_optimizer="lars")
