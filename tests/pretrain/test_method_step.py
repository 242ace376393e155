"""One optimisation step of each method on tiny generated data, and the frozen teacher's contract."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from pretrain.config import PretrainConfig
from pretrain.methods.base import FrozenTeacher
from pretrain.models import Encoder, ProjectionHead
from pretrain.train import build_method, method_state
from tests.pretrain.helpers import TEACHER_QUEUE_VALUE, sgd_step, snapshot, tiny_cfg, views_for

# the MoCo-v2 testbed's shapes (128-d embedding, the method's own head width) at toy size
MOCO_TESTBED = dict(batch_size=8, image_size=16, queue_size=32, dim=128, hidden=None)


def cfg_for(method: str, teacher_ckpt: str | None, **extra) -> PretrainConfig:
    return tiny_cfg(method, teacher_ckpt=teacher_ckpt, **(MOCO_TESTBED | extra))


@pytest.mark.parametrize(
    ("name", "teacher_bn", "terms"),
    [
        ("moco", "eval", {"loss", "loss_con"}),
        ("disco", "eval", {"loss", "loss_con", "loss_dis"}),
        ("disco", "train", {"loss", "loss_con", "loss_dis"}),
        ("disco*", "eval", {"loss", "loss_con", "loss_dis"}),
        ("seed", "eval", {"loss", "loss_seed"}),
    ],
)
def test_one_step_trains_the_student_only(name, teacher_bn, terms, teacher_ckpt):
    cfg = cfg_for(name, teacher_ckpt if name != "moco" else None, teacher_bn=teacher_bn)
    method, teacher_info = build_method(cfg)
    student_before = snapshot(method.student)
    teacher_before = snapshot(method.teacher) if method.teacher is not None else None
    out = sgd_step(method, views_for(method))

    assert set(out) == terms
    assert all(torch.isfinite(v) for v in out.values())
    assert not any(v.requires_grad for k, v in out.items() if k != "loss")
    assert int(method.queue.ptr) == 8  # one batch of 8 enqueued into a queue of 32
    changed = [k for k, v in method.student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert any(k.startswith("backbone.") for k in changed) and any(k.startswith("head.") for k in changed)
    if teacher_before is not None:
        # weights and BN running stats untouched, in either BN mode
        assert all(torch.equal(v, teacher_before[k]) for k, v in method.teacher.state_dict().items())
        assert not any(p.requires_grad for p in method.teacher.parameters())
        assert teacher_info["format"] == "moco"


def test_disco_head_is_2048_wide_and_disco_star_matches_the_student_features(teacher_ckpt):
    disco, _ = build_method(cfg_for("disco", teacher_ckpt))
    star, _ = build_method(cfg_for("disco*", teacher_ckpt))
    seed, _ = build_method(cfg_for("seed", teacher_ckpt))
    assert disco.student.head.spec() == {
        "in_dim": 512,
        "hidden": 2048,
        "out_dim": 128,
        "batchnorm": False,
        "layers": 2,
        "activation": "relu",
    }
    assert star.student.head.hidden == 512 == seed.student.head.hidden  # resnet10t pools 512 features
    explicit, _ = build_method(cfg_for("disco", teacher_ckpt, hidden=1024))
    assert explicit.student.head.hidden == 1024


def test_teacher_queue_is_never_copied_into_the_student(teacher_ckpt):
    method, _ = build_method(cfg_for("disco", teacher_ckpt))
    fresh, _ = build_method(cfg_for("moco", None, hidden=2048))
    # the student's queue is its own random init (that of a teacher-less run of the same shape), not the file's
    assert torch.equal(method.queue.items, fresh.queue.items)
    assert not torch.isclose(method.queue.items, torch.tensor(TEACHER_QUEUE_VALUE)).any()
    assert not any(k.startswith("teacher.") for k in method_state(method))


def test_teacher_embedding_width_must_match_dim(teacher_ckpt):
    from infra.errors import InputError

    with pytest.raises(
        InputError, match=r"teacher embedding size 128 .* differs from the student's dim 64; set dim=128"
    ):
        build_method(dataclasses.replace(cfg_for("disco", teacher_ckpt), dim=64))


# --- FrozenTeacher ---------------------------------------------------------------------------


def small_encoder() -> Encoder:
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    encoder = Encoder(backbone, ProjectionHead(4, 8, 3))
    with torch.no_grad():  # running stats far from the batch's, so eval and train mode differ
        backbone[1].running_mean.fill_(3.0)
        backbone[1].running_var.fill_(9.0)
    return encoder


X = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def test_frozen_teacher_eval_mode_uses_running_stats_without_grad():
    encoder = small_encoder()
    reference = copy.deepcopy(encoder).eval()
    teacher = FrozenTeacher(encoder)
    teacher.train()  # the student's .train() reaches the teacher: its BN must stay in eval mode
    assert not encoder.backbone[1].training
    out = teacher(X)
    assert not out.requires_grad
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        assert torch.equal(out, reference(X))


def test_frozen_teacher_train_mode_uses_batch_stats_but_keeps_running_stats():
    encoder = small_encoder()
    reference = copy.deepcopy(encoder).train()
    before = snapshot(encoder)
    teacher = FrozenTeacher(encoder, bn_mode="train").train()
    out = teacher(X)
    with torch.no_grad():
        expected = reference(X)  # batch statistics (and this copy's running stats move)
    assert torch.equal(out, expected)
    assert not torch.allclose(out, FrozenTeacher(copy.deepcopy(encoder))(X))
    after = encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not torch.equal(reference.backbone[1].running_mean, before["backbone.1.running_mean"])


def test_frozen_teacher_embeds_views_in_one_batch_with_the_same_numbers():
    teacher = FrozenTeacher(small_encoder())
    a, b = X[:3], X[3:]
    joint = teacher.embed_views([a, b], batched=True)
    assert torch.allclose(joint[0], teacher(a), atol=1e-6) and torch.allclose(joint[1], teacher(b), atol=1e-6)
    calls = []
    teacher.register_forward_pre_hook(lambda _, args: calls.append(args[0].shape[0]))
    teacher.embed_views([a, b])  # CPU tensors: one forward per view
    teacher.embed_views([a, b], batched=True)
    assert calls == [3, 3, 6]
