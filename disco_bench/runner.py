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
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from disco_bench import cost, results
from disco_bench.launchers import LocalLauncher, runs_distributed, say
from disco_bench.planning import (
    CHECKPOINT_KINDS,
    architectures,
    build_context,
    check_overrides_are_read,
    is_done,
    plan,
    restrict,
)
from disco_bench.report import write_report
from disco_bench.reuse import NO_REUSE, ReuseSource
from disco_bench.step_request import StepRequest, failure_text
from disco_bench.steps import (
    PATH_KEYS,
    RunContext,
    effective_params,
    overridden,
    run_step,
    set_aside_superseded,
    step_config,
)
from disco_bench.suite import Step, Suite


@dataclass
class StepOutcome:
    step: str
    status: str  # done | reused | ran | failed | skipped
    detail: str = ""


# --- what a step is, needs, produces and costs (for --dry-run and progress lines) --------------


def _teacher_arch(step: Step, cfg, arch: dict) -> str | None:
    ref = step.params.get("teacher_ckpt")
    if isinstance(ref, str) and ref.startswith("@"):
        return arch.get(ref[1:])
    return getattr(cfg, "teacher", None)


def describe(step: Step, cfg, arch: dict) -> str:
    if step.kind == "pretrain":
        teacher = _teacher_arch(step, cfg, arch)
        by = f" from teacher {teacher}" if teacher else (" from a teacher" if cfg.teacher_ckpt else "")
        return f"pretrain {cfg.method} {cfg.student}{by}, {cfg.epochs} epochs"
    if step.kind == "checkpoint":
        return f"read {cfg.method or 'a'} {cfg.arch or ''} checkpoint {cfg.data}".replace("  ", " ")
    if step.kind == "init":
        return f"randomly initialised {cfg.student} (seed {cfg.seed})"
    if step.kind == "eval":
        what = step.params.get("ckpt") or ", ".join(map(str, step.params.get("ckpts") or [])) or "?"
        return f"eval {step.task} ({getattr(cfg, 'protocol', '?')} protocol) of {what}"
    return f"{step.kind} {step.task or ''}".strip()


def needs_and_produces(step: Step, ctx: RunContext) -> tuple[list[str], list[str]]:
    refs = [v for v in step.params.values() if isinstance(v, str) and v.startswith("@")]
    refs += [
        v
        for vs in step.params.values()
        if isinstance(vs, list)
        for v in vs
        if isinstance(v, str) and v.startswith("@")
    ]
    needs = [f"{r} ({ctx.reference(r)})" for r in dict.fromkeys(refs)]
    replaced = overridden(step, ctx)
    data = step.params.get("data")
    if data in ctx.dataset_paths:
        needs.append(f"data {data} ({ctx.dataset_paths[data]})")
    needs += [
        f"{key} {value} (--set {step.kind}.{key})" for key, value in replaced.items() if key in PATH_KEYS
    ]
    produces = [f"checkpoint {ctx.checkpoint(step.id)}"] if step.kind in CHECKPOINT_KINDS else []
    return needs, produces + [f"records in {ctx.records_path}"]


def step_cost(step: Step, cfg, suite: Suite, arch: dict, paths: dict | None = None) -> cost.Cost:
    """``paths``: suite dataset key -> its folder; a folder that exists is counted."""
    ds = step.params.get("data")
    images = (
        cost.dataset_images(suite.datasets[ds], suite.dataset_name(ds), (paths or {}).get(ds))
        if ds in suite.datasets
        else None
    )
    if step.kind == "checkpoint":
        return cost.Cost(0.0, "loads a file")
    if step.kind == "init":
        return cost.Cost(0.0, "draws random weights")
    if step.kind == "pretrain":
        if images is None:
            return cost.Cost(None, "size of the dataset unknown")
        return cost.pretrain_cost(
            cfg.method, cfg.student, _teacher_arch(step, cfg, arch), images, cfg.epochs, cfg.image_size
        )
    if step.kind == "eval":
        return cost.eval_cost(step.task, cfg, arch.get(step.id), images)
    return cost.Cost(None, f"no cost rule for kind {step.kind!r}")


def suite_note(suite: Suite, ctx: RunContext, rows, on_gpu: bool) -> str | None:
    """The one-line warning of a suite whose steps still to run are estimated past ten minutes here."""
    records = results.read_records(ctx.records_path)
    configs = {s.id: step_config(s, ctx) for s, _ in rows}
    arch = architectures(rows, configs)
    todo = [s for s, h in rows if not is_done(s, ctx, h, records)]
    costs = [step_cost(s, configs[s.id], suite, arch, ctx.dataset_paths) for s in todo]
    known = [c.gpu_hours for c in costs if c.gpu_hours is not None]
    unknown = len(costs) - len(known)
    total = cost.Cost(
        sum(known), f"{len(todo)} steps to run{f', {unknown} without an estimate' if unknown else ''}"
    )
    quick = "--dry-run lists each step's estimate; --only PATTERN runs a part, --set eval.protocol=fast the fast probes"
    return cost.long_run_note(total, on_gpu, f"suite {suite.name}", quick)


