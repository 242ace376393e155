"""ImageFolder reading with clear errors, deterministic multi-view augmentation and a resumable
epoch sampler. Augmentation randomness is a function of (seed, epoch, index), so a run resumed
mid-epoch, or run with any number of workers or ranks, sees exactly the same views."""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler
from torchvision.datasets import ImageFolder

from infra.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def too_large(path: str | os.PathLike, exc: Exception) -> InputError:
    """The error for an image past PIL's decompression-bomb limit (twice ``Image.MAX_IMAGE_PIXELS``)."""
    reason = str(exc).split(", could be")[0]  # PIL adds a guess about an attack
    return InputError(
        f"image {path} is too large to decode ({reason}); expected an image within PIL's "
        "decompression-bomb limit: shrink it, or remove it"
    )


@contextmanager
def reading_image(path: str):
    """Policy for a corrupt or truncated file: stop, naming it.

    Skipping would silently change the dataset a number was measured on, so the run ends with an
    InputError instead (in a DataLoader worker too: the loader re-raises it in the main process,
    and ``errors.one_line`` keeps its message). PIL's LOAD_TRUNCATED_IMAGES stays off, so a cut-off
    file fails here rather than being padded with grey.
    """
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise too_large(path, exc) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).replace(f"'{path}'", "it").replace(str(path), "it") or type(exc).__name__
        raise InputError(
            f"corrupt or truncated image {path} ({reason}): expected a readable image file; "
            "remove or replace it"
        ) from exc


def pil_loader(path: str) -> Image.Image:
    """The image at ``path`` as RGB; a corrupt file is one InputError naming it (``reading_image``)."""
    with reading_image(path), Image.open(path) as img:
        return img.convert("RGB")


def _class_files(folder: Path) -> tuple[list[str], list[str]]:
    """(images, other files) under a class folder, subfolders included (``class/sub/x.png`` belongs
    to ``class``): the files torchvision's ImageFolder walks, told apart by ``is_image_name``."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            (images if is_image_name(path) else others).append(path)
    return images, others


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning on stderr, once per process (a probe lists the same split more than once)."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(message, file=sys.stderr)


def is_image_name(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def check_image_folder(root: str | Path) -> list[str]:
    """The class names under ``root`` (an ImageFolder split); one clear error for what is wrong.

    Images in subfolders of a class belong to it. A file that is not an image of a supported type
    (an ``anim.gif``, a ``notes.txt``) is left out with one warning line counting them, never silently.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            f"dataset folder not found: {root} (expected an ImageFolder split: {root}/<class>/<image>)"
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"no class folders in {root} (expected {root}/<class>/<image>)")
    skipped = []
    for name in classes:
        images, others = _class_files(root / name)
        skipped += others
        # every listed image must be there now, not fail at the step that first samples it (a broken link)
        missing = next((path for path in images if not os.path.isfile(path)), None)
        if missing:
            raise InputError(
                f"image {missing} is listed in {root / name} but is not a readable file (a broken link?); "
                "expected every image of the dataset to exist"
            )
        if not images:
            raise InputError(
                f"empty class folder {root / name}: expected at least one image ({', '.join(IMAGE_EXTENSIONS)})"
            )
    if skipped:
        shown = ", ".join(os.path.relpath(p, root) for p in skipped[:3]) + (
            ", ..." if len(skipped) > 3 else ""
        )
        _warn_once(
            f"warning: {len(skipped)} file(s) under {root} are not images of a supported type and are left "
            f"out ({shown}); supported: {', '.join(IMAGE_EXTENSIONS)}"
        )
    return classes


def check_same_classes(train: list[str], val: list[str], train_root: Path, val_root: Path) -> None:
    """The splits of an ImageFolder hold the same class folders (a probe maps both to one label set)."""
    if train == val:
        return

    def shown(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "") or "none"

    only_train = [c for c in train if c not in val]
    only_val = [c for c in val if c not in train]
    raise InputError(
        f"class folders differ between {train_root} and {val_root}: only in train: {shown(only_train)}; "
        f"only in val: {shown(only_val)}; expected the same class folders in both"
    )


def image_folder(root: str | Path, transform: Callable | None = None) -> ImageFolder:
    check_image_folder(root)
    # exactly the files check_image_folder counted as images
    return ImageFolder(str(root), transform=transform, loader=pil_loader, is_valid_file=is_image_name)


