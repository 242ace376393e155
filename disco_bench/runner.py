"""Run a suite as a graph of steps: skip what is done, resume what was interrupted, isolate
failures, retry, select with ``--only``, and report at the end.

- Done: a step whose records carry its config hash (and, for a checkpoint-producing step, whose
  checkpoint exists) is skipped. Hashes chain through ``@`` references, so changing a teacher
  re-runs every student distilled from it.
- Resume: a step without records runs again in the same folder; pre-training continues from its
  ``last.pt`` (pretrain.train), so an interrupted step loses at most one epoch.
- Failure: a failed step is reported with one line and its traceback in OUT/logs/ID.err; the
  steps depending on it are skipped with the reason; the others go on. Exit code 1 if any step
  failed or was skipped.
- ``--only PATTERN``: the steps whose id or a tag matches, plus all their dependencies (done ones
  are then skipped as done, undone ones run first). See suite.select_steps.

Each step to run goes to the launcher as a StepRequest; the launcher's future hands its records
back (launchers.py). ``--dry-run`` lists the plan instead (listing.py).
"""

from __future__ import annotations

import dataclasses
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path

from disco_bench import results
from disco_bench.datasets import prepare_datasets
from disco_bench.launchers import LocalLauncher, runs_distributed, say
from disco_bench.listing import describe, dry_run_listing, suite_note
from disco_bench.planning import build_context, check_overrides_are_read, is_done, plan, restrict
from disco_bench.plugins import load_plugins
from disco_bench.report import write_report
from disco_bench.reuse import ReuseSource
from disco_bench.step_request import StepRequest, failure_text
from disco_bench.steps import effective_params, set_aside_superseded, step_config
from disco_bench.suite import Step, Suite


@dataclass
class StepOutcome:
    step: str
    status: str  # done | reused | ran | failed | skipped
    detail: str = ""


# --- running ------------------------------------------------------------------------------------


def _record_failure(out: Path, step: Step, exc: BaseException) -> str:
    log = out / "logs" / f"{step.id}.err"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(traceback.format_exception(exc)))
    return failure_text(exc)


