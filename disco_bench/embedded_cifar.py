"""The embedded dataset in the official CIFAR python-pickle layouts, for CIFAR transfer steps and tests.

Images are drawn exactly like the embedded ImageFolder set (disco_bench.embedded.draw) at 32 px
and written as the CIFAR authors distribute them:

- ``cifar10``: ``OUT/cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5`` (the train
  images split into five), ``test_batch`` and ``batches.meta``;
- ``cifar100``: ``OUT/cifar-100-python/`` with ``train``, ``test`` and ``meta`` (fine and coarse
  labels; the coarse label of fine class c is c // 5, as CIFAR-100 groups 5 classes per superclass).

Each file is a pickle (protocol 2) of a dict with bytes keys (b'data' uint8 (N, 3072) with the
red, green and blue planes in turn, b'labels' or b'fine_labels', b'filenames', b'batch_label').
The same config always gives the same bytes; an identical existing set is reused.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from disco_bench.embedded import PATTERNS, draw, write_once
from infra.checkpoint import atomic_write
from infra.validation import OneOf, Range, at_least, validate_fields

SIDE = 32
FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


@dataclass
class EmbeddedCifarConfig:
    variant: str = "cifar10"  # cifar10 | cifar100 (the layout; the class count is ``classes`` either way)
    classes: int = 10
    train_per_class: int = 50
    test_per_class: int = 20
    noise: float = 0.08
    seed: int = 0

    def __post_init__(self) -> None:
        validate_fields(self, FIELD_RULES)


def draw_split(cfg: EmbeddedCifarConfig, split: str) -> tuple[np.ndarray, list[int], list[bytes]]:
    """(rows uint8 (N, 3072) in CIFAR plane order, labels, file names), classes interleaved like CIFAR's shuffle."""
    per = cfg.train_per_class if split == "train" else cfg.test_per_class
    names = list(PATTERNS)[: cfg.classes]
    rows, labels, files = [], [], []
    for i in range(per):
        for c, name in enumerate(names):
            rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, c, i])
            rows.append(draw(name, SIDE, cfg.noise, rng).transpose(2, 0, 1).reshape(-1))
            labels.append(c)
            files.append(f"{name}_s_{i:06d}.png".encode())
    return np.stack(rows).astype(np.uint8), labels, files


def _dump(path: Path, obj: dict) -> None:
    atomic_write(path, lambda handle: pickle.dump(obj, handle, protocol=2))


def _write_cifar10(folder: Path, cfg: EmbeddedCifarConfig, names: list[str]) -> None:
    data, labels, files = draw_split(cfg, "train")
    for b, part in enumerate(np.array_split(np.arange(len(labels)), 5), 1):
        _dump(
            folder / f"data_batch_{b}",
            {
                b"batch_label": f"training batch {b} of 5".encode(),
                b"labels": [labels[i] for i in part],
                b"data": data[part],
                b"filenames": [files[i] for i in part],
            },
        )
    data, labels, files = draw_split(cfg, "test")
    _dump(
        folder / "test_batch",
        {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data, b"filenames": files},
    )
    _dump(
        folder / "batches.meta",
        {
            b"num_cases_per_batch": -(-cfg.train_per_class * cfg.classes // 5),
            b"label_names": [n.encode() for n in names],
            b"num_vis": 3 * SIDE * SIDE,
        },
    )


def _write_cifar100(folder: Path, cfg: EmbeddedCifarConfig, names: list[str]) -> None:
    for split in ("train", "test"):
        data, labels, files = draw_split(cfg, split)
        _dump(
            folder / split,
            {
                b"filenames": files,
                b"batch_label": f"{split}ing batch 1 of 1".encode(),
                b"fine_labels": labels,
                b"coarse_labels": [c // 5 for c in labels],
                b"data": data,
            },
        )
    coarse = [f"group_{g}".encode() for g in range((cfg.classes - 1) // 5 + 1)]
    _dump(folder / "meta", {b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": coarse})


def make_embedded_cifar(out: str | Path, cfg: EmbeddedCifarConfig) -> Path:
    """Write ``OUT/<official folder>/`` for ``cfg.variant``; returns OUT (what ``--data`` takes)."""
    out = Path(out)
    names = list(PATTERNS)[: cfg.classes]
    writer = _write_cifar10 if cfg.variant == "cifar10" else _write_cifar100
    spec = {"kind": "disco-bench-embedded-cifar", "version": 1, **asdict(cfg)}
    return write_once(out, spec, lambda tmp: writer(tmp / FOLDERS[cfg.variant], cfg, names))


# One rule per field (infra.validation).
FIELD_RULES = {
    "variant": OneOf(tuple(FOLDERS)),
    "classes": Range(low=2, high=len(PATTERNS), integer=True),
    "train_per_class": at_least(1),
    "test_per_class": at_least(1),
    "noise": Range(low=0.0),
    "seed": at_least(0),
}
