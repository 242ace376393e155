"""Resolve a suite's datasets to folders: generate embedded ones, or check those under --data-root.

Everything is checked before any step runs, so a missing or malformed dataset stops the run with
one line naming the path, and no record is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from disco_bench.config import from_dict
from disco_bench.embedded import EmbeddedConfig, make_embedded
from pretrain.data import check_image_folder
from pretrain.errors import InputError


def _check_imagefolder(path: Path) -> None:
    for split in ("train", "val"):
        check_image_folder(path / split)


def _make_imagefolder(path: Path, spec: dict, progress: bool) -> None:
    make_embedded(path, from_dict(EmbeddedConfig, spec, f"dataset {path.name} generate: "), progress)


# kind -> (check(path), generate(path, spec, progress))
DATASET_KINDS: dict[str, tuple[Callable, Callable | None]] = {
    "imagefolder": (_check_imagefolder, _make_imagefolder),
}


def prepare_datasets(suite, out: Path, data_root: Path | None, create: bool, progress: bool) -> dict[str, Path]:
    """name -> folder. Without --data-root, datasets with ``generate`` are made under OUT/data."""
    paths = {}
    for name, spec in suite.datasets.items():
        kind = spec.get("kind", "imagefolder")
        if kind not in DATASET_KINDS:
            raise InputError(f"{suite.path} datasets.{name}: unknown kind {kind!r}; choose from {', '.join(sorted(DATASET_KINDS))}")
        check, generate = DATASET_KINDS[kind]
        rel = spec.get("path", name)
        if data_root is None and spec.get("generate") is not None:
            path = out / "data" / rel
            if create:
                generate(path, spec["generate"], progress)
        elif data_root is None:
            raise InputError(f"suite {suite.name} needs dataset {name!r} ({kind}): pass --data-root DIR holding {rel}/")
        else:
            path = Path(data_root) / rel
        paths[name] = path
    if create:  # a dry run only lists steps, so it needs no data on disk
        for name, path in paths.items():
            DATASET_KINDS[suite.datasets[name].get("kind", "imagefolder")][0](path)
    return paths
