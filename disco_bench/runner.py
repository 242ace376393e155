"""Run a suite as a graph of steps: skip what is done, isolate failures, report at the end."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

from disco_bench import results
from disco_bench.datasets import prepare_datasets
from disco_bench.report import write_report
from disco_bench.steps import STEP_KINDS, RunContext, step_hash
from disco_bench.suite import Suite
from pretrain.errors import InputError


@dataclass
class StepOutcome:
    step: str
    status: str  # done | ran | failed | skipped
    detail: str = ""


def is_done(step, ctx: RunContext, config_hash: str, records: list[dict]) -> bool:
    have = any(r.get("step") == step.id and r.get("config_hash") == config_hash for r in records)
    if step.kind == "pretrain":
        return have and ctx.checkpoint(step.id).exists()
    return have


def plan(suite: Suite, ctx: RunContext) -> list[tuple]:
    """(step, config hash) in order; hashes chain through @references."""
    rows = []
    for step in suite.steps:
        if step.kind not in STEP_KINDS:
            raise InputError(f"step {step.id}: unknown kind {step.kind!r}; choose from {', '.join(sorted(STEP_KINDS))}")
        h = step_hash(step, ctx)
        ctx.hashes[step.id] = h
        rows.append((step, h))
    return rows


def describe(step, ctx: RunContext) -> str:
    if step.kind == "pretrain":
        p = step.params
        return f"pretrain {p.get('method', '?')} {p.get('student', '?')} -> {ctx.checkpoint(step.id)}"
    return f"eval {step.task} of {step.params.get('ckpt', '?')} -> records in {ctx.records_path}"


def run_suite(suite: Suite, out: Path, data_root: Path | None, overrides: dict, dry_run: bool = False,
              progress: bool = True, echo=print) -> int:
    """Run (or list) the suite's steps; returns the exit code (0 when every step passed)."""
    out = Path(out)
    dataset_paths = prepare_datasets(suite, out, data_root, create=not dry_run, progress=progress)
    ctx = RunContext(out=out, dataset_paths=dataset_paths, defaults=suite.defaults, overrides=overrides, progress=progress)
    steps = plan(suite, ctx)
    records = results.read_records(ctx.records_path)
    if dry_run:
        for n, (step, h) in enumerate(steps, 1):
            status = "done" if is_done(step, ctx, h, records) else "todo"
            needs = f" (needs {', '.join(step.needs)})" if step.needs else ""
            echo(f"[{n}/{len(steps)}] {step.id} [{status}] {describe(step, ctx)}{needs}")
        return 0
    outcomes: dict[str, StepOutcome] = {}
    for n, (step, h) in enumerate(steps, 1):
        head = f"[{n}/{len(steps)}] {step.id}"
        blocked = [d for d in step.needs if outcomes[d].status in ("failed", "skipped")]
        if blocked:
            outcomes[step.id] = StepOutcome(step.id, "skipped", f"needs {blocked[0]}, which did not finish")
            echo(f"{head}: skipped ({outcomes[step.id].detail})")
            continue
        if is_done(step, ctx, h, records):
            outcomes[step.id] = StepOutcome(step.id, "done")
            echo(f"{head}: skipped, already done (config {h})")
            continue
        echo(f"{head}: {describe(step, ctx)}")
        try:
            new = STEP_KINDS[step.kind][1](step, ctx, h)
            results.append_records(ctx.records_path, new)
            records = results.read_records(ctx.records_path)
            outcomes[step.id] = StepOutcome(step.id, "ran")
            summary = ", ".join(f"{r['metric']}={r['value']:.4g}" for r in new[:4])
            echo(f"{head}: finished ({summary})")
        except Exception as exc:  # one failed step must not stop the others
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            outcomes[step.id] = StepOutcome(step.id, "failed", f"{type(exc).__name__}: {first}")
            echo(f"{head}: FAILED: {type(exc).__name__}: {first}")
            log = out / "logs" / f"{step.id}.err"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc())
    board = write_report(out)
    failed = [o for o in outcomes.values() if o.status in ("failed", "skipped")]
    ran = sum(o.status == "ran" for o in outcomes.values())
    done = sum(o.status == "done" for o in outcomes.values())
    echo(f"{ran} ran, {done} already done, {len(failed)} failed or skipped")
    for o in failed:
        echo(f"  {o.step}: {o.status}: {o.detail}")
    echo(f"leaderboard: {board}")
    return 1 if failed else 0
