"""Linear probing on a frozen backbone, in two protocols shared by linear, semisup and cifar.

``paper``: docs/method.md#linear. The backbone stays in eval mode (BN frozen) and sees freshly
augmented images every epoch; a Linear head initialised N(0, 0.01) trains with SGD momentum 0.9,
lr x0.1 at 60% and 80% of the epochs; afterwards MoCo's sanity check that no backbone tensor moved.
Under torchrun each process takes its share of every batch (DistributedSampler) and the head is
wrapped in DDP, which averages its gradients, so the update equals the single-process one.
The head, optimiser and schedule are saved after every epoch (``OUT/probe_last.pt``) together with
a key of everything that shapes them; a run with the same key resumes, any other starts afresh.
``fast``: features are extracted once (centre crop, no augmentation) and a multinomial logistic
regression is fitted full-batch with L-BFGS, its weight decay picked on a held-out part of train.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from downstream.config import RUNTIME_FIELDS, EvalConfig
from downstream.features import Runtime, backbone_features, extract_features, freeze_backbone, make_runtime
from downstream.kd import SoftTargets, fold_standardisation, kd_teacher_for, save_probe_classifier
from downstream.metrics import topk_accuracy, topk_correct
from downstream.result import DEGENERATE
from infra.checkpoint import atomic_torch_save, safe_load
from infra.errors import InputError
from pretrain.models import feature_dim

TOPK = (1, 5)


class BackboneChanged(RuntimeError):
    """MoCo's sanity check failed: linear probing modified the frozen backbone."""


@dataclass
class ProbeData:
    train_aug: Dataset  # training images with the probe's augmentation (paper protocol)
    train_plain: Dataset  # training images with the evaluation transform (fast protocol)
    val: Dataset
    num_classes: int
    fingerprint: str = ""  # identifies the training images when the folder alone does not (a subset's hash)


