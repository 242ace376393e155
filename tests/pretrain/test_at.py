"""Attention transfer: the loss against a hand-written reference, the stage pairs per family, and
one training step of ``at`` and ``at+disco``."""

from __future__ import annotations

import math

import pytest
import torch

from infra.errors import InputError
from pretrain.methods import METHODS
from pretrain.methods.at import at_loss, stage_modules
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

# --- the loss -------------------------------------------------------------------------------------


def reference_attention(fm: list) -> list:
    """fm[b][c][h][w] nested lists -> a[b][h][w] = mean_c fm^2."""
    return [
        [
            [
                sum(fm[b][c][h][w] ** 2 for c in range(len(fm[b]))) / len(fm[b])
                for w in range(len(fm[b][0][0]))
            ]
            for h in range(len(fm[b][0]))
        ]
        for b in range(len(fm))
    ]


def reference_block_mean(a: list, factor: int) -> list:
    """a[b][h][w] -> block means over factor x factor blocks."""
    out = []
    for img in a:
        rows, cols = len(img) // factor, len(img[0]) // factor
        out.append(
            [
                [
                    sum(img[r * factor + i][c * factor + j] for i in range(factor) for j in range(factor))
                    / factor**2
                    for c in range(cols)
                ]
                for r in range(rows)
            ]
        )
    return out


def reference_pair_loss(a_s: list, a_t: list) -> float:
    total, count = 0.0, 0
    for img_s, img_t in zip(a_s, a_t):
        flat_s = [v for row in img_s for v in row]
        flat_t = [v for row in img_t for v in row]
        norm_s = math.sqrt(sum(v * v for v in flat_s))
        norm_t = math.sqrt(sum(v * v for v in flat_t))
        for vs, vt in zip(flat_s, flat_t):
            total += (vs / norm_s - vt / norm_t) ** 2
            count += 1
    return total / count


def test_at_loss_matches_hand_reference_with_resize():
    gen = torch.Generator().manual_seed(0)
    # pair 1: same size, different channel counts; pair 2: teacher map twice as large (pooled 4x4 -> 2x2)
    s1, t1 = torch.randn(2, 3, 2, 2, generator=gen), torch.randn(2, 5, 2, 2, generator=gen)
    s2, t2 = torch.randn(2, 2, 2, 2, generator=gen), torch.randn(2, 4, 4, 4, generator=gen)
    expected = reference_pair_loss(reference_attention(s1.tolist()), reference_attention(t1.tolist()))
    expected += reference_pair_loss(
        reference_attention(s2.tolist()), reference_block_mean(reference_attention(t2.tolist()), 2)
    )
    got = at_loss([s1, s2], [t1, t2])
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the student map may be the larger one too: pooling is symmetric
    assert at_loss([t2], [s2]).item() == pytest.approx(at_loss([s2], [t2]).item(), rel=1e-6)


def test_at_loss_is_zero_for_proportional_maps_and_has_gradient():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert at_loss([s], [3.0 * s.detach()]).item() == pytest.approx(0.0, abs=1e-12)
    loss = at_loss([s], [torch.randn(2, 7, 4, 4)])
    loss.backward()
    assert loss.item() > 0 and s.grad.abs().sum() > 0


# --- stage pairs ----------------------------------------------------------------------------------


def test_stage_pairs_per_family():
    strides = (4, 8, 16, 32)
    assert list(stage_modules(build_backbone("resnet10t"), strides, "student").values()) == [
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]
    assert list(stage_modules(build_backbone("efficientnet_b0"), strides, "student").values()) == [
        "blocks.1",
        "blocks.2",
        "blocks.4",
        "blocks.6",
    ]
    with pytest.raises(InputError, match=r"at_strides: the student .* no stage at stride \[4, 8, 32\]"):
        stage_modules(build_backbone("vit_tiny_patch16_224", img_size=32, depth=1), strides, "student")


# --- one training step ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["at", "at+disco"])
def test_one_step_of_at_methods(name):
    cfg = tiny_cfg(name, at_strides=(8, 16, 32))
    torch.manual_seed(0)
    method = METHODS[name](cfg, build_backbone("resnet10t"), tiny_teacher())
    before = snapshot(method)
    terms = sgd_step(method, random_views(2))
    assert set(terms) == {"loss", "loss_con", "loss_at"} | ({"loss_dis"} if name == "at+disco" else set())
    assert all(torch.isfinite(v) for v in terms.values()) and terms["loss_at"] > 0
    expected = (
        terms["loss_con"] + cfg.at_weight * terms["loss_at"] + cfg.distill_weight * terms.get("loss_dis", 0.0)
    )
    assert terms["loss"].item() == pytest.approx(float(expected), rel=1e-5)
    assert changed(before, method, "encoder_q.backbone.") and changed(before, method, "encoder_q.head.")
    assert changed(before, method, "queue.items")
    assert_teacher_untouched(method, before)
    assert method.student is method.encoder_q
    assert name == "at" or METHODS[name].default_hidden(512) == 2048


def test_at_gradient_reaches_early_stages_only_through_at():
    """The AT term alone (no contrastive gradient) moves the student's stem: its maps are tapped."""
    cfg = tiny_cfg("at", at_strides=(4,))
    torch.manual_seed(0)
    method = METHODS["at"](cfg, build_backbone("resnet10t"), tiny_teacher())
    v1 = random_views(1)[0]
    method.encoder_q(v1)
    _, loss_at = method.attention_term(v1)
    loss_at.backward()
    stem = method.encoder_q.backbone.conv1[0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert method.encoder_q.backbone.layer4[0].conv1.weight.grad is None  # after the stride-4 tap


# the methods added beyond the paper's DisCo, MoCo-v2 and SEED: attention transfer, relational KD,
# SwAV and DINO, each alone and with DisCo
ADDED_METHODS = ["at", "at+disco", "rkd", "rkd+disco", "swav", "swav+disco", "dino", "dino+disco"]


def test_every_method_is_listed_by_the_cli(capsys):
    import json

    from disco_bench.cli import main

    assert main(["list", "methods"]) == 0
    listed = json.loads(capsys.readouterr().out)["methods"]
    assert set(ADDED_METHODS) <= set(listed)
    for name in ADDED_METHODS:  # the contract every method keeps
        cls = METHODS[name]
        assert isinstance(cls.num_views, int) and isinstance(cls.needs_teacher, bool)
        assert cls.needs_teacher == (name not in ("swav", "dino"))
