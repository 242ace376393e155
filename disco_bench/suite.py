"""Suite files (``disco_bench/suites/NAME.yaml``): datasets, per-kind defaults and a list of steps.

A step is ``{id, kind, task?, label?, tags?, matrix?, with: {...}}``. In ``with``, a value
``"@ID"`` names step ID's checkpoint (and makes this step depend on it) and ``data: NAME`` names
an entry of ``datasets``. ``matrix: {key: [values]}`` expands a step once per combination, with
``{key}`` substituted in its id, label, tags and string values.

A dataset is ``{kind, path, name?, generate?}``: ``path`` is relative to ``--data-root`` (or to
OUT/data for a generated one) and ``name`` is what records call it (default: the folder's name),
which is what the paper's numbers are matched on (the paper's linear numbers are ``imagenet``).

A named subset is a suite file with ``extends: BASE`` and ``select: [PATTERN, ...]``: the base
suite's steps whose id or one of whose tags matches a pattern (shell-style, ``*`` and ``?``),
plus every step they depend on. ``--only`` selects the same way.

A suite that builds on another has ``include: BASE``: the base's datasets, defaults and steps come
first, unchanged, and the file adds datasets and steps (which may refer to the base's ``@ID``s). It
sets no ``defaults`` of its own, so every included step keeps its config hash: a run with
``--reuse BASE_OUT`` takes those steps from the base's finished run instead of training them again.

Method and task names are checked against the registries when a suite is loaded, so a typo or a
method that is not implemented yet fails before anything runs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from disco_bench.config import load_yaml
from infra.errors import InputError

SUITES_DIR = Path(__file__).parent / "suites"
SUITE_KEYS = {"name", "description", "datasets", "defaults", "steps"}
INCLUDING_KEYS = {"name", "description", "include", "datasets", "steps"}
SUBSET_KEYS = {"name", "description", "extends", "select"}
STEP_KEYS = {"id", "kind", "task", "label", "tags", "matrix", "with"}
DATASET_KEYS = {"kind", "path", "name", "generate"}


@dataclass
class Step:
    id: str
    kind: str
    params: dict
    task: str | None = None
    label: str | None = None
    needs: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


@dataclass
class Suite:
    name: str
    description: str
    datasets: dict[str, dict]
    defaults: dict[str, dict]
    steps: list[Step]
    path: Path
    extends: str | None = None  # a named subset: the suite it selects from
    includes: str | None = None  # a suite that builds on another: the one whose steps it starts with
    given: dict[str, str] = field(default_factory=dict)  # dataset key -> a folder --dataset put in its place

    def dataset_name(self, key: str) -> str:
        """What records call dataset ``key``: its ``name``, else the last part of its path."""
        spec = self.datasets[key]
        return spec.get("name") or Path(spec.get("path", key)).name


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
    """The step ids ``@ID`` and ``@ID:PRODUCT`` references name (steps.PRODUCTS)."""
    if isinstance(value, str) and value.startswith("@"):
        return [value[1:].partition(":")[0]]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def expand_steps(raw_steps: list[dict], where: str, earlier: tuple[str, ...] = ()) -> list[Step]:
    """``earlier``: the ids of steps that come before these (an included suite's), which they may
    refer to and must not repeat."""
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
            tags = _substitute(list(raw.get("tags") or []), subs)
            steps.append(
                Step(
                    id=_substitute(raw["id"], subs),
                    kind=raw["kind"],
                    params=params,
                    task=raw.get("task"),
                    label=_substitute(raw.get("label"), subs),
                    needs=_refs(params),
                    tags=[str(t) for t in tags],
                )
            )
    seen: set[str] = set(earlier)
    for step in steps:
        if step.id in seen:
            raise InputError(f"{where}: duplicate step id {step.id!r}")
        for need in step.needs:
            if need not in seen:
                raise InputError(f"{where}: step {step.id!r} refers to @{need}, which is not an earlier step")
        seen.add(step.id)
    return steps


def matches(step: Step, pattern: str) -> bool:
    return fnmatch.fnmatchcase(step.id, pattern) or any(fnmatch.fnmatchcase(t, pattern) for t in step.tags)


def select_steps(steps: list[Step], patterns: list[str], where: str = "--only") -> list[Step]:
    """The steps matching any pattern, plus everything they depend on (done or not), in suite order.

    Dependencies are always pulled in: the runner then skips those already done (same config hash)
    and runs the others first, so a selected step never runs on a stale or missing checkpoint.
    """
    by_id = {s.id: s for s in steps}
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [s.id for s in steps if matches(s, pattern)]
        if not hits:
            tags = sorted({t for s in steps for t in s.tags})
            raise InputError(
                f"{where} {pattern!r} matches no step id or tag; tags: {', '.join(tags) or 'none'}; "
                f"step ids look like {', '.join(s.id for s in steps[:3])}"
            )
        chosen.update(hits)
    todo = list(chosen)
    while todo:
        for need in by_id[todo.pop()].needs:
            if need not in chosen:
                chosen.add(need)
                todo.append(need)
    return [s for s in steps if s.id in chosen]


def give_datasets(suite: Suite, given: dict[str, str]) -> Suite:
    """The suite with datasets replaced by the user's folders (``--dataset KEY=PATH``): same kind,
    no generator, named after the folder (what records and the leaderboard call it)."""
    datasets = dict(suite.datasets)
    for key, folder in given.items():
        if key not in datasets:
            raise InputError(
                f"--dataset {key}={folder}: suite {suite.name} has no dataset {key!r}; "
                f"its datasets: {', '.join(sorted(suite.datasets))}"
            )
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise InputError(f"--dataset {key}={folder}: expected a folder; {path} is none")
        datasets[key] = {
            "kind": datasets[key].get("kind", "imagefolder"),
            "path": str(path),
            "name": path.name,
        }
    return dataclasses.replace(suite, datasets=datasets, given={**suite.given, **given})


def used_datasets(suite: Suite) -> dict[str, dict]:
    """The datasets some step of the suite reads (a subset needs only its own)."""
    used = {s.params["data"] for s in suite.steps if "data" in s.params}
    return {k: v for k, v in suite.datasets.items() if k in used}


def check_registered(steps: list[Step], where: str) -> None:
    """Every pretrain method and eval task must be registered (one line naming the step if not)."""
    from downstream.registry import TASKS
    from pretrain.methods import METHODS

    for step in steps:
        if step.kind == "pretrain" and "method" in step.params and step.params["method"] not in METHODS:
            raise InputError(
                f"{where}: step {step.id!r} uses method {step.params['method']!r}, which is not registered; "
                f"methods: {', '.join(sorted(METHODS))}"
            )
        if step.kind == "eval" and step.task not in TASKS:
            raise InputError(
                f"{where}: step {step.id!r} uses task {step.task!r}, which is not registered; "
                f"tasks: {', '.join(sorted(TASKS))}"
            )


def _read_yaml(path: Path) -> dict:
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of suite keys, got {type(raw).__name__}")
    return raw


def suite_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if not path.suffix:
        path = SUITES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise InputError(f"unknown suite {name_or_path!r}: choose from {', '.join(available_suites())}")
    if not path.exists():
        raise InputError(f"suite file not found: {path}")
    return path


def _load_subset(raw: dict, path: Path, seen: tuple[Path, ...]) -> Suite:
    _check_keys(raw, SUBSET_KEYS, f"{path} (a subset: extends + select)")
    base_path = suite_path(str(raw["extends"]))
    if base_path in seen:
        raise InputError(f"{path}: extends {raw['extends']!r}, which extends it back (a cycle)")
    base = load_suite(str(base_path), _seen=(*seen, path))
    select = raw.get("select")
    if not isinstance(select, list) or not select:
        raise InputError(f"{path}: select must be a non-empty list of step id or tag patterns")
    steps = select_steps(base.steps, [str(p) for p in select], where=f"{path} select")
    return Suite(
        raw.get("name", path.stem),
        raw.get("description", base.description),
        base.datasets,
        base.defaults,
        steps,
        path,
        extends=base.name,
    )


def _base_of(raw: dict, key: str, path: Path, seen: tuple[Path, ...]) -> Suite:
    """The suite ``raw[key]`` names: a suite name, or a file relative to the including file."""
    named = Path(str(raw[key]))
    base_path = suite_path(str(path.parent / named if named.suffix and not named.is_absolute() else named))
    if base_path in seen or base_path == path:
        raise InputError(f"{path}: {key} {raw[key]!r}, which leads back to this file (a cycle)")
    return load_suite(str(base_path), _seen=(*seen, path))


def load_suite(name_or_path: str, _seen: tuple[Path, ...] = ()) -> Suite:
    path = suite_path(name_or_path)
    raw = _read_yaml(path)
    if "extends" in raw:
        return _load_subset(raw, path, _seen)
    base = None
    if "include" in raw:
        _check_keys(
            raw,
            INCLUDING_KEYS,
            f"{path} (a suite that includes another shares its defaults, so its steps keep their hashes)",
        )
        base = _base_of(raw, "include", path, _seen)
    else:
        _check_keys(raw, SUITE_KEYS, str(path))
    datasets = raw.get("datasets") or {}
    for ds_name, spec in datasets.items():
        _check_keys(spec, DATASET_KEYS, f"{path} datasets.{ds_name}")
        if base is not None and ds_name in base.datasets:
            raise InputError(f"{path} datasets.{ds_name}: already defined by the included suite {base.name}")
    defaults = raw.get("defaults") or {}
    _check_keys(defaults, {"pretrain", "eval"}, f"{path} defaults")
    earlier = tuple(s.id for s in base.steps) if base is not None else ()
    steps = expand_steps(raw.get("steps") or [], str(path), earlier)
    if base is not None:
        datasets = {**base.datasets, **datasets}
        defaults = base.defaults
        steps = [*base.steps, *steps]
    for step in steps:
        ds = step.params.get("data")
        if ds is not None and ds not in datasets:
            raise InputError(
                f"{path}: step {step.id!r} uses data {ds!r}; datasets defined: {', '.join(sorted(datasets)) or 'none'}"
            )
    check_registered(steps, str(path))
    return Suite(
        raw.get("name", path.stem),
        raw.get("description", ""),
        datasets,
        defaults,
        steps,
        path,
        includes=base.name if base is not None else None,
    )
