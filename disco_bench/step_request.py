"""One step of a suite run on its own, in a fresh process (a ``--jobs`` process, a torchrun worker
or a submitit job): what that process needs to know (``StepRequest``), and how it plans the suite
again and runs the step, with retries.

An InputError (bad config, missing file) is never retried: it would fail the same way again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.errors import InputError, one_line


class StepFailed(RuntimeError):
    """A step ended without records; the message is one line saying why."""


def failure_text(exc: BaseException) -> str:
    """``TypeName: message`` on one line, for a step's failure report."""
    return f"{type(exc).__name__}: {one_line(exc)}"


def with_retries(run: Callable[[], list], retries: int, label: str, echo: Callable[[str], None]) -> list:
    """``run()``, again up to ``retries`` times if it raises (not for InputError)."""
    for attempt in range(1, retries + 2):
        try:
            return run()
        except InputError:
            raise
        except Exception as exc:
            if attempt > retries:
                raise
            echo(f"{label}: attempt {attempt}/{retries + 1} failed ({failure_text(exc)}); retrying")
    raise AssertionError("unreachable")


@dataclass
class StepRequest:
    """Everything a fresh process needs to run one step of a suite on its own (picklable)."""

    suite: str  # suite file path
    step: str
    out: str
    data_root: str | None = None
    overrides: dict = field(default_factory=dict)
    retries: int = 0
    progress: bool = False
    kinds: dict | None = None  # the step-kind registry the parent planned with (None: steps.STEP_KINDS)
    datasets: dict = field(default_factory=dict)  # --dataset KEY=PATH: the suite's datasets replaced

    def __call__(self) -> list[dict]:
        """Run as a submitit job: join the job's process group when it has several tasks."""
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export()
        from pretrain.distributed import DistInfo

        records = run_request(self)
        return records if DistInfo.from_env().is_main else []


def run_request(request: StepRequest) -> list[dict]:
    """Rebuild the plan in this process and run the one step the request names."""
    from disco_bench.planning import build_context, plan, restrict
    from disco_bench.steps import run_step
    from disco_bench.suite import give_datasets, load_suite

    suite = restrict(give_datasets(load_suite(request.suite), request.datasets), None)
    data_root = Path(request.data_root) if request.data_root else None
    ctx = build_context(
        suite,
        Path(request.out),
        data_root,
        request.overrides,
        request.progress,
        create=False,
        kinds=request.kinds,
    )
    rows = {s.id: (s, h) for s, h in plan(suite, ctx)}
    if request.step not in rows:
        raise InputError(f"suite {request.suite} has no step {request.step!r}")
    step, h = rows[request.step]
    return with_retries(lambda: run_step(step, ctx, h), request.retries, step.id, print)
