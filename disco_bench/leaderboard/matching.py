"""Which settings a record was measured under, which records may be pooled, and which fill a cell.

A record's *settings* are every leaf of its protocol (pre-training and evaluation) and of its
``run`` (processes, per-process batch, accelerator, threads, library versions), as dotted paths:
``pretrain.hidden``, ``pretrain.run.per_process_batch``, ``eval.protocol``, ``run.threads``. Runs
are pooled into one "mean ± std over seeds" only when their identity (task, metric, dataset,
split, student, method, teacher) and all their settings are equal apart from the seeds and what
a run finds out (``RUN_OUTCOMES``). A field a record lacks (written before the field existed)
reads as unknown: such records pool only with records equally unknown, and never fill a paper
cell whose setting states that field.

A record fills a paper cell when its identity is the cell's and every field the column's setting
states has the stated value, and the setting states every setting the record has (``ENVIRONMENT``
aside: where and with what a number was computed is recorded and splits pools, but the paper does
not fix it). So a variant of any field (head width, lambda, reduction, teacher BN, per-process
batch, a speed option, the probe's KD) never lands in the paper's cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from disco_bench.leaderboard.paper import Column, PaperTable

UNKNOWN = "<unknown>"  # a field the record does not carry
TASK_DEFAULT = "task-default"  # eval.lr: the task's default for the row's student (see for_student)
ANY = "any"  # a setting stated as not changing this column's numbers (e.g. lambda for MoCo-v2 alone)
IDENTITY = ("task", "metric", "dataset", "split", "student", "method", "teacher")
# What varies from seed to seed without being a setting: the seed, and what a run found (the fast
# probe's chosen weight decay and hold-out scores, detection's per-trial details).
RUN_OUTCOMES = {"seed", "chosen_weight_decay", "holdout_top1", "trial_details"}
# Where a file was read from: provenance shown beside a row, never a setting (the same data at two
# paths pools; different data has a different fingerprint, which is a setting).
PROVENANCE = {"pretrain.data.path"}
# Where and with what a number was computed, and on which pre-training data: recorded, splits pools,
# not part of the paper's setting (its columns state the evaluation data, and the paper pre-trains on it).
ENVIRONMENT = (
    "run.",
    "pretrain.data.",
    "pretrain.run.accelerator",
    "pretrain.run.threads",
    "pretrain.run.versions.",
    "eval.device",
    "eval.world_size",
)


def _flatten(value: Any, prefix: str, out: dict) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            if k not in RUN_OUTCOMES:
                _flatten(v, f"{prefix}.{k}", out)
    else:
        out[prefix] = tuple(value) if isinstance(value, list) else value


def settings_of(record: dict) -> dict[str, Any]:
    """Every setting of a record as dotted path -> value (seeds and run outcomes left out)."""
    protocol = record.get("protocol") or {}
    if record.get("task") == "pretrain":
        protocol = {"pretrain": protocol}
    out: dict[str, Any] = {}
    for scope, value in protocol.items():
        if value != {}:  # an empty scope (a published teacher's pre-training) says nothing
            _flatten(value, scope, out)
    if record.get("run") is not None:
        _flatten(record["run"], "run", out)
    for path in PROVENANCE:
        out.pop(path, None)
    subset = (protocol.get("eval") or {}).get("subset") or {}
    if subset.get("source") == "stratified":  # drawn by the seed: its hash differs from seed to seed
        out.pop("eval.subset.sha256", None)
    return out


def setting_id(record: dict) -> str:
    """A short name for a record's settings (identity and every setting; seeds aside). The metric is
    not part of it: a run's top-1 and top-5 share their setting (pools are made per metric)."""
    settings = {k: record.get(k) for k in IDENTITY if k not in ("metric", "split")} | settings_of(record)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


def is_environment(path: str) -> bool:
    return any(path == e or path.startswith(e) if e.endswith(".") else path == e for e in ENVIRONMENT)


def _wanted(want: Any) -> list:
    return want if isinstance(want, list) else [want]


def identity_matches(
    record: dict, table: PaperTable, col: Column, student: str, check_metric: bool = True
) -> bool:
    if (
        record.get("task") != table.task
        or record.get("dataset") != col.dataset
        or record.get("student") != student
    ):
        return False
    if check_metric and record.get("metric") != col.metric:
        return False
    if record.get("method") != col.method:
        return False
    teacher = record.get("teacher")
    return not ((col.teacher == "any" and teacher is None) or col.teacher not in ("any", teacher))


