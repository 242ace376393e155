"""t-SNE of pooled backbone features, one panel per checkpoint (paper supp. Fig. 3, docs/method.md#tsne).

Images: the first ``classes`` classes of the val split (sorted folder order) and the first
``per_class`` images of each (sorted file order), so every checkpoint sees exactly the same images.
Embedding: scikit-learn ``TSNE(n_components=2, init='pca', random_state=0)``.

A picture is not a number, so each checkpoint also gets two separation scores computed in the
feature space itself (not in the 2-D map, whose distances t-SNE does not preserve), both with cosine
distance so that backbones with different feature scales compare fairly:

- ``silhouette``: mean silhouette coefficient of the class labels, in [-1, 1];
- ``knn{k}_top1``: leave-one-out k-nearest-neighbour accuracy (%), ties broken towards the lower class index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits
from torch.utils.data import Subset

from downstream.backbone import load_backbone
from downstream.compare import Labeller, checkpoint_paths, identity
from downstream.config import EvalConfig
from downstream.features import extract_features, make_runtime
from downstream.result import Measurement, TaskResult
from infra.checkpoint import atomic_write, atomic_write_text
from infra.errors import InputError
from pretrain.augment import eval_transform
from pretrain.data import image_folder

SEVERAL_CHECKPOINTS = True  # `eval tsne --ckpt A --ckpt B`: one panel each

PANEL_INCHES = 4.0  # each checkpoint's panel is PANEL_INCHES square
LEGEND_INCHES = 0.6  # strip under the panels for a one-row class legend (more rows: taller)
DPI = 100  # so a figure of n panels is 400 n pixels wide

# --- picking the images -----------------------------------------------------------------------------


def select_per_class(targets: list[int], classes: int, per_class: int, where: str) -> list[int]:
    """Indices of the first ``per_class`` items of each class 0..classes-1, in dataset order."""
    available = np.bincount(np.asarray(targets, dtype=np.int64), minlength=1)
    if classes < 2 or per_class < 1:
        raise InputError(
            f"{where}: classes={classes}, per_class={per_class}; expected classes >= 2 and per_class >= 1"
        )
    if classes > len(available):
        raise InputError(f"{where} has {len(available)} classes; --classes {classes} asks for more")
    short = [c for c in range(classes) if available[c] < per_class]
    if short:
        raise InputError(
            f"{where}: class index {short[0]} has {available[short[0]]} images; --per-class {per_class} asks for more"
        )
    taken = dict.fromkeys(range(classes), 0)
    chosen = []
    for index, target in enumerate(targets):
        if target < classes and taken[target] < per_class:
            taken[target] += 1
            chosen.append(index)
    return chosen


# --- embedding and scores: pure functions on arrays -------------------------------------------------


def capped_perplexity(n: int, wanted: float) -> float:
    """sklearn needs perplexity < n and uses 3 * perplexity neighbours, so cap it at (n - 1) / 3."""
    return float(min(wanted, max((n - 1) / 3.0, 1.0)))


def embed_2d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """(N, C) -> (N, 2) t-SNE points, deterministic for a given seed."""
    features = np.asarray(features, dtype=np.float32)
    tsne = TSNE(
        n_components=2, init="pca", random_state=seed, perplexity=capped_perplexity(len(features), perplexity)
    )
    # One OpenMP thread: on a busy machine Barnes-Hut with all threads ran 15x slower, and a few
    # hundred points need no more. The points do not depend on the thread count either way.
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(features)


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out kNN accuracy (%) with cosine similarity; k is capped at N - 1."""
    x = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float64), dim=1)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    k = min(k, len(y) - 1)
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))  # a point is not its own neighbour
    neighbours = sim.topk(k, dim=1).indices
    votes = F.one_hot(y[neighbours], int(y.max()) + 1).sum(dim=1)
    predicted = votes.argmax(dim=1)  # argmax returns the first maximum: ties go to the lower class
    return 100.0 * (predicted == y).double().mean().item()


def separation_scores(features: np.ndarray, labels: np.ndarray, k: int = 5) -> dict[str, float]:
    """How well the classes separate in feature space: silhouette (cosine) and kNN accuracy (%)."""
    return {
        "silhouette": float(silhouette_score(features, labels, metric="cosine")),
        f"knn{k}_top1": knn_accuracy(features, labels, k),
    }


# --- outputs ----------------------------------------------------------------------------------------


def class_colours(n: int) -> list[tuple]:
    """n distinct RGBA colours: tab10 / tab20, then evenly spaced along turbo for more classes."""
    if n <= 10:
        return [colormaps["tab10"](c) for c in range(n)]
    if n <= 20:
        return [colormaps["tab20"](c) for c in range(n)]
    return [colormaps["turbo"](c / (n - 1)) for c in range(n)]


