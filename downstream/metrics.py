"""Classification metrics."""

from __future__ import annotations

import torch


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Percentage of rows whose target is among the k highest scores (k capped at the class count)."""
    n_classes = logits.shape[1]
    top = logits.topk(min(max(ks), n_classes), dim=1).indices
    hits = top.eq(targets.view(-1, 1))
    return {k: 100.0 * hits[:, : min(k, n_classes)].any(dim=1).float().mean().item() for k in ks}
