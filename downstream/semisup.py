"""Semi-supervised evaluation (docs/method.md#semisup): the linear probe trained on 1% or 10% of the
training images, evaluated on the full validation split.

The subset comes from a SimCLR-format list file (one image file name per line, e.g.
``n01440764_10026.JPEG``) when ``subset_list`` is set. Every line counts: the reference reader
drops the first file name as if it were a header (docs/method.md#defect-semisup-header), which this one
does not. Without a list, a stratified subset is drawn: ``round(fraction x n_c)`` images (at least
one) of each class c, chosen by a generator seeded with (seed, c), so the same seed always gives
the same images. The subset's sha256 (over its sorted ``class/file`` paths) goes into the record.

Without ``subset_list``, a fraction of 1% or 10% uses SimCLR's published list for it when the list
is in the data root, i.e. beside the dataset folder: ``DATA/imagenet_subsets/1percent.txt`` and
``10percent.txt`` for ``--data DATA/imagenet`` (the names and folder of SimCLR's repository). Only
when it is not there is a stratified subset drawn; the record says which (``subset.source``) and,
for a stratified subset of those fractions, where the list was looked for.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from downstream.backbone import load_backbone
from downstream.config import EvalConfig
from downstream.linear import image_folder_probe_data, topk_result
from downstream.probe import ProbeData, linear_probe
from downstream.result import TaskResult
from infra.errors import InputError

SEMISUP_LR = 3.0  # docs/method.md#semisup, every architecture
SIMCLR_LISTS = {0.01: "1percent.txt", 0.1: "10percent.txt"}  # SimCLR's imagenet_subsets/ file per fraction
SIMCLR_FOLDER = "imagenet_subsets"


def simclr_list_for(data: str | Path, fraction: float) -> Path | None:
    """Where SimCLR's list for ``fraction`` belongs (DATA/imagenet_subsets/, beside the dataset), or None."""
    name = SIMCLR_LISTS.get(fraction)
    return Path(data).resolve().parent / SIMCLR_FOLDER / name if name else None


def read_simclr_list(path: str | Path) -> list[str]:
    """The entries of a SimCLR subset list, in order, first line included; blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"subset list not found: {path} (expected a text file with one image file name per line)"
        )
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise InputError(
            f"subset list {path} is empty: expected one image file name per line (e.g. n01440764_10026.JPEG)"
        )
    return names


def indices_from_list(samples: Sequence[tuple[str, int]], names: Sequence[str], source: str) -> list[int]:
    """Dataset indices of the listed images, in dataset order. An entry is a file name (SimCLR: unique in
    ImageNet) or ``class_folder/file_name`` where file names repeat across classes."""
    by_name: dict[str, list[int]] = {}
    for i, (path, _) in enumerate(samples):
        by_name.setdefault(Path(path).name, []).append(i)
        by_name.setdefault(f"{Path(path).parent.name}/{Path(path).name}", []).append(i)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputError(
            f"{source}: {len(missing)} of {len(names)} listed images are not in the training folder, "
            f"e.g. {', '.join(missing[:3])}"
        )
    ambiguous = [n for n in names if len(by_name[n]) > 1]
    if ambiguous:
        raise InputError(
            f"{source}: file name {ambiguous[0]} occurs in several class folders; "
            "write it as class_folder/file_name"
        )
    return sorted({by_name[n][0] for n in names})


def stratified_subset(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Indices of round(fraction x n_c) (at least 1) images of every class c, deterministic in (seed, c)."""
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"subset_fraction={fraction}: expected a fraction in (0, 1], e.g. 0.01 or 0.1")
    labels = np.asarray(labels)
    keep: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        size = max(1, math.floor(fraction * len(members) + 0.5))
        rng = np.random.default_rng([seed, int(c)])
        keep.extend(rng.choice(members, size=size, replace=False).tolist())
    return sorted(keep)


def subset_sha256(samples: Sequence[tuple[str, int]], indices: Sequence[int]) -> str:
    """sha256 of the subset's ``class_folder/file_name`` paths, sorted (independent of where the data lives)."""
    rel = sorted(f"{Path(samples[i][0]).parent.name}/{Path(samples[i][0]).name}" for i in indices)
    return hashlib.sha256("\n".join(rel).encode()).hexdigest()


def choose_subset(samples: Sequence[tuple[str, int]], cfg: EvalConfig) -> tuple[list[int], dict]:
    """(indices, description for the record) from the list file, or stratified by fraction and seed."""
    published = simclr_list_for(cfg.data, cfg.subset_fraction) if not cfg.subset_list else None
    listed = cfg.subset_list or (str(published) if published is not None and published.is_file() else "")
    if listed:
        indices = indices_from_list(samples, read_simclr_list(listed), f"subset list {listed}")
        desc = {"source": "list", "list": Path(listed).name}
    else:
        indices = stratified_subset([label for _, label in samples], cfg.subset_fraction, cfg.seed)
        desc = {"source": "stratified", "fraction": cfg.subset_fraction, "seed": cfg.seed}
        if published is not None:
            desc["simclr_list"] = f"not found: {SIMCLR_FOLDER}/{published.name} beside the dataset"
    return indices, desc | {
        "size": len(indices),
        "of": len(samples),
        "sha256": subset_sha256(samples, indices),
    }


# A stratified subset whose true share of train is within this factor of the one asked for is named
# by the asked fraction (ImageNet's 1%: 12,811 of 1,281,167 images); further off, by its true share.
FRACTION_TOLERANCE = 0.05


def subset_label(desc: dict) -> str:
    """Short name of the subset for the dataset column: the list's file name, ``1%`` when the subset
    is 1% of train, else its true share (10 images of 1,437 are ``0.70%``, not ``1%``)."""
    if desc["source"] == "list":
        return desc["list"]
    true = desc["size"] / desc["of"]
    if abs(true - desc["fraction"]) <= FRACTION_TOLERANCE * desc["fraction"]:
        return f"{100 * desc['fraction']:g}%"
    return f"{100 * true:.2f}%"


def subset_flags(desc: dict) -> list[str]:
    """The degenerate-state sentence of a stratified subset far from the fraction asked for."""
    if desc["source"] == "list" or subset_label(desc) == f"{100 * desc['fraction']:g}%":
        return []
    return [
        f"subset of {desc['size']} of {desc['of']} train images ({100 * desc['size'] / desc['of']:.2f}%), "
        f"not the {100 * desc['fraction']:g}% asked (at least one image per class, rounded per class)"
    ]


def evaluate(cfg: EvalConfig, progress: bool = True) -> TaskResult:
    backbone, info = load_backbone(cfg.ckpt)
    full = image_folder_probe_data(cfg.data, cfg.image_size)
    indices, desc = choose_subset(full.train_aug.samples, cfg)
    data = ProbeData(
        Subset(full.train_aug, indices),
        Subset(full.train_plain, indices),
        full.val,
        full.num_classes,
        fingerprint=desc["sha256"],
    )
    lr = cfg.lr if cfg.lr is not None else SEMISUP_LR
    acc, details = linear_probe(backbone, data, cfg, lr, progress)
    dataset = f"{Path(cfg.data).name}@{subset_label(desc)}"
    protocol = cfg.protocol_dict("semisup")
    protocol.pop(
        "subset_list" if desc["source"] == "stratified" else "subset_fraction"
    )  # what chose the subset
    result = topk_result("semisup", acc, dataset, protocol | details | {"subset": desc}, info)
    result.degenerate += subset_flags(desc)
    return result
