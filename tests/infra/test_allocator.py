"""infra.allocator: what glibc does with a large freed block, with and without keep_freed_memory(),
read from glibc's own accounting (mallinfo2) in fresh interpreters whose allocator settings are
untouched. These are allocator rules, the same on every glibc machine; how many page faults that
saves a training step depends on the machine and is measured by benchmarks/allocator.py."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from infra import allocator

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 24 * 2**20  # above glibc's default mmap threshold (128 KiB), below the kept one (32 MiB)

ONE_BLOCK = f"""
import ctypes, ctypes.util, sys
from infra.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                               "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "kept":
    assert keep_freed_memory()
before = libc.mallinfo2()
block = libc.malloc({BLOCK})
held = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
# bytes mmap-ed for the block; heap bytes still mapped (and free for reuse) once it is freed
print(held.hblkhd - before.hblkhd, after.fordblks - before.fordblks)
"""


def has_mallinfo2() -> bool:
    lib, version = platform.libc_ver()
    return (
        platform.system() == "Linux" and lib == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 33)
    )


glibc_only = pytest.mark.skipif(not has_mallinfo2(), reason="mallopt is glibc's, mallinfo2 glibc 2.33's")


def one_block(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", ONE_BLOCK, mode], capture_output=True, text=True, check=True, cwd=ROOT
    )
    mmapped, kept_free = out.stdout.split()
    return int(mmapped), int(kept_free)


@glibc_only
def test_keep_freed_memory_takes_a_large_block_from_the_heap_and_keeps_it_mapped_after_free():
    default_mmapped, default_kept = one_block("default")  # glibc as it starts, for comparison
    mmapped, kept_free = one_block("kept")  # after keep_freed_memory()
    # glibc's default: the block gets its own mapping and free unmaps it (the next step faults in fresh pages)
    assert default_mmapped >= BLOCK and default_kept == 0
    # kept: the block comes from the heap and its freed pages stay mapped, ready for the next step
    assert mmapped == 0 and kept_free >= BLOCK


def test_off_glibc_it_changes_nothing_and_says_so(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator.platform, "system", lambda: "Darwin")
    assert allocator.keep_freed_memory() is False