def backbone_snapshot(backbone: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def check_backbone_unchanged(backbone: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    for key, value in backbone.state_dict().items():
        if not torch.equal(value.detach().cpu(), snapshot[key].cpu()):
            raise BackboneChanged(
                f"backbone tensor {key} changed during linear probing; the probe must leave it frozen"
            )


def snapshot_digest(snapshot: dict[str, torch.Tensor]) -> str:
    """sha256 of the backbone tensors: a resumed head must belong to exactly these weights."""
    digest = hashlib.sha256()
    for key in sorted(snapshot):
        digest.update(key.encode())
        digest.update(snapshot[key].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- fast protocol --------------------------------------------------------------------------


def fit_logistic_lbfgs(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int,
    soft: SoftTargets | None = None,
) -> nn.Linear:
    """Multinomial logistic regression: mean CE + weight_decay/2 * ||W||^2, full-batch L-BFGS.
    With ``soft`` (teacher logits per row of x) the CE is replaced by the Hinton KD loss."""
    head = nn.Linear(x.shape[1], num_classes, device=x.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        fit = soft.loss(head(x), y) if soft is not None else F.cross_entropy(head(x), y)
        loss = fit + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def can_stratify(labels: torch.Tensor, holdout: float) -> bool:
    """sklearn stratifies a split only if every class has 2 images and both parts can hold every class."""
    counts = torch.bincount(labels)
    present = int((counts > 0).sum())
    n_hold = math.ceil(holdout * len(labels))
    return int(counts[counts > 0].min()) >= 2 and min(n_hold, len(labels) - n_hold) >= present


# Fewer held-out images than this and the fast probe's weight-decay choice is mostly noise: each image
# moves the hold-out accuracy by more than 1 point, and the standard error of an accuracy near 50%
# (0.5 / sqrt(n)) passes 5 points, while the grid's decays usually differ by a few points.
MIN_HOLDOUT_IMAGES = 100


def holdout_flags(held_out: int) -> list[str]:
    """The degenerate-state sentence of a weight decay chosen on ``held_out`` images (none if enough)."""
    if held_out >= MIN_HOLDOUT_IMAGES:
        return []
    return [
        f"fast probe: weight decay chosen on {held_out} held-out image{'s' if held_out != 1 else ''} "
        f"(fewer than {MIN_HOLDOUT_IMAGES}: the choice is mostly noise)"
    ]


SMALL_PROBLEM = 1 << 22  # feature values below which a CPU solve runs on one thread


@contextmanager
def threads_for(numel: int, device: torch.device | str):
    """One intra-op thread for a small CPU problem: its matmuls take microseconds, so thread
    synchronisation dominates (and on a busy machine makes L-BFGS 10-30x slower). Restored after."""
    if torch.device(device).type != "cpu" or numel >= SMALL_PROBLEM:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fast_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    cfg: EvalConfig,
    soft: SoftTargets | None = None,
    on_head=None,
    device: torch.device | str = "cpu",
) -> tuple[dict[int, float], dict]:
    """(top-k on val, details) for cached features; standardised with train statistics.

    ``soft``: KD teacher logits per training row; ``on_head(head, mean, std)`` sees the final head (on the CPU).
    The solver runs on ``device``: the GPU when there is one, as ImageNet's features are a 1.28M-row full batch.
    """
    with threads_for(train[0].numel(), device):
        return _fast_probe(train, val, num_classes, cfg, soft, on_head, device)


def _fast_probe(train, val, num_classes, cfg, soft, on_head, device) -> tuple[dict[int, float], dict]:
    (xtr, ytr), (xva, yva) = ((x.to(device), y.to(device)) for x, y in (train, val))
    soft = dataclasses.replace(soft, logits=soft.logits.to(device)) if soft is not None else None
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xva = (xtr - mean) / std, (xva - mean) / std
    idx = torch.arange(len(ytr))
    stratify = ytr.cpu().numpy() if can_stratify(ytr, cfg.fast_holdout) else None
    fit_idx, hold_idx = train_test_split(
        idx.numpy(), test_size=cfg.fast_holdout, random_state=cfg.seed, stratify=stratify
    )
    fit_idx, hold_idx = torch.as_tensor(fit_idx, device=device), torch.as_tensor(hold_idx, device=device)
    scores = {}
    for wd in cfg.fast_weight_decays:
        head = fit_logistic_lbfgs(
            xtr[fit_idx],
            ytr[fit_idx],
            num_classes,
            wd,
            cfg.fast_max_iter,
            soft.subset(fit_idx) if soft is not None else None,
        )
        with torch.no_grad():
            scores[wd] = topk_accuracy(head(xtr[hold_idx]), ytr[hold_idx], (1,))[1]
    best = max(cfg.fast_weight_decays, key=lambda wd: (scores[wd], wd))
    head = fit_logistic_lbfgs(xtr, ytr, num_classes, best, cfg.fast_max_iter, soft)
    if on_head is not None:
        on_head(copy.deepcopy(head).cpu(), mean.cpu(), std.cpu())
    with torch.no_grad():
        acc = topk_accuracy(head(xva), yva, TOPK)
    details = {"chosen_weight_decay": best, "holdout_top1": {str(k): v for k, v in scores.items()}}
    flags = holdout_flags(len(hold_idx))
    return acc, details | ({DEGENERATE: flags} if flags else {})  # topk_result moves them off the protocol


def frozen_features(backbone: nn.Module, data: ProbeData, cfg: EvalConfig, progress: bool):
    """(runtime, (train features, labels), (val features, labels)) from the frozen backbone, centre
    crops of both splits, with MoCo's check that extraction left the backbone untouched."""
    rt = make_runtime(cfg.device, cfg.amp, cfg.channels_last)
    freeze_backbone(backbone, rt)
    snapshot = backbone_snapshot(backbone)
    train = extract_features(
        backbone,
        data.train_plain,
        cfg.feature_batch_size,
        rt,
        cfg.loader_workers(),
        "train features",
        progress,
    )
    val = extract_features(
        backbone, data.val, cfg.feature_batch_size, rt, cfg.loader_workers(), "val features", progress
    )
    check_backbone_unchanged(backbone, snapshot)
    return rt, train, val


def fast_probe_on_backbone(
    backbone: nn.Module, data: ProbeData, cfg: EvalConfig, progress: bool
) -> tuple[dict[int, float], dict]:
    """The fast protocol on ``backbone``: its frozen features extracted once, then :func:`fast_probe`
    (with the KD teacher's soft targets when ``cfg`` names one)."""
    rt, train, val = frozen_features(backbone, data, cfg, progress)
    kd = kd_teacher_for(cfg, data.num_classes, rt)
    soft = (
        kd.soft_targets(data.train_plain, cfg.feature_batch_size, cfg.loader_workers(), progress)
        if kd
        else None
    )

    def save_head(head, mean, std):  # the saved head acts on raw features: fold the standardisation in
        save_probe_classifier(cfg, backbone, *fold_standardisation(head.weight, head.bias, mean, std))

    acc, details = fast_probe(train, val, data.num_classes, cfg, soft, save_head, rt.device)
    details |= kd.describe() if kd else {}
    return acc, details | {
        "solver": "lbfgs",
        "standardise": True,
        "train_images": len(data.train_plain),
    } | rt.describe()


# --- paper protocol -------------------------------------------------------------------------


def milestone_epochs(cfg: EvalConfig) -> list[int]:
    return sorted({round(f * cfg.epochs) for f in cfg.lr_milestones})


def new_head(in_dim: int, num_classes: int, seed: int) -> nn.Linear:
    """MoCo's linear-probe head: weights N(0, 0.01), bias 0, the same on every process."""
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(in_dim, num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    return head


def resume_key(cfg: EvalConfig, lr: float, data: ProbeData, backbone_digest: str) -> dict:
    """Everything that shapes the head's training; a saved head with another key is never resumed."""
    settings = {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k not in RUNTIME_FIELDS
    }
    return {
        "settings": settings,
        "lr": lr,
        "data": str(Path(cfg.data).resolve()) if cfg.data else "",
        "train_images": len(data.train_aug),
        "num_classes": data.num_classes,
        "fingerprint": data.fingerprint,
        "backbone_sha256": backbone_digest,
    }


def load_resumable(path: Path, key: dict, head: nn.Module, opt, sched, say) -> int:
    """The epoch to start at: the saved one when ``path`` has this key, else 0 (stale state is ignored)."""
    if not path.exists():
        return 0
    state = safe_load(path, "probe checkpoint")
    if state.get("key") != key:
        say(f"{path} was written for another configuration or backbone; training the probe from scratch")
        return 0
    head.load_state_dict(state["head"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    say(f"resuming the probe from {path} at epoch {state['epoch']}")
    return int(state["epoch"])


def augment_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of the augmentation randomness for one epoch on one process: resuming needs no RNG state."""
    return (seed * 1_000_003 + rank * 7_919 + epoch) % (2**63 - 1)


@torch.no_grad()
def evaluate_head(
    backbone: nn.Module, head: nn.Module, val: Dataset, cfg: EvalConfig, rt: Runtime, progress: bool
) -> dict[int, float]:
    """top-k on val; under torchrun each process scores every world_size-th image and counts are summed."""
    shard = Subset(val, range(rt.dist.rank, len(val), rt.dist.world_size)) if rt.dist.enabled else val
    loader = DataLoader(
        shard,
        batch_size=cfg.feature_batch_size,
        shuffle=False,
        num_workers=cfg.loader_workers(),
        pin_memory=rt.device.type == "cuda",
    )
    counts = torch.zeros(len(TOPK) + 1, dtype=torch.float64, device=rt.device)
    for images, targets in tqdm(loader, desc="val", disable=not (progress and rt.dist.is_main), leave=False):
        logits = head(backbone_features(backbone, images, rt))
        correct = topk_correct(logits, targets, TOPK)
        counts += torch.tensor(
            [correct[k] for k in TOPK] + [len(targets)], dtype=torch.float64, device=rt.device
        )
    if rt.dist.enabled:
        dist.all_reduce(counts)
    total = counts[-1].item()
    return {k: 100.0 * counts[i].item() / total for i, k in enumerate(TOPK)}


def paper_probe(
    backbone: nn.Module, data: ProbeData, cfg: EvalConfig, lr: float, progress: bool
) -> tuple[dict[int, float], dict]:
    rt = make_runtime(cfg.device, cfg.amp, cfg.channels_last, distributed=True)
    world, rank = rt.dist.world_size, rt.dist.rank
    if cfg.batch_size % world:
        raise InputError(f"batch_size={cfg.batch_size} is not divisible by the {world} torchrun processes")
    freeze_backbone(backbone, rt)
    snapshot = backbone_snapshot(backbone)
    head = new_head(feature_dim(backbone), data.num_classes, cfg.seed).to(rt.device)
    model = (
        DistributedDataParallel(head, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        if rt.dist.enabled
        else head
    )
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestone_epochs(cfg), gamma=0.1)
    kd = kd_teacher_for(cfg, data.num_classes, rt)

    state_path = Path(cfg.out) / "probe_last.pt"
    key = resume_key(cfg, lr, data, snapshot_digest(snapshot))
    say = (lambda msg: tqdm.write(msg, file=sys.stderr)) if rt.dist.is_main else (lambda _msg: None)
    start = load_resumable(state_path, key, head, opt, sched, say)

    # Every process holds the same sampler; process r takes every world-th index of the epoch's permutation.
    sampler = DistributedSampler(
        data.train_aug, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False
    )
    bar = tqdm(
        range(start, cfg.epochs),
        desc="linear probe",
        disable=not (progress and rt.dist.is_main),
        initial=start,
        total=cfg.epochs,
    )
    for epoch in bar:
        sampler.set_epoch(epoch)
        torch.manual_seed(augment_seed(cfg.seed, rank, epoch))
        loader = DataLoader(
            data.train_aug,
            batch_size=cfg.batch_size // world,
            sampler=sampler,
            num_workers=cfg.loader_workers(),
            pin_memory=rt.device.type == "cuda",
        )
        total, batches = 0.0, 0
        for images, targets in loader:
            logits, targets = model(backbone_features(backbone, images, rt)), targets.to(rt.device)
            loss = kd.loss(logits, images, targets) if kd else F.cross_entropy(logits, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, batches = total + loss.item(), batches + 1
        sched.step()
        bar.set_postfix(loss=f"{total / max(batches, 1):.3f}", lr=f"{opt.param_groups[0]['lr']:.3g}")
        if rt.dist.is_main:
            atomic_torch_save(
                {
                    "key": key,
                    "head": head.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch + 1,
                },
                state_path,
            )
        if rt.dist.enabled:
            dist.barrier()
    check_backbone_unchanged(backbone, snapshot)
    if rt.dist.is_main:
        save_probe_classifier(cfg, backbone, head.weight, head.bias)
    acc = evaluate_head(backbone, head, data.val, cfg, rt, progress)
    details = {
        "lr": lr,
        "solver": "sgd",
        "head_init_std": 0.01,
        "milestones_epochs": milestone_epochs(cfg),
        "train_images": len(data.train_aug),
    } | (kd.describe() if kd else {})
    return acc, details | rt.describe()


def linear_probe(
    backbone: nn.Module, data: ProbeData, cfg: EvalConfig, lr: float, progress: bool
) -> tuple[dict[int, float], dict]:
    """The linear probe of ``backbone`` under ``cfg.protocol`` (paper or fast): top-k accuracies and
    protocol details."""
    if cfg.protocol == "fast":
        return fast_probe_on_backbone(backbone, data, cfg, progress)
    if cfg.protocol == "paper":
        return paper_probe(backbone, data, cfg, lr, progress)
    raise InputError(f"protocol={cfg.protocol!r}: expected paper or fast")
