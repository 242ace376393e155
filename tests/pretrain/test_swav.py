"""SwAV: Sinkhorn-Knopp and the swapped-prediction loss against hand-written references, one
training step of ``swav`` and ``swav+disco`` (with multi-crop), and the multi-crop data path."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from infra.errors import InputError
from pretrain.data import MultiViewDataset, image_folder
from pretrain.methods import METHODS
from pretrain.methods.swav import sinkhorn_knopp, swapped_prediction_loss
from pretrain.models import build_backbone
from pretrain.train import pretrain
from tests.pretrain.helpers import (
    assert_teacher_untouched,
    changed,
    random_views,
    sgd_step,
    snapshot,
    tiny_cfg,
    tiny_teacher,
)

SCORES = [[0.9, -0.2], [0.1, 0.4], [-0.5, 0.3]]  # B = 3 samples, K = 2 prototypes


def reference_sinkhorn(scores: list, eps: float, iters: int) -> list:
    """SwAV's algorithm written with loops on a K x B table of floats."""
    b, k = len(scores), len(scores[0])
    q = [[math.exp(scores[i][j] / eps) for i in range(b)] for j in range(k)]
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(iters):
        q = [[v / sum(row) / k for v in row] for row in q]  # each prototype's mass 1/K
        cols = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / cols[i] / b for i in range(b)] for j in range(k)]  # each sample's mass 1/B
    return [[q[j][i] * b for j in range(k)] for i in range(b)]  # (B, K)


@pytest.mark.parametrize("iters", [1, 3])
def test_sinkhorn_matches_hand_reference(iters):
    got = sinkhorn_knopp(torch.tensor(SCORES, dtype=torch.float64), eps=0.5, iters=iters)
    expected = reference_sinkhorn(SCORES, 0.5, iters)
    assert got.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert got[i, j].item() == pytest.approx(expected[i][j], rel=1e-6)


def test_sinkhorn_rows_sum_to_one_and_columns_to_equal_shares():
    gen = torch.Generator().manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(12, 4, generator=gen), dim=1)
    q = sinkhorn_knopp(scores, eps=0.05, iters=3)
    assert torch.allclose(q.sum(dim=1), torch.ones(12), atol=1e-6)  # every sample: a distribution
    q_many = sinkhorn_knopp(scores, eps=0.5, iters=200)
    assert torch.allclose(q_many.sum(dim=0), torch.full((4,), 12 / 4), atol=1e-4)  # every prototype: B/K
    assert torch.allclose(q_many.sum(dim=1), torch.ones(12), atol=1e-6)


def test_sinkhorn_is_stable_for_small_eps():
    """exp(1 / 0.005) overflows float32; the max shift keeps the codes finite."""
    q = sinkhorn_knopp(torch.tensor(SCORES), eps=0.005, iters=3)
    assert torch.isfinite(q).all() and torch.allclose(q.sum(dim=1), torch.ones(3), atol=1e-5)


def test_swapped_prediction_matches_hand_reference():
    gen = torch.Generator().manual_seed(1)
    scores = [torch.randn(2, 3, generator=gen, dtype=torch.float64) for _ in range(3)]
    codes = [torch.softmax(torch.randn(2, 3, generator=gen, dtype=torch.float64), dim=1) for _ in range(2)]
    temp = 0.1

    def ce(q_row, s_row):
        logits = [v / temp for v in s_row]
        log_z = math.log(sum(math.exp(v) for v in logits))
        return -sum(qk * (lk - log_z) for qk, lk in zip(q_row, logits))

    per_code = []
    for i, q in enumerate(codes):
        others = [v for v in range(3) if v != i]
        per_code.append(
            sum(sum(ce(q[b].tolist(), scores[v][b].tolist()) for b in range(2)) / 2 for v in others)
            / len(others)
        )
    expected = sum(per_code) / 2
    assert swapped_prediction_loss(scores, codes, temp).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", ["swav", "swav+disco"])
def test_one_step_with_multicrop(name):
    cfg = tiny_cfg(name, multicrop_small_crops=2, multicrop_small_size=16, swav_freeze_prototypes_epochs=0)
    torch.manual_seed(0)
    teacher = tiny_teacher() if METHODS[name].needs_teacher else None
    method = METHODS[name](cfg, build_backbone("resnet10t"), teacher)
    assert method.num_views == 4 and len(method.view_transforms()) == 4
    before = snapshot(method)
    terms = sgd_step(method, random_views(4))
    assert set(terms) == {"loss", "loss_swav"} | ({"loss_dis"} if teacher else set())
    assert all(torch.isfinite(v) for v in terms.values())
    assert changed(before, method, "encoder.backbone.") and changed(before, method, "encoder.head.")
    assert changed(before, method, "prototypes.")
    with torch.no_grad():  # every forward starts by re-normalising the prototypes, as SwAV does
        method(random_views(4, seed=1))
    assert torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(cfg.swav_prototypes), atol=1e-6)
    if teacher:
        assert terms["loss"].item() == pytest.approx(float(terms["loss_swav"] + terms["loss_dis"]), rel=1e-5)
        assert_teacher_untouched(method, before)


