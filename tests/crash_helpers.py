"""Helpers for the crash tests: run ``python -m disco_bench`` (or torchrun) in a subprocess and
SIGKILL it at a chosen point, observed on disk (a file appearing or being replaced), never after a
blind sleep.

A run the test only kills, resumes or waits for (:func:`start`, ``tests.paused.start_paused``) is a
:class:`ForkedCli`: a process forked from a fork server that imported torch and the package once
per test process, so each such run skips the ~4 s import (half of what a tiny crash test costs).
It is a process of its own (its pid, its exit status, its pipes; SIGKILL kills it and nothing else),
entering ``disco_bench.cli.main`` as ``python -m disco_bench`` does. A test that needs a fresh
interpreter (Ctrl-C to a process group, the command's start-up, torchrun) uses :func:`python`.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import multiprocessing.util  # its exit hook (join every child) registered first, so ours runs before it
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing import reduction
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
    text, SIGINT as on a terminal (``sigint_as_on_a_terminal``): every fresh interpreter a test starts."""
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


def start(args: list[str], module: str = "disco_bench") -> subprocess.Popen | ForkedCli:
    """``python -m MODULE ARGS``: a :class:`ForkedCli` for the package's own command line, a fresh
    ``python`` for another module (``module='torch.distributed.run'`` for torchrun)."""
    return ForkedCli(args) if module == "disco_bench" else python(["-m", module, *args])


# What every forked run imports: loaded once, in the fork server, before any run is forked.
WARM_MODULES = ["torch", "torchvision", "timm", "disco_bench.cli", "disco_bench.runner", "pretrain.train"]
# The runs still referenced: one a test has dropped has its pipes closed (a paused run then ends itself).
_forked: weakref.WeakSet[ForkedCli] = weakref.WeakSet()


@atexit.register
def _kill_forked_runs() -> None:
    """SIGKILL the forked runs a failed test left (paused, say): the test process waits for its
    multiprocessing children at exit, and would wait for ever."""
    for run in list(_forked):
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)


@functools.cache
def fork_server() -> multiprocessing.context.BaseContext:
    """The forkserver context, its server preloaded with ``WARM_MODULES`` (started at its first fork)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WARM_MODULES)
    return context


class _PipeEnd:
    """A pipe's file descriptor, handed to a forked child over the fork server's socket."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        return _received_fd, (reduction.DupFd(self.fd),)


def _received_fd(dup) -> int:
    return dup.detach()


def _cli_child(argv: list[str], stdio: tuple[int, int, int], before) -> None:
    """The forked child: the pipes as its stdin/stdout/stderr, SIGINT raising KeyboardInterrupt (as a
    fresh ``python`` has it), ``before`` (a picklable ``(function, args)``) called, then the command."""
    for fd, standard in zip(stdio, (0, 1, 2)):
        os.dup2(fd, standard)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115  (multiprocessing had pointed it at /dev/null)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(ROOT)
    if before is not None:
        before[0](*before[1])
    from disco_bench.cli import main

    sys.argv = [str(ROOT / "disco_bench" / "__main__.py"), *argv]  # as ``python -m`` sets it
    sys.exit(main(argv))


class ForkedCli:
    """``python -m disco_bench ARGV`` forked from the warm :func:`fork_server`, with the parts of
    ``subprocess.Popen`` the tests use: ``pid``, ``returncode``, text ``stdin``/``stdout``/``stderr``
    pipes, ``poll``, ``wait``, ``communicate`` and ``send_signal``."""

    def __init__(self, argv: list[str], before=None):
        self.args = argv
        (in_r, in_w), (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe(), os.pipe()
        ends = (_PipeEnd(in_r), _PipeEnd(out_w), _PipeEnd(err_w))
        self._process = fork_server().Process(target=_cli_child, args=(argv, ends, before))
        self._process.start()
        for fd in (in_r, out_w, err_w):  # the child has its own copies: EOF comes when it ends
            os.close(fd)
        self.stdin, self.stdout, self.stderr = open(in_w, "w"), open(out_r), open(err_r)  # noqa: SIM115
        self.pid = self._process.pid
        _forked.add(self)

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode  # -N when killed by signal N, as Popen has it

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Close stdin, read stdout and stderr to their end and wait for the exit."""
        if not self.stdin.closed:
            self.stdin.close()
        texts: dict[str, str] = {}
        readers = [
            threading.Thread(target=lambda n=name, f=pipe: texts.__setitem__(n, f.read()), daemon=True)
            for name, pipe in (("out", self.stdout), ("err", self.stderr))
        ]
        for reader in readers:
            reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return texts["out"], texts["err"]


def finish(proc: subprocess.Popen | ForkedCli, timeout: float = 180) -> str:
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
