"""Classification metrics."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """How many rows have their target among the k highest scores (k capped at the class count).

    Counts, not percentages, so shards on several processes can be summed before dividing.
    """
    n_classes = logits.shape[1]
    top = logits.topk(min(max(ks), n_classes), dim=1).indices
    hits = top.eq(targets.view(-1, 1).to(top.device))
    return {k: int(hits[:, : min(k, n_classes)].any(dim=1).sum().item()) for k in ks}


def topk_accuracy(
    logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[int, float]:
    """Percentage of rows whose target is among the k highest scores (k capped at the class count)."""
    if len(targets) == 0:
        raise ValueError("top-k accuracy of an empty set is undefined")
    return {k: 100.0 * c / len(targets) for k, c in topk_correct(logits, targets, ks).items()}
