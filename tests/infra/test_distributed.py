"""The process group's timeout: long enough by default for a rank to evaluate while the others
wait, set by DISCO_BENCH_DIST_TIMEOUT_MIN, a bad value refused in one line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from infra.distributed import TIMEOUT_ENV, process_group_timeout
from infra.errors import InputError


def test_default_timeout_outlasts_a_coco_evaluation(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert process_group_timeout() == timedelta(minutes=60)  # torch's NCCL default is 10


def test_the_environment_sets_it(monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "150")
    assert process_group_timeout() == timedelta(minutes=150)
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")
    assert process_group_timeout() == timedelta(seconds=30)


@pytest.mark.parametrize("value", ["0", "-3", "ten", "inf", "nan"])
def test_a_bad_value_is_one_error_naming_it(monkeypatch, value):
    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(InputError, match=rf"^{TIMEOUT_ENV}={value}: expected a positive number of minutes"):
        process_group_timeout()
