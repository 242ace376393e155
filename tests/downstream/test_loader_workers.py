"""Evaluation's DataLoader workers: unset, they follow the device as pre-training's do (none on a
CPU; on CUDA the cores this process may use shared among the node's processes), and a CUDA run
left with none is warned once."""

from __future__ import annotations

import pytest
import torch

import downstream.config as config
from downstream.config import EvalConfig


@pytest.fixture()
def cuda_host(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # only asked, never used
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(48)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setattr(config, "_WARNED_NO_WORKERS", [])


def test_unset_workers_follow_the_device(cuda_host):
    assert EvalConfig().loader_workers() == 5  # 48 cores / 8 processes, one left to the process
    assert EvalConfig(device="cpu").loader_workers() == 0
    assert EvalConfig(workers=2).loader_workers() == 2


def test_a_cuda_evaluation_without_workers_is_warned_once(cuda_host, capsys):
    assert EvalConfig(workers=0).loader_workers() == 0
    assert EvalConfig(workers=0).loader_workers() == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: workers=0 on CUDA")
