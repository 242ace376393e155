"""Resolve a suite's datasets to folders: generate embedded ones, or check those under --data-root.

Everything is checked before any step runs, so a missing or malformed dataset stops the run with
one line naming the path, and no record is written.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from disco_bench.config import from_dict
from disco_bench.embedded import EmbeddedConfig, make_embedded
from disco_bench.embedded_cifar import EmbeddedCifarConfig, make_embedded_cifar
from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
from infra.errors import InputError


def _imported(target: str) -> Callable:
    """The function ``module:name``, imported when first called: the format checks live beside their
    loaders, which import torch, and listing a suite's steps (``--dry-run``, the leaderboard's fill
    commands) needs none of them."""

    def call(*args, **kwargs):
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


check_cifar = _imported("downstream.cifar:check_cifar")
check_voc = _imported("downstream.detection.data:check_voc")
check_coco = _imported("downstream.detection.data:check_coco")
check_image_folder = _imported("pretrain.data:check_image_folder")


def _check_imagefolder(path: Path) -> None:
    for split in ("train", "val"):
        check_image_folder(path / split)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"file not found: {path} (expected a checkpoint file, e.g. a published teacher)")


def _make_imagefolder(path: Path, spec: dict, progress: bool) -> None:
    make_embedded(path, from_dict(EmbeddedConfig, spec, f"dataset {path.name} generate: "), progress)


def _make_cifar(path: Path, spec: dict, progress: bool) -> None:
    make_embedded_cifar(path, from_dict(EmbeddedCifarConfig, spec, f"dataset {path.name} generate: "))


def _make_detection(path: Path, spec: dict, progress: bool) -> None:
    make_embedded_detection(
        path, from_dict(EmbeddedDetectionConfig, spec, f"dataset {path.name} generate: "), progress
    )


# kind -> (check(path), generate(path, spec, progress))
DATASET_KINDS: dict[str, tuple[Callable, Callable | None]] = {
    "imagefolder": (_check_imagefolder, _make_imagefolder),
    "file": (_check_file, None),  # one file under --data-root, e.g. teachers/moco_v2_200ep_pretrain.pth.tar
    "cifar": (check_cifar, _make_cifar),  # official python pickles: cifar-10-batches-py/ or cifar-100-python/
    "voc": (
        check_voc,
        _make_detection,
    ),  # VOCdevkit/VOC2007[/VOC2012]; the embedded one holds the COCO layout too
    "coco": (
        check_coco,
        _make_detection,
    ),  # annotations/instances_{train,val}2017.json + train2017/ + val2017/
}


def prepare_datasets(
    suite, out: Path, data_root: Path | None, create: bool, progress: bool
) -> dict[str, Path]:
    """name -> folder. Without --data-root, datasets with ``generate`` are made under OUT/data."""
    paths = {}
    for name, spec in suite.datasets.items():
        kind = spec.get("kind", "imagefolder")
        if kind not in DATASET_KINDS:
            raise InputError(
                f"{suite.path} datasets.{name}: unknown kind {kind!r}; choose from {', '.join(sorted(DATASET_KINDS))}"
            )
        check, generate = DATASET_KINDS[kind]
        rel = spec.get("path", name)
        if Path(rel).is_absolute():  # a folder --dataset put in the suite's place
            path = Path(rel)
        elif data_root is None and spec.get("generate") is not None:
            path = out / "data" / rel
            if create:
                generate(path, spec["generate"], progress)
        elif data_root is None:
            raise InputError(
                f"suite {suite.name} needs dataset {name!r} ({kind}): pass --data-root DIR holding {rel}/"
            )
        else:
            path = Path(data_root) / rel
        paths[name] = path
    if create:  # a dry run only lists steps, so it needs no data on disk
        for name, path in paths.items():
            DATASET_KINDS[suite.datasets[name].get("kind", "imagefolder")][0](path)
    return paths
