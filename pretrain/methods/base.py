"""Pieces shared by the methods: the embedding queue, the momentum update, shuffle-BN and the
frozen teacher. Each method module holds its own loss as a plain function."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pretrain.distributed import all_gather_cat, is_distributed
from pretrain.models import Encoder


class EmbeddingQueue(nn.Module):
    """A FIFO of the last ``size`` L2-normalised embeddings, stored as (size, dim) rows.

    Enqueue wraps around the end, so ``size`` need not be a multiple of the batch.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size <= 0:
            raise ValueError(f"queue_size must be positive, got {size}")
        self.register_buffer("items", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        keys = keys.detach().to(self.items.dtype)
        size = self.items.shape[0]
        if keys.shape[0] > size:
            keys = keys[-size:]
        n, start = keys.shape[0], int(self.ptr)
        first = min(n, size - start)
        self.items[start : start + first] = keys[:first]
        if n > first:
            self.items[: n - first] = keys[first:]
        self.ptr.fill_((start + n) % size)


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module, m: float) -> None:
    """target <- m * target + (1 - m) * source, parameter by parameter; buffers are copied."""
    for p_t, p_s in zip(target.parameters(), source.parameters(), strict=True):
        p_t.mul_(m).add_(p_s.detach(), alpha=1.0 - m)
    for b_t, b_s in zip(target.buffers(), source.buffers(), strict=True):
        b_t.copy_(b_s)


@torch.no_grad()
def shuffled_forward(encoder: nn.Module, x: torch.Tensor, splits: int, generator: torch.Generator | None):
    """Forward ``x`` with batch-norm statistics computed over a shuffled batch (MoCo's shuffle-BN).

    Under DDP the batch is gathered, permuted across ranks and each rank encodes its share, as in
    MoCo. In one process there are no ranks to shuffle across, so the batch is permuted and
    encoded in ``splits`` chunks: each chunk's BN statistics cover a random subset of images, so
    a key does not share its BN statistics with its own query's batch (``splits=1`` turns it off).
    """
    if is_distributed():
        world, rank = dist.get_world_size(), dist.get_rank()
        local = x.shape[0]
        gathered = all_gather_cat(x)
        perm = torch.randperm(gathered.shape[0], device=x.device)
        dist.broadcast(perm, src=0)
        unperm = torch.argsort(perm)
        mine = perm.view(world, -1)[rank]
        keys = encoder(gathered[mine])
        all_keys = all_gather_cat(keys)
        return all_keys[unperm].view(world, local, -1)[rank]
    if splits <= 1 or x.shape[0] < 2 * splits:
        return encoder(x)
    perm = torch.randperm(x.shape[0], generator=generator, device="cpu").to(x.device)
    keys = torch.cat([encoder(chunk) for chunk in x[perm].chunk(splits)], dim=0)
    return keys[torch.argsort(perm)]


class FrozenTeacher(nn.Module):
    """A teacher encoder that never trains: no gradients, BN in eval mode by default.

    ``bn_mode='train'`` reproduces the DisCo reference code, whose teacher BN normalised with the
    current batch's statistics (METHOD.md section 7, defect 1); the running stats still do not
    move because the forward runs on a throw-away copy of them.
    """

    def __init__(self, encoder: Encoder, bn_mode: str = "eval"):
        super().__init__()
        if bn_mode not in ("eval", "train"):
            raise ValueError(f"teacher_bn must be 'eval' or 'train', got {bn_mode!r}")
        self.encoder = encoder
        self.bn_mode = bn_mode
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True):  # the teacher's mode never follows the student's
        super().train(False)
        self.encoder.train(self.bn_mode == "train")
        return self

    @property
    def dim(self) -> int:
        return self.encoder.head.out_dim

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn_mode == "train":
            saved = {k: v.clone() for k, v in self.encoder.state_dict().items() if "running_" in k or "num_batches" in k}
            out = self.encoder(x)
            self.encoder.load_state_dict(saved, strict=False)
            return out
        return self.encoder(x)

    @torch.no_grad()
    def embed_views(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Teacher embeddings of several views; one batched forward when BN is frozen (same numbers)."""
        if self.bn_mode == "eval" and len(views) > 1 and all(v.shape == views[0].shape for v in views):
            return list(self(torch.cat(views, dim=0)).chunk(len(views)))
        return [self(v) for v in views]


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: logits [q.k, q.queue] / T, target 0, mean cross-entropy over the batch.

    q, k: (B, D) L2-normalised; queue: (K, D). Returns a scalar.
    """
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.t()
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
