"""Run ``python -m disco_bench`` in a process that stops at a chosen point and waits there for the
test: tests that kill or interrupt a run, or need it to hold its folder, act on an event the run
reports, never on how long it has been running.

``start_paused(args, "pretrain.train.save_checkpoint", after=2)`` wraps that function: after its
2nd call returns, the run prints ``PAUSED 2`` on stdout and reads a line from stdin before it goes
on (it exits at once if stdin is closed: the test has gone). :func:`wait_paused` reads up to that
line; :func:`resume` sends the line. The run is a ``tests.crash_helpers.ForkedCli``.
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import socket

from tests.crash_helpers import ForkedCli


def pause_after(function: str, after: int) -> None:
    """In the run's process, before the command: wrap ``function`` (``module.name``) to pause after
    its ``after``-th call and each one after it."""
    module_name, _, name = function.rpartition(".")
    module = importlib.import_module(module_name)
    wrapped, calls = getattr(module, name), [0]
    # A signal may be taken by any thread (torch starts its own), and then the main thread's read of
    # stdin is not interrupted: the wake-up socket makes every signal end the wait, so its handler
    # (Ctrl-C's KeyboardInterrupt) runs in the main thread as it would in a running step.
    woken, waker = socket.socketpair()
    woken.setblocking(False)
    waker.setblocking(False)
    signal.set_wakeup_fd(waker.fileno())

    def wait_for_the_test() -> None:
        while True:
            ready, _, _ = select.select([0, woken], [], [])
            if woken in ready:
                woken.recv(64)  # a signal arrived: its Python handler runs on return from here
                continue
            if not os.read(0, 4096):  # the test has gone: end instead of running on
                os._exit(3)
            return

    def paused(*args, **kwargs):
        out = wrapped(*args, **kwargs)
        calls[0] += 1
        if calls[0] >= after:
            print(f"PAUSED {calls[0]}", flush=True)
            wait_for_the_test()
        return out

    paused.wake_up = (woken, waker)  # held for the run's life: a closed waker reads as ready for ever
    setattr(module, name, paused)


def start_paused(args: list[str], function: str, after: int = 1) -> ForkedCli:
    """``python -m disco_bench ARGS`` that stops after each call of ``function`` (``module.name``, a
    module-level function the run looks up by name) from the ``after``-th on."""
    return ForkedCli(args, before=(pause_after, (function, after)))


def wait_paused(proc: ForkedCli) -> int:
    """Block until ``proc`` stops at its point; the number of calls so far. Fails if it ends first."""
    for line in proc.stdout:
        if line.startswith("PAUSED "):
            return int(line.split()[1])
    proc.wait()
    raise AssertionError(
        f"the run ended (code {proc.returncode}) before it paused: {proc.stderr.read()[-3000:]}"
    )


def resume(proc: ForkedCli) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()


def interrupt(proc: ForkedCli, timeout: float = 120) -> str:
    """Ctrl-C a paused run and wait until it has ended; its stderr. Its stdin stays open until then,
    so the run ends by the interrupt, never because the test has gone (exit 3)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)  # what it writes after pausing is one line: the pipes cannot fill
    finally:
        proc.stdin.close()
    return proc.stderr.read()
