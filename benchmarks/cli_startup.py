"""Seconds from launch to exit of the commands a user tries first: ``--help``, ``list``,
``eval --help``, and ``report`` over an empty folder and over the golden test records (a whole
leaderboard: tables, claims, plots). Each run is a fresh
interpreter, as a user's is; the commands alternate (A B C A B C ...) and the table gives medians.

    python benchmarks/cli_startup.py [--repeats 5] [--root TREE] [--write-readme]

``--root`` measures another checkout of the project (its code on PYTHONPATH), e.g. the commit
before a change, beside this one's figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import load_average, section_header, spread, write_readme_section  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
GOLDEN_RECORDS = HERE / "tests" / "disco_bench" / "golden" / "records.jsonl"


def commands(scratch: Path) -> dict[str, list[str]]:
    empty, golden = scratch / "empty", scratch / "golden"
    empty.mkdir()
    golden.mkdir()
    shutil.copy(GOLDEN_RECORDS, golden / "results.jsonl")
    return {
        "--help": ["--help"],
        "list": ["list"],
        "eval --help": ["eval", "--help"],
        "report (no records)": ["report", "--out", str(empty)],
        "report (golden records)": ["report", "--out", str(golden)],
    }


def seconds(argv: list[str], root: Path) -> float:
    env = os.environ | {"PYTHONPATH": str(root)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "disco_bench", *argv], cwd=root, env=env, capture_output=True, text=True
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"disco_bench {' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--root", type=Path, default=HERE, help="the checkout whose commands are timed")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory() as scratch:
        todo = commands(Path(scratch))
        times: dict[str, list[float]] = {name: [] for name in todo}
        for _ in range(args.repeats):
            for name, argv in todo.items():
                times[name].append(seconds(argv, args.root.resolve()))
    body = (
        section_header("cpu", load_before)
        + f"\nseconds from launch to exit (fresh interpreter, code of {args.root}); median (min-max) of "
        f"{args.repeats} alternated repeats\n\n| command | seconds |\n|---|---|\n"
        + "".join(f"| `{name}` | {spread(values)} |\n" for name, values in times.items())
    )
    print(body)
    if args.write_readme:
        write_readme_section("cli_startup", body)


if __name__ == "__main__":
    main()
