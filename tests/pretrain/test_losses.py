"""The losses and state updates of MoCo-v2, DisCo and SEED (docs/method.md#moco-v2, #disco, #seed) against
values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pretrain.methods.base import EmbeddingQueue, info_nce, momentum_update
from pretrain.methods.disco import disco_distill_loss
from pretrain.methods.seed import seed_loss


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_info_nce_with_queue_matches_hand_computation():
    q = t([[1.0, 0.0], [0.0, 1.0]])
    k = t([[0.6, 0.8], [0.0, 1.0]])
    queue = t([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # row 0: logits [0.6, 1, 0, -1] / 0.5 = [1.2, 2, 0, -2]; target is the positive (index 0)
    row0 = math.log(math.exp(1.2) + math.exp(2.0) + math.exp(0.0) + math.exp(-2.0)) - 1.2
    # row 1: logits [1, 0, 1, 0] / 0.5 = [2, 0, 2, 0]
    row1 = math.log(2 * math.exp(2.0) + 2 * math.exp(0.0)) - 2.0
    got = info_nce(q, k, queue, temperature=0.5)
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)


def test_info_nce_positive_only_queue_far_away_is_near_zero():
    q = t([[1.0, 0.0]])
    loss = info_nce(q, q, t([[-1.0, 0.0]]), temperature=0.05)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-40.0)), rel=1e-9)


def test_disco_mse_sum_and_mean_match_hand_computation():
    s1, t1 = t([[1.0, 0.0], [0.0, 1.0]]), t([[0.6, 0.8], [1.0, 0.0]])
    s2, t2 = t([[0.0, 1.0], [1.0, 0.0]]), t([[0.0, 1.0], [0.8, 0.6]])
    # view 1: 0.4^2 + 0.8^2 + 1 + 1 = 2.8; view 2: 0 + 0.2^2 + 0.6^2 = 0.4
    total = disco_distill_loss([s1, s2], [t1, t2], "sum")
    mean = disco_distill_loss([s1, s2], [t1, t2], "mean")
    assert total.item() == pytest.approx(3.2, rel=1e-12)
    assert mean.item() == pytest.approx(2.8 / 4 + 0.4 / 4, rel=1e-12)
    batch, dims = s1.shape
    assert total.item() == pytest.approx(mean.item() * batch * dims, rel=1e-12)


def test_seed_soft_cross_entropy_matches_hand_computation():
    s, te, queue = t([[1.0, 0.0]]), t([[0.6, 0.8]]), t([[0.0, 1.0]])
    # student logits [s.t, s.queue] / 0.2 = [3, 0]; teacher logits [t.t, t.queue] / 1 = [1, 0.8]
    log_z = math.log(math.exp(3.0) + 1.0)
    log_ps = [3.0 - log_z, 0.0 - log_z]
    pt0 = math.exp(1.0) / (math.exp(1.0) + math.exp(0.8))
    expected = -(pt0 * log_ps[0] + (1 - pt0) * log_ps[1])
    got = seed_loss(s, te, queue, tau_s=0.2, tau_t=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_seed_default_teacher_temperature_is_nearly_one_hot():
    s, te, queue = t([[1.0, 0.0], [0.0, 1.0]]), t([[0.6, 0.8], [0.0, 1.0]]), t([[0.0, 1.0], [1.0, 0.0]])
    # with tau_T = 1e-4 the teacher puts all mass on its largest logit: t.t = 1 beats t.queue
    # (0.8 / 0.6 for row 0, 1 / 0 for row 1 — row 1 ties, so half the mass on each of two)
    z0 = [0.6 / 0.2, 0.0, 1.0 / 0.2]
    z1 = [1.0 / 0.2, 1.0 / 0.2, 0.0]

    def log_softmax(z, i):
        return z[i] - math.log(sum(math.exp(v) for v in z))

    expected = (-log_softmax(z0, 0) - 0.5 * (log_softmax(z1, 0) + log_softmax(z1, 1))) / 2
    got = seed_loss(s, te, queue, tau_s=0.2, tau_t=1e-4)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_momentum_update_is_exact_ema_of_parameters_and_copies_buffers():
    target, source = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        target.weight.fill_(1.0)
        target.bias.fill_(-2.0)
        source.weight.fill_(3.0)
        source.bias.fill_(2.0)
        source.running_mean.fill_(5.0)
    momentum_update(target, source, m=0.75)
    assert target.weight.tolist() == [1.5, 1.5]  # 0.75 * 1 + 0.25 * 3
    assert target.bias.tolist() == [-1.0, -1.0]  # 0.75 * -2 + 0.25 * 2
    assert target.running_mean.tolist() == [5.0, 5.0]
    assert source.weight.tolist() == [3.0, 3.0]


def test_queue_enqueue_then_wrap_around():
    queue = EmbeddingQueue(size=5, dim=2)
    a = torch.arange(6, dtype=torch.float32).view(3, 2)
    queue.enqueue(a)
    assert int(queue.ptr) == 3
    assert torch.equal(queue.items[:3], a)
    b = 10 + torch.arange(6, dtype=torch.float32).view(3, 2)
    queue.enqueue(b)
    # b fills rows 3, 4 and wraps to row 0; the pointer stops after it
    assert int(queue.ptr) == 1
    assert torch.equal(queue.items[3:5], b[:2])
    assert torch.equal(queue.items[0], b[2])
    assert torch.equal(queue.items[1:3], a[1:3])


def test_queue_enqueue_never_reads_the_pointer_from_the_device_but_a_loaded_one_is_read_once(monkeypatch):
    """A step must not wait on the device for the queue pointer: it is kept on the host, and read
    from the buffer only once after a checkpoint is loaded into the queue."""
    queue = EmbeddingQueue(size=5, dim=2)
    reads = []
    real_int = torch.Tensor.__int__
    monkeypatch.setattr(torch.Tensor, "__int__", lambda t: reads.append(1) or real_int(t))
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(1) or 0)
    queue.enqueue(torch.ones(3, 2))
    queue.enqueue(torch.ones(3, 2))
    assert reads == []
    monkeypatch.undo()
    assert int(queue.ptr) == 1
    saved = {k: v.clone() for k, v in queue.state_dict().items()}
    fresh = EmbeddingQueue(size=5, dim=2)
    fresh.load_state_dict(saved)
    fresh.enqueue(torch.full((2, 2), 7.0))  # continues at the loaded pointer, not at 0
    assert int(fresh.ptr) == 3 and torch.equal(fresh.items[1:3], torch.full((2, 2), 7.0))


def test_queue_batch_larger_than_queue_keeps_the_newest_rows():
    queue = EmbeddingQueue(size=3, dim=1)
    queue.enqueue(torch.arange(7, dtype=torch.float32).view(7, 1))
    assert queue.items.view(-1).tolist() == [4.0, 5.0, 6.0]
    assert int(queue.ptr) == 0


def test_queue_initial_rows_are_unit_vectors():
    # (a queue_size below 1 is refused by PretrainConfig: tests/disco_bench/test_field_validation.py)
    queue = EmbeddingQueue(size=4, dim=3)
    assert torch.allclose(queue.items.norm(dim=1), torch.ones(4))
