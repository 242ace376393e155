"""Mutual information by binning and the information plane (paper Fig. 6, docs/method.md#mi).

A linear classifier T = softmax(W f(x) + b) trains on frozen backbone features f(x), and after every
epoch (and once before the first, at initialisation) we estimate, in **bits** (log base 2):

- I(X;T) = H(T): every input x is distinct and T is a deterministic function of x, so H(T|X) = 0.
- I(T;Y) = H(T) + H(Y) - H(T,Y), from the joint counts of (pattern, label).

T is discretised by cutting each softmax dimension into ``bins`` equal bins on [0, 1]; a *pattern*
is the vector of bin indices, and entropies are plug-in estimates over the empirical distribution of
patterns on the estimation set (the training images with the evaluation transform). Plug-in MI is
biased upwards: when T and Y are independent its expected value is about
(|T| - 1)(|Y| - 1) / (2 N ln 2) bits (Miller-Madow), which every record carries as ``bias_bits``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from downstream.backbone import default_probe_lr, load_backbone
from downstream.cifar import CIFAR_LR, cifar_probe_data, is_cifar
from downstream.compare import Labeller, checkpoint_paths, identity
from downstream.config import EvalConfig
from downstream.features import Runtime, backbone_features, extract_features, freeze_backbone, make_runtime
from downstream.linear import image_folder_probe_data
from downstream.probe import (
    ProbeData,
    augment_seed,
    backbone_snapshot,
    check_backbone_unchanged,
    milestone_epochs,
    new_head,
)
from downstream.result import Measurement, TaskResult, with_degenerate
from infra.checkpoint import atomic_write, atomic_write_text
from infra.errors import InputError
from pretrain.models import feature_dim

SEVERAL_CHECKPOINTS = True  # `eval mi --ckpt A --ckpt B`: one curve each
LOG_BASE = 2  # every entropy and MI here is in bits
MEASURE_CHUNK = 65536  # rows of logits in memory at once while measuring

# --- the estimator: pure functions on arrays ----------------------------------------------------


def bin_probabilities(probs: np.ndarray, bins: int = 30) -> np.ndarray:
    """(N, K) values in [0, 1] -> (N, K) int bin indices in [0, bins).

    Bin b holds [b/bins, (b+1)/bins); the value 1.0 belongs to the last bin.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"expected probabilities of shape (N, K), got shape {probs.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if probs.size and (probs.min() < 0.0 or probs.max() > 1.0):
        raise ValueError(f"probabilities must lie in [0, 1], got range [{probs.min()}, {probs.max()}]")
    index = np.minimum(np.floor(probs * bins), bins - 1)
    return index.astype(
        np.uint8 if bins <= 256 else np.int64
    )  # one byte per dimension: 1000 classes x 1.28M images fit


def pattern_ids(rows: np.ndarray) -> np.ndarray:
    """(N, K) discrete rows -> (N,) ids, equal where the rows are equal (ids are 0..patterns-1)."""
    rows = np.asarray(rows)
    if rows.ndim == 1:
        rows = rows[:, None]
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


