"""One writer per output folder.

``with output_lock(folder):`` holds an exclusive ``flock`` on ``folder/.disco-bench.lock`` for as
long as a command writes there. A second process asking for the same folder gets an InputError
naming the holder (pid, host, command, start time). The kernel drops a ``flock`` when its process
dies, however it dies (SIGKILL included), so a lock file left by a dead process is simply taken
over; nothing has to guess from pids whether its owner still runs.

On release the lock file is removed, and so is the folder when the lock created it and nothing
else was written there: a command refused before writing anything leaves no trace in ``--out``.

The holder names the folder and itself in ``DISCO_BENCH_OUTPUT_LOCK`` for the processes it starts:
a suite's step process (``step --records``, under torchrun too) writes in the folder its ``run``
holds, and :func:`held_by_parent` lets it go on without asking for the lock its parent has.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from infra.errors import InputError

LOCK_NAME = ".disco-bench.lock"
HELD_ENV = "DISCO_BENCH_OUTPUT_LOCK"


def lock_path(folder: str | os.PathLike, name: str = LOCK_NAME) -> Path:
    return Path(folder) / name


@contextlib.contextmanager
def output_lock(
    folder: str | os.PathLike,
    command: list[str] | None = None,
    name: str = LOCK_NAME,
    what: str | None = None,
) -> Iterator[Path]:
    """Hold ``folder`` for this process; yields the lock file's path.

    ``name``: the lock file in ``folder`` (``data make`` locks ``PARENT/.SET.disco-bench.lock``: the
    set's own folder is swapped for a new one, and a lock inside it would go with it); ``what``: how
    a refusal names what is in use (default ``output folder FOLDER``).

    Under torchrun only rank 0 takes the lock: the other ranks of the same run write nothing of
    their own there, and they must not refuse the folder their rank 0 holds. A process started by
    the holder of ``folder`` (:func:`held_by_parent`) takes none either.
    """
    from infra.distributed import DistInfo  # torch: imported only by the commands that write

    folder, path = Path(folder), lock_path(folder, name)
    if not DistInfo.from_env().is_main or held_by_parent(path):
        yield path
        return
    created = _make_folder(folder)
    try:
        fd = _acquire(path, command if command is not None else _this_command(), what)
    except BaseException:
        _remove_empty(created)
        raise
    before = os.environ.get(HELD_ENV)
    os.environ[HELD_ENV] = json.dumps({"lock": str(path.resolve()), "pid": os.getpid()})
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(HELD_ENV, None)
        else:
            os.environ[HELD_ENV] = before
        _release(fd, path)
        _remove_empty(created)


def held_by_parent(path: Path) -> bool:
    """True when the lock file ``path`` is held by the process that started this one: it named the
    lock in ``DISCO_BENCH_OUTPUT_LOCK``, the lock file still names it, and it is alive."""
    try:
        given = json.loads(os.environ.get(HELD_ENV) or "null")
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(given, dict) or not isinstance(holder, dict):
        return False
    if given.get("lock") != str(path.resolve()) or holder.get("pid") != given.get("pid"):
        return False
    if holder.get("host") != socket.gethostname() or given.get("pid") == os.getpid():
        return False
    try:
        os.kill(int(given["pid"]), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def _this_command() -> list[str]:
    """This process's command line, ``python -m disco_bench`` shown as ``disco-bench``."""
    head = (
        "disco-bench"
        if sys.argv[0].endswith(os.path.join("disco_bench", "__main__.py"))
        else Path(sys.argv[0]).name
    )
    return [head, *sys.argv[1:]]


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the ones created, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(missing)
        raise InputError(
            f"cannot use {folder} as the output folder: {exc.strerror or exc}; "
            "expected a writable folder (or a path where one can be created)"
        ) from exc
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for p in folders:  # deepest first
        with contextlib.suppress(OSError):  # not empty (the run wrote something) or already gone
            p.rmdir()


def _acquire(path: Path, command: list[str], what: str | None = None) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(
                f"cannot use {path.parent} as the output folder: cannot create {path.name} "
                f"({exc.strerror or exc}); expected a writable folder"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise InputError(
                f"{what or f'output folder {path.parent}'} is in use by {holder}; wait for it to end or "
                "choose another --out (one writer per folder)"
            ) from None
        except OSError as exc:  # a file system without locks (some network mounts): run unprotected, say so
            sys.stderr.write(
                f"warning: cannot lock {path} ({exc.strerror or exc}); a second command on this folder "
                "would not be stopped\n"
            )
            break
        # the previous holder removes the file on release: if it did so between our open and our
        # flock, we hold a lock on a file nobody else will ever open; start again on a fresh one
        if _same_file(fd, path):
            break
        os.close(fd)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(command),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
    except OSError as exc:  # e.g. the disk is full: nothing else could be written there either
        _release(fd, path)
        raise InputError(
            f"cannot use {path.parent} as the output folder: cannot write {path.name} "
            f"({exc.strerror or exc}); expected a writable folder with free space"
        ) from exc
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _describe_holder(fd: int, wait_s: float = 1.0) -> str:
    """``pid N on host H (command), since T`` from the holder's lock file; the holder writes it
    right after taking the lock, so an empty file is read again for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        raw = os.pread(fd, 65536, 0)
        try:
            info = json.loads(raw)
            return f"pid {info['pid']} on host {info['host']} ({info['command']}), since {info['started']}"
        except (ValueError, KeyError, TypeError):
            if time.monotonic() > deadline:
                return "another process (it has not written its pid yet)"
            time.sleep(0.02)


def _release(fd: int, path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # still holding the lock: a process waiting on this file sees it gone and retries
    os.close(fd)
