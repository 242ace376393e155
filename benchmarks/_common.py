"""Helpers shared by the benchmarks: A/B timing, machine and load description, memory, and the
generated sections of benchmarks/README.md (figures there are written by the scripts, never typed)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from infra.allocator import keep_freed_memory

README = Path(__file__).resolve().parent / "README.md"
ALLOCATOR = "C allocator defaults"  # or what start_run set: part of the machine line


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | str = "cpu") -> str:
    device = torch.device(device)
    text = (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"{ALLOCATOR}"
    )
    if device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)}; host {text}"
    return text


def alternate(
    candidates: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, run in rotation (A B C A B C ...) so that a change in the
    machine's load hits all of them alike; ``warmup`` untimed rounds first."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(warmup + repeats):
        for name, fn in candidates.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """Median with the min-max range, for the tables."""
    return f"{median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


# ---- memory -----------------------------------------------------------------------------------


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak(device: torch.device | str) -> None:
    """Start a new peak-memory window: CUDA allocator stats, or the process's RSS high-water mark
    (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS counts live memory, not the allocator's cache."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_mib(device: torch.device | str) -> tuple[float | None, float | None]:
    """(held now, peak since reset_peak) in MiB: CUDA allocated bytes, or on CPU the process's RSS
    (after malloc_trim) and its high-water mark."""
    if torch.device(device).type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20, torch.cuda.max_memory_allocated(device) / 2**20
    peak = _proc_status_kib("VmHWM")  # read before the trim, which does not lower it anyway
    _malloc_trim()
    cur = _proc_status_kib("VmRSS")
    return (cur / 1024 if cur else None), (peak / 1024 if peak else None)


def memory_kind(device: torch.device | str) -> str:
    return (
        "torch.cuda.max_memory_allocated"
        if torch.device(device).type == "cuda"
        else "process RSS (VmHWM/VmRSS)"
    )


# ---- README sections ---------------------------------------------------------------------------


def command_line() -> str:
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path.cwd())
    return " ".join(["python", str(script), *map(shlex.quote, sys.argv[1:])])


def start_run(threads: int, device: str, default_allocator: bool = False) -> tuple[torch.device, str]:
    """Set torch's threads (0: keep its default), resolve ``auto`` to CUDA when present, on a CPU
    keep freed memory mapped as pre-training does (infra.allocator) unless ``default_allocator``,
    and print the machine and the load average the figures will be read against; returns (device, load)."""
    if threads:
        torch.set_num_threads(threads)
    resolved = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    global ALLOCATOR
    if resolved.type == "cpu" and not default_allocator and keep_freed_memory():
        ALLOCATOR = "freed memory kept mapped (infra.allocator)"
    load_before = load_average()
    print(f"machine: {machine(resolved)}\nload average before: {load_before}", flush=True)
    return resolved, load_before


def section_header(device: torch.device | str, load_before: str) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Command: `{command_line()}`  \nMachine: {machine(device)}  \n"
        f"Load average (1 / 5 / 15 min): before {load_before}; after {load_average()}  \nMeasured: {when}\n"
    )


def write_readme_section(name: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- BEGIN name -->`` and ``<!-- END name -->``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(README)
    print(f"wrote the {name!r} section of {README}")
