"""The ablation "distillation loss only": DisCo's MSE to the teacher alone, no contrastive term."""

from __future__ import annotations

import torch

from pretrain.config import PretrainConfig
from pretrain.train import build_method
from tests.pretrain.helpers import sgd_step, snapshot, tiny_cfg, views_for


def test_distill_only_loss_is_lambda_times_the_summed_mse_of_both_views_and_trains_the_student(teacher_ckpt):
    cfg: PretrainConfig = tiny_cfg(
        "distill-only",
        teacher_ckpt=teacher_ckpt,
        batch_size=8,
        image_size=16,
        queue_size=32,
        dim=128,
        hidden=None,
        distill_weight=0.5,
    )
    method, _ = build_method(cfg)
    # the ablation's head: hidden = the student's feature width, as DisCo* (the pair differs only by InfoNCE)
    assert method.student.head.hidden == method.student.head.net[0].in_features == 512
    views = views_for(method)
    with torch.no_grad():
        method.eval()  # the same BN statistics for the hand computation and the forward below
        q1, q2 = method.encoder_q(views[0]), method.encoder_q(views[1])
        t1, t2 = method.teacher.embed_views(views)
        by_hand = ((q1 - t1) ** 2).sum() + ((q2 - t2) ** 2).sum()
        out = method(views)
    assert set(out) == {"loss", "loss_dis"}
    torch.testing.assert_close(out["loss_dis"], by_hand, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"], 0.5 * by_hand, rtol=1e-5, atol=1e-6)

    method.train()
    before = snapshot(method.student)
    sgd_step(method, views)
    assert any(
        not torch.equal(v, before[k])
        for k, v in method.student.state_dict().items()
        if k.startswith("backbone.")
    )
    assert int(method.queue.ptr) == 0  # no contrastive term: nothing is enqueued