def entropy_bits(ids: np.ndarray) -> float:
    """Plug-in Shannon entropy, in bits, of the empirical distribution of ``ids`` (N,)."""
    counts = np.unique(np.asarray(ids).reshape(-1), return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mi_xt_bits(t_ids: np.ndarray) -> float:
    """I(X;T) in bits for distinct inputs and a deterministic T: equals H(T)."""
    return entropy_bits(t_ids)


def mi_ty_bits(t_ids: np.ndarray, labels: np.ndarray) -> float:
    """I(T;Y) = H(T) + H(Y) - H(T,Y) in bits, plug-in estimate from paired samples."""
    t_ids, labels = np.asarray(t_ids).reshape(-1), np.asarray(labels).reshape(-1)
    if len(t_ids) != len(labels):
        raise ValueError(f"{len(t_ids)} patterns but {len(labels)} labels")
    joint = pattern_ids(np.stack([t_ids, labels], axis=1))
    mi = entropy_bits(t_ids) + entropy_bits(labels) - entropy_bits(joint)
    return max(mi, 0.0)  # the exact value is >= 0; only float rounding can push it below


def independence_bias_bits(n_patterns: int, n_labels: int, n: int) -> float:
    """Expected plug-in I(T;Y) in bits when T and Y are independent: (|T|-1)(|Y|-1) / (2 N ln 2)."""
    return (n_patterns - 1) * (n_labels - 1) / (2.0 * n * math.log(2))


def information_point(probs: np.ndarray, labels: np.ndarray, bins: int = 30) -> dict:
    """One point of the information plane for softmax outputs ``probs`` (N, K) and labels (N,)."""
    return plane_point(bin_probabilities(probs, bins), labels)


def plane_point(binned: np.ndarray, labels: np.ndarray) -> dict:
    """I(X;T), I(T;Y) (bits) and diagnostics from binned softmax rows (N, K) and labels (N,)."""
    t = pattern_ids(binned)
    labels = np.asarray(labels).reshape(-1)
    n_patterns = int(t.max()) + 1 if len(t) else 0
    return {
        "mi_xt_bits": mi_xt_bits(t),
        "mi_ty_bits": mi_ty_bits(t, labels),
        "h_y_bits": entropy_bits(labels),  # the most I(T;Y) can be
        "n": len(labels),  # log2 n is the most I(X;T) can be
        "patterns": n_patterns,
        "bias_bits": independence_bias_bits(n_patterns, len(np.unique(labels)), len(labels)),
    }


# --- the task: a linear classifier trained epoch by epoch ---------------------------------------


@dataclass
class Curve:
    label: str
    info: dict
    lr: float
    points: list[dict]  # one per epoch, epoch 0 = before training


def _batches(
    backbone: nn.Module,
    data: ProbeData,
    cached: tuple[torch.Tensor, torch.Tensor],
    cfg: EvalConfig,
    epoch: int,
    rt: Runtime,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (features, targets) on ``rt.device``. paper: freshly augmented images through the
    frozen backbone; fast: the cached centre-crop features, reshuffled."""
    gen = torch.Generator().manual_seed(augment_seed(cfg.seed, 0, epoch))
    if cfg.protocol == "fast":
        x, y = cached
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            yield x[idx].to(rt.device), y[idx].to(rt.device)
        return
    loader = DataLoader(
        data.train_aug,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=gen,
        num_workers=cfg.loader_workers(),
        pin_memory=rt.device.type == "cuda",
    )
    for images, targets in loader:
        yield backbone_features(backbone, images, rt), targets.to(rt.device)


@torch.no_grad()
def _measure(head: nn.Linear, x: torch.Tensor, y: torch.Tensor, bins: int, epoch: int, lr: float) -> dict:
    """The information-plane point (and top-1 on the same images) of the head's softmax on features x.
    Chunked, so that only the binned rows (one byte per class) of the whole set are held at once."""
    binned, correct = [], 0
    for start in range(0, len(y), MEASURE_CHUNK):
        logits = head(x[start : start + MEASURE_CHUNK]).double().cpu()
        if not torch.isfinite(logits).all():
            raise InputError(
                f"mi: the classifier diverged by epoch {epoch} at lr {lr}; pass a smaller one (--set lr=...)"
            )
        binned.append(bin_probabilities(F.softmax(logits, dim=1).clamp(0.0, 1.0).numpy(), bins))
        correct += (logits.argmax(dim=1) == y[start : start + MEASURE_CHUNK]).sum().item()
    point = plane_point(np.concatenate(binned), y.numpy())
    majority = 100.0 * np.bincount(y.numpy()).max() / len(y)  # top-1 of always answering the largest class
    return {"epoch": epoch, **point, "top1": 100.0 * correct / len(y), "chance_top1": majority}


def chance_flags(point: dict) -> list[str]:
    """The degenerate-state sentence of an information-plane point measured on a classifier at chance:
    a trained one (epoch >= 1) whose top-1 is within two standard errors of always answering the
    largest class, or whose softmax falls in one binned pattern. Its MI then measures no learning."""
    if point["epoch"] < 1:
        return []  # before training a classifier is at chance by design
    q = point["chance_top1"] / 100
    margin = 200 * math.sqrt(q * (1 - q) / max(1, point["n"]))  # two standard errors, in points
    if point["patterns"] > 1 and point["top1"] > point["chance_top1"] + margin:
        return []
    return [
        f"mi: classifier at chance at epoch {point['epoch']} (top-1 {point['top1']:.1f}% vs "
        f"{point['chance_top1']:.1f}% for the largest class, {point['patterns']} binned pattern"
        f"{'s' if point['patterns'] != 1 else ''}): its MI measures no learning (train longer, or check the lr)"
    ]


def information_curve(
    backbone: nn.Module, data: ProbeData, cfg: EvalConfig, lr: float, rt: Runtime, progress: bool, desc: str
) -> list[dict]:
    """Train the linear head for cfg.epochs with the probe recipe (N(0, 0.01) init, SGD momentum 0.9,
    lr x0.1 at the milestones) and return the information-plane point before training and after every epoch."""
    freeze_backbone(backbone, rt)
    snapshot = backbone_snapshot(backbone)
    x, y = extract_features(
        backbone,
        data.train_plain,
        cfg.feature_batch_size,
        rt,
        cfg.loader_workers(),
        f"{desc} features",
        progress,
    )
    x_on_device = x.to(rt.device)
    head = new_head(feature_dim(backbone), data.num_classes, cfg.seed).to(rt.device)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestone_epochs(cfg), gamma=0.1)
    points = [_measure(head, x_on_device, y, cfg.mi_bins, 0, lr)]
    for epoch in tqdm(range(1, cfg.epochs + 1), desc=desc, disable=not progress, leave=False):
        for feats, targets in _batches(backbone, data, (x, y), cfg, epoch, rt):
            loss = F.cross_entropy(head(feats), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        points.append(_measure(head, x_on_device, y, cfg.mi_bins, epoch, lr))
    check_backbone_unchanged(backbone, snapshot)
    return points


# --- outputs ----------------------------------------------------------------------------------------


def curves_frame(curves: list[Curve]) -> pd.DataFrame:
    rows = [
        {
            "ckpt": c.label,
            "arch": c.info.get("arch"),
            "method": c.info.get("method"),
            "sha256": c.info.get("sha256"),
            "lr": c.lr,
            **p,
        }
        for c in curves
        for p in c.points
    ]
    return pd.DataFrame(rows)


def plot_information_plane(curves: list[Curve], path: Path, title: str) -> Path:
    """I(X;T) on x, I(T;Y) on y, one line per checkpoint, every epoch a marker (first and last labelled)."""
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.add_subplot()
    for curve in curves:
        xs = [p["mi_xt_bits"] for p in curve.points]
        ys = [p["mi_ty_bits"] for p in curve.points]
        (line,) = ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=curve.label)
        for p in (curve.points[0], curve.points[-1]):
            ax.annotate(
                f"ep {p['epoch']}",
                (p["mi_xt_bits"], p["mi_ty_bits"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=line.get_color(),
            )
    first = curves[0].points[0]  # the bounds are the same for every checkpoint: same images, same labels
    ax.axhline(first["h_y_bits"], color="grey", linestyle="--", linewidth=0.8)
    ax.axvline(math.log2(first["n"]), color="grey", linestyle=":", linewidth=0.8)
    ax.annotate(
        "H(Y)",
        (0, first["h_y_bits"]),
        xycoords=("axes fraction", "data"),
        xytext=(3, 3),
        textcoords="offset points",
        fontsize=7,
        color="grey",
    )
    ax.annotate(
        "log2 N",
        (math.log2(first["n"]), 0),
        xycoords=("data", "axes fraction"),
        xytext=(-30, 3),
        textcoords="offset points",
        fontsize=7,
        color="grey",
    )
    ax.set_xlabel("I(X;T) (bits)")
    ax.set_ylabel("I(T;Y) (bits)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png"))


def measurements(curves: list[Curve], dataset: str) -> list[Measurement]:
    out = []
    for c in curves:
        who = identity(c.label, c.info)
        for p in c.points:
            extra = {
                **who,
                "epoch": p["epoch"],
                "log_base": LOG_BASE,
                "patterns": p["patterns"],
                "bias_bits": p["bias_bits"],
            }
            extra = with_degenerate(extra, chance_flags(p))
            out.append(Measurement("mi_xt_bits", p["mi_xt_bits"], dataset, "train", extra))
            out.append(Measurement("mi_ty_bits", p["mi_ty_bits"], dataset, "train", dict(extra)))
    return out


def mi_data(cfg: EvalConfig) -> tuple[ProbeData, str, float | None]:
    """(data, dataset name, default lr or None for the per-arch one): CIFAR pickles (the paper's
    Fig. 6 uses the CIFAR-10 classifier, lr 3) or an ImageFolder with train/ and val/."""
    if is_cifar(cfg.data):
        data, layout = cifar_probe_data(cfg.data, cfg.image_size, cfg.cifar_variant)
        return data, layout.name, CIFAR_LR
    return image_folder_probe_data(cfg.data, cfg.image_size), Path(cfg.data).name, None


def evaluate(cfg: EvalConfig, progress: bool = True) -> TaskResult:
    """Information-plane curves for every checkpoint in ``cfg.ckpts`` (or ``cfg.ckpt``)."""
    paths = checkpoint_paths(cfg)
    data, dataset, task_lr = mi_data(cfg)
    rt = make_runtime(cfg.device, cfg.amp, cfg.channels_last)
    name_of = Labeller(cfg)
    curves, first_info = [], None
    for i, path in enumerate(paths):
        backbone, info = load_backbone(path)
        first_info = first_info or info
        label = name_of(i, info)
        lr = cfg.lr if cfg.lr is not None else task_lr or default_probe_lr(info["arch"])
        points = information_curve(backbone, data, cfg, lr, rt, progress, f"mi {label}")
        curves.append(Curve(label, info, lr, points))
        del backbone  # one checkpoint in memory at a time
    out = Path(cfg.out)
    csv = atomic_write_text(out / "information_plane.csv", curves_frame(curves).to_csv(index=False))
    png = plot_information_plane(
        curves,
        out / "information_plane.png",
        f"information plane, {dataset} train ({cfg.mi_bins} bins, {cfg.epochs} epochs, {cfg.protocol})",
    )
    protocol = cfg.protocol_dict("mi") | {  # the SGD recipe under either protocol, never the L-BFGS one
        "log_base": LOG_BASE,
        "bins": cfg.mi_bins,
        "estimation_split": "train",
        "estimation_transform": "centre crop",
        "training_inputs": "augmented images" if cfg.protocol == "paper" else "cached centre-crop features",
        "runtime": rt.describe(),
        "head_init_std": 0.01,
        "momentum": 0.9,
        "milestones_epochs": milestone_epochs(cfg),
        "lr_per_checkpoint": {c.label: c.lr for c in curves},
        "epoch_0": "before training",
    }
    return TaskResult(
        task="mi",
        measurements=measurements(curves, dataset),
        protocol=protocol,
        artifacts=[str(png), str(csv)],
        source=first_info,
    )