def fingerprint_images(root: str | Path, paths: list[str]) -> str:
    """sha256 over the sorted lines ``relative path <TAB> byte size`` of the image files ``paths``
    under ``root`` (the samples of an ImageFolder split).

    It names the set of files a run reads -- their names, class folders and sizes -- from one
    ``stat`` per file, without reading them (seconds for ImageNet's 1.28 M images, where hashing the
    contents would take longer than an epoch). An image added, removed, renamed, moved to another
    class or re-encoded changes it; a file rewritten in place with exactly its old byte size does not.
    """
    root = os.fspath(root)
    lines = sorted(f"{Path(os.path.relpath(p, root)).as_posix()}\t{os.stat(p).st_size}\n" for p in paths)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode())
    return digest.hexdigest()


def data_identity(data: str | Path, samples: list[str], name: str | None = None) -> dict:
    """What a run's records say about its data: ``{"name", "fingerprint", "path"}``. ``name`` is a
    suite's name for the dataset, else the folder's own name, so a CLI run and a suite run of the
    same folder record the same name and fingerprint; ``samples`` are the files of ``data/train``."""
    path = Path(data).expanduser().resolve()
    return {
        "name": name or path.name,
        "fingerprint": fingerprint_images(Path(data) / "train", samples),  # the samples' own spelling
        "path": str(path),
    }


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + index) % (2**63 - 1)


class MultiViewDataset(Dataset):
    """``num_views`` independently augmented views of each image, deterministic per (seed, epoch, index).

    ``transform`` is one transform for every view, or a list of ``num_views`` transforms, one per
    view (multi-crop: views of different sizes), or one object with a ``views(image, n)`` method
    (``pretrain.device_augment.GpuAugPlus``) that is given the image opened but not decoded and
    returns all ``n`` views at once (it decodes once, at the size its crops need).

    An index is an image index (the epoch is then ``set_epoch``'s) or an ``(epoch, index)`` pair
    (``EpochBatchSampler(tag_epoch=True)``): the pair carries the epoch into persistent DataLoader
    workers, whose copies of the dataset never see ``set_epoch`` in the main process.
    """

    def __init__(self, base: ImageFolder, transform: Callable | list[Callable], num_views: int, seed: int):
        self.views_of = getattr(transform, "views", None)
        transforms = list(transform) if isinstance(transform, list | tuple) else [transform] * num_views
        if len(transforms) != num_views:
            raise InputError(
                f"MultiViewDataset: {len(transforms)} transforms given for {num_views} views; expected one per view"
            )
        self.base, self.transforms, self.num_views, self.seed = base, transforms, num_views, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: int | tuple[int, int]):
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        path, label = self.base.samples[index]
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone (the one fork_rng restores): torch.manual_seed would also
            # reseed a CUDA generator in a process that has one, and costs more than a crop
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
            if self.views_of is not None:
                with reading_image(path), Image.open(path) as img:
                    views = self.views_of(img, self.num_views)
            else:
                img = self.base.loader(path)
                views = [transform(img) for transform in self.transforms]
        return views, label


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of a per-epoch permutation, sharded over ranks, skipping the first ``start_batch``.

    Drops the last partial batch (as MoCo does) so every step has the same size on every rank.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, tag_epoch: bool = False
    ):
        if batch_size > n:
            raise InputError(f"batch size {batch_size} exceeds the {n} images of the dataset")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch_size, seed, rank, world_size
        self.epoch, self.start_batch = 0, 0
        self.tag_epoch = tag_epoch  # yield (epoch, index) pairs: MultiViewDataset then needs no set_epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.n // (self.batch * self.world) - self.start_batch

    def batches_per_epoch(self) -> int:
        return self.n // (self.batch * self.world)

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=gen).tolist()
        per_rank = self.batches_per_epoch() * self.batch
        mine = perm[self.rank * per_rank : (self.rank + 1) * per_rank]
        if self.tag_epoch:
            mine = [(self.epoch, i) for i in mine]
        for b in range(self.start_batch, self.batches_per_epoch()):
            yield mine[b * self.batch : (b + 1) * self.batch]


def default_workers(device_type: str, local_world_size: int) -> int:
    """DataLoader workers when ``workers`` is not set: none on a CPU (the step itself uses every
    core, and its numbers are measured that way); on CUDA the cores this process may use
    (``os.sched_getaffinity``: a container's or a job scheduler's CPU set, not the host's count)
    shared among the processes of this node, one of each share left to the training process; a
    step started by ``run --jobs N`` counts only its share of the cores (``DISCO_BENCH_STEP_CORES``)."""
    if device_type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # a launcher running several steps at once gives each its share (``run --jobs N``)
    share = os.environ.get(CORES_ENV, "")
    if share.isdigit() and int(share) > 0:
        cores = min(cores, int(share))
    return max(1, cores // max(1, local_world_size) - 1)


# The cores a step process may use when a launcher splits the machine between steps (``--jobs``)
CORES_ENV = "DISCO_BENCH_STEP_CORES"


def steps_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    return max(0, math.floor(n / (batch_size * world_size)))
