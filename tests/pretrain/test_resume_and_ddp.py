"""Running wide: torchrun with 2 CPU processes over gloo fills the queue from both ranks. (A run
killed with SIGKILL and resumed is tests/pretrain/test_crash_resume.py, for every method.)"""

from __future__ import annotations

import pytest
import torch

from infra.checkpoint import safe_load
from pretrain.config import PretrainConfig
from pretrain.train import build_method
from tests.crash_helpers import finish, leftovers, start


def pretrain_cmd(data, out) -> list[str]:
    # timm's 0.4M-parameter test_resnet keeps the checkpoints small; 24 images / global batch 8 = 3 steps
    return ["-m", "disco_bench", "pretrain", "--method", "moco", "--student", "test_resnet", "--data", str(data),
            "--epochs", "1", "--batch-size", "8", "--image-size", "16", "--out", str(out), "--quiet",
            "--set", "queue_size=64", "key_momentum=0.9"]  # fmt: skip


@pytest.mark.slow
def test_torchrun_two_cpu_processes_fill_the_queue_from_both_ranks(tiny_imagefolder, tmp_path):
    out = tmp_path / "ddp"
    args = [
        "--standalone",
        "--nproc_per_node",
        "2",
        *pretrain_cmd(tiny_imagefolder, out),
    ]
    finish(start(args, module="torch.distributed.run"), timeout=240)

    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["final.pt", "last.pt"]
    assert leftovers(out) == []  # no temp file, and rank 0's lock on the folder released
    last = safe_load(out / "last.pt")
    assert last["step"] == 3  # 24 images / global batch 8
    # every step enqueued the keys of the global batch (2 ranks x 4): 24 rows, the rest untouched
    queue, ptr = last["method_state"]["queue.items"], last["method_state"]["queue.ptr"]
    assert int(ptr) == 24
    cfg = PretrainConfig(
        method="moco",
        student="test_resnet",
        image_size=16,
        queue_size=64,
        key_momentum=0.9,
        batch_size=8,
        epochs=1,
    )
    initial = build_method(cfg)[0].queue.items
    assert torch.equal(queue[24:], initial[24:])
    assert not torch.isclose(queue[:24], initial[:24]).all(dim=1).any()
    assert torch.allclose(queue[:24].norm(dim=1), torch.ones(24), atol=1e-5)
    rows = (out / "log.csv").read_text().splitlines()
    header, body = rows[0].split(","), [dict(zip(rows[0].split(","), r.split(","))) for r in rows[1:]]
    assert header == ["step", "epoch", "lr", "loss", "loss_con"] and len(body) == 3
    assert all(float(r["lr"]) == 0.03 * 8 / 256 for r in body)  # lr of the global batch, not the per-rank 4
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in body)
