"""Relational KD: distance and angle terms against hand-written references, one training step of
``rkd`` and ``rkd+disco``."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.methods import METHODS
from pretrain.methods.rkd import rkd_angle_loss, rkd_distance_loss, rkd_loss
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


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5


def ref_distances(x: list) -> list:
    n = len(x)
    d = [[math.dist(x[i], x[j]) for j in range(n)] for i in range(n)]
    mean = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return [[d[i][j] / mean for j in range(n)] for i in range(n)]


def ref_distance_loss(s: list, t: list) -> float:
    ds, dt = ref_distances(s), ref_distances(t)
    n = len(s)
    terms = [huber(ds[i][j] - dt[i][j]) for i in range(n) for j in range(n) if i != j]
    return sum(terms) / len(terms)


def ref_cos(x: list, j: int, i: int, k: int) -> float:
    e1 = [a - b for a, b in zip(x[i], x[j])]
    e2 = [a - b for a, b in zip(x[k], x[j])]
    return sum(a * b for a, b in zip(e1, e2)) / (math.hypot(*e1) * math.hypot(*e2))


def ref_angle_loss(s: list, t: list) -> float:
    n = len(s)
    terms = [
        huber(ref_cos(s, j, i, k) - ref_cos(t, j, i, k))
        for j in range(n)
        for i in range(n)
        for k in range(n)
        if i != j and k != j
    ]
    return sum(terms) / len(terms)


@pytest.fixture()
def embeddings():
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    teacher = 3.0 * torch.randn(5, 6, generator=gen, dtype=torch.float64)  # other width, large distances
    return student, teacher


def test_distance_loss_matches_hand_reference(embeddings):
    s, t = embeddings
    assert rkd_distance_loss(s, t).item() == pytest.approx(
        ref_distance_loss(s.tolist(), t.tolist()), rel=1e-9
    )


def test_angle_loss_matches_hand_reference(embeddings):
    s, t = embeddings
    assert rkd_angle_loss(s, t).item() == pytest.approx(ref_angle_loss(s.tolist(), t.tolist()), rel=1e-9)


def test_huber_beyond_delta_is_linear():
    """Distances that differ by more than 1 after normalisation use the linear branch of Huber."""
    s = torch.tensor([[0.0], [10.0], [10.001]], dtype=torch.float64)  # pair (0, 1) far apart here,
    t = torch.tensor([[0.0], [0.001], [10.0]], dtype=torch.float64)  # close together here
    assert rkd_distance_loss(s, t).item() == pytest.approx(
        ref_distance_loss(s.tolist(), t.tolist()), rel=1e-12
    )
    assert (
        max(
            abs(a - b) for a, b in zip(sum(ref_distances(s.tolist()), []), sum(ref_distances(t.tolist()), []))
        )
        > 1.0
    )


def test_relations_are_invariant_to_scale_and_rotation():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    y = 5.0 * x @ rotation + 2.0
    assert rkd_loss(x, y, 1.0, 2.0).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_is_finite_with_duplicate_rows():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], requires_grad=True)
    loss = rkd_loss(x, torch.randn(4, 3), 1.0, 2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["rkd", "rkd+disco"])
def test_one_step_of_rkd_methods(name):
    cfg = tiny_cfg(name, rkd_distance_weight=1.5, rkd_angle_weight=0.5)
    torch.manual_seed(0)
    method = METHODS[name](cfg, build_backbone("resnet10t"), tiny_teacher())
    before = snapshot(method)
    terms = sgd_step(method, random_views(2))
    assert set(terms) == {"loss", "loss_con", "loss_rkd"} | ({"loss_dis"} if name == "rkd+disco" else set())
    assert all(torch.isfinite(v) for v in terms.values()) and terms["loss_rkd"] > 0
    expected = terms["loss_con"] + terms["loss_rkd"] + cfg.distill_weight * terms.get("loss_dis", 0.0)
    assert terms["loss"].item() == pytest.approx(float(expected), rel=1e-5)
    assert changed(before, method, "encoder_q.backbone.") and changed(before, method, "encoder_q.head.")
    assert_teacher_untouched(method, before)


def test_rkd_weights_are_recorded_in_protocol():
    protocol = tiny_cfg("rkd+disco", rkd_distance_weight=25.0, rkd_angle_weight=50.0).protocol()
    assert (protocol["rkd_distance_weight"], protocol["rkd_angle_weight"]) == (25.0, 50.0)
    assert {"distill_weight", "distill_reduction"} <= set(protocol)
    assert not any(
        k.startswith(("at_", "swav_", "dino_", "multicrop_")) for k in protocol
    )  # other methods' settings
    assert tiny_cfg("at+disco", at_weight=7.0).protocol()["at_weight"] == 7.0
    assert "rkd_angle_weight" not in tiny_cfg("disco").protocol()