def test_prototypes_frozen_for_the_first_epoch():
    cfg = tiny_cfg("swav", swav_freeze_prototypes_epochs=1)
    torch.manual_seed(0)
    method = METHODS["swav"](cfg, build_backbone("resnet10t"), None)
    with torch.no_grad():  # normalised already, so the per-step re-normalisation changes nothing
        method.prototypes.weight.copy_(torch.nn.functional.normalize(method.prototypes.weight, dim=1))
    method.on_step(1, 10, 5)
    before = snapshot(method)
    sgd_step(method, random_views(2))
    assert torch.allclose(method.prototypes.weight, before["prototypes.weight"], atol=1e-6)
    assert changed(before, method, "encoder.head.")
    assert method.prototypes.weight.grad is None  # cancelled after the backward: no momentum, no decay
    method.on_step(4, 10, 5)
    assert method.freeze_prototypes
    method.on_step(5, 10, 5)  # the second epoch
    assert not method.freeze_prototypes


def test_bad_multicrop_size_is_one_line_error():
    with pytest.raises(InputError, match="multicrop_small_size: expected 1..image_size"):
        METHODS["swav"](
            tiny_cfg("swav", multicrop_small_crops=2, multicrop_small_size=64), build_backbone("resnet10t")
        )


def test_multicrop_views_through_the_dataset(tiny_imagefolder):
    cfg = tiny_cfg("swav", image_size=16, multicrop_small_crops=3, multicrop_small_size=8)
    method = METHODS["swav"](cfg, build_backbone("resnet10t"), None)
    dataset = MultiViewDataset(
        image_folder(tiny_imagefolder / "train"), method.view_transforms(), method.num_views, 0
    )
    views, _ = dataset[0]
    assert [tuple(v.shape) for v in views] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 3
    again, _ = dataset[0]
    assert all(torch.equal(a, b) for a, b in zip(views, again))  # deterministic per (seed, epoch, index)
    with pytest.raises(InputError, match="2 transforms given for 5 views"):
        MultiViewDataset(image_folder(tiny_imagefolder / "train"), method.view_transforms()[:2], 5, 0)


def test_swav_multicrop_trains_through_the_loop(tiny_pretrain_cfg):
    cfg = dataclasses.replace(
        tiny_pretrain_cfg,
        method="swav",
        max_steps=2,
        multicrop_small_crops=2,
        multicrop_small_size=8,
        swav_prototypes=8,
        dim=16,
        hidden=32,
        swav_freeze_prototypes_epochs=1,
    )
    summary = pretrain(cfg, progress=False)
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"]["loss"])


def test_feature_queue_only_for_small_batches_and_a_multiple_of_the_batch():
    from pretrain.methods.swav import queue_length

    assert queue_length(tiny_cfg("swav", batch_size=256)) == 3840
    assert queue_length(tiny_cfg("swav", batch_size=100)) == 3800  # cut to a multiple of the global batch
    assert queue_length(tiny_cfg("swav", batch_size=4096)) == 0  # SwAV's large-batch recipe has none
    assert (
        METHODS["swav"](tiny_cfg("swav", batch_size=512), build_backbone("resnet10t")).feature_queue is None
    )


def test_feature_queue_fills_from_its_epoch_then_joins_sinkhorn():
    cfg = tiny_cfg(
        "swav", batch_size=4, swav_queue_length=8, swav_queue_start_epoch=1, swav_freeze_prototypes_epochs=0
    )
    torch.manual_seed(0)
    method = METHODS["swav"](cfg, build_backbone("resnet10t"))
    queue = method.feature_queue
    method.on_step(4, 100, 5)  # epoch 0: not started
    sgd_step(method, random_views(2))
    assert int(queue.filled) == 0 and not queue.items.any()

    method.on_step(5, 100, 5)  # epoch 1
    zs = []
    for seed in (1, 2):
        views = random_views(2, seed=seed)
        with torch.no_grad():
            method.train()
            zs.append([z.clone() for z in method.swav_terms(views)[0]])
    assert int(queue.filled) == 8 and queue.full()
    for view in (0, 1):  # newest batch first
        assert torch.equal(queue.items[view], torch.cat([zs[1][view], zs[0][view]]))

    # once full, a view's codes are Sinkhorn over [queue scores; batch scores], the batch's rows kept
    gen = torch.Generator().manual_seed(3)
    scores, z = torch.randn(4, 8, generator=gen), torch.randn(4, 16, generator=gen)
    expected = sinkhorn_knopp(
        torch.cat([queue.items[0] @ method.prototypes.weight.t(), scores]),
        cfg.swav_sinkhorn_eps,
        cfg.swav_sinkhorn_iters,
    )[-4:]
    before = queue.items[0].clone()
    assert torch.allclose(method.codes(scores, z, 0), expected, atol=1e-6)
    assert torch.equal(queue.items[0][:4], z) and torch.equal(queue.items[0][4:], before[:4])
