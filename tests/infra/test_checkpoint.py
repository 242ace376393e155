"""infra.checkpoint.nonfinite_keys: the one finiteness check of saved and loaded weights."""

from __future__ import annotations

import pytest
import torch

from infra.checkpoint import nonfinite_keys

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
