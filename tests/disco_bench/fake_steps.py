"""A cheap step kind, ``fake``, for runner and launcher tests: a plugin (disco_bench/plugins.py) that
the ``fake_kind`` fixture (conftest.py) names in DISCO_BENCH_PLUGINS, so the runner and every step
process a launcher starts (a --jobs process, a submitit job) register it the same way.

A ``fake`` step does ``work`` units, saving its progress after each, so a run stopped halfway
resumes where it stopped; ``interrupt_at`` stops it once (KeyboardInterrupt, like Ctrl-C or a
killed job), ``fail_times`` makes its first N attempts raise. Every start is appended to
OUT/order.txt and writes OUT/started-ID holding the process's torch thread count (OUT/env-ID the
value of DISCO_BENCH_FAKE_MARK in its environment, OUT/pools-ID the thread count of every OpenMP and
BLAS pool loaded, OUT/pid-ID its process id);
``wait_for_record`` holds a step until another one's record is written (proof that the two ran at
once and that records are written as steps end; ``never`` holds it until its process is ended from
outside). Its record's value is the number of units done in the run that finished.

Every wait here is on an event (a file appearing); SAFETY_S only ends a test that would otherwise
hang, and no test's outcome depends on it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from disco_bench import results
from disco_bench.config import replace
from disco_bench.steps import register_step_kind
from downstream.result import Measurement, TaskResult
from infra.errors import InputError

SAFETY_S = 120.0  # a wait that lasts this long has failed: the event it waits for never came


def wait_until(happened, what: str, timeout_s: float = SAFETY_S) -> None:
    """Return as soon as ``happened()`` (checked every 20 ms); raise if it has not after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not happened():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {timeout_s:.0f} s")
        time.sleep(0.02)


@dataclass
class FakeConfig:
    value: float = 0.0  # part of the config hash only
    work: int = 3
    interrupt_at: int = -1
    fail_times: int = 0
    bad_input: bool = False
    ckpt: str = ""  # "@id" of a step it depends on
    data: str = ""
    wait_for_record: str = ""  # id of a step whose record must be in OUT/results.jsonl before this one ends


def fake_config(step, ctx) -> FakeConfig:
    from disco_bench.steps import _resolve

    return replace(FakeConfig(), _resolve(step.params, ctx), f"step {step.id}: ")


def _bump(path: Path) -> int:
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


def run_fake(step, ctx, config_hash: str) -> list[dict]:
    cfg = fake_config(step, ctx)
    folder = ctx.checkpoint(step.id).parent
    folder.mkdir(parents=True, exist_ok=True)
    with open(ctx.out / "order.txt", "a") as log:
        log.write(step.id + "\n")
    import torch

    (ctx.out / f"started-{step.id}").write_text(str(torch.get_num_threads()))
    (ctx.out / f"cores-{step.id}").write_text(os.environ.get("DISCO_BENCH_STEP_CORES", "unset"))
    (ctx.out / f"env-{step.id}").write_text(os.environ.get("DISCO_BENCH_FAKE_MARK", ""))
    from threadpoolctl import threadpool_info

    pools = sorted(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info())
    (ctx.out / f"pools-{step.id}").write_text(" ".join(pools))
    (ctx.out / f"pid-{step.id}").write_text(str(os.getpid()))
    if cfg.wait_for_record:
        wait_until(
            lambda: any(
                r.get("step") == cfg.wait_for_record for r in results.read_records(ctx.out / "results.jsonl")
            ),
            f"{step.id}: a record of {cfg.wait_for_record} while this step ran",
        )
    if cfg.ckpt and not Path(cfg.ckpt).exists():
        raise RuntimeError(f"dependency checkpoint {cfg.ckpt} missing")
    if cfg.bad_input:
        _bump(folder / "attempts")
        raise InputError(f"step {step.id}: bad input")
    if _bump(folder / "attempts") <= cfg.fail_times:
        raise RuntimeError(f"{step.id} failed on purpose")
    progress = folder / "progress"
    start = int(progress.read_text()) if progress.exists() else 0
    for unit in range(start, cfg.work):
        if unit == cfg.interrupt_at and not (folder / "interrupted").exists():
            (folder / "interrupted").write_text("once")
            raise KeyboardInterrupt
        progress.write_text(str(unit + 1))
    ctx.checkpoint(step.id).write_bytes(b"done")
    result = TaskResult(
        "checkpoint",
        [Measurement("units_this_run", float(cfg.work - start), "none", "-")],
        {"work": cfg.work},
    )
    now = results.now()
    return results.make_records(
        result,
        student="tiny",
        teacher=None,
        method="fake",
        seed=0,
        protocol=result.protocol,
        config_hash=config_hash,
        checkpoint_sha256=None,
        started_at=now,
        finished_at=now,
        step=step.id,
        label=step.label,
    )


def register_step_kinds() -> None:
    """The plugin hook: "fake" steps also produce a checkpoint that "@id" references resolve to."""
    register_step_kind("fake", fake_config, run_fake)


def parallel_launcher(out: Path, echo=lambda line: None):
    """``run --jobs 2`` with one thread per job, as the launcher tests run it."""
    from disco_bench.launchers import make_launcher

    launcher = make_launcher("local", out, echo=echo, jobs=2)
    launcher.threads = 1
    return launcher


def run_in_parallel(suite_file: Path, out: Path, echo=lambda line: None, launcher=None) -> int:
    """Run a suite of fake (and real) steps with ``parallel_launcher``; the runner's exit code."""
    from disco_bench.runner import run_suite
    from disco_bench.suite import load_suite

    return run_suite(
        load_suite(str(suite_file)),
        out,
        None,
        {},
        progress=False,
        echo=echo,
        launcher=launcher or parallel_launcher(out, echo),
    )
