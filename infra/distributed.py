"""Where a process runs: its torchrun rank, its device and its autocast precision. One code path:
NCCL on GPUs, gloo on CPUs, plain single process otherwise."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from infra.errors import InputError

# autocast dtype of each ``amp`` setting the configs admit (PretrainConfig, EvalConfig); none: fp32
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# How long a rank waits in a collective before the group gives up. Long enough for what one rank
# does while the others wait: rank 0 evaluating a COCO split after detection fine-tuning (minutes
# for 5,000 images with masks), or writing a checkpoint to slow storage; torch's default (10 min
# on NCCL) is not. DISCO_BENCH_DIST_TIMEOUT_MIN sets it for every entry point.
TIMEOUT_ENV = "DISCO_BENCH_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 60.0


def process_group_timeout() -> timedelta:
    """The process group's timeout: DISCO_BENCH_DIST_TIMEOUT_MIN minutes, or 60."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return timedelta(minutes=DEFAULT_TIMEOUT_MIN)
    try:
        minutes = float(raw)
    except ValueError:
        minutes = float("nan")
    if not minutes > 0 or minutes == float("inf"):
        raise InputError(
            f"{TIMEOUT_ENV}={raw}: expected a positive number of minutes (default {DEFAULT_TIMEOUT_MIN:g})"
        )
    return timedelta(minutes=minutes)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process created the process group, so it tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> DistInfo:
        """This process's place in the torchrun job the environment describes, without joining its
        group (a process outside torchrun is rank 0 of 1)."""
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )


def pick_device(name: str, dist_info: DistInfo | None = None) -> torch.device:
    """``auto`` is CUDA when a device is visible, else the CPU; under torchrun (``dist_info``) CUDA is
    this process's ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist_info is not None:
        return torch.device("cuda", dist_info.local_rank)
    return torch.device(name)


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    info = DistInfo.from_env()
    if not info.enabled:
        return DistInfo()
    rank, world, local = info.rank, info.world_size, info.local_rank
    owns = not dist.is_initialized()
    if owns:
        timeout = process_group_timeout()
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=timeout)
    return DistInfo(rank=rank, world_size=world, local_rank=local, owns_group=owns)


def shutdown_distributed(info: DistInfo) -> None:
    """Wait for every rank (rank 0 may still be writing the checkpoint), then leave the group."""
    if info.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (no gradient), or return it alone."""
    if not is_distributed():
        return x
    # contiguous first, then buffers like it: buffers like a channels_last input would have
    # another layout than the bytes the backend writes into them (NCCL copies them flat)
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)
