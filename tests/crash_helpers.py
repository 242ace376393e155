"""Helpers for the crash tests: run ``python -m disco_bench`` in a subprocess and SIGKILL it at a
chosen point, observed on disk (a file appearing or being replaced), never after a blind sleep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # one thread: bit-exact and fast on 2 cores


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "disco_bench", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


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


def kill_after_writes(proc: subprocess.Popen, path: Path, writes: int, timeout: float = 180) -> None:
    """SIGKILL ``proc`` as soon as ``path`` has been (re)written ``writes`` times since this call."""
    seen, last = 0, inode(path)
    deadline = time.monotonic() + timeout
    while seen < writes:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path} was written {writes} times: {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, f"{path} written {seen} of {writes} times after {timeout} s"
        now = inode(path)
        if now is not None and now != last:
            seen, last = seen + 1, now
        else:
            time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run had already ended (code {proc.returncode}) when killed"


def stray_files(folder: Path, allowed: set[str]) -> list[str]:
    """Files under ``folder`` that are neither in ``allowed`` (names) nor temp siblings of an atomic write."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name not in allowed and not (p.name.startswith(".") and p.name.endswith(".tmp")))
