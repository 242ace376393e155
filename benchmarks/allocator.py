"""Page faults and time of a CPU training step with glibc's default allocator settings and with
infra.allocator.keep_freed_memory() (what pre-training applies on CPUs).

Each measurement runs in a fresh interpreter (the allocator setting is process-wide and cannot be
undone), alternating default / kept, and prints one row per run and the medians. The figures depend
on the machine (CPU, glibc version, kernel, what else runs) and vary from run to run, which is why
they are measured here and not asserted: tests/pretrain/test_allocator.py checks only the allocator
rules that hold on every glibc machine.

    python benchmarks/allocator.py [--repeats 3] [--model efficientnet_b0] [--size 64] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEPS = """
import json, resource, sys, time, timm, torch
torch.set_num_threads(1)
mode, model_name, size, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if mode == "kept":
    from infra.allocator import keep_freed_memory
    assert keep_freed_memory(), "keep_freed_memory() had no effect (not glibc?)"
model = timm.create_model(model_name, num_classes=0)
x = torch.randn(batch, 3, size, size)
def step():
    model(x).sum().backward()
    model.zero_grad(set_to_none=True)
for _ in range(2):  # warm-up: the first steps allocate for good
    step()
faults, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
                  "seconds": time.perf_counter() - t0}))
"""


def measure(mode: str, args) -> dict:
    argv = [sys.executable, "-c", STEPS, mode, args.model, str(args.size), str(args.batch), str(args.steps)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {platform.libc_ver()[0]} {platform.libc_ver()[1]}; "
        f"{args.model}, batch {args.batch}, {args.size} px, {args.steps} steps after 2 warm-up steps, 1 thread"
    )
    rows = {"default": [], "kept": []}
    print("| run | mode | minor page faults | seconds |\n|---|---|---|---|")
    for run in range(args.repeats):
        for mode in rows:
            row = measure(mode, args)
            rows[mode].append(row)
            print(f"| {run + 1} | {mode} | {row['faults']} | {row['seconds']:.3f} |", flush=True)
    faults = {m: statistics.median(r["faults"] for r in rs) for m, rs in rows.items()}
    seconds = {m: statistics.median(r["seconds"] for r in rs) for m, rs in rows.items()}
    ratio = faults["default"] / faults["kept"] if faults["kept"] else float("inf")
    print(
        f"medians: default {faults['default']:.0f} faults, {seconds['default']:.3f} s; kept {faults['kept']:.0f} "
        f"faults, {seconds['kept']:.3f} s; default / kept faults = {ratio:.1f}x"
    )


if __name__ == "__main__":
    main()
