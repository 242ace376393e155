"""Weighted k-nearest-neighbour classification on frozen features (InstDisc / DINO protocol).

Features are L2-normalised; each validation image takes the k train images of highest cosine
similarity s_i, and class c scores sum_i [y_i = c] exp(s_i / T), T = 0.07. k is 20 and 200 by
default, capped at the number of train images. No training, so no augmentation and no protocol
choice: features come from the evaluation transform (resize + centre crop). Works on an
ImageFolder (train/, val/) or an official CIFAR pickle folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from downstream.backbone import load_backbone
from downstream.cifar import cifar_probe_data, is_cifar
from downstream.config import EvalConfig
from downstream.linear import image_folder_probe_data
from downstream.metrics import topk_accuracy
from downstream.probe import ProbeData, frozen_features
from downstream.result import Measurement, TaskResult


@torch.no_grad()
def knn_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    query_x: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    chunk: int = 1024,
) -> torch.Tensor:
    """(M, num_classes) vote scores of the M queries; features need not be normalised (this does it)."""
    train_x, query_x = F.normalize(train_x.float(), dim=1), F.normalize(query_x.float(), dim=1)
    k = min(k, len(train_x))
    out = []
    for start in range(0, len(query_x), chunk):
        sim, idx = (query_x[start : start + chunk] @ train_x.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, dtype=sim.dtype)
        out.append(votes.scatter_add_(1, train_y[idx], (sim / temperature).exp()))
    return torch.cat(out)


def knn_accuracy(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    ks: tuple[int, ...],
    temperature: float,
) -> dict[int, dict[int, float]]:
    """k -> {1: top-1 %, 5: top-5 %} on val."""
    return {
        k: topk_accuracy(knn_scores(*train, val[0], num_classes, k, temperature), val[1], (1, 5)) for k in ks
    }


def probe_data(cfg: EvalConfig) -> tuple[ProbeData, str]:
    """(data, dataset name): a CIFAR pickle folder when DATA is one, else an ImageFolder."""
    if is_cifar(cfg.data):
        data, layout = cifar_probe_data(cfg.data, cfg.image_size, cfg.cifar_variant)
        return data, layout.name
    return image_folder_probe_data(cfg.data, cfg.image_size), Path(cfg.data).name


def evaluate(cfg: EvalConfig, progress: bool = True) -> TaskResult:
    backbone, info = load_backbone(cfg.ckpt)
    data, dataset = probe_data(cfg)
    rt, train, val = frozen_features(backbone, data, cfg, progress)
    acc = knn_accuracy(train, val, data.num_classes, cfg.knn_k, cfg.knn_temperature)
    split = "test" if is_cifar(cfg.data) else "val"
    measurements = [Measurement(f"top{t}_k{k}", acc[k][t], dataset, split) for k in cfg.knn_k for t in (1, 5)]
    details = {
        "k_used": {str(k): min(k, len(train[1])) for k in cfg.knn_k},
        "train_images": len(train[1]),
    } | rt.describe()
    return TaskResult("knn", measurements, cfg.protocol_dict("knn") | details, source=info)