def differences(
    record: dict, fields: dict, partial: bool = False, have: dict | None = None
) -> dict[str, tuple[Any, Any]]:
    """path -> (the record's value, the setting's) for every stated field the record does not meet,
    and every setting the record has that the column does not state (setting's value: UNKNOWN).
    ``partial`` (a planned step, not a record): fields the plan cannot know yet are not compared.
    ``have``: the record's settings when already known (the tidy table's ``settings``)."""
    have = settings_of(record) if have is None else have
    diff = {}
    wildcards = tuple(path[:-1] for path in fields if path.endswith("*"))  # "eval.schedule.*": any leaf below
    for path, want in fields.items():
        if path.endswith("*"):
            continue
        value = have.get(path, UNKNOWN)
        value = list(value) if isinstance(value, tuple) else value
        if want == ANY and value is not UNKNOWN:
            continue
        if partial and value is UNKNOWN and not _planned(path):
            continue
        if value not in _wanted(want) and not (
            isinstance(value, list) and tuple(value) in map(_as_tuple, _wanted(want))
        ):
            diff[path] = (value, want)
    if not partial:
        for path, value in have.items():
            if path not in fields and not is_environment(path) and not path.startswith(wildcards):
                diff[path] = (value, UNKNOWN)
    return diff


def _planned(path: str) -> bool:
    """Whether a planned step already knows ``path``: a pre-training config field, or an eval field
    whose absence means "off" (KD); not what a run adds (the resolved teacher file, the process
    layout, a task's details)."""
    from downstream.config import KD_FIELDS
    from pretrain.config import PretrainConfig

    scope, _, rest = path.partition(".")
    if scope == "pretrain":
        return rest in {f.name for f in dataclasses.fields(PretrainConfig)}
    return scope == "eval" and rest in KD_FIELDS


def _as_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def for_student(fields: dict, task: str, student: str) -> dict:
    """The column's setting for one row: ``eval.lr: task-default`` is the probe's default lr for that
    student (linear: 30 for ResNets, 3 for the others)."""
    if fields.get("eval.lr") != TASK_DEFAULT:
        return fields
    from downstream.backbone import default_probe_lr

    return fields | {"eval.lr": default_probe_lr(student) if task == "linear" else UNKNOWN}


def cell_matches(
    record: dict,
    table: PaperTable,
    col: Column,
    student: str,
    check_metric: bool = True,
    partial: bool = False,
    have: dict | None = None,
) -> bool:
    return identity_matches(record, table, col, student, check_metric) and not differences(
        record, for_student(col.fields, table.task, student), partial, have
    )


def describe_differences(diff: dict[str, tuple[Any, Any]], limit: int = 4) -> str:
    """``hidden 512 (paper 2048)``, ..., for the per-task tables."""
    parts = []
    for path, (have, want) in list(diff.items())[:limit]:
        short = path.removeprefix("pretrain.").removeprefix("eval.")
        parts.append(f"{short} {have}" + ("" if want is UNKNOWN else f" (paper {want})"))
    more = len(diff) - limit
    return "; ".join(parts) + (f"; +{more} more" if more > 0 else "")


# --- records of steps that measure several checkpoints (t-SNE, information plane) ------------------


def per_checkpoint(record: dict, pretrain_by_sha: dict[str, dict] | None = None) -> dict:
    """A record of a step comparing several checkpoints (tsne, mi) names the one it measured in
    ``extra`` (arch, method, teacher, ckpt label); its top-level fields, protocol included, name
    the first checkpoint. The measured checkpoint's own pre-training protocol comes from the
    records that carry it (none known: none shown, rather than the first checkpoint's)."""
    extra = record.get("extra") or {}
    if "arch" not in extra:
        return record
    sha = extra.get("sha256") or record.get("checkpoint_sha256")
    protocol = dict(record.get("protocol") or {})
    protocol["pretrain"] = (pretrain_by_sha or {}).get(sha, {})
    return record | {
        "student": extra["arch"],
        "method": extra.get("method"),
        "teacher": extra.get("teacher"),
        "label": extra.get("ckpt") or record.get("label"),
        "checkpoint_sha256": sha,
        "protocol": protocol,
    }
