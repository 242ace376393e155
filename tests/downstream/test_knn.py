"""Weighted kNN against hand-computed votes, and the task end to end."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from downstream import knn
from downstream.backbone import load_backbone
from downstream.knn import knn_accuracy, knn_scores
from downstream.probe import frozen_features
from infra.errors import InputError
from tests.pretrain.helpers import hand_topk_accuracy

# Train points on the unit circle at 0, 90 and 180 degrees (classes 0, 1, 1); the query at 0 degrees
# (given unnormalised: length 2). Cosine similarities 1, 0, -1.
TRAIN_X = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
TRAIN_Y = torch.tensor([0, 1, 1])
QUERY = torch.tensor([[2.0, 0.0]])


def test_votes_are_exp_similarity_over_temperature():
    t = 0.5
    scores = knn_scores(TRAIN_X, TRAIN_Y, QUERY, num_classes=3, k=2, temperature=t)
    expected = torch.tensor(
        [[math.exp(1 / t), math.exp(0 / t), 0.0]]
    )  # k=2: the 180-degree point is not a neighbour
    torch.testing.assert_close(scores, expected)


def test_k_is_capped_at_the_train_size():
    scores = knn_scores(TRAIN_X, TRAIN_Y, QUERY, num_classes=2, k=200, temperature=1.0)
    torch.testing.assert_close(scores, torch.tensor([[math.e, 1.0 + math.exp(-1.0)]]))


def test_chunks_give_the_same_scores():
    gen = torch.Generator().manual_seed(0)
    x, y, q = (
        torch.randn(50, 8, generator=gen),
        torch.randint(0, 4, (50,), generator=gen),
        torch.randn(9, 8, generator=gen),
    )
    torch.testing.assert_close(knn_scores(x, y, q, 4, 5, 0.07, chunk=2), knn_scores(x, y, q, 4, 5, 0.07))


def test_top1_and_top5_with_more_classes_than_five():
    """7 classes, one train point each on the unit circle at 0, 10, ..., 60 degrees; every query at 0
    degrees ranks the classes 0, 1, ..., 6 (k = 7: all of them vote)."""
    angles = torch.deg2rad(torch.arange(7) * 10.0)
    train = (torch.stack([angles.cos(), angles.sin()], dim=1), torch.arange(7))
    queries = torch.tensor([[1.0, 0.0]] * 4)
    labels = torch.tensor(
        [0, 4, 5, 6]
    )  # ranked 1st (top-1 and top-5), 5th (top-5 only), 6th and 7th (neither)
    acc = knn_accuracy(train, (queries, labels), num_classes=7, ks=(7,), temperature=0.07)
    assert acc == {7: {1: 25.0, 5: 50.0}}


def test_with_fewer_than_five_classes_top5_counts_every_row():
    """top-5 is capped at the class count: with 3 classes every target is among the top 3."""
    acc = knn_accuracy(
        (TRAIN_X, TRAIN_Y), (torch.tensor([[0.0, 1.0], [1.0, 0.1]]), torch.tensor([0, 2])), 3, (2,), 1.0
    )
    assert acc == {2: {1: 0.0, 5: 100.0}}


def hand_knn_scores(train_x, train_y, query_x, num_classes: int, k: int, temperature: float) -> torch.Tensor:
    """The weighted kNN vote written out: cosine similarity to every train row, the k most similar vote
    exp(s / T) for their class."""
    rows = []
    for q in query_x.tolist():
        sims = []
        for x, y in zip(train_x.tolist(), train_y.tolist()):
            dot = sum(a * b for a, b in zip(q, x))
            sims.append((dot / math.sqrt(sum(a * a for a in q) * sum(b * b for b in x)), y))
        votes = [0.0] * num_classes
        for sim, y in sorted(sims, reverse=True)[:k]:
            votes[y] += math.exp(sim / temperature)
        rows.append(votes)
    return torch.tensor(rows, dtype=torch.float64)


def test_knn_task_on_an_imagefolder_matches_a_vote_by_hand(eval_cfg, seven_class_imagefolder):
    cfg = dataclasses.replace(eval_cfg, data=str(seven_class_imagefolder), knn_k=(20, 200))
    result = knn.evaluate(cfg, progress=False)
    assert [m.metric for m in result.measurements] == ["top1_k20", "top5_k20", "top1_k200", "top5_k200"]
    assert result.protocol["k_used"] == {"20": 20, "200": 28}  # 28 train images
    assert result.protocol["knn_temperature"] == 0.07 and "epochs" not in result.protocol
    by_metric = {m.metric: m.value for m in result.measurements}
    # the same frozen features, voted and ranked by hand
    backbone, _ = load_backbone(cfg.ckpt)
    _, (train_x, train_y), (val_x, val_y) = frozen_features(backbone, knn.probe_data(cfg)[0], cfg, False)
    for k, used in ((20, 20), (200, 28)):
        scores = hand_knn_scores(train_x, train_y, val_x, 7, used, 0.07)
        # every row has at least 5 voted classes, so its top 5 holds no tie between unvoted (zero) classes
        assert ((scores > 0).sum(dim=1) >= 5).all()
        assert by_metric[f"top1_k{k}"] == pytest.approx(hand_topk_accuracy(scores, val_y.tolist(), 1))
        assert by_metric[f"top5_k{k}"] == pytest.approx(hand_topk_accuracy(scores, val_y.tolist(), 5))
    assert by_metric["top5_k200"] < 100.0


def test_knn_task_on_cifar(eval_cfg, tiny_cifar10):
    result = knn.evaluate(dataclasses.replace(eval_cfg, data=str(tiny_cifar10), knn_k=(5,)), progress=False)
    assert [(m.metric, m.dataset, m.split) for m in result.measurements] == [
        ("top1_k5", "cifar10", "test"),
        ("top5_k5", "cifar10", "test"),
    ]


def test_bad_k_is_a_one_line_error(eval_cfg):
    with pytest.raises(
        InputError, match=r"knn_k=\[0\]: expected .*>= 1"
    ):  # validated where the field is defined
        knn.evaluate(dataclasses.replace(eval_cfg, knn_k=(0,)), progress=False)
