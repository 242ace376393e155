"""Atomic writes and safe, strict checkpoint loading.

Every file this project writes goes to a temporary sibling first and is renamed into place, so a
reader never sees a truncated checkpoint or record. Every load uses ``weights_only=True`` so a
checkpoint cannot run code, and every state-dict load reports missing/unexpected keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported where a checkpoint is saved or loaded: the atomic text writes serve commands
# (report) that need no torch

CHECKPOINT_FORMAT = "disco-bench/1"


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then rename over ``path``.

    On any failure (disk full, read-only folder, exception in ``write``) the temp file is removed
    and the previous ``path`` is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}{_kept(path)}") from exc
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes 0600; the file gets the mode open() would give it
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause = os_error_of(exc) if isinstance(exc, Exception) else None  # Ctrl-C stays Ctrl-C
        if cause is not None:
            raise InputError(f"cannot write {path}: {cause.strerror or cause}{_kept(path)}") from exc
        raise
    return path


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import: os.umask can only be read by setting it


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: ``exc`` itself, or the one it was raised from or while handling.
    torch.save turns a full disk into ``RuntimeError: unexpected pos`` raised while the zip writer
    is closed, with the ENOSPC OSError only as its context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _kept(path: Path) -> str:
    return "; the previous file is unchanged" if path.exists() else "; nothing was written"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text), mode="w")


RACY_SECONDS = 2  # file_sha256 does not remember a file modified this recently
_sha256_of: dict[tuple[int, ...], str] = {}  # file_sha256's memo: version of a file -> its hash


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The file's sha256, read once per version of the file in this process: the steps a runner runs in
    one process load the same teacher (a ResNet-50: ~100 MB) in every distillation step, and each load
    names it by its hash (a step in a process of its own reads it once, as before). A version is the
    file's identity and its change stamps: this project replaces files by renaming a new one over them (a
    new inode), and an edit in place changes the size or a timestamp. A file modified in the last
    ``RACY_SECONDS`` is hashed but not remembered, as git does with its index: on a file system with
    coarse timestamps, a second edit within the same tick would leave the stamps as they were."""
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if version in _sha256_of:
            return _sha256_of[version]
        digest = hashlib.sha256()
        while block := handle.read(chunk):
            digest.update(block)
    sha = digest.hexdigest()
    if time.time_ns() - info.st_mtime_ns > RACY_SECONDS * 1_000_000_000:
        _sha256_of[version] = sha
    return sha


def _refusal_reason(exc: BaseException) -> str:
    """The one useful line of torch's weights_only refusal: which global the file asked for.

    torch's own message spans several lines, carries terminal colour codes and suggests re-running
    with ``weights_only=False``, which is exactly what must not be done with a file from a stranger.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    after = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
    lines = [
        line.strip()
        for line in after.splitlines()
        if line.strip() and not line.strip().startswith("Check the doc")
    ]
    reason = (
        re.split(r" was not an allowed global| Please use", lines[0])[0].strip().rstrip(".") if lines else ""
    )
    if (
        not reason or "weights_only" in reason
    ):  # never an empty reason, never torch's advice to turn the check off
        return "it asks for Python objects other than tensors and plain containers"
    return reason[:200]


def _not_a_file(path: Path) -> str:
    """What is at ``path`` instead of a regular file, as the start of a sentence."""
    if path.is_dir():
        return "is a folder, not a file"
    if path.exists():  # a device (/dev/null), a FIFO or a socket: nothing torch.save writes
        return "is not a regular file (a device, pipe or socket)"
    if path.is_symlink():
        return "is a broken link"
    return "not found"


def safe_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for missing, corrupt or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {_not_a_file(path)}: {path} (expected a file written by torch.save)")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head.startswith(
        (b"PK\x03\x04", b"\x80")
    ):  # torch.save writes a zip archive (or, legacy, a pickle)
        raise InputError(
            f"{what} {path} is not a torch checkpoint (it {f'starts with {head!r}' if head else 'is empty'}); "
            "expected a file written by torch.save"
        )
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"{what} {path} was refused by the safe loader (weights_only=True): {_refusal_reason(exc)}; "
            "expected only tensors and plain containers, so nothing in it was run or loaded"
        ) from exc
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        LookupError,
    ) as exc:  # LookupError: garbage in a pickle
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(". ")[0].rstrip(".")  # torch adds sentences of advice after the cause
        raise InputError(
            f"{what} {path} is not a readable torch checkpoint ({first[:200]}); expected a complete "
            "file written by torch.save (a truncated copy or another format?)"
        ) from exc


def _fmt_keys(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_state_strict(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    allowed_missing: Iterable[str] = (),
    supplied_elsewhere: Iterable[str] = (),
    assign: bool = False,
) -> None:
    """Load ``state`` into ``module``; any missing/unexpected key or shape mismatch is an InputError.

    ``allowed_missing`` lists key prefixes that may be absent (e.g. a head the file never had).
    ``supplied_elsewhere`` lists prefixes of the module's keys that come from another file (a frozen
    teacher): ``state`` must not hold them (they count as unexpected) and they are left as they are.
    ``assign`` makes the module hold ``state``'s tensors instead of copying into its own (a module built on
    the meta device).
    """
    elsewhere = tuple(supplied_elsewhere)
    own = {k: v for k, v in module.state_dict().items() if not (elsewhere and k.startswith(elsewhere))}
    allowed = tuple(allowed_missing)
    missing = [k for k in own if k not in state and not k.startswith(allowed)]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_fmt_keys(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file vs model): {_fmt_keys(mismatched, 4)}")
    if problems:
        raise InputError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state, strict=False, assign=assign)


def nonfinite_keys(state: dict[str, Any]) -> list[str]:
    """Keys of the floating-point tensors of ``state`` holding a NaN or an Inf, in ``state``'s order.

    A finite state (every save of a healthy run, every sound file loaded) costs one L1 reduction
    over all its tensors (torch's multi-tensor norm: grouped kernels on a GPU and one host sync,
    where a check per tensor syncs once per tensor); NaN and Inf carry through a sum, so only a
    non-finite total (or one that overflowed) takes the exact scan, tensor by tensor."""
    import torch
    from torch.nn.utils import get_total_norm

    floats = {k: v for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and v.numel()}
    if not floats or torch.isfinite(get_total_norm(list(floats.values()), norm_type=1.0)):
        return []
    return [k for k, v in floats.items() if not torch.isfinite(v).all()]
