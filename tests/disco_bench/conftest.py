"""The ``fake`` step kind (fake_steps.py) for the runner and launcher tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from disco_bench.plugins import PLUGINS_VARIABLE
from disco_bench.steps import STEP_KINDS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.fixture
def fake_kind(monkeypatch):
    """``fake`` steps in this test's runs, as a user's plugin would add a kind: fake_steps is named
    in DISCO_BENCH_PLUGINS, and PYTHONPATH lets the step processes that start a fresh interpreter
    (submitit jobs, a runner in a subprocess) import it (--jobs processes take this process's
    sys.path). The registry is as it was afterwards, so no other test sees the kind."""
    monkeypatch.setenv(PLUGINS_VARIABLE, "fake_steps")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(HERE), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    )
    before = dict(STEP_KINDS)
    yield
    STEP_KINDS.clear()
    STEP_KINDS.update(before)
