"""SwAV (Caron et al., NeurIPS 2020) for the student (``swav``), and with the DisCo term to a frozen
teacher (``swav+disco``): the paper's SwAV testbed (supplementary Table 1).

The student is backbone -> projection MLP (Linear, BN, ReLU, Linear; SwAV's head) -> L2-normalised
z -> prototypes C (a bias-free Linear whose rows are re-normalised before every step). Codes come
from Sinkhorn-Knopp on the two large views' scores; each large view's code is predicted from every
other view. Multi-crop (2 large + N small crops, ``multicrop_*``) is an option; without it both
views are aug+ at ``image_size``, the same views the DisCo testbed uses.

The DisCo term of ``swav+disco`` is the MSE between the student's z (the exported embedding, the
projection output before the prototypes) and the teacher's embedding on the two large views; for a
SwAV-family teacher that is likewise its L2-normalised projection output with prototypes dropped.
Not implemented: SwAV's feature queue for small batches (a run with batch < 256 does without it).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pretrain.augment import multi_crop
from pretrain.distributed import is_distributed
from pretrain.errors import InputError
from pretrain.methods.disco import with_disco_term
from pretrain.models import Encoder, ProjectionHead, feature_dim


def _batch_logsumexp(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """log sum exp of x over ``dim`` (None: every entry) and over the batches of every DDP rank;
    dims kept for broadcasting. The max shift keeps exp finite for any eps."""
    dims = tuple(range(x.dim())) if dim is None else (dim,)
    top = x.amax(dim=dims, keepdim=True)
    if is_distributed():
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    total = (x - top).exp().sum(dim=dims, keepdim=True)
    if is_distributed():
        dist.all_reduce(total)
    return top + total.log()


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Equal-partition soft assignment of B samples to K prototypes.

    scores: (B, K) similarities. Q = exp(scores / eps), scaled to total mass 1, then ``iters``
    rounds of: every prototype's mass set to 1/K, then every sample's mass set to 1/B. Returns
    B x Q, shape (B, K): each row (sample) sums to 1; each column (prototype) sums to about B/K,
    exactly after convergence. Under DDP, B and the sums cover the global batch. Computed in the
    log domain (the same numbers), so a small ``eps`` cannot overflow or underflow to 0/0.
    """
    log_q = (scores.float() if scores.dtype != torch.float64 else scores).t() / eps  # (K, B)
    k = log_q.shape[0]
    b = log_q.shape[1] * (dist.get_world_size() if is_distributed() else 1)
    log_q = log_q - _batch_logsumexp(log_q, None)
    for _ in range(iters):
        log_q = log_q - _batch_logsumexp(log_q, 1) - math.log(k)  # per prototype, over the global batch
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(b)  # per sample
    return (log_q + math.log(b)).exp().t()


def swapped_prediction_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """SwAV's swapped prediction: for each coded view i, mean over views v != i of
    -sum_k q_i log softmax(scores_v / T), mean over the batch; then the mean over coded views.

    scores: one (B, K) tensor per view; codes: (B, K) for the first ``len(codes)`` views.
    """
    total = scores[0].new_zeros(())
    for i, q in enumerate(codes):
        others = [s for v, s in enumerate(scores) if v != i]
        per_view = [-(q * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean() for s in others]
        total = total + sum(per_view) / len(per_view)
    return total / len(codes)


def encode_by_size(encoder: nn.Module, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """encoder(view) for each view; consecutive views of one size share one forward (and so their
    BN statistics), as SwAV's and DINO's multi-crop wrappers do."""
    out, start = [], 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape == views[start].shape:
            end += 1
        out += list(encoder(torch.cat(views[start:end])).chunk(end - start))
        start = end
    return out


class SwAV(nn.Module):
    num_views = 2
    needs_teacher = False

    def __init__(self, cfg, backbone: nn.Module, teacher=None):
        super().__init__()
        self.cfg = cfg
        if cfg.multicrop_small_crops < 0:
            raise InputError(f"multicrop_small_crops: expected 0 or more, got {cfg.multicrop_small_crops}")
        if cfg.multicrop_small_crops and not 0 < cfg.multicrop_small_size <= cfg.image_size:
            raise InputError(f"multicrop_small_size: expected 1..image_size ({cfg.image_size}), got {cfg.multicrop_small_size}")
        self.num_views = 2 + cfg.multicrop_small_crops
        feat = feature_dim(backbone)
        hidden = self.default_hidden(feat) if cfg.hidden is None else cfg.hidden
        self.encoder = Encoder(backbone, ProjectionHead(feat, hidden, cfg.dim, batchnorm=True))
        self.prototypes = nn.Linear(cfg.dim, cfg.swav_prototypes, bias=False)
        self.teacher = teacher
        self.freeze_prototypes = cfg.swav_freeze_prototypes_steps > 0

    @staticmethod
    def default_hidden(feat: int) -> int:
        return 2048  # SwAV's projection MLP

    @property
    def student(self) -> Encoder:
        return self.encoder

    def view_transforms(self):
        cfg = self.cfg
        if not cfg.multicrop_small_crops:
            return None
        return multi_crop(cfg.image_size, cfg.multicrop_small_crops, cfg.multicrop_small_size, cfg.multicrop_large_scale,
                          cfg.multicrop_small_scale)

    def on_step(self, step: int, total_steps: int, steps_per_epoch: int) -> None:
        self.freeze_prototypes = step < self.cfg.swav_freeze_prototypes_steps

    def swav_terms(self, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(z per view, swapped-prediction loss)."""
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        z = encode_by_size(self.encoder, views)
        weight = self.prototypes.weight.detach() if self.freeze_prototypes else self.prototypes.weight
        scores = [e @ weight.t() for e in z]
        codes = [sinkhorn_knopp(s.detach(), self.cfg.swav_sinkhorn_eps, self.cfg.swav_sinkhorn_iters) for s in scores[:2]]
        return z, swapped_prediction_loss(scores, codes, self.cfg.swav_temperature)

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        _, loss = self.swav_terms(views)
        return {"loss": loss, "loss_swav": loss.detach()}


class SwAVDisCo(SwAV):
    """``swav+disco``: SwAV + distill_weight x MSE(z, teacher embedding) on the two large views."""

    needs_teacher = True

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        z, loss_swav = self.swav_terms(views)
        return with_disco_term(self, "loss_swav", loss_swav, z, views)
