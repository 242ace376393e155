"""Keep the C heap's freed blocks for reuse on CPU training runs (glibc only; same numbers).

A training step allocates and frees the same large activation buffers every step. With glibc's
defaults, blocks above a (self-adjusting) threshold are mmap-ed and unmapped each time, and free
memory at the top of the heap goes back to the OS, so every step pays page faults to get fresh
zeroed pages: on the 2-core CPU that was about 15% of a DisCo step (benchmarks/README.md). Raising
the mmap and trim thresholds keeps those pages mapped: the resident size stays at the step's peak
(which every step reaches anyway) instead of dropping between steps. Nothing numeric changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling on 64-bit systems; larger blocks are always mmap-ed
TRIM_THRESHOLD = 2**30  # return free heap memory to the OS only beyond 1 GiB
TOP_PAD = 64 * 2**20  # grow the heap in 64 MiB steps


def keep_freed_memory() -> bool:
    """Apply the thresholds above; returns whether they took effect (False off glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
