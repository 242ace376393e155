"""What a suite step pays before its work starts, with ``--jobs N``: a process that imports what a
step imports (``disco_bench.launchers.STEP_PRELOAD``: torch, torchvision, timm, the task
registry), spawned fresh (the launcher before) against forked from the launcher's fork server,
which imported them once (``step_process_context``).

    python benchmarks/step_startup.py [--repeats 9] [--write-readme]

Prints the median seconds from ``Process.start()`` to the child's answer, per start method, and
the ratio. A suite of hundreds of steps pays this once per step.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import alternate, load_average, section_header, spread, write_readme_section  # noqa: E402
from disco_bench.launchers import STEP_PRELOAD, step_process_context  # noqa: E402


def import_step_modules(send) -> None:
    for name in STEP_PRELOAD:
        importlib.import_module(name)
    send.send(len(sys.modules))
    send.close()


def start_and_wait(ctx: multiprocessing.context.BaseContext) -> None:
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=import_step_modules, args=(send,))
    proc.start()
    send.close()
    receive.recv()
    proc.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    load_before = load_average()
    spawn, launcher = multiprocessing.get_context("spawn"), step_process_context()
    times = alternate(
        {
            "spawned interpreter": lambda: start_and_wait(spawn),
            f"the launcher's ({launcher.get_start_method()})": lambda: start_and_wait(launcher),
        },
        args.repeats,
        warmup=1,  # the fork server starts (and imports) in the warm-up round
    )
    (name_a, a), (name_b, b) = times.items()
    ratio = sorted(a)[len(a) // 2] / sorted(b)[len(b) // 2]
    body = (
        section_header("cpu", load_before)
        + f"\nseconds from start to a process that has imported {', '.join(STEP_PRELOAD)}; "
        f"median (min-max) of {args.repeats} alternated repeats\n\n"
        "| process | seconds |\n|---|---|\n"
        + "".join(f"| {name} | {spread(values)} |\n" for name, values in times.items())
        + f"\nspawned / the launcher's: {ratio:.1f}x\n"
    )
    print(body)
    if args.write_readme:
        write_readme_section("step_startup", body)


if __name__ == "__main__":
    main()