def run_suite(
    suite: Suite,
    out: Path,
    data_root: Path | None,
    overrides: dict,
    dry_run: bool = False,
    progress: bool = True,
    echo=say,
    only: list[str] | None = None,
    retries: int = 0,
    launcher=None,
    reuse: Path | None = None,
) -> int:
    """Run (or list) the suite's steps; returns the exit code (0 when every step passed).
    ``reuse``: a finished run's folder whose steps with the same config hash are taken, not run."""
    out = Path(out)
    load_plugins()  # their step kinds, before the suite is planned
    source = ReuseSource.open(reuse, out)
    suite = restrict(suite, only)
    # planned before any dataset is generated: a typo'd step setting fails with no partial output
    ctx = build_context(suite, out, data_root, overrides, progress, create=False)
    rows = plan(suite, ctx)
    check_overrides_are_read(rows, ctx)
    if dry_run:
        return dry_run_listing(suite, ctx, rows, echo, source)
    prepare_datasets(suite, out, data_root, create=True, progress=progress)  # where the plan has them
    import torch

    note = suite_note(suite, ctx, rows, on_gpu=torch.cuda.is_available())
    if note:
        echo(note)
    launcher = launcher or LocalLauncher(retries, echo)
    request = StepRequest(
        suite=str(suite.path),
        step="",
        out=str(out),
        data_root=str(data_root) if data_root else None,
        overrides=overrides,
        retries=retries,
        progress=progress,
        datasets=dict(suite.given),
    )
    records = results.read_records(ctx.records_path)
    outcomes: dict[str, StepOutcome] = {}
    futures: dict[str, Future] = {}

    def skipped_for_its_needs(n: int, step: Step) -> bool:
        """Skip the step if a step it needs failed or was skipped (the one place this is decided:
        before it is submitted when that is known by then, else when it is settled)."""
        unfinished = [d for d in step.needs if d in outcomes and outcomes[d].status in ("failed", "skipped")]
        if not unfinished:
            return False
        if step.id in futures:
            futures[step.id].cancel()  # a submitted SLURM job that has not run is cancelled
        outcomes[step.id] = StepOutcome(step.id, "skipped", f"needs {unfinished[0]}, which did not finish")
        echo(f"[{n}/{len(rows)}] {step.id}: skipped ({outcomes[step.id].detail})")
        return True

    def settle(n: int, step: Step) -> None:
        head = f"[{n}/{len(rows)}] {step.id}"
        if skipped_for_its_needs(n, step):
            return
        try:
            new = futures[step.id].result()
        except Exception as exc:
            outcomes[step.id] = StepOutcome(step.id, "failed", _record_failure(out, step, exc))
            echo(f"{head}: FAILED: {outcomes[step.id].detail}")
            return
        results.append_records(ctx.records_path, new)
        outcomes[step.id] = StepOutcome(step.id, "ran")
        summary = ", ".join(f"{r['metric']}={r['value']:.4g}" for r in new[:4])
        echo(f"{head}: finished ({summary})")

    try:
        for n, (step, h) in enumerate(rows, 1):
            head = f"[{n}/{len(rows)}] {step.id}"
            if skipped_for_its_needs(n, step):
                continue
            if is_done(step, ctx, h, records):
                outcomes[step.id] = StepOutcome(step.id, "done")
                echo(f"{head}: skipped, already done (config {h})")
                continue
            taken = source.records_of(step, h)
            if taken:
                source.take(step, taken, ctx)
                records += taken
                outcomes[step.id] = StepOutcome(step.id, "reused")
                echo(f"{head}: taken from {reuse} (config {h})")
                continue
            cfg = step_config(step, ctx)
            echo(
                f"{head}: {describe(dataclasses.replace(step, params=effective_params(step, ctx)), cfg, {})}"
            )
            if step.kind == "pretrain":  # here, in the one suite process, before any rank can start
                moved = set_aside_superseded(Path(cfg.out), h)
                if moved is not None:
                    echo(
                        f"{head}: its config changed since {moved.name.split('.superseded-')[0]}/ was begun; "
                        f"that run is kept in {moved}"
                    )
            futures[step.id] = launcher.submit(
                dataclasses.replace(request, step=step.id, distributed=runs_distributed(step, cfg)),
                [futures[d] for d in step.needs if d in futures],
            )
            if launcher.synchronous:
                settle(n, step)
        if not launcher.synchronous:
            settle_as_they_end(rows, futures, outcomes, settle)
    except BaseException:  # Ctrl-C or a crash here: no step process is left running behind the run
        getattr(launcher, "stop", lambda: None)()
        raise
    return finish(out, outcomes, echo)


def settle_as_they_end(rows, futures: dict[str, Future], outcomes: dict, settle) -> None:
    """Settle submitted steps as they end, not in suite order, so a finished step's records are
    written while a long one still runs (a crash then loses only what was running). A step is
    settled after its dependencies: it is skipped if one of them did not finish."""
    pending = [
        (n, step) for n, (step, _) in enumerate(rows, 1) if step.id in futures and step.id not in outcomes
    ]
    while pending:
        ready = [
            (n, step)
            for n, step in pending
            if all(d in outcomes for d in step.needs)
            and (
                futures[step.id].done()
                or any(outcomes[d].status in ("failed", "skipped") for d in step.needs)
            )
        ]
        for item in ready:
            settle(*item)
            pending.remove(item)
        if pending and not ready:
            # the earliest pending step has its dependencies settled, so one of these is still running
            running = [futures[step.id] for _, step in pending if not futures[step.id].done()]
            wait(running, return_when=FIRST_COMPLETED)


def finish(out: Path, outcomes: dict[str, StepOutcome], echo) -> int:
    board = write_report(out)
    failed = [o for o in outcomes.values() if o.status in ("failed", "skipped")]
    ran = sum(o.status == "ran" for o in outcomes.values())
    done = sum(o.status == "done" for o in outcomes.values())
    reused = sum(o.status == "reused" for o in outcomes.values())
    echo(
        f"{ran} ran, {done} already done, {f'{reused} taken from --reuse, ' if reused else ''}"
        f"{len(failed)} failed or skipped"
    )
    for o in failed:
        echo(f"  {o.step}: {o.status}: {o.detail}")
    echo(f"leaderboard: {board}")
    return 1 if failed else 0
