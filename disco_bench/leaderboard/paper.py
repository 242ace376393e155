"""``paper_numbers.yaml``: every number the paper gives, with its source and its setting.

The file holds ``settings`` (named, complete protocols: dotted paths into a record, see
``matching.lookup``, mapped to the value the paper used; ``extends`` composes them) and one block
per table of the paper. A column names the setting its numbers were measured under (the block's
by default) and may add or override fields with ``where``; a list of values means any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from infra.errors import InputError

PAPER_FILE = Path(__file__).resolve().parent.parent / "paper_numbers.yaml"
BLOCK_KEYS = {
    "title",
    "suite",
    "task",
    "metric",
    "dataset",
    "setting",
    "where",
    "columns",
    "rows",
    "notes",
    "source",
}
COLUMN_KEYS = {"key", "name", "method", "teacher", "metric", "setting", "where", "source", "dataset", "step"}
FILL_SUITE = "full"  # the suite whose steps a column's ``step`` names
RESERVED = {"settings"}


@dataclass(frozen=True)
class Column:
    key: str
    name: str
    method: str
    teacher: str | None
    metric: str
    setting: str  # the named setting (for the leaderboard's link)
    fields: dict  # the complete setting: dotted path -> value (or list of allowed values)
    source: str = ""
    dataset: str = ""
    where: tuple = ()  # (path, value) the column states on top of its named setting
    # the step of FILL_SUITE that measures a row: a template with {student}, or student -> step id
    step: str | tuple[tuple[str, str], ...] = ""

    def step_id(self, student: str) -> str | None:
        """The step of FILL_SUITE that measures this column's cell for ``student`` (None: none named)."""
        if isinstance(self.step, tuple):
            return dict(self.step).get(student)
        return self.step.format(student=student) if self.step else None

    def fill_command(self, student: str) -> str | None:
        step = self.step_id(student)
        return (
            f"python -m disco_bench run --suite {FILL_SUITE} --data-root DATA --only {step}" if step else None
        )

    def setting_text(self) -> str:
        """``disco-linear`` or ``disco-linear with pretrain.hidden=512``."""
        extra = ", ".join(f"{k}={v}" for k, v in self.where)
        return self.setting + (f" with {extra}" if extra else "")


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    suite: str | None
    task: str
    dataset: str
    columns: list[Column]
    rows: dict[str, list[float | None]]  # student -> the paper's value per column
    notes: str = ""
    source: str = ""


def _resolve(name: str, settings: dict, where: str, trail: tuple = ()) -> dict:
    if name not in settings:
        raise InputError(f"{where}: unknown setting {name!r}; defined: {', '.join(sorted(settings))}")
    if name in trail:
        raise InputError(f"{where}: setting {name!r} extends itself ({' -> '.join(trail + (name,))})")
    raw = settings[name]
    if not isinstance(raw, dict):
        raise InputError(f"{where}: setting {name!r} must be a mapping of dotted paths to values")
    parents = raw.get("extends") or []
    out: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        out |= _resolve(parent, settings, where, trail + (name,))
    return out | {k: v for k, v in raw.items() if k != "extends"}


def _column(n: int, col: Any, block: dict, settings: dict, where: str) -> Column:
    bad = sorted(set(col) - COLUMN_KEYS) if isinstance(col, dict) else ["(not a mapping)"]
    if bad or "method" not in col or "key" not in col:
        raise InputError(
            f"{where}.columns[{n}]: expected keys {', '.join(sorted(COLUMN_KEYS))} with key and method; "
            f"got {col!r}"
        )
    setting = col.get("setting", block.get("setting"))
    fields = _resolve(setting, settings, f"{where}.columns[{n}]") if setting else {}
    where_ = dict(block.get("where") or {}) | dict(col.get("where") or {})
    step = col.get("step", "")
    if not isinstance(step, (str, dict)) or (isinstance(step, str) and step and "{student}" not in step):
        raise InputError(
            f"{where}.columns[{n}].step: expected a step id template with {{student}} or a mapping of "
            f"student to step id; got {step!r}"
        )
    return Column(
        col["key"],
        col.get("name", col["key"]),
        col["method"],
        col.get("teacher"),
        col.get("metric", block["metric"]),
        setting or "",
        fields | where_,
        col.get("source", block.get("source", "")),
        col.get("dataset", block["dataset"]),
        tuple(where_.items()),
        tuple(step.items()) if isinstance(step, dict) else step,
    )


def _table(key: str, raw: Any, settings: dict, where: str) -> PaperTable:
    if not isinstance(raw, dict):
        raise InputError(f"{where} {key}: expected a mapping with keys {', '.join(sorted(BLOCK_KEYS))}")
    unknown = sorted(set(raw) - BLOCK_KEYS)
    if unknown:
        raise InputError(
            f"{where} {key}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(BLOCK_KEYS))}"
        )
    for need in ("title", "task", "metric", "dataset", "columns", "rows"):
        if need not in raw:
            raise InputError(f"{where} {key}: missing key {need!r}")
    columns = [_column(n, col, raw, settings, f"{where} {key}") for n, col in enumerate(raw["columns"])]
    rows = {}
    for student, values in raw["rows"].items():
        if not isinstance(values, list) or len(values) != len(columns):
            raise InputError(
                f"{where} {key}.rows.{student}: expected {len(columns)} values (null for none), got {values!r}"
            )
        rows[student] = [None if v is None else float(v) for v in values]
    return PaperTable(
        key,
        raw["title"],
        raw.get("suite"),
        raw["task"],
        raw["dataset"],
        columns,
        rows,
        raw.get("notes", ""),
        raw.get("source", ""),
    )


@lru_cache(maxsize=8)
def paper_file(path: Path = PAPER_FILE) -> tuple[dict, tuple[PaperTable, ...]]:
    """(named settings, each resolved; the tables) of a paper-numbers file."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of tables (and 'settings')")
    settings = raw.get("settings") or {}
    resolved = {name: _resolve(name, settings, f"{path} settings") for name in settings}
    tables = tuple(_table(k, v, settings, str(path)) for k, v in raw.items() if k not in RESERVED)
    return resolved, tables


def paper_tables(path: Path = PAPER_FILE) -> tuple[PaperTable, ...]:
    return paper_file(Path(path))[1]


def paper_settings(path: Path = PAPER_FILE) -> dict[str, dict]:
    return paper_file(Path(path))[0]
