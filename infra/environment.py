"""What ran a number, besides its settings: process count, per-process batch, accelerator, torch
threads and library versions. Each can change the result: with a sum-reduced DisCo MSE the
per-process batch sets lambda's effective weight and the BatchNorm batch, and the thread count and
library versions change the floating-point order of reductions (README: ``--jobs 1`` and
``--jobs 2`` give different bits). Every record carries it under the key ``run`` (the record's
environment field; a pre-training's own is ``protocol.run`` in its checkpoint and
``protocol.pretrain.run`` in the records of its evaluations): the key keeps that name so records
already written stay readable and comparable."""

from __future__ import annotations

import os
import platform
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a process is described: reading records needs no torch
    import torch

LIBRARIES = ("torch", "torchvision", "timm")


@cache
def library_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def available_cores() -> int:
    """Cores this process may run on: its affinity mask (a CPU-limited container's share), not the
    host's count that ``os.cpu_count`` gives."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity masks on this platform
        return os.cpu_count() or 1


def accelerator(device: torch.device | str) -> str:
    """``cuda NVIDIA H100 80GB HBM3`` or ``cpu x86_64``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return f"{device.type} {platform.machine()}"


def process_environment(processes: int, per_process_batch: int | None, device: torch.device | str) -> dict:
    """The environment ``processes`` processes of ``per_process_batch`` images each ran in on
    ``device``: what a record stores under ``run``."""
    import torch

    return {
        "processes": processes,
        "per_process_batch": per_process_batch,
        "accelerator": accelerator(device),
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
    }
