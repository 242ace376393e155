"""Detection fine-tuning across torchrun processes (both backends), and nothing when alone.

The schedule's batch is the global one: each of the N processes trains on ``batch / N`` images per
iteration (a batch that does not split evenly is an error) and DDP averages the gradients, so the
lr and gradient clipping mean what they mean on one process. Every process draws its own images
(rank 0 keeps the one-process seed, so a one-process run is unchanged). Each rank predicts its
share of the test set (``test_shard``) with the trained weights, which DDP keeps equal on every
rank, masks RLE-encoded as they are produced; the predictions are gathered once, on rank 0
(``gather_on_main``), which evaluates them and shares the metrics (``share_from_main``): no raw
mask crosses processes, and records are written once (by rank 0, see ``disco-bench step``). The
other ranks wait for the metrics in a collective, under the process group's timeout
(``infra.distributed.process_group_timeout``, long enough for a COCO evaluation).

Detectron2 reads the process group through ``detectron2.utils.comm``, which asks
``torch.distributed`` for the world size and rank; only its per-machine group is created by
Detectron2's own ``launch()``, so under torchrun it is created here, once.
"""

from __future__ import annotations

import dataclasses
import inspect
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from downstream.detection.data import DetectionSet
from infra.distributed import DistInfo, init_distributed, is_distributed
from infra.errors import InputError


def join(device: torch.device) -> tuple[DistInfo, torch.device]:
    """This process's place among torchrun's processes (the group is set up on first use) and its
    device (``cuda:LOCAL_RANK`` on GPUs); ``DistInfo()`` and ``device`` unchanged when alone."""
    procs = init_distributed(device.type)
    if procs.enabled and device.type == "cuda":
        device = torch.device("cuda", procs.local_rank)
    return procs, device


def per_process_batch(global_batch: int, procs: DistInfo) -> int:
    """The images each process trains on per iteration: the schedule's global batch split evenly."""
    if global_batch % procs.world_size:
        raise InputError(
            f"det_batch_size={global_batch}: the global detection batch must split evenly over "
            f"{procs.world_size} processes (per-process batch = global / processes); "
            f"choose a multiple of {procs.world_size}"
        )
    return global_batch // procs.world_size


def rank_seed(seed: int, procs: DistInfo) -> int:
    """The data seed of this rank: ``seed`` on rank 0 (a one-process run is unchanged), distinct elsewhere."""
    return seed if procs.rank == 0 else (seed * 1_000_003 + procs.rank) % (2**63 - 1)


def wrap_ddp(model: nn.Module, procs: DistInfo, device: torch.device) -> nn.Module:
    """``model`` in DDP when there are several processes (gradients averaged), else ``model``."""
    if not procs.enabled:
        return model
    # buffers (BatchNorm statistics) stay per process after the start, as in Detectron2's trainer
    # (torch >= 2.14 names the option forward_sync_buffers and deprecates broadcast_buffers)
    per_process_buffers = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **per_process_buffers
    )


def plain_bn_label(det_norm: str, procs: DistInfo) -> str:
    """What a model whose BatchNorm is left as it is trains with, for the record."""
    if det_norm == "frozen":
        return "FrozenBN"
    if not procs.enabled:
        return "BN (one process)"
    why = "" if det_norm == "bn" else "; torch has SyncBN on CUDA only"
    return f"BN (per process, {procs.world_size} processes{why})"


def sync_batchnorm(
    model: nn.Module, det_norm: str, procs: DistInfo, device: torch.device
) -> tuple[nn.Module, str]:
    """SyncBN where it exists (several CUDA processes, ``det_norm=syncbn``); returns the model and
    what normalisation it trains with, for the record."""
    if det_norm == "syncbn" and procs.enabled and device.type == "cuda":
        from timm.layers import convert_sync_batchnorm  # keeps timm's BatchNormAct2d activations

        return convert_sync_batchnorm(model), f"SyncBN ({procs.world_size} processes)"
    return model, plain_bn_label(det_norm, procs)


def test_shard(test: DetectionSet, procs: DistInfo) -> DetectionSet:
    """This rank's share of the test images: every ``world_size``-th one from its rank (all when alone)."""
    if not procs.enabled:
        return test
    return dataclasses.replace(test, images=test.images[procs.rank :: procs.world_size])


def gather_on_main(predictions: list, test: DetectionSet, procs: DistInfo) -> list | None:
    """Every rank's predictions on rank 0, in ``test``'s image order, in one gather; None on the
    other ranks (they never hold the whole set)."""
    if not procs.enabled:
        return predictions
    parts = [None] * procs.world_size if procs.is_main else None
    dist.gather_object(predictions, parts, dst=0)
    if not procs.is_main:
        return None
    order = {img.image_id: i for i, img in enumerate(test.images)}
    return sorted((p for part in parts for p in part), key=lambda p: order[p.image_id])


def share_from_main(value, procs: DistInfo | None = None):
    """Rank 0's ``value`` on every rank (the others pass anything, e.g. None); ``procs`` None: the
    process group as it stands."""
    if not (procs.enabled if procs is not None else is_distributed()):
        return value
    box = [value if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def use_detectron2_group(procs: DistInfo) -> None:
    """Give ``detectron2.utils.comm`` its per-machine group, which only Detectron2's ``launch()``
    creates (world size and rank it reads from ``torch.distributed`` itself)."""
    if not procs.enabled:
        return
    from detectron2.utils import comm

    if comm._LOCAL_PROCESS_GROUP is None:  # noqa: SLF001 -- comm offers no other way to ask
        comm.create_local_process_group(int(os.environ.get("LOCAL_WORLD_SIZE", procs.world_size)))
