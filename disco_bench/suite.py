"""Suite files (``disco_bench/suites/NAME.yaml``): datasets, per-kind defaults and a list of steps.

A step is ``{id, kind, task?, label?, matrix?, with: {...}}``. In ``with``, a value ``"@ID"``
names step ID's checkpoint (and makes this step depend on it) and ``data: NAME`` names an entry
of ``datasets``. ``matrix: {key: [values]}`` expands a step once per combination, with
``{key}`` substituted in its id, label and string values.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pretrain.errors import InputError

SUITES_DIR = Path(__file__).parent / "suites"
SUITE_KEYS = {"name", "description", "datasets", "defaults", "steps"}
STEP_KEYS = {"id", "kind", "task", "label", "matrix", "with"}
DATASET_KEYS = {"kind", "path", "generate"}


@dataclass
class Step:
    id: str
    kind: str
    params: dict
    task: str | None = None
    label: str | None = None
    needs: list[str] = field(default_factory=list)


@dataclass
class Suite:
    name: str
    description: str
    datasets: dict[str, dict]
    defaults: dict[str, dict]
    steps: list[Step]
    path: Path


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(allowed))}")


def _substitute(value: Any, subs: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if value.startswith("{") and value.endswith("}") and value[1:-1] in subs:
            return subs[value[1:-1]]  # a whole-value placeholder keeps the value's type
        return value.format(**subs) if "{" in value else value
    if isinstance(value, dict):
        return {k: _substitute(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, subs) for v in value]
    return value


def _refs(value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith("@"):
        return [value[1:]]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def expand_steps(raw_steps: list[dict], where: str) -> list[Step]:
    steps: list[Step] = []
    for n, raw in enumerate(raw_steps):
        _check_keys(raw, STEP_KEYS, f"{where} steps[{n}]")
        for key in ("id", "kind"):
            if key not in raw:
                raise InputError(f"{where} steps[{n}]: missing key {key!r}")
        matrix = raw.get("matrix") or {}
        names = list(matrix)
        for combo in itertools.product(*(matrix[k] for k in names)) if names else [()]:
            subs = dict(zip(names, combo))
            params = _substitute(dict(raw.get("with") or {}), subs)
            steps.append(Step(
                id=_substitute(raw["id"], subs), kind=raw["kind"], params=params, task=raw.get("task"),
                label=_substitute(raw.get("label"), subs), needs=_refs(params),
            ))
    seen: set[str] = set()
    for step in steps:
        if step.id in seen:
            raise InputError(f"{where}: duplicate step id {step.id!r}")
        for need in step.needs:
            if need not in seen:
                raise InputError(f"{where}: step {step.id!r} refers to @{need}, which is not an earlier step")
        seen.add(step.id)
    return steps


def load_suite(name_or_path: str) -> Suite:
    path = Path(name_or_path)
    if not path.suffix:
        path = SUITES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise InputError(f"unknown suite {name_or_path!r}: choose from {', '.join(available_suites())}")
    if not path.exists():
        raise InputError(f"suite file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    _check_keys(raw, SUITE_KEYS, str(path))
    datasets = raw.get("datasets") or {}
    for ds_name, spec in datasets.items():
        _check_keys(spec, DATASET_KEYS, f"{path} datasets.{ds_name}")
    defaults = raw.get("defaults") or {}
    _check_keys(defaults, {"pretrain", "eval"}, f"{path} defaults")
    steps = expand_steps(raw.get("steps") or [], str(path))
    for step in steps:
        ds = step.params.get("data")
        if ds is not None and ds not in datasets:
            raise InputError(f"{path}: step {step.id!r} uses data {ds!r}; datasets defined: {', '.join(sorted(datasets)) or 'none'}")
    return Suite(raw.get("name", path.stem), raw.get("description", ""), datasets, defaults, steps, path)
