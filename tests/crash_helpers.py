"""Helpers for the crash tests: run ``python -m disco_bench`` (or torchrun) in a subprocess and
SIGKILL it at a chosen point, observed on disk (a file appearing or being replaced), never after a
blind sleep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra.outlock import LOCK_NAME

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": str(ROOT),
}  # one thread: bit-exact and fast on 2 cores


def sigint_as_on_a_terminal() -> None:
    """A child's SIGINT back to its default (a ``preexec_fn``): a test runner started in the
    background (``cmd &``) ignores it, and a Python started with SIGINT ignored never turns Ctrl-C
    into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def python(argv: list[str], env: dict | None = None, stdin=None, **popen) -> subprocess.Popen:
    """``python ARGV`` from the repository root in ``ENV`` (or ``env``), stdout and stderr piped as
    text, SIGINT as on a terminal (``sigint_as_on_a_terminal``): every child a test starts."""
    return subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        env=ENV if env is None else env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_on_a_terminal,
        **popen,
    )


def start(args: list[str], module: str = "disco_bench") -> subprocess.Popen:
    """``python -m MODULE ARGS`` (``module='torch.distributed.run'`` for torchrun) (``python``)."""
    return python(["-m", module, *args])


def finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def inode(path: Path) -> int | None:
    """The file's inode: an atomic write renames a new file into place, so it changes on every write."""
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def wait_for(proc: subprocess.Popen, done, what: str, timeout: float = 180) -> None:
    """Poll ``done()`` every 2 ms while ``proc`` runs; fail if it ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.002)


def sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run had already ended (code {proc.returncode}) when killed"
    )


def kill_after_writes(proc: subprocess.Popen, path: Path, writes: int, timeout: float = 180) -> None:
    """SIGKILL ``proc`` as soon as ``path`` has been (re)written ``writes`` times since this call."""
    seen, last = [0], [inode(path)]

    def written() -> bool:
        now = inode(path)
        if now is not None and now != last[0]:
            seen[0], last[0] = seen[0] + 1, now
        return seen[0] >= writes

    wait_for(proc, written, f"{path} was written {writes} times", timeout)
    sigkill(proc)


def stray_files(folder: Path, allowed: set[str]) -> list[str]:
    """Files under ``folder`` that are neither in ``allowed`` (names), temp siblings of an atomic
    write, nor the output lock a killed process leaves (the next command on the folder takes it over)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file()
        and p.name not in allowed
        and p.name != LOCK_NAME
        and not (p.name.startswith(".") and p.name.endswith(".tmp"))
    )


def leftovers(folder: Path) -> list[str]:
    """Temp files and output locks under ``folder``: none may remain once a command has ended by itself."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob(".*")
        if p.name == LOCK_NAME or p.name.endswith((".tmp", ".partial"))
    )
