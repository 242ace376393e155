"""Pieces shared by the methods: the surface the training loop calls (:class:`Method`), the
embedding queue, the momentum update, shuffle-BN and the frozen teacher. Each method module holds
its own loss as a plain function."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from infra.distributed import AMP_DTYPES, all_gather_cat, is_distributed
from pretrain.models import Encoder


class Method(nn.Module):
    """What the training loop calls on a method, built as ``Method(cfg, student_backbone, teacher)``.

    A method sets ``num_views`` (an instance may set its own, e.g. multi-crop), ``needs_teacher``
    (it reads a frozen teacher) and ``dim_from_teacher`` (its embedding width is the teacher's,
    not ``cfg.dim``), and defines ``student``, ``default_hidden`` and ``forward``. The hooks have
    no-op defaults, so the loop calls them on every method.
    """

    num_views = 2
    needs_teacher = False
    dim_from_teacher = False

    @staticmethod
    def default_hidden(feat: int) -> int:
        """The student head's hidden width when ``cfg.hidden`` is None, for a backbone of ``feat`` features."""
        raise NotImplementedError

    @property
    def student(self) -> Encoder:
        """The encoder whose backbone and head are exported."""
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{'loss': ..., other detached terms}`` for one batch of views."""
        raise NotImplementedError

    def view_transforms(self) -> list | None:
        """One transform per view (e.g. multi-crop); None: aug+ for every view."""
        return None

    def on_step(self, step: int, total_steps: int, steps_per_epoch: int) -> None:
        """Before each step (0-based): schedules inside the method."""

    def after_backward(self) -> None:
        """Between the backward and the optimiser step: frozen layers drop their gradients, queues
        take the step's keys."""


class EmbeddingQueue(nn.Module):
    """A FIFO of the last ``size`` L2-normalised embeddings, stored as (size, dim) rows.

    Enqueue wraps around the end, so ``size`` need not be a multiple of the batch.

    A loss that reads ``items`` keeps them for its backward, so the new keys cannot be written in
    place during the forward (MoCo's reference clones the whole queue every step instead: 32 MiB
    at K = 65,536). ``stage`` holds the keys and ``flush`` writes them once the backward is done
    (the training loop calls the method's ``after_backward``); a forward that finds keys still
    staged (no backward ran, e.g. under ``no_grad``) flushes them first, so the queue a loss sees
    is always the one the clone gave.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("items", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        # ``ptr`` on the host: every rank enqueues the same gathered keys, so it advances by known
        # sizes and the step never waits on the device to read it; None (read once) after a load
        self._host_ptr: int | None = 0
        self._staged: torch.Tensor | None = None

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._host_ptr = None

    def stage(self, keys: torch.Tensor) -> None:
        """Hold ``keys`` until ``flush`` (after the backward of the loss that read ``items``)."""
        if self._staged is not None:
            raise RuntimeError("EmbeddingQueue.stage: keys from the previous step were never flushed")
        self._staged = keys.detach()

    def flush(self) -> None:
        if self._staged is not None:
            keys, self._staged = self._staged, None
            self.enqueue(keys)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        keys = keys.detach().to(self.items.dtype)
        size = self.items.shape[0]
        if keys.shape[0] > size:
            keys = keys[-size:]
        if self._host_ptr is None:
            self._host_ptr = int(self.ptr)
        n, start = keys.shape[0], self._host_ptr
        first = min(n, size - start)
        self.items[start : start + first] = keys[:first]
        if n > first:
            self.items[: n - first] = keys[first:]
        self._host_ptr = (start + n) % size
        self.ptr.fill_(self._host_ptr)


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module, m: float) -> None:
    """target <- m * target + (1 - m) * source for every parameter; buffers are copied."""
    targets, sources = list(target.parameters()), [p.detach() for p in source.parameters()]
    if len(targets) != len(sources):
        raise ValueError(f"momentum_update: {len(targets)} target parameters for {len(sources)} source ones")
    # multi-tensor ops: the same per-element arithmetic as p_t.mul_(m).add_(p_s, alpha=1 - m), in a
    # few fused kernels instead of two per parameter on GPUs
    torch._foreach_mul_(targets, m)
    torch._foreach_add_(targets, sources, alpha=1.0 - m)
    b_targets, b_sources = list(target.buffers()), list(source.buffers())
    if len(b_targets) != len(b_sources):
        raise ValueError(f"momentum_update: {len(b_targets)} target buffers for {len(b_sources)} source ones")
    if b_targets:
        torch._foreach_copy_(b_targets, b_sources)


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
    current batch's statistics (docs/method.md#defect-teacher-bn); the running stats still do not
    move because the forward runs on a throw-away copy of them.
    """

    def __init__(
        self, encoder: Encoder, bn_mode: str = "eval", amp: str = "none", channels_last: bool = False
    ):
        super().__init__()
        self.encoder = encoder
        self.bn_mode = bn_mode
        # speed options (PretrainConfig.teacher_amp / teacher_channels_last): the embeddings come
        # back in float32 either way
        self.amp_dtype, self.channels_last = AMP_DTYPES[amp], channels_last
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)
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

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is None:
            return self.encoder(x)
        with torch.autocast(x.device.type, dtype=self.amp_dtype):
            return self.encoder(x).float()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn_mode == "train":
            saved = {
                k: v.clone()
                for k, v in self.encoder.state_dict().items()
                if "running_" in k or "num_batches" in k
            }
            out = self._encode(x)
            self.encoder.load_state_dict(saved, strict=False)
            return out
        return self._encode(x)

    @torch.no_grad()
    def embed_views(self, views: list[torch.Tensor], batched: bool | None = None) -> list[torch.Tensor]:
        """Teacher embeddings of several views.

        With BN frozen the views can share one forward (same numbers up to float rounding). That
        pays on GPUs (half the kernel launches, fuller kernels); on CPUs one forward per view was
        as fast or faster (no concatenation copy, smaller working set), so ``batched=None`` batches
        only on CUDA.
        """
        if batched is None:
            batched = views[0].is_cuda
        if (
            batched
            and self.bn_mode == "eval"
            and len(views) > 1
            and all(v.shape == views[0].shape for v in views)
        ):
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
