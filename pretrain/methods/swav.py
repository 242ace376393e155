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

Trained as SwAV trains (its batch-256 and batch-4096 recipes): the prototypes are frozen for the
first ``swav_freeze_prototypes_epochs`` epoch(s) (their gradient is cancelled after the backward,
as in SwAV's code), a feature queue joins Sinkhorn-Knopp once the global batch is small, and the
optimiser is LARS with a linear warm-up then a cosine (``swav_optimizer`` ...; pretrain/optim.py).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from infra.distributed import all_gather_cat, is_distributed
from pretrain.methods.base import Method
from pretrain.methods.disco import with_disco_term
from pretrain.methods.multicrop import MultiCropMixin, encode_by_size, multicrop_views
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


def swapped_prediction_loss(
    scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float
) -> torch.Tensor:
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


class FeatureQueue(nn.Module):
    """SwAV's queue for small batches: the last ``length`` embeddings of each of the two large views,
    newest first, whose prototype scores join the batch's in Sinkhorn-Knopp (more samples to
    spread over the prototypes). Used once full, from ``swav_queue_start_epoch`` on.

    It holds the global batch (gathered from every rank, rank-major), so every rank holds the same
    buffer (DDP broadcasts buffers; a checkpoint holds it whole); ``mine`` gives a rank its own rows,
    which is what each rank's queue in SwAV's code holds. ``length`` is cut to a multiple of the
    global batch, as SwAV does.
    """

    def __init__(self, length: int, dim: int, global_batch: int):
        super().__init__()
        self.global_batch = global_batch
        self.register_buffer("items", torch.zeros(2, length - length % global_batch, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self._host_filled: int | None = (
            0  # ``filled`` on the host (no device read per step); None after a load
        )

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._host_filled = None

    @property
    def length(self) -> int:
        return self.items.shape[1]

    def full(self) -> bool:
        if self._host_filled is None:
            self._host_filled = int(self.filled)
        return self._host_filled >= self.length

    def mine(self, view: int) -> torch.Tensor:
        if not is_distributed():
            return self.items[view]
        world, rank = dist.get_world_size(), dist.get_rank()
        return (
            self.items[view]
            .view(-1, world, self.global_batch // world, self.items.shape[2])[:, rank]
            .flatten(0, 1)
        )

    @torch.no_grad()
    def push(self, view: int, embeddings: torch.Tensor) -> None:
        n = embeddings.shape[0]
        self.items[view, n:] = self.items[view, :-n].clone()
        self.items[view, :n] = embeddings
        if view == 1:
            if self._host_filled is None:
                self._host_filled = int(self.filled)
            self._host_filled += n
            self.filled.fill_(self._host_filled)


def queue_length(cfg) -> int:
    """The feature queue's length: ``swav_queue_length`` once the global batch is small
    (``batch_size <= swav_queue_max_batch``, SwAV's batch-256 recipe), else 0; a multiple of the batch."""
    if cfg.batch_size > cfg.swav_queue_max_batch or cfg.swav_queue_length <= 0:
        return 0
    return cfg.swav_queue_length - cfg.swav_queue_length % cfg.batch_size


class SwAV(MultiCropMixin, Method):
    num_views = 2
    needs_teacher = False

    def __init__(self, cfg, backbone: nn.Module, teacher=None):
        super().__init__()
        self.cfg = cfg
        self.num_views = multicrop_views(cfg)
        feat = feature_dim(backbone)
        hidden = self.default_hidden(feat) if cfg.hidden is None else cfg.hidden
        self.encoder = Encoder(backbone, ProjectionHead(feat, hidden, cfg.dim, batchnorm=True))
        self.prototypes = nn.Linear(cfg.dim, cfg.swav_prototypes, bias=False)
        length = queue_length(cfg)
        self.feature_queue = FeatureQueue(length, cfg.dim, cfg.batch_size) if length else None
        self.teacher = teacher
        self.freeze_prototypes = cfg.swav_freeze_prototypes_epochs > 0
        self.queue_started = cfg.swav_queue_start_epoch <= 0

    @staticmethod
    def default_hidden(feat: int) -> int:
        return 2048  # SwAV's projection MLP

    @property
    def student(self) -> Encoder:
        return self.encoder

    def on_step(self, step: int, total_steps: int, steps_per_epoch: int) -> None:
        self.freeze_prototypes = step < self.cfg.swav_freeze_prototypes_epochs * steps_per_epoch
        self.queue_started = step >= self.cfg.swav_queue_start_epoch * steps_per_epoch

    def after_backward(self) -> None:
        # frozen prototypes stay in the graph (every parameter gets a gradient, as DDP requires) and
        # lose their gradient here, so the optimiser skips them: SwAV's own "cancel gradients"
        if self.freeze_prototypes:
            self.prototypes.weight.grad = None

    @torch.no_grad()
    def codes(self, scores: torch.Tensor, z: torch.Tensor, view: int) -> torch.Tensor:
        """Sinkhorn-Knopp codes of one large view's batch, over the queue's scores too once it is full."""
        batch = scores.shape[0]
        queue = self.feature_queue if self.queue_started else None
        if queue is not None:
            if queue.full():
                scores = torch.cat([queue.mine(view) @ self.prototypes.weight.t(), scores])
            queue.push(view, all_gather_cat(z))
        return sinkhorn_knopp(scores, self.cfg.swav_sinkhorn_eps, self.cfg.swav_sinkhorn_iters)[-batch:]

    def swav_terms(self, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(z per view, swapped-prediction loss)."""
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        z = encode_by_size(self.encoder, views)
        scores = [e @ self.prototypes.weight.t() for e in z]
        codes = [
            self.codes(s.detach(), e.detach(), i)
            for i, (s, e) in enumerate(zip(scores[:2], z[:2], strict=True))
        ]
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
