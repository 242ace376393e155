"""What loading a frozen teacher costs a pre-training step: ``pretrain.teachers.load_teacher`` (the
backbone built on the meta device and handed the file's tensors; the file hashed once per version
in a process) against the same load done the way an evaluation loads an encoder and the way every
teacher load went before (a randomly initialised build overwritten by the file, the file hashed on
every load). One file in this project's format, random weights, written to a temporary folder.

    python benchmarks/teacher_load.py [--arch resnet50] [--repeats 7] [--write-readme]

Prints the median seconds per load of each, alternated in one process, and the ratios. A suite loads
the teacher once per distillation step: the ``full`` suite's table 1 alone has 30 such steps. The hash
is remembered per process, so a step in a process of its own (``--jobs N``, torchrun, SLURM) gains
only the skipped initialisation: the middle row.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import infra.checkpoint  # noqa: E402
from benchmarks._common import (  # noqa: E402
    alternate,
    load_average,
    machine,
    median,
    section_header,
    spread,
    write_readme_section,
)
from pretrain.teachers import load_encoder, load_teacher  # noqa: E402
from pretrain.train import save_random_encoder  # noqa: E402

BEFORE = "init + copy, hashed every load"
FRESH = "load_teacher, hashed afresh (a step in a process of its own)"
NOW = "load_teacher"


def hashed_afresh(path: Path, load_file):
    """``load_file(path)`` with the process's hash memo emptied first, as in a new process: the load
    reads the file twice (the tensors, then the hash)."""

    def load():
        infra.checkpoint._sha256_of.clear()
        return load_file(path)

    return load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", help="the teacher's backbone (default: resnet50)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    load_before = load_average()
    print(f"machine: {machine()}\nload average before: {load_before}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "teacher.pt"
        save_random_encoder(path, args.arch, hidden=2048, dim=128)
        an_hour_ago = time.time_ns() - 3600 * 10**9  # a teacher file is not loaded the moment it is written
        os.utime(path, ns=(an_hour_ago, an_hour_ago))
        size_mb = path.stat().st_size / 1e6
        times = alternate(
            {
                BEFORE: hashed_afresh(path, load_encoder),
                FRESH: hashed_afresh(path, load_teacher),
                NOW: lambda: load_teacher(path),
            },
            args.repeats,
        )
    ratio, fresh = (median(times[BEFORE]) / median(times[k]) for k in (NOW, FRESH))
    settings = f"{args.arch} teacher, 2048-128 head, {size_mb:.0f} MB file; 1 torch thread; medians of {args.repeats} alternated loads"
    table = "\n".join(
        [
            "| teacher load | seconds per load (median, min-max) |",
            "|---|---|",
            *(f"| {name} | {spread(t)} |" for name, t in times.items()),
        ]
    )
    final = (
        f"teacher load: {ratio:.1f}x faster than init + copy with the file hashed every load "
        f"({fresh:.1f}x in a process of its own)"
    )
    print(settings, table, "", final, sep="\n")
    if args.write_readme:
        write_readme_section(
            "teacher_load", "\n".join([section_header("cpu", load_before), settings + "\n", table, "", final])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
