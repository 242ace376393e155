"""infra.checkpoint: nonfinite_keys, the one finiteness check of saved and loaded weights; file_sha256,
which hashes each version of a file once."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import torch

import infra.checkpoint
from infra.checkpoint import atomic_write, file_sha256, nonfinite_keys

NAN, INF = float("nan"), float("inf")


def test_a_finite_state_has_no_key_whatever_its_dtypes_and_non_float_entries():
    state = {
        "w": torch.randn(3, 4),
        "half": torch.ones(5, dtype=torch.float16),
        "bf16": torch.ones(5, dtype=torch.bfloat16),
        "steps": torch.tensor(7),  # an integer buffer (BatchNorm's num_batches_tracked) is never checked
        "empty": torch.empty(0),
        "note": "not a tensor",
    }
    assert nonfinite_keys(state) == []
    assert nonfinite_keys({}) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_every_tensor_holding_nan_or_inf_is_named_in_order(dtype):
    state = {
        "a": torch.tensor([1.0, NAN], dtype=dtype),
        "b": torch.zeros(3, dtype=dtype),
        "c": torch.tensor([-INF, 2.0], dtype=dtype),
        "d": torch.tensor([INF], dtype=dtype),
    }
    assert nonfinite_keys(state) == ["a", "c", "d"]


def test_large_finite_weights_whose_sum_overflows_are_not_reported():
    # the L1 total of these overflows float32 to Inf: the exact scan must find every tensor finite
    big = torch.full((4,), 3e38)
    assert not torch.isfinite(big.abs().sum())
    assert nonfinite_keys({"big": big, "also": big.clone()}) == []
    assert nonfinite_keys({"big": big, "bad": torch.tensor([NAN])}) == ["bad"]


def test_a_files_hash_is_read_once_per_version_of_the_file(tmp_path, monkeypatch):
    def expected(content: bytes) -> str:
        return real(content).hexdigest()

    def settled(path, seconds_ago: float = 10.0) -> None:  # last modified a while ago
        stamp = time.time_ns() - int(seconds_ago * 1e9)
        os.utime(path, ns=(stamp, stamp))

    reads = []
    real = hashlib.sha256
    monkeypatch.setattr(infra.checkpoint.hashlib, "sha256", lambda: reads.append(1) or real())
    path = tmp_path / "teacher.pt"
    path.write_bytes(b"a" * 3_000_000)  # three 1 MiB chunks and a rest
    # just written: a second edit could keep its timestamps on a coarse file system, so read every time
    assert file_sha256(path) == file_sha256(path) == expected(b"a" * 3_000_000) and len(reads) == 2
    settled(path)
    assert file_sha256(path) == file_sha256(path) == expected(b"a" * 3_000_000) and len(reads) == 3
    # replaced the way this project writes (a new file renamed over it): the same size, a new hash
    atomic_write(path, lambda handle: handle.write(b"b" * 3_000_000))
    settled(path)
    assert file_sha256(path) == expected(b"b" * 3_000_000) and len(reads) == 4
    # edited in place, the same size: its timestamps change, so it is read again
    with open(path, "r+b") as handle:
        handle.write(b"c")
    settled(path, seconds_ago=5.0)
    assert file_sha256(path) == expected(b"c" + b"b" * 2_999_999) and len(reads) == 5
    assert file_sha256(path) == expected(b"c" + b"b" * 2_999_999) and len(reads) == 5