def dry_run_listing(suite: Suite, ctx: RunContext, rows, echo, reuse: ReuseSource = NO_REUSE) -> int:
    records = results.read_records(ctx.records_path)
    configs = {s.id: step_config(s, ctx) for s, _ in rows}
    # a --set of a step's checkpoint or data is listed as what runs, not as the suite wrote it
    rows = [(dataclasses.replace(s, params=effective_params(s, ctx)), h) for s, h in rows]
    arch = architectures(rows, configs)
    total, unknown, todo = 0.0, 0, 0
    for n, (step, h) in enumerate(rows, 1):
        done = is_done(step, ctx, h, records)
        taken = not done and bool(reuse.records_of(step, h))
        done = done or taken
        todo += not done
        needs, produces = needs_and_produces(step, ctx)
        c = step_cost(step, configs[step.id], suite, arch, ctx.dataset_paths)
        if not done and c.gpu_hours is None:
            unknown += 1
        elif not done:
            total += c.gpu_hours
        tags = f" [{', '.join(step.tags)}]" if step.tags else ""
        echo(
            f"[{n}/{len(rows)}] {step.id} [{'reuse' if taken else 'done' if done else 'todo'}] "
            f"{describe(step, configs[step.id], arch)}{tags}"
        )
        echo(f"    needs: {'; '.join(needs) or 'nothing'}")
        echo(f"    produces: {'; '.join(produces)}")
        echo(f"    cost: {c.text()}")
    rate = (
        f"{cost.ASSUMED_FLOP_PER_GPU_SECOND:.2g} FLOP/s per GPU, "
        f"{cost.ASSUMED_FLOP_PER_CPU_CORE_SECOND:.2g} per CPU core"
    )
    cores = cost.available_cores()
    on_cpu = cost.duration(3600 * cost.Cost(total, "").cpu_hours(cores))
    echo(
        f"{len(rows)} steps, {todo} to run: ~{total:.4g} GPU-hours, ~{on_cpu} on {cores} CPU cores"
        f"{f' plus {unknown} steps with no estimate' if unknown else ''} (cost model: disco_bench/cost.py, {rate})"
    )
    return 0


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
    kinds: dict | None = None,
    reuse: Path | None = None,
) -> int:
    """Run (or list) the suite's steps; returns the exit code (0 when every step passed).
    ``kinds``: the step-kind registry (default ``steps.STEP_KINDS``), handed on to step processes.
    ``reuse``: a finished run's folder whose steps with the same config hash are taken, not run."""
    out = Path(out)
    source = ReuseSource.open(reuse, out)
    suite = restrict(suite, only)
    if not dry_run:  # a typo'd step setting fails before any dataset is generated (no partial output)
        checked = build_context(suite, out, data_root, overrides, progress, create=False, kinds=kinds)
        check_overrides_are_read(plan(suite, checked), checked)
    ctx = build_context(suite, out, data_root, overrides, progress, create=not dry_run, kinds=kinds)
    rows = plan(suite, ctx)
    if dry_run:
        check_overrides_are_read(rows, ctx)
    if dry_run:
        return dry_run_listing(suite, ctx, rows, echo, source)
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
        kinds=ctx.kinds,
        datasets=dict(suite.given),
    )
    records = results.read_records(ctx.records_path)
    outcomes: dict[str, StepOutcome] = {}
    handles: dict = {}

    def settle(n: int, step: Step) -> None:
        head = f"[{n}/{len(rows)}] {step.id}"
        blocked = [d for d in step.needs if outcomes[d].status in ("failed", "skipped")]
        if blocked:
            handles[step.id].cancel()
            outcomes[step.id] = StepOutcome(step.id, "skipped", f"needs {blocked[0]}, which did not finish")
            echo(f"{head}: skipped ({outcomes[step.id].detail})")
            return
        try:
            new = handles[step.id].result()
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
            settled_blocked = [
                d for d in step.needs if d in outcomes and outcomes[d].status in ("failed", "skipped")
            ]
            if settled_blocked:
                outcomes[step.id] = StepOutcome(
                    step.id, "skipped", f"needs {settled_blocked[0]}, which did not finish"
                )
                echo(f"{head}: skipped ({outcomes[step.id].detail})")
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
            handles[step.id] = launcher.submit(
                step,
                lambda step=step, h=h: run_step(step, ctx, h),
                dataclasses.replace(request, step=step.id),
                runs_distributed(step, cfg),
                [handles[d] for d in step.needs if d in handles],
            )
            if launcher.synchronous:
                settle(n, step)
        if not launcher.synchronous:
            settle_as_they_end(rows, handles, outcomes, settle)
    except BaseException:  # Ctrl-C or a crash here: no step process is left running behind the run
        getattr(launcher, "stop", lambda: None)()
        raise
    return finish(out, outcomes, echo)


def settle_as_they_end(rows, handles: dict, outcomes: dict, settle, poll_s: float = 0.2) -> None:
    """Settle submitted steps as they end, not in suite order, so a finished step's records are
    written while a long one still runs (a crash then loses only what was running). A step is
    settled after its dependencies: it is skipped if one of them did not finish."""
    pending = [
        (n, step) for n, (step, _) in enumerate(rows, 1) if step.id in handles and step.id not in outcomes
    ]
    while pending:
        ready = [
            (n, step)
            for n, step in pending
            if all(d in outcomes for d in step.needs)
            and (
                handles[step.id].done()
                or any(outcomes[d].status in ("failed", "skipped") for d in step.needs)
            )
        ]
        for item in ready:
            settle(*item)
            pending.remove(item)
        if pending and not ready:
            time.sleep(poll_s)


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
