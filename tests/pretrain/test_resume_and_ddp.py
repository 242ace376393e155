"""Running long and wide: a run killed with SIGKILL mid-epoch and resumed ends bit-identical to an
uninterrupted one; torchrun with 2 CPU processes over gloo fills the queue from both ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pretrain.checkpoint import safe_load
from pretrain.config import PretrainConfig
from pretrain.train import build_method

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # one thread: bit-exact and fast


def pretrain_cmd(data, out, *extra: str) -> list[str]:
    # timm's 0.4M-parameter test_resnet keeps the per-step checkpoints small; 24 images / batch 4 = 6
    # steps per epoch, 2 epochs
    return ["-m", "disco_bench", "pretrain", "--method", "moco", "--student", "test_resnet", "--data", str(data),
            "--epochs", "2", "--batch-size", "4", "--image-size", "16", "--out", str(out), "--quiet",
            "--set", "queue_size=16", "key_momentum=0.9", *extra]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return out


def kill_when_exists(proc: subprocess.Popen, path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"run ended before writing {path}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_same_final_weights(tiny_imagefolder, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    reference = start(pretrain_cmd(tiny_imagefolder, whole))
    victim = start(pretrain_cmd(tiny_imagefolder, cut, "save_every_steps=1"))
    kill_when_exists(victim, cut / "last.pt")
    killed_at = safe_load(cut / "last.pt")["step"]
    assert 0 < killed_at < 12 and not (cut / "final.pt").exists()

    finish(start([*pretrain_cmd(tiny_imagefolder, cut, "save_every_steps=1"), "--resume"]))
    finish(reference)

    a, b = safe_load(whole / "final.pt"), safe_load(cut / "final.pt")
    assert a["step"] == b["step"] == 12
    for part in ("backbone", "head"):
        assert a["encoder"][part].keys() == b["encoder"][part].keys()
        for key, value in a["encoder"][part].items():
            assert torch.equal(value, b["encoder"][part][key]), f"{part}.{key} differs after resume at step {killed_at}"
    assert a["epoch_means"] == b["epoch_means"]
    # the log keeps the killed run's rows up to its checkpoint and continues from there
    assert (whole / "log.csv").read_text() == (cut / "log.csv").read_text()


@pytest.mark.slow
def test_torchrun_two_cpu_processes_fill_the_queue_from_both_ranks(tiny_imagefolder, tmp_path):
    out = tmp_path / "ddp"
    args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            *pretrain_cmd(tiny_imagefolder, out, "queue_size=64", "epochs=1", "batch_size=8")]
    finish(start(args), timeout=240)

    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["final.pt", "last.pt"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    last = safe_load(out / "last.pt")
    assert last["step"] == 3  # 24 images / global batch 8
    # every step enqueued the keys of the global batch (2 ranks x 4): 24 rows, the rest untouched
    queue, ptr = last["method_state"]["queue.items"], last["method_state"]["queue.ptr"]
    assert int(ptr) == 24
    cfg = PretrainConfig(method="moco", student="test_resnet", image_size=16, queue_size=64, key_momentum=0.9,
                         batch_size=8, epochs=1)
    initial = build_method(cfg)[0].queue.items
    assert torch.equal(queue[24:], initial[24:])
    assert not torch.isclose(queue[:24], initial[:24]).all(dim=1).any()
    assert torch.allclose(queue[:24].norm(dim=1), torch.ones(24), atol=1e-5)
    rows = (out / "log.csv").read_text().splitlines()
    header, body = rows[0].split(","), [dict(zip(rows[0].split(","), r.split(","))) for r in rows[1:]]
    assert header == ["step", "epoch", "lr", "loss", "loss_con"] and len(body) == 3
    assert all(float(r["lr"]) == 0.03 * 8 / 256 for r in body)  # lr of the global batch, not the per-rank 4
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in body)