def plot_panels(
    panels: list[tuple[str, np.ndarray]], labels: np.ndarray, class_names: list[str], path: Path
) -> Path:
    """One PNG: a scatter panel per (title, points (N, 2)) side by side, one colour per class, and a
    shared legend under them, in as many rows as its entries need to fit the figure's width."""
    n = len(panels)
    fig = Figure(figsize=(PANEL_INCHES * n, PANEL_INCHES + LEGEND_INCHES), dpi=DPI)
    colours = class_colours(len(class_names))
    handles = []
    for i, (title, points) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1)
        for c, name in enumerate(class_names):
            mask = labels == c
            h = ax.scatter(points[mask, 0], points[mask, 1], s=6, color=colours[c], label=name)
            if i == 0:
                handles.append(h)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    legend_inches = fit_legend(fig, handles)
    fig.set_size_inches(PANEL_INCHES * n, PANEL_INCHES + legend_inches)
    bottom = legend_inches / (PANEL_INCHES + legend_inches)
    fig.subplots_adjust(
        left=0.02, right=0.98, top=1 - 0.5 / (PANEL_INCHES + legend_inches), bottom=bottom, wspace=0.05
    )
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=DPI))


def fit_legend(fig: Figure, handles: list) -> float:
    """Put the class legend at the bottom of ``fig`` with the most columns (at most 10) whose width
    fits inside the figure, as measured by the renderer; returns the height in inches it needs (at
    least LEGEND_INCHES, the strip of one row)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    room = 0.98 * fig.bbox.width
    for ncol in range(min(len(handles), 10), 0, -1):
        legend = fig.legend(
            handles=handles, loc="lower center", ncol=ncol, fontsize=7, markerscale=2, frameon=False
        )
        box = legend.get_window_extent(renderer)
        if box.width <= room or ncol == 1:
            return max(LEGEND_INCHES, box.height / fig.dpi + 0.1)
        legend.remove()
    return LEGEND_INCHES


def point_rows(
    label: str, info: dict, val, chosen: list[int], labels: np.ndarray, points: np.ndarray, root: Path
) -> list[dict]:
    """CSV rows: which checkpoint, which image (relative to val/), its class and its 2-D point."""
    return [
        {
            "ckpt": label,
            "sha256": info.get("sha256"),
            "image": str(Path(val.samples[idx][0]).relative_to(root)),
            "class_index": int(target),
            "class_name": val.classes[target],
            "x": float(px),
            "y": float(py),
        }
        for idx, target, (px, py) in zip(chosen, labels, points)
    ]


def evaluate(cfg: EvalConfig, progress: bool = True) -> TaskResult:
    """One t-SNE panel and two separation scores per checkpoint in ``cfg.ckpts`` (or ``cfg.ckpt``)."""
    paths = checkpoint_paths(cfg)
    val_root = Path(cfg.data) / "val"
    val = image_folder(val_root, eval_transform(cfg.image_size))
    chosen = select_per_class(val.targets, cfg.classes, cfg.per_class, str(val_root))
    labels = np.asarray([val.targets[i] for i in chosen])
    rt = make_runtime(cfg.device, cfg.amp, cfg.channels_last)
    name_of = Labeller(cfg)
    dataset = Path(cfg.data).name
    panels, rows, ms, first_info = [], [], [], None
    for i, path in enumerate(paths):
        backbone, info = load_backbone(path)
        first_info = first_info or info
        label = name_of(i, info)
        feats = extract_features(
            backbone,
            Subset(val, chosen),
            cfg.feature_batch_size,
            rt,
            cfg.loader_workers(),
            f"tsne {label} features",
            progress,
        )[0].numpy()
        del backbone  # one checkpoint in memory at a time
        points = embed_2d(feats, cfg.tsne_perplexity, seed=0)  # random_state=0 as in the paper's protocol
        scores = separation_scores(feats, labels, cfg.tsne_knn_k)
        knn = scores[f"knn{cfg.tsne_knn_k}_top1"]
        panels.append(
            (f"{label}\nsilhouette {scores['silhouette']:.3f}, {cfg.tsne_knn_k}-NN {knn:.1f}%", points)
        )
        ms += [
            Measurement(metric, value, dataset, "val", identity(label, info))
            for metric, value in scores.items()
        ]
        rows += point_rows(label, info, val, chosen, labels, points, val_root)
    out = Path(cfg.out)
    csv = atomic_write_text(out / "tsne_points.csv", pd.DataFrame(rows).to_csv(index=False))
    png = plot_panels(panels, labels, val.classes[: cfg.classes], out / "tsne.png")
    protocol = cfg.protocol_dict("tsne") | {
        "images": len(chosen),
        "selection": "first per_class images of the first classes classes of val/, sorted",
        "tsne": {
            "n_components": 2,
            "init": "pca",
            "random_state": 0,
            "perplexity": capped_perplexity(len(chosen), cfg.tsne_perplexity),
        },
        "features": "pooled backbone output, centre crop",
        "distance": "cosine",
        "runtime": rt.describe(),
    }
    return TaskResult(
        task="tsne", measurements=ms, protocol=protocol, artifacts=[str(png), str(csv)], source=first_info
    )
