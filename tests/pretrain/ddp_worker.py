"""Run as ``torchrun --nproc_per_node N tests/pretrain/ddp_worker.py SPEC.json RESULTS.json``: one
process group (gloo, 60 s timeout so a broken collective fails instead of hanging), then
``pretrain`` for every config of the spec in turn, so one launch covers every method. Rank 0
writes ``{name: "ok" | "TypeName: message"}``; the first failure stops the worker (the ranks of a
failed collective cannot go on together)."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from infra.errors import one_line
from pretrain.config import PretrainConfig
from pretrain.train import pretrain


def main(spec_path: str, results_path: str) -> int:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    results: dict[str, str] = {}
    code = 0
    for name, fields in json.loads(Path(spec_path).read_text()).items():
        try:
            pretrain(PretrainConfig(**fields), progress=False)
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 -- reported to the test, which names the method
            results[name] = f"{type(exc).__name__}: {one_line(exc)}"
            code = 1
            break
    if dist.get_rank() == 0:
        Path(results_path).write_text(json.dumps(results))
    if code == 0:
        dist.barrier()
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
