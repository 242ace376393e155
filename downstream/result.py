"""What a task returns: measured numbers plus the settings that make them comparable."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Measurement:
    metric: str
    value: float
    dataset: str
    split: str = "val"
    extra: dict = field(default_factory=dict)  # e.g. epoch for per-epoch curves


@dataclass
class TaskResult:
    task: str
    measurements: list[Measurement]
    protocol: dict
    artifacts: list[str] = field(default_factory=list)  # files written (plots, CSVs)
    source: dict = field(
        default_factory=dict
    )  # what the evaluated checkpoint says: arch, method, teacher, sha256, protocol
    # why the numbers may not mean what they seem (a classifier at chance, a choice made on too few
    # images, a run cut short): one readable sentence each, copied to every record's extra.degenerate
    degenerate: list[str] = field(default_factory=list)


DEGENERATE = "degenerate"  # the key of those sentences in a record's (or a measurement's) extra


def with_degenerate(extra: dict | None, flags: list[str]) -> dict | None:
    """``extra`` with ``flags`` appended to its degenerate list (no key when there are none)."""
    have = list((extra or {}).get(DEGENERATE, []))
    merged = have + [f for f in flags if f not in have]
    if not merged:
        return extra
    return dict(extra or {}) | {DEGENERATE: merged}
