"""top-k accuracy against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from downstream.metrics import topk_accuracy, topk_correct

# 4 samples x 6 classes, no ties. Ranks of the target (1 = highest score):
#   row 0: target 2 has the top score                      -> top-1 hit
#   row 1: target 0 is 3rd (0.9, 0.8 above its 0.7)       -> top-5 hit only
#   row 2: target 5 is 6th (lowest)                        -> miss
#   row 3: target 4 is 5th                                 -> top-5 hit only
LOGITS = torch.tensor(
    [
        [0.1, 0.2, 0.9, 0.0, 0.3, 0.4],
        [0.7, 0.9, 0.8, 0.1, 0.2, 0.3],
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
    ]
)
TARGETS = torch.tensor([2, 0, 5, 4])


def test_counts_match_hand_ranks():
    assert topk_correct(LOGITS, TARGETS, (1, 2, 3, 5)) == {1: 1, 2: 1, 3: 2, 5: 3}


def test_percentages_match_hand_values():
    assert topk_accuracy(LOGITS, TARGETS) == {1: 25.0, 5: 75.0}


def test_k_is_capped_at_class_count():
    logits, targets = LOGITS[:, :3], torch.tensor([2, 0, 1, 2])  # ranks 1, 3, 2, 3 among 3 classes
    assert topk_accuracy(logits, targets, (1, 5)) == {1: 25.0, 5: 100.0}


def test_empty_set_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
