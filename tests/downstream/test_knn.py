"""Weighted kNN against hand-computed votes, and the task end to end."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from downstream import knn
from downstream.knn import knn_scores
from pretrain.errors import InputError

pytestmark = pytest.mark.usefixtures("single_thread")

# Train points on the unit circle at 0, 90 and 180 degrees (classes 0, 1, 1); the query at 0 degrees
# (given unnormalised: length 2). Cosine similarities 1, 0, -1.
TRAIN_X = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
TRAIN_Y = torch.tensor([0, 1, 1])
QUERY = torch.tensor([[2.0, 0.0]])


def test_votes_are_exp_similarity_over_temperature():
    t = 0.5
    scores = knn_scores(TRAIN_X, TRAIN_Y, QUERY, num_classes=3, k=2, temperature=t)
    expected = torch.tensor([[math.exp(1 / t), math.exp(0 / t), 0.0]])  # k=2: the 180-degree point is not a neighbour
    torch.testing.assert_close(scores, expected)


def test_k_is_capped_at_the_train_size():
    scores = knn_scores(TRAIN_X, TRAIN_Y, QUERY, num_classes=2, k=200, temperature=1.0)
    torch.testing.assert_close(scores, torch.tensor([[math.e, 1.0 + math.exp(-1.0)]]))


def test_chunks_give_the_same_scores():
    gen = torch.Generator().manual_seed(0)
    x, y, q = torch.randn(50, 8, generator=gen), torch.randint(0, 4, (50,), generator=gen), torch.randn(9, 8, generator=gen)
    torch.testing.assert_close(knn_scores(x, y, q, 4, 5, 0.07, chunk=2), knn_scores(x, y, q, 4, 5, 0.07))


def test_knn_task_on_an_imagefolder(eval_cfg):
    result = knn.run(dataclasses.replace(eval_cfg, knn_k=(20, 200)), progress=False)
    assert [m.metric for m in result.measurements] == ["top1_k20", "top5_k20", "top1_k200", "top5_k200"]
    assert result.protocol["k_used"] == {"20": 20, "200": 24}  # 24 train images
    assert result.protocol["knn_temperature"] == 0.07 and "epochs" not in result.protocol
    by_metric = {m.metric: m.value for m in result.measurements}
    assert by_metric["top5_k20"] == by_metric["top5_k200"] == 100.0  # 3 classes


def test_knn_task_on_cifar(eval_cfg, tiny_cifar10):
    result = knn.run(dataclasses.replace(eval_cfg, data=str(tiny_cifar10), knn_k=(5,)), progress=False)
    assert [(m.metric, m.dataset, m.split) for m in result.measurements] == [("top1_k5", "cifar10", "test"),
                                                                             ("top5_k5", "cifar10", "test")]


def test_bad_k_is_a_one_line_error(eval_cfg):
    with pytest.raises(InputError, match=r"knn_k=\[0\]: expected positive neighbour counts"):
        knn.run(dataclasses.replace(eval_cfg, knn_k=(0,)), progress=False)
