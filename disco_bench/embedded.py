"""The embedded dataset: procedurally drawn images whose classes differ in shape and structure.

Each class is a spatial pattern (stripes at a fixed orientation, checkerboard, rings, dot grid,
filled disc, square, cross, triangle, ...) drawn with random foreground/background colours,
frequency, phase, position, size and pixel noise. Colour carries no class information, so the
classes stay learnable without labels under aug+ (colour jitter, grayscale, crops, flips): what
survives the augmentation is exactly the structure that defines the class. Horizontal flips map
every class onto itself (diagonal stripes come in both directions). The same seed always gives
the same bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from infra.checkpoint import UMASK, atomic_write_text
from infra.errors import InputError
from infra.validation import Range, at_least, validate_fields


@dataclass
class EmbeddedConfig:
    classes: int = 10
    train_per_class: int = 60
    val_per_class: int = 20
    image_size: int = 32
    noise: float = 0.08  # std of Gaussian pixel noise (difficulty knob)
    seed: int = 0
    # Which patterns are the classes: PATTERNS[class_offset : class_offset + classes] (a second,
    # independently generated set can then have another class list).
    class_offset: int = 0
    # A selection split carved out of the training images: the last N training images of each class
    # are written to val/ (byte for byte the images the full set trains on) and the set's own
    # validation images are not written, so settings chosen on it never see a reported image.
    carve_val_per_class: int = 0

    def __post_init__(self) -> None:
        validate_fields(self, FIELD_RULES)
        if self.class_offset + self.classes > len(PATTERNS):
            raise InputError(
                f"class_offset + classes = {self.class_offset + self.classes}: expected at most "
                f"{len(PATTERNS)} (the patterns there are)"
            )
        if self.carve_val_per_class >= self.train_per_class:
            raise InputError(
                f"carve_val_per_class={self.carve_val_per_class}: expected fewer than train_per_class "
                f"({self.train_per_class}), so that some training images remain"
            )

    @property
    def class_names(self) -> list[str]:
        return list(PATTERNS)[self.class_offset : self.class_offset + self.classes]

    def images(self) -> list[tuple[str, int, str, int]]:
        """Every image the set holds as (split written, class index, generator split, index): the
        generator split and index seed its pixels, so a carved image is the full set's own."""
        keep = self.train_per_class - self.carve_val_per_class
        if self.carve_val_per_class:
            splits = [("train", "train", range(keep)), ("val", "train", range(keep, self.train_per_class))]
        else:
            splits = [
                ("train", "train", range(self.train_per_class)),
                ("val", "val", range(self.val_per_class)),
            ]
        return [
            (written, c, source, i)
            for written, source, idx in splits
            for c in range(self.classes)
            for i in idx
        ]

    @property
    def train_images(self) -> int:
        return self.classes * (self.train_per_class - self.carve_val_per_class)


def _coords(n: int, rng: np.random.Generator, angle_jitter: float = 0.0):
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) / n
    theta = rng.uniform(-angle_jitter, angle_jitter)
    xr = x * np.cos(theta) - y * np.sin(theta)
    yr = x * np.sin(theta) + y * np.cos(theta)
    return x, y, xr, yr


def _stripes(n, rng, angle):
    x, y, _, _ = _coords(n, rng)
    theta = np.deg2rad(angle + rng.uniform(-8, 8))
    f = rng.uniform(3, 6)
    return np.sin(2 * np.pi * f * (x * np.cos(theta) + y * np.sin(theta)) + rng.uniform(0, 2 * np.pi)) > 0


def _diagonal(n, rng):
    return _stripes(n, rng, 45 if rng.random() < 0.5 else 135)


def _checker(n, rng):
    _, _, xr, yr = _coords(n, rng, 0.15)
    f = rng.uniform(2.5, 4.5)
    return (
        np.sin(2 * np.pi * f * xr + rng.uniform(0, 6.3)) * np.sin(2 * np.pi * f * yr + rng.uniform(0, 6.3))
        > 0
    )


def _rings(n, rng):
    x, y, _, _ = _coords(n, rng)
    cx, cy = rng.uniform(0.3, 0.7, 2)
    r = np.hypot(x - cx, y - cy)
    return np.sin(2 * np.pi * rng.uniform(4, 7) * r + rng.uniform(0, 6.3)) > 0


def _dots(n, rng):
    _, _, xr, yr = _coords(n, rng, 0.3)
    f = rng.uniform(3, 5)
    u, v = (xr * f + rng.uniform(0, 1)) % 1 - 0.5, (yr * f + rng.uniform(0, 1)) % 1 - 0.5
    return u**2 + v**2 < rng.uniform(0.18, 0.28) ** 2


