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
