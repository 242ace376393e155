"""DINO: the loss, centre and schedules against hand-written references, one training step of
``dino`` and ``dino+disco`` with ViT / XCiT students and ViT-S / XCiT-S teachers (tiny settings)."""

from __future__ import annotations

import math

import pytest
import torch

from infra.errors import InputError
from pretrain.methods import METHODS
from pretrain.methods.dino import cosine_to_one, dino_loss, updated_center
from pretrain.models import build_backbone
from tests.pretrain.helpers import (
    assert_teacher_untouched,
    changed,
    random_views,
    sgd_step,
    snapshot,
    tiny_cfg,
    tiny_teacher,
)

# tiny stand-ins for the paper's pairs: same timm families, one block, 32 px images
STUDENTS = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=1, dynamic_img_size=True)),
    "xcit": ("xcit_tiny_12_p16_224", dict(depth=1)),
}
TEACHERS = {
    "vit": ("vit_small_patch16_224", dict(img_size=32, patch_size=8, depth=1)),
    "xcit": ("xcit_small_12_p16_224", dict(depth=1)),
}


def softmax(row: list) -> list:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def test_dino_loss_matches_hand_reference():
    gen = torch.Generator().manual_seed(0)
    student = [
        torch.randn(2, 3, generator=gen, dtype=torch.float64) for _ in range(3)
    ]  # 2 large + 1 small view
    teacher = [torch.randn(2, 3, generator=gen, dtype=torch.float64) for _ in range(2)]
    center = torch.tensor([[0.3, -0.1, 0.2]], dtype=torch.float64)
    tau_s, tau_t = 0.1, 0.04
    pairs = []
    for i in range(2):
        for v in range(3):
            if v == i:
                continue
            per_sample = []
            for b in range(2):
                p = softmax([(teacher[i][b, k].item() - center[0, k].item()) / tau_t for k in range(3)])
                q = softmax([student[v][b, k].item() / tau_s for k in range(3)])
                per_sample.append(-sum(p[k] * math.log(q[k]) for k in range(3)))
            pairs.append(sum(per_sample) / 2)
    expected = sum(pairs) / len(pairs)  # 4 pairs: (0,1), (0,2), (1,0), (1,2)
    assert len(pairs) == 4
    assert dino_loss(student, teacher, center, tau_s, tau_t).item() == pytest.approx(expected, rel=1e-9)


def test_center_update_matches_hand_reference():
    center = torch.tensor([[1.0, -2.0]])
    teacher = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[5.0, 6.0], [7.0, 8.0]])]
    # batch mean over both views: (16 / 4, 20 / 4) = (4, 5)
    got = updated_center(center, teacher, 0.9)
    assert torch.allclose(got, torch.tensor([[0.9 * 1.0 + 0.1 * 4.0, 0.9 * -2.0 + 0.1 * 5.0]]))


def test_momentum_schedule():
    assert cosine_to_one(0.996, 0, 100) == pytest.approx(0.996)
    assert cosine_to_one(0.996, 50, 100) == pytest.approx(0.998)
    assert cosine_to_one(0.996, 100, 100) == pytest.approx(1.0)


def test_teacher_temperature_warmup_and_last_layer_freeze():
    cfg = tiny_cfg(
        "dino",
        dino_warmup_teacher_temp=0.04,
        dino_teacher_temp=0.07,
        dino_warmup_teacher_temp_epochs=2,
        dino_freeze_last_layer_epochs=1,
    )
    name, kwargs = STUDENTS["vit"]
    method = METHODS["dino"](cfg, build_backbone(name, **kwargs))
    method.on_step(5, 100, 10)  # epoch 0 of a 2-epoch warm-up
    assert method.teacher_temp == pytest.approx(0.04 + 0.03 * 5 / 20) and method.freeze_last_layer
    method.on_step(25, 100, 10)
    assert method.teacher_temp == pytest.approx(0.07) and not method.freeze_last_layer
    assert method.momentum == pytest.approx(cosine_to_one(0.996, 25, 100))


