"""CIFAR-10/100 transfer (docs/method.md#cifar): the linear probe on CIFAR read from the official
python pickle folders on disk (never downloaded), images resized 32 -> ``image_size`` bicubic.

Layouts (as distributed by the CIFAR authors; dict keys are bytes, labels are lists of ints):

- ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, each
  ``{b'data': uint8 (N, 3072), b'labels': [...], b'filenames', b'batch_label'}``; ``batches.meta``
  with ``b'label_names'``.
- ``cifar-100-python/``: ``train`` and ``test`` with ``b'fine_labels'`` (and ``b'coarse_labels'``);
  ``meta`` with ``b'fine_label_names'``. The 100 fine classes are what is evaluated.

A row of ``data`` is the 1024 red, then 1024 green, then 1024 blue values of a 32x32 image in
row-major order. The pickles are read with an unpickler that only builds numpy arrays and plain
containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from downstream.array_pickle import ArrayUnpickler
from downstream.backbone import load_backbone
from downstream.config import EvalConfig
from downstream.linear import topk_result
from downstream.probe import ProbeData, linear_probe
from downstream.result import TaskResult
from infra.errors import InputError
from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD

CIFAR_LR = 3.0  # docs/method.md#cifar
SIDE = 32


@dataclass(frozen=True)
class CifarLayout:
    name: str  # cifar10 | cifar100
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    labels_key: str
    names_key: str


LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": CifarLayout(
        "cifar100", "cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names"
    ),
}


def read_pickle(path: Path) -> dict[str, object]:
    """A CIFAR pickle as a dict with str keys (the files have bytes keys: Python 2 str)."""
    if not path.is_file():
        raise InputError(f"CIFAR file not found: {path} (expected the official python pickle)")
    try:
        with open(path, "rb") as handle:
            obj = ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{path} is not a readable CIFAR pickle: {exc}") from exc
    if not isinstance(obj, dict):
        raise InputError(f"{path} holds a {type(obj).__name__}, expected a dict with keys b'data' and labels")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _key(d: dict, key: str, path: Path):
    if key not in d:
        raise InputError(f"{path} lacks key b'{key}' (has: {', '.join(sorted(d))})")
    return d[key]


def read_batch(path: Path, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), labels int64 (N,)) of one pickle file."""
    d = read_pickle(path)
    data = np.asarray(_key(d, "data", path))
    labels = np.asarray(_key(d, labels_key, path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise InputError(
            f"{path} b'data' is {data.dtype} {data.shape}; expected uint8 (N, {3 * SIDE * SIDE})"
        )
    if labels.shape != (len(data),):
        raise InputError(f"{path} has {len(data)} images but {labels.size} b'{labels_key}'")
    return data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1), labels


def read_split(folder: Path, layout: CifarLayout, split: str) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_batch(folder / name, layout.labels_key) for name in getattr(layout, split)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_class_names(folder: Path, layout: CifarLayout) -> list[str]:
    path = folder / layout.meta
    names = _key(read_pickle(path), layout.names_key, path)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def find_cifar(root: str | Path, variant: str = "auto") -> tuple[CifarLayout, Path]:
    """(layout, folder): ROOT is a pickle folder itself, or holds ``cifar-10-batches-py`` / ``cifar-100-python``."""
    root = Path(root)
    if variant not in ("auto", *LAYOUTS):
        raise InputError(f"cifar_variant={variant!r}: expected auto, {', '.join(LAYOUTS)}")
    wanted = list(LAYOUTS.values()) if variant == "auto" else [LAYOUTS[variant]]
    found = [(lay, root) for lay in wanted if (root / lay.meta).is_file()]
    found = found or [(lay, root / lay.folder) for lay in wanted if (root / lay.folder / lay.meta).is_file()]
    if not found:
        expected = " or ".join(
            f"{root}/{lay.folder}/ ({', '.join((*lay.train, *lay.test, lay.meta))})" for lay in wanted
        )
        raise InputError(f"no CIFAR pickle folder at {root}: expected {expected}")
    if len(found) > 1:
        raise InputError(
            f"{root} holds both {found[0][1].name} and {found[1][1].name}: set cifar_variant=cifar10 or cifar100"
        )
    return found[0]


def is_cifar(root: str | Path) -> bool:
    """Whether ROOT is (or holds) an official CIFAR pickle folder."""
    root = Path(root)
    return any(
        (root / lay.meta).is_file() or (root / lay.folder / lay.meta).is_file() for lay in LAYOUTS.values()
    )


@dataclass
class CifarData:
    layout: CifarLayout
    folder: Path
    classes: list[str]
    train: tuple[np.ndarray, np.ndarray]  # images uint8 (N, 32, 32, 3), labels int64 (N,)
    test: tuple[np.ndarray, np.ndarray]


def load_cifar(root: str | Path, variant: str = "auto") -> CifarData:
    """Both splits and the class names; labels outside the named classes are an error."""
    layout, folder = find_cifar(root, variant)
    classes = read_class_names(folder, layout)
    data = CifarData(
        layout, folder, classes, read_split(folder, layout, "train"), read_split(folder, layout, "test")
    )
    for split in ("train", "test"):
        labels = getattr(data, split)[1]
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise InputError(
                f"{folder} {split} labels span {labels.min()}..{labels.max()}; "
                f"{layout.meta} names {len(classes)} classes"
            )
    return data


def check_cifar(root: str | Path, variant: str = "auto") -> None:
    """Every file of the layout is there and readable (one clear error if not)."""
    load_cifar(root, variant)


class CifarImages(Dataset):
    """uint8 HWC images and labels in memory, served as (transform(PIL image), label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def _to_tensor() -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(image_size: int) -> v2.Compose:
    """RandomResizedCrop(size, bicubic) + flip: the 32 px image is cropped and upsampled in one resampling."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(),
            *_to_tensor(),
        ]
    )


def test_transform(image_size: int) -> v2.Compose:
    """Resize(size, bicubic) + CenterCrop(size), as docs/method.md#cifar states (the crop keeps the whole square)."""
    return v2.Compose(
        [
            v2.Resize(image_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(image_size),
            *_to_tensor(),
        ]
    )


def cifar_probe_data(
    root: str | Path, image_size: int, variant: str = "auto"
) -> tuple[ProbeData, CifarLayout]:
    c = load_cifar(root, variant)
    data = ProbeData(
        CifarImages(*c.train, train_transform(image_size)),
        CifarImages(*c.train, test_transform(image_size)),
        CifarImages(*c.test, test_transform(image_size)),
        len(c.classes),
    )
    return data, c.layout


def evaluate(cfg: EvalConfig, progress: bool = True) -> TaskResult:
    backbone, info = load_backbone(cfg.ckpt)
    data, layout = cifar_probe_data(cfg.data, cfg.image_size, cfg.cifar_variant)
    lr = cfg.lr if cfg.lr is not None else CIFAR_LR
    acc, details = linear_probe(backbone, data, cfg, lr, progress)
    result = topk_result(
        "cifar", acc, layout.name, cfg.protocol_dict("cifar") | details | {"variant": layout.name}, info
    )
    for m in result.measurements:
        m.split = "test"
    return result
