"""One step of a suite run on its own: what the process that runs it needs to know
(``StepRequest``), and how it plans the suite again and runs the step, with retries. That process
is a fresh one (a ``--jobs`` process, a torchrun worker, a submitit job) or the runner itself
(``local`` and ``torchrun``'s one-process steps, which keep the ``Plan`` for the whole run).

An InputError (bad config, missing file) is never retried: it would fail the same way again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infra.errors import InputError, one_line


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
    """Everything a fresh process needs to run one step of a suite on its own (picklable); the
    local launchers run it in this process from the same fields."""

    suite: str  # suite file path
    step: str
    out: str
    data_root: str | None = None
    overrides: dict = field(default_factory=dict)
    retries: int = 0
    progress: bool = False
    datasets: dict = field(default_factory=dict)  # --dataset KEY=PATH: the suite's datasets replaced
    # whether the step uses every process torchrun or a multi-task job gives it (the runner
    # decides, from the step's config: launchers.runs_distributed)
    distributed: bool = False

    def planning_inputs(self) -> tuple:
        """What the plan of the request's suite depends on (not the step, nor how it is run)."""
        return (
            self.suite,
            self.out,
            self.data_root,
            json.dumps(self.overrides, sort_keys=True, default=str),
            self.progress,
            json.dumps(self.datasets, sort_keys=True),
        )

    def __call__(self) -> list[dict]:
        """Run as a submitit job: join the job's process group when it has several tasks."""
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export()
        from infra.distributed import DistInfo

        records = run_request(self)
        return records if DistInfo.from_env().is_main else []


def plan_request(request: StepRequest) -> Plan:
    """Plan the request's suite in this process (the plugins' step kinds loaded first), as the
    runner planned it: the same configs and hashes."""
    from disco_bench.planning import build_context, plan, restrict
    from disco_bench.plugins import load_plugins
    from disco_bench.suite import give_datasets, load_suite

    load_plugins()
    suite = restrict(give_datasets(load_suite(request.suite), request.datasets), None)
    data_root = Path(request.data_root) if request.data_root else None
    ctx = build_context(
        suite, Path(request.out), data_root, request.overrides, request.progress, create=False
    )
    return Plan(ctx, {s.id: (s, h) for s, h in plan(suite, ctx)})


@dataclass(frozen=True)
class Plan:
    """A planned suite: its run context and step id -> (step, config hash)."""

    ctx: object  # steps.RunContext (imported late: a step process imports torch through it)
    rows: dict

    def run(self, request: StepRequest, echo: Callable[[str], None] = print) -> list[dict]:
        """Run the one step the request names, with its retries."""
        from disco_bench.steps import run_step

        if request.step not in self.rows:
            raise InputError(f"suite {request.suite} has no step {request.step!r}")
        step, h = self.rows[request.step]
        return with_retries(lambda: run_step(step, self.ctx, h), request.retries, step.id, echo)


def run_request(request: StepRequest) -> list[dict]:
    """Plan the suite in this process and run the one step the request names."""
    return plan_request(request).run(request)
