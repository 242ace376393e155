"""What a valid result record holds: each field's type, a known task, and a finite value inside its
metric's range.

``results.read_records`` checks every record it reads against these rules, so ``report`` (and a
step appending to ``results.jsonl``) refuses a hand-edited or foreign line with one message naming
``file:line`` and the field, instead of printing a NaN top-1, opening a table for a task spelled
``lineer`` or failing deep inside the leaderboard on a string where a mapping belongs.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from infra.errors import InputError

# tasks that are not downstream tasks: the pre-training step's own numbers, and a checkpoint a
# suite reads from a file or initialises at random (its backbone size)
OWN_TASKS = ("pretrain", "checkpoint")

INF = math.inf

# (metric name pattern, low, high, what the number is); the first full match decides. A metric no
# pattern matches must still be a finite number.
METRIC_RANGES: tuple[tuple[str, float, float, str], ...] = (
    (r"top\d+(_k\d+)?|knn\d+_top\d+", 0.0, 100.0, "an accuracy in percent"),
    (r"((box|mask)_)?AP(50|75|s|m|l)?(_std)?", 0.0, 100.0, "an AP in percent"),
    (r"mi_\w+_bits", 0.0, INF, "a mutual information in bits"),
    (r"silhouette", -1.0, 1.0, "a silhouette score"),
    (r"images_per_s|backbone_params_m", 0.0, INF, "a rate or a size"),
    (r"final_\w+", -INF, INF, "a loss"),
)

STR = (str,)
STR_OR_NULL = (str, type(None))
# field -> the JSON types it may hold (bool is refused where an int or a number is expected)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "task": STR,
    "metric": STR,
    "student": STR,
    "teacher": STR_OR_NULL,
    "method": STR_OR_NULL,
    "dataset": STR,
    "split": STR,
    "seed": (int,),
    "protocol": (dict,),
    "config_hash": STR_OR_NULL,
    "checkpoint_sha256": STR_OR_NULL,
    "code_version": STR_OR_NULL,
    "started_at": STR_OR_NULL,
    "finished_at": STR_OR_NULL,
    "hardware": STR_OR_NULL,
    "id": STR,
    "step": STR_OR_NULL,
    "label": STR_OR_NULL,
    "extra": (dict, type(None)),
    "artifacts": (list, type(None)),
    "run": (dict, type(None)),
}
TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    dict: "an object",
    list: "a list",
    type(None): "null",
}
# mappings the leaderboard opens inside a record's protocol
PROTOCOL_OBJECTS = ("pretrain", "data")
DATA_KEYS = ("name", "fingerprint", "path")


def known_tasks() -> tuple[str, ...]:
    from downstream.registry import TASKS

    return (*sorted(TASKS), *OWN_TASKS)


def metric_range(metric: str) -> tuple[float, float, str]:
    for pattern, low, high, what in METRIC_RANGES:
        if re.fullmatch(pattern, metric):
            return low, high, what
    return -INF, INF, "a number"


def _shown(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # json.dumps would write NaN / Infinity, which reads as JSON's own spelling
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(types: tuple[type, ...]) -> str:
    return " or ".join(TYPE_NAMES[t] for t in types)


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    return not isinstance(value, bool) and isinstance(value, types)


def check_value(rec: dict) -> str | None:
    """Why ``rec['value']`` is not a measurement of its metric, or None."""
    value = rec["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"field 'value' is {_shown(value)}; expected a number"
    if not math.isfinite(value):
        return f"field 'value' is {_shown(float(value))}; expected a finite number"
    low, high, what = metric_range(rec["metric"])
    if not low <= value <= high:
        bounds = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        return f"field 'value' is {value!r} for metric '{rec['metric']}'; expected {what} {bounds}"
    return None


def check_protocol(protocol: dict) -> str | None:
    """The parts of a protocol the leaderboard opens must be mappings of the expected shape."""
    for key in PROTOCOL_OBJECTS:
        if key in protocol and not isinstance(protocol[key], (dict, type(None))):
            return f"field 'protocol.{key}' is {_shown(protocol[key])}; expected an object"
    pretrain = protocol.get("pretrain") or {}
    for where, data in (
        ("protocol.data", protocol.get("data")),
        ("protocol.pretrain.data", pretrain.get("data")),
    ):
        if data is None:
            continue
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in DATA_KEYS):
            return (
                f"field '{where}' is {_shown(data)}; expected an object with string fields "
                f"{', '.join(DATA_KEYS)}"
            )
    return None


def record_problem(rec: Any, required: tuple[str, ...]) -> str | None:
    """Why ``rec`` is not a valid record (one clause naming the field), or None."""
    if not isinstance(rec, dict):
        return f"is {_shown(rec)}; expected a JSON object (one record per line)"
    missing = [f for f in required if f not in rec]
    if missing:
        return f"record lacks fields: {', '.join(missing)}"
    for field, types in FIELD_TYPES.items():
        if field in rec and not _has_type(rec[field], types):
            return f"field '{field}' is {_shown(rec[field])}; expected {_expected(types)}"
    if rec["task"] not in known_tasks():
        return f"field 'task' is {_shown(rec['task'])}; expected one of {', '.join(known_tasks())}"
    return check_value(rec) or check_protocol(rec["protocol"])


def check_record(rec: Any, where: str, required: tuple[str, ...]) -> None:
    """Raise one InputError ``WHERE record ID: ...`` when ``rec`` breaks a rule."""
    problem = record_problem(rec, required)
    if problem:
        rid = rec.get("id") if isinstance(rec, dict) and isinstance(rec.get("id"), str) else None
        raise InputError(f"{where}{f' record {rid}' if rid else ''}: {problem}")
