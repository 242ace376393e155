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
from tests.pretrain.layouts import moco_checkpoint

TEACHER_QUEUE_VALUE = 0.25  # what the teacher file's MoCo queue holds: must never reach the student


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A main_moco.py checkpoint of a resnet10t teacher (hidden 64, 128-d) with its own queue."""
    ckpt, _, _ = moco_checkpoint("resnet10t", hidden=64, out_dim=128, queue_value=TEACHER_QUEUE_VALUE)
    path = tmp_path_factory.mktemp("teacher") / "moco_teacher.pth.tar"
    torch.save(ckpt, path)
    return str(path)


def tiny_cfg(method: str, teacher_ckpt: str | None, **extra) -> PretrainConfig:
    return PretrainConfig(method=method, student="resnet10t", teacher_ckpt=teacher_ckpt, batch_size=8, image_size=16,
                          queue_size=32, key_momentum=0.9, seed=0, **extra)


def views_for(method, batch: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 3, 16, 16, generator=gen) for _ in range(method.num_views)]


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def one_step(method, views) -> dict[str, torch.Tensor]:
    method.train()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    terms = method(views)
    opt.zero_grad()
    terms["loss"].backward()
    opt.step()
    return terms


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
    cfg = tiny_cfg(name, teacher_ckpt if name != "moco" else None, teacher_bn=teacher_bn)
    method, teacher_info = build_method(cfg)
    student_before = snapshot(method.student)
    teacher_before = snapshot(method.teacher) if method.teacher is not None else None
    out = one_step(method, views_for(method))

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
    disco, _ = build_method(tiny_cfg("disco", teacher_ckpt))
    star, _ = build_method(tiny_cfg("disco*", teacher_ckpt))
    seed, _ = build_method(tiny_cfg("seed", teacher_ckpt))
    assert disco.student.head.spec() == {"in_dim": 512, "hidden": 2048, "out_dim": 128, "batchnorm": False,
                                         "layers": 2, "activation": "relu"}
    assert star.student.head.hidden == 512 == seed.student.head.hidden  # resnet10t pools 512 features
    explicit, _ = build_method(tiny_cfg("disco", teacher_ckpt, hidden=1024))
    assert explicit.student.head.hidden == 1024


def test_teacher_queue_is_never_copied_into_the_student(teacher_ckpt):
    method, _ = build_method(tiny_cfg("disco", teacher_ckpt))
    fresh, _ = build_method(tiny_cfg("moco", None, hidden=2048))
    # the student's queue is its own random init (that of a teacher-less run of the same shape), not the file's
    assert torch.equal(method.queue.items, fresh.queue.items)
    assert not torch.isclose(method.queue.items, torch.tensor(TEACHER_QUEUE_VALUE)).any()
    assert not any(k.startswith("teacher.") for k in method_state(method))


def test_teacher_embedding_width_must_match_dim(teacher_ckpt):
    from pretrain.errors import InputError

    with pytest.raises(InputError, match=r"teacher embedding size 128 .* differs from the student's dim 64; set dim=128"):
        build_method(dataclasses.replace(tiny_cfg("disco", teacher_ckpt), dim=64))


# --- FrozenTeacher ---------------------------------------------------------------------------


def small_encoder() -> Encoder:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
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


def test_frozen_teacher_rejects_unknown_bn_mode():
    with pytest.raises(ValueError, match="teacher_bn must be 'eval' or 'train', got 'frozen'"):
        FrozenTeacher(small_encoder(), bn_mode="frozen")
