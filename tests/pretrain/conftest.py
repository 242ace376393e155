"""One intra-op thread for these tests: on a shared 2-core machine two spinning OpenMP threads per
process make small convolutions tens of times slower, and results do not depend on it."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
