"""Test helper: the record each eval step of a suite would write, less the numbers (every step is
planned, nothing runs). The report never plans a suite; the tests use this to check that the step
``paper_numbers.yaml`` names for a cell exists and would fill it."""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path


@cache
def feature_width(arch: str) -> int:
    from pretrain.models import build_backbone, feature_dim

    return feature_dim(build_backbone(arch))


def resolved_hidden(protocol: dict) -> dict:
    """The student head's width as the run will record it (``hidden=None``: the method's default)."""
    from pretrain.methods import METHODS

    method = METHODS.get(protocol.get("method"))
    if protocol.get("hidden") is not None or method is None:
        return protocol
    return protocol | {"hidden": method.default_hidden(feature_width(protocol["student"]))}


@lru_cache(maxsize=4)
def suite_candidates(suite_name: str) -> tuple[tuple[str, dict], ...]:
    """(step id, the record its eval would write, less the numbers) for every eval step of a suite."""
    from disco_bench.planning import architectures, build_context, plan, restrict
    from disco_bench.steps import step_config
    from disco_bench.suite import load_suite

    suite = restrict(load_suite(suite_name), None)
    ctx = build_context(suite, Path("$OUT"), None, {}, progress=False, create=False)
    rows = plan(suite, ctx)
    configs = {s.id: step_config(s, ctx) for s, _ in rows}
    arch = architectures(rows, configs)
    by_id = {s.id: s for s, _ in rows}
    out = []
    for step, _ in rows:
        ref = step.params.get("ckpt")
        if step.kind != "eval" or not (isinstance(ref, str) and ref.startswith("@")):
            continue
        src = by_id[ref[1:]]
        scfg = configs[src.id]
        pretrain = resolved_hidden(scfg.protocol()) if src.kind == "pretrain" else {}
        teacher_ref = src.params.get("teacher_ckpt")
        teacher = (
            arch.get(teacher_ref[1:])
            if isinstance(teacher_ref, str) and teacher_ref.startswith("@")
            else None
        )
        teacher_step = by_id.get(teacher_ref[1:]) if teacher and teacher_ref else None
        if (
            teacher_step is not None and teacher_step.kind == "checkpoint"
        ):  # a published file: its layout is its method's
            pretrain = pretrain | {
                "teacher_ckpt": {"arch": teacher, "format": configs[teacher_step.id].method}
            }
        ecfg = configs[step.id]
        evaluation = ecfg.protocol_dict(step.task)
        if (
            step.task == "linear" and evaluation.get("lr", 0) is None
        ):  # as the probe resolves it (downstream.linear)
            from downstream.backbone import default_probe_lr

            evaluation["lr"] = default_probe_lr(arch.get(src.id) or "")
        out.append(
            (
                step.id,
                {
                    "task": step.task,
                    "dataset": suite.dataset_name(step.params["data"]),
                    "student": arch.get(src.id),
                    "method": getattr(scfg, "method", None) or None,
                    "teacher": teacher,
                    "protocol": {"eval": evaluation, "pretrain": pretrain},
                },
            )
        )
    return tuple(out)