def _centre_size(rng):
    return rng.uniform(0.35, 0.65, 2), rng.uniform(0.22, 0.38)


def _disc(n, rng):
    x, y, _, _ = _coords(n, rng)
    (cx, cy), r = _centre_size(rng)
    return np.hypot(x - cx, y - cy) < r


def _square(n, rng):
    x, y, _, _ = _coords(n, rng)
    (cx, cy), r = _centre_size(rng)
    t = rng.uniform(-0.3, 0.3)
    dx, dy = x - cx, y - cy
    u, v = dx * np.cos(t) - dy * np.sin(t), dx * np.sin(t) + dy * np.cos(t)
    return np.maximum(np.abs(u), np.abs(v)) < r * 0.85


def _cross(n, rng):
    x, y, _, _ = _coords(n, rng)
    (cx, cy), r = _centre_size(rng)
    w = r * rng.uniform(0.25, 0.4)
    dx, dy = np.abs(x - cx), np.abs(y - cy)
    return ((dx < w) & (dy < r)) | ((dy < w) & (dx < r))


def _triangle(n, rng):
    x, y, _, _ = _coords(n, rng)
    (cx, cy), r = _centre_size(rng)
    t = rng.uniform(-0.3, 0.3)
    pts = [(cx + r * np.sin(t + a), cy - r * np.cos(t + a)) for a in (0, 2 * np.pi / 3, 4 * np.pi / 3)]

    def side(p, q):
        return (x - q[0]) * (p[1] - q[1]) - (p[0] - q[0]) * (y - q[1])

    s = [side(pts[i], pts[(i + 1) % 3]) for i in range(3)]
    return ((s[0] < 0) & (s[1] < 0) & (s[2] < 0)) | ((s[0] > 0) & (s[1] > 0) & (s[2] > 0))


def _zigzag(n, rng):
    x, y, _, _ = _coords(n, rng)
    f, a = rng.uniform(3, 5), rng.uniform(0.04, 0.08)
    return np.sin(2 * np.pi * f * (y + a * np.abs(((x * 6) % 2) - 1)) + rng.uniform(0, 6.3)) > 0


PATTERNS = {
    "hstripes": lambda n, rng: _stripes(n, rng, 90),
    "vstripes": lambda n, rng: _stripes(n, rng, 0),
    "checker": _checker,
    "rings": _rings,
    "dots": _dots,
    "disc": _disc,
    "square": _square,
    "cross": _cross,
    "triangle": _triangle,
    "diagonal": _diagonal,
    "zigzag": _zigzag,
}


def _colour_pair(rng):
    while True:
        bg, fg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if abs(fg.mean() - bg.mean()) > 0.25:
            return fg, bg


