"""What a planned suite's steps are, need, produce and cost, in words: the ``run --dry-run``
listing, the one-line description the runner prints as a step starts, and the note before a run
estimated past ten minutes.

Apart from cost.py because it reads the plan (step configs, records, ``--reuse``): the cost model
stays plain arithmetic that the ``pretrain`` and ``eval`` commands use without planning a suite.
"""

from __future__ import annotations

import dataclasses

from disco_bench import cost, results
from disco_bench.planning import CHECKPOINT_KINDS, architectures, is_done
from disco_bench.reuse import NO_REUSE, ReuseSource
from disco_bench.steps import PATH_KEYS, RunContext, effective_params, overridden, step_config
from disco_bench.suite import Step, Suite


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