@pytest.mark.parametrize("family", ["vit", "xcit"])
@pytest.mark.parametrize("name", ["dino", "dino+disco"])
def test_one_step(name, family):
    cfg = tiny_cfg(name, multicrop_small_crops=2 if family == "vit" else 0, multicrop_small_size=16)
    torch.manual_seed(0)
    arch, kwargs = STUDENTS[family]
    teacher = None
    if METHODS[name].needs_teacher:
        t_arch, t_kwargs = TEACHERS[family]
        teacher = tiny_teacher(t_arch, dim=cfg.dim, layers=3, **t_kwargs)
    method = METHODS[name](cfg, build_backbone(arch, **kwargs), teacher)
    method.on_step(10, 100, 5)  # past the frozen-last-layer epoch
    with torch.no_grad():  # as after earlier steps: the student has moved away from its EMA
        for p in [*method.encoder.parameters(), *method.prototypes.parameters()]:
            p.add_(0.01 * torch.randn_like(p))
    before = snapshot(method)
    terms = sgd_step(method, random_views(method.num_views))
    assert set(terms) == {"loss", "loss_dino"} | ({"loss_dis"} if teacher else set())
    assert all(torch.isfinite(v) for v in terms.values())
    assert changed(before, method, "encoder.backbone.") and changed(before, method, "encoder.head.")
    assert changed(before, method, "prototypes.") and changed(before, method, "center")
    # the EMA moved by (1 - m) towards the student as it was before the step: m x ema + (1 - m) x student
    # (parameters only: the EMA's own BN statistics, as in XCiT's patch embedding, move with its forward)
    m = cosine_to_one(cfg.dino_momentum, 10, 100)
    ema = {k: v for k, v in method.named_parameters() if k.startswith("ema_")}
    assert ema and all(not torch.equal(v, before[k]) for k, v in ema.items())
    for k, v in ema.items():
        torch.testing.assert_close(
            v, m * before[k] + (1 - m) * before[k.removeprefix("ema_")], rtol=0, atol=1e-6
        )
    assert all(not p.requires_grad for n, p in method.named_parameters() if n.startswith("ema_"))
    if teacher:
        assert terms["loss"].item() == pytest.approx(float(terms["loss_dino"] + terms["loss_dis"]), rel=1e-5)
        assert_teacher_untouched(method, before)


def test_ema_follows_the_student_and_last_layer_can_be_frozen():
    cfg = tiny_cfg("dino", dino_momentum=0.9)
    arch, kwargs = STUDENTS["vit"]
    torch.manual_seed(0)
    method = METHODS["dino"](cfg, build_backbone(arch, **kwargs))
    method.on_step(0, 0, 5)  # first epoch: last layer frozen; total 0 keeps the base momentum
    before = snapshot(method)
    sgd_step(method, random_views(2))
    assert changed(before, method, "prototypes.") == []  # frozen during the first epoch
    student_after = method.encoder.head.net[0].weight.detach().clone()
    ema_before = method.ema_encoder.head.net[0].weight.detach().clone()
    with torch.no_grad():
        method(random_views(2, seed=1))
    expected = 0.9 * ema_before + 0.1 * student_after
    assert torch.allclose(method.ema_encoder.head.net[0].weight, expected, atol=1e-7)


def test_multicrop_needs_a_dynamic_size_vit():
    cfg = tiny_cfg("dino", multicrop_small_crops=2, multicrop_small_size=16)
    with pytest.raises(InputError, match="dynamic_img_size=True"):
        METHODS["dino"](cfg, build_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1))


def test_dino_disco_takes_the_embedding_width_from_a_dino_teacher_checkpoint(tmp_path):
    """A DINO release's head has a 256-d bottleneck while dim defaults to 128: dino+disco builds its
    projector and prototype layer at the teacher's width (here 24) and records it; plain dino keeps dim."""
    from pretrain.train import build_method, resolved_protocol
    from tests.pretrain.layouts import dino_checkpoint

    ckpt, _, _ = dino_checkpoint("resnet10t", hidden=32, bottleneck=24, use_bn=False)
    torch.save(ckpt, tmp_path / "dino_teacher.pth")
    cfg = tiny_cfg("dino+disco", teacher_ckpt=str(tmp_path / "dino_teacher.pth"), dim=128)
    method, info = build_method(cfg)
    assert method.student.head.out_dim == 24 and method.prototypes.weight.shape == (cfg.dino_out_dim, 24)
    assert resolved_protocol(cfg, method, info)["dim"] == 24
    terms = sgd_step(method, random_views(2))
    assert torch.isfinite(terms["loss_dis"]) and terms["loss_dis"] > 0
    assert METHODS["dino"](cfg, build_backbone("resnet10t")).student.head.out_dim == 128