def draw(pattern: str, size: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image of ``pattern``, rendered at 4x and box-filtered for smooth edges."""
    mask = PATTERNS[pattern](size * 4, rng).astype(np.float64)
    mask = mask.reshape(size, 4, size, 4).mean(axis=(1, 3))[..., None]
    fg, bg = _colour_pair(rng)
    img = bg * (1 - mask) + fg * mask + rng.normal(0, noise, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


MANIFEST = "dataset.json"
# a set being built lives in ``.SET.XXXX.disco-bench-partial`` beside it, marked by this file inside:
# only a folder with both (and no builder holding it) is ever swept as abandoned
PARTIAL_SUFFIX = ".disco-bench-partial"
PARTIAL_MARKER = ".disco-bench-partial"


def _files(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.name != PARTIAL_MARKER
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hashes(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file of a set: what its manifest says the tool wrote."""
    return {name: _sha256(folder / name) for name in _files(folder)}


def _read_manifest(out: Path) -> dict | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _check_replaceable(out: Path, manifest: dict | None) -> None:
    """``out`` may be replaced only when it holds nothing but a set this project wrote."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: expected a folder, but it is an existing file; nothing was changed")
    if not out.exists() or not any(out.iterdir()):
        return
    if manifest is None:
        raise InputError(
            f"{out} exists and was not generated by disco-bench (no readable {MANIFEST}); "
            "expected a new or empty folder, so nothing in it was changed"
        )
    # a set written before manifests listed their files: every file in it counts as generated
    listed = manifest.get("files", _files(out))
    ours = set(listed) | {MANIFEST}
    foreign = sorted(set(_files(out)) - ours)
    if isinstance(listed, dict):  # with content hashes: a generated file the user replaced is theirs now
        foreign += sorted(
            name
            for name, digest in listed.items()
            if (out / name).is_file() and not (out / name).is_symlink() and _sha256(out / name) != digest
        )
    if foreign:
        shown = ", ".join(foreign[:3]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 3 else "")
        raise InputError(
            f"{out} holds files disco-bench did not write ({shown}); expected only the generated "
            "set, so nothing in it was changed (move them, or choose another folder)"
        )


def write_once(out: str | Path, spec: dict, build: Callable[[Path], None]) -> Path:
    """Generate a dataset into ``out`` once. A set with the same manifest (``spec``) is reused.

    ``build(folder)`` writes into a fresh hidden sibling (``.NAME.*.partial``); only a complete set
    (its manifest listing every file written last) is swapped in, so a failure or a bad value
    leaves the previous set as it was and removes the partial one. An existing set is replaced only
    when it holds nothing but the files its manifest lists; any other folder is refused untouched.
    """
    given, out = Path(out), Path(os.path.abspath(out))  # '.' and 'a/..' have no parent to build beside
    manifest = _read_manifest(out)
    if manifest is not None and {k: v for k, v in manifest.items() if k != "files"} == spec:
        return given
    if out == Path.cwd() or out in Path.cwd().parents:
        raise InputError(
            f"--out {given}: expected a folder other than the current one or one above it (the set is "
            "built beside it and swapped in); run the command from outside it"
        )
    _check_replaceable(out, manifest)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=PARTIAL_SUFFIX, dir=out.parent))
        tmp.chmod(0o777 & ~UMASK)  # mkdtemp makes 0700: the set gets the mode mkdir gives
        (tmp / PARTIAL_MARKER).write_text("a dataset disco-bench is building; removed when done\n")
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}; nothing was changed") from exc
    building = _hold(tmp)
    try:
        _remove_abandoned(out)
        build(tmp)
        atomic_write_text(tmp / MANIFEST, json.dumps({**spec, "files": _hashes(tmp)}, indent=1))
        _swap_in(tmp, out)
        (out / PARTIAL_MARKER).unlink(missing_ok=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            kept = "the previous set is unchanged" if out.exists() else "nothing was written"
            raise InputError(f"cannot write {out}: {exc.strerror or exc}; {kept}") from exc
        raise
    finally:
        if building is not None:
            os.close(building)
    return given


def _hold(folder: Path) -> int | None:
    """An exclusive flock on ``folder`` while a set is built there (None where it cannot be taken:
    held by another process, or a file system without locks). The kernel drops it when the builder
    dies, however it dies (SIGKILL included): that is how an abandoned partial set is told apart."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_abandoned(out: Path) -> None:
    """Partial sets beside ``out`` left by a builder that was killed; one being built is held (and
    kept), and a folder without the builder's marker is not one of ours (kept too)."""
    for partial in out.parent.glob(f".{out.name}.*{PARTIAL_SUFFIX}"):
        if not (partial / PARTIAL_MARKER).is_file():
            continue
        fd = _hold(partial)
        if fd is not None:
            shutil.rmtree(partial, ignore_errors=True)
            os.close(fd)


def _swap_in(new: Path, out: Path) -> None:
    """Put the complete set ``new`` at ``out``; the old set (if any) goes only once ``new`` is in place."""
    if not out.exists() or not any(out.iterdir()):
        os.replace(new, out)  # a rename replaces an empty folder
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".disco-bench-old", dir=out.parent))
    os.replace(out, old / "set")
    try:
        os.replace(new, out)
    except OSError:
        os.replace(old / "set", out)  # put the previous set back
        old.rmdir()
        raise
    with contextlib.suppress(OSError):
        shutil.rmtree(old)


def make_embedded(out: str | Path, cfg: EmbeddedConfig, progress: bool = True) -> Path:
    """Write ``out/train/<class>/*.png`` and ``out/val/<class>/*.png``; reuse an identical set."""
    names = cfg.class_names

    def build(tmp: Path) -> None:
        for split, c, source, i in tqdm(
            cfg.images(), desc="embedded data", disable=not progress, leave=False
        ):
            # class offset 0 keeps the seeds (and bytes) of sets generated before class_offset existed
            rng = np.random.default_rng([cfg.seed, 0 if source == "train" else 1, c + cfg.class_offset, i])
            folder = tmp / split / names[c]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(draw(names[c], cfg.image_size, cfg.noise, rng)).save(
                folder / f"{i:05d}.png", optimize=False
            )

    return write_once(out, {"kind": "disco-bench-embedded", "version": 1, **asdict(cfg)}, build)


# One rule per field (infra.validation).
FIELD_RULES = {
    "classes": Range(low=2, high=len(PATTERNS), integer=True),
    "train_per_class": at_least(1),
    "val_per_class": at_least(1),
    "image_size": at_least(1),
    "noise": Range(low=0.0),
    "seed": at_least(0),
    "class_offset": Range(low=0, high=len(PATTERNS) - 2, integer=True),
    "carve_val_per_class": Range(low=0, integer=True),
}
