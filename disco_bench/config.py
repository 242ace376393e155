"""Typed config plumbing: strict dataclass construction from dicts and dotted ``key=value`` overrides.

A typo'd key is an error that names it and lists the valid keys; values are parsed as YAML
scalars (``epochs=3``, ``amp=bf16``, ``hidden=null``, ``lr_milestones=[0.6,0.8]``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar

import yaml

from pretrain.errors import InputError

T = TypeVar("T")


def _check_type(cls: type, name: str, value: Any, where: str) -> Any:
    hint = typing.get_type_hints(cls)[name]
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise InputError(f"{where}{name}: null is not allowed (expected {hint})")
    for opt in options:
        base = typing.get_origin(opt) or opt
        if base is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if base is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot, no sign) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if base is tuple and isinstance(value, list | tuple):
            return tuple(value)
        if base is bool and isinstance(value, bool):
            return value
        if base in (int, str, dict, list) and isinstance(value, base) and not (base is int and isinstance(value, bool)):
            return value
    raise InputError(f"{where}{name}: {value!r} is not a valid {hint}")


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrongly typed values are errors."""
    return replace(cls(), data, where)


def replace(obj: T, data: dict, where: str = "") -> T:
    fields = {f.name for f in dataclasses.fields(obj)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"{where}unknown key {unknown[0]!r}{hint}; valid keys: {', '.join(sorted(fields))}")
    checked = {k: _check_type(type(obj), k, v, where) for k, v in data.items()}
    return dataclasses.replace(obj, **checked)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``['a.b=1', 'c=x']`` -> ``{'a.b': 1, 'c': 'x'}`` with YAML-typed values."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--set {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def scoped(overrides: dict[str, Any], scope: str) -> dict[str, Any]:
    """The overrides under ``scope.`` with the prefix removed."""
    prefix = scope + "."
    return {k[len(prefix) :]: v for k, v in overrides.items() if k.startswith(prefix)}
