"""Linear probing on a frozen backbone, in two protocols shared by linear, semisup and cifar.

``paper``: METHOD.md section 5. The backbone stays in eval mode (BN frozen) and sees freshly
augmented images every epoch; a Linear head initialised N(0, 0.01) trains with SGD momentum 0.9,
lr x0.1 at 60% and 80% of the epochs; afterwards MoCo's sanity check that no backbone tensor moved.
``fast``: features are extracted once (centre crop, no augmentation) and a multinomial logistic
regression is fitted full-batch with L-BFGS, its weight decay picked on a held-out part of train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from downstream.config import EvalConfig
from downstream.features import extract_features, pick_device
from downstream.metrics import topk_accuracy
from pretrain.checkpoint import atomic_torch_save, safe_load
from pretrain.models import feature_dim


class BackboneChanged(RuntimeError):
    """MoCo's sanity check failed: linear probing modified the frozen backbone."""


@dataclass
class ProbeData:
    train_aug: Dataset  # training images with the probe's augmentation (paper protocol)
    train_plain: Dataset  # training images with the evaluation transform (fast protocol)
    val: Dataset
    num_classes: int


def backbone_snapshot(backbone: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def check_backbone_unchanged(backbone: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    for key, value in backbone.state_dict().items():
        if not torch.equal(value.detach().cpu(), snapshot[key].cpu()):
            raise BackboneChanged(f"backbone tensor {key} changed during linear probing; the probe must leave it frozen")


# --- fast protocol --------------------------------------------------------------------------


def fit_logistic_lbfgs(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int) -> nn.Linear:
    """Multinomial logistic regression: mean CE + weight_decay/2 * ||W||^2, full-batch L-BFGS."""
    torch.manual_seed(0)
    head = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def fast_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], num_classes: int,
               cfg: EvalConfig) -> tuple[dict[int, float], dict]:
    """(top-k on val, details) for cached features; standardised with train statistics."""
    (xtr, ytr), (xva, yva) = train, val
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xva = (xtr - mean) / std, (xva - mean) / std
    idx = torch.arange(len(ytr))
    counts = torch.bincount(ytr, minlength=num_classes)
    stratify = ytr.numpy() if counts[counts > 0].min() >= 2 else None
    fit_idx, hold_idx = train_test_split(idx.numpy(), test_size=cfg.fast_holdout, random_state=cfg.seed, stratify=stratify)
    fit_idx, hold_idx = torch.as_tensor(fit_idx), torch.as_tensor(hold_idx)
    scores = {}
    for wd in cfg.fast_weight_decays:
        head = fit_logistic_lbfgs(xtr[fit_idx], ytr[fit_idx], num_classes, wd, cfg.fast_max_iter)
        with torch.no_grad():
            scores[wd] = topk_accuracy(head(xtr[hold_idx]), ytr[hold_idx], (1,))[1]
    best = max(cfg.fast_weight_decays, key=lambda wd: (scores[wd], wd))
    head = fit_logistic_lbfgs(xtr, ytr, num_classes, best, cfg.fast_max_iter)
    with torch.no_grad():
        acc = topk_accuracy(head(xva), yva)
    return acc, {"chosen_weight_decay": best, "holdout_top1": {str(k): v for k, v in scores.items()}}


# --- paper protocol -------------------------------------------------------------------------


def paper_probe(backbone: nn.Module, data: ProbeData, cfg: EvalConfig, lr: float, progress: bool) -> dict[int, float]:
    device = pick_device(cfg.device)
    backbone.eval().to(device)
    for p in backbone.parameters():
        p.requires_grad_(False)
    snapshot = backbone_snapshot(backbone)
    torch.manual_seed(cfg.seed)
    head = nn.Linear(feature_dim(backbone), data.num_classes).to(device)
    nn.init.normal_(head.weight, 0.0, 0.01)
    nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    milestones = sorted({round(f * cfg.epochs) for f in cfg.lr_milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)

    state_path = Path(cfg.out) / "probe_last.pt"
    start = 0
    if state_path.exists():
        state = safe_load(state_path, "probe checkpoint")
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = state["epoch"]

    gen = torch.Generator()
    for epoch in tqdm(range(start, cfg.epochs), desc="linear probe", disable=not progress, initial=start, total=cfg.epochs):
        gen.manual_seed(cfg.seed * 1_000_003 + epoch)
        loader = DataLoader(data.train_aug, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=cfg.workers,
                            drop_last=False, pin_memory=device.type == "cuda")
        for images, targets in loader:
            with torch.no_grad():
                feats = backbone(images.to(device, non_blocking=True))
            loss = F.cross_entropy(head(feats), targets.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        atomic_torch_save({"head": head.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                           "rng": torch.get_rng_state(), "epoch": epoch + 1}, state_path)
    check_backbone_unchanged(backbone, snapshot)
    xva, yva = extract_features(backbone, data.val, cfg.feature_batch_size, device, cfg.workers, "val features", progress)
    with torch.no_grad():
        return topk_accuracy(head.cpu()(xva), yva)


def run_probe(backbone: nn.Module, data: ProbeData, cfg: EvalConfig, lr: float, progress: bool) -> tuple[dict[int, float], dict]:
    """top-k accuracies and protocol details for the protocol ``cfg.protocol``."""
    if cfg.protocol == "fast":
        device = pick_device(cfg.device)
        snapshot = backbone_snapshot(backbone)
        train = extract_features(backbone, data.train_plain, cfg.feature_batch_size, device, cfg.workers, "train features", progress)
        val = extract_features(backbone, data.val, cfg.feature_batch_size, device, cfg.workers, "val features", progress)
        check_backbone_unchanged(backbone, snapshot)
        acc, details = fast_probe(train, val, data.num_classes, cfg)
        return acc, details | {"solver": "lbfgs", "standardise": True}
    if cfg.protocol == "paper":
        acc = paper_probe(backbone, data, cfg, lr, progress)
        return acc, {"lr": lr, "solver": "sgd", "head_init_std": 0.01, "milestones_epochs": sorted({round(f * cfg.epochs) for f in cfg.lr_milestones})}
    raise ValueError(f"unknown protocol {cfg.protocol!r}: expected paper or fast")
