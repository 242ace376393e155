"""Typed config plumbing: strict dataclass construction from dicts and dotted ``key=value`` overrides.

A typo'd key is an error that names it and lists the valid keys; values are parsed as YAML
scalars (``epochs=3``, ``amp=bf16``, ``hidden=null``, ``lr_milestones=[0.6,0.8]``).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from infra.errors import InputError
from infra.validation import FieldError, coerce

T = TypeVar("T")


def _check_type(cls: type, name: str, value: Any, where: str) -> Any:
    return coerce(typing.get_type_hints(cls)[name], value, name, where)


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrongly typed values are errors."""
    return replace(cls(), data, where)


def replace(obj: T, data: dict, where: str = "") -> T:
    fields = {f.name for f in dataclasses.fields(obj)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        # a scope prefix ('--set pretrain.') is completed by the key; any other names the place
        head = (
            f"{where}{unknown[0]}: unknown key"
            if where.endswith(".")
            else f"{where}unknown key {unknown[0]!r}"
        )
        raise InputError(f"{head}{hint}; valid keys: {', '.join(sorted(fields))}")
    if hasattr(
        type(obj), "__post_init__"
    ):  # the class checks (and coerces) its own fields: keep the values as given
        checked = dict(data)
    else:
        checked = {k: _check_type(type(obj), k, v, where) for k, v in data.items()}
    try:
        return dataclasses.replace(obj, **checked)  # the class's own checks run here (infra.validation)
    except FieldError as exc:
        if exc.field in data and where and not str(exc).startswith(where):
            raise FieldError(exc.field, f"{where}{exc}") from None
        raise


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with one key twice (YAML itself keeps the last,
    silently dropping the first). Keys merged in with ``<<`` may still be overridden."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    again = key in seen
                except TypeError:  # an unhashable key: the base class says so
                    break
                line = key_node.start_mark.line + 1
                if again:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} appears twice in one mapping (line {seen[key]} and line {line}); "
                        "expected each key once",
                        key_node.start_mark,
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """``yaml.safe_load`` that refuses duplicate keys (UniqueKeyLoader)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def layered(
    cls: type[T], layers: list[tuple[dict, str, bool]], unread: Callable[[T, list[str]], list[str]]
) -> tuple[T, list[str]]:
    """Build ``cls`` from ``layers`` of settings, each ``(values, where, shared)``, later ones on top.

    A shared layer (a suite's defaults, a suite-wide ``--set``) gives its settings to every step, so
    a setting the finished config does not read (``unread(cfg, names)``) is dropped from it: the
    step is built, and recorded, as if it had not been given. Returns the config and the names of
    the settings its own (not shared) layers gave but it does not read, for the caller to refuse.
    """
    dropped: set[str] = set()
    while True:
        cfg = cls()
        for values, where, shared in layers:
            cfg = replace(cfg, {k: v for k, v in values.items() if not (shared and k in dropped)}, where)
        shared_names = [k for values, _, shared in layers if shared for k in values if k not in dropped]
        newly = set(unread(cfg, shared_names))
        if not newly:  # dropping may change what is read (e.g. the protocol): until nothing changes
            own = [k for values, _, shared in layers if not shared for k in values]
            return cfg, unread(cfg, own)
        dropped |= newly


def refuse_unread(unread: list[str], spelled: dict[str, str], why: Callable[[str], str]) -> None:
    """A setting given for this command or step that nothing reads would be ignored and recorded:
    refused, one line naming how it was given (``spelled``) and ``why`` (what reads it instead)."""
    if unread:
        raise InputError(f"{spelled[unread[0]]}: {why(unread[0])}")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``['a.b=1', 'c=x']`` -> ``{'a.b': 1, 'c': 'x'}`` with YAML-typed values."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--set {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if key in out and out[key] != value:  # neither value may be silently dropped
            raise InputError(f"--set {key} given twice ({out[key]!r} and {value!r}): expected each key once")
        out[key] = value
    return out


def check_scopes(overrides: dict[str, Any], scopes: list[str]) -> None:
    """Every suite override names the step kind it is for (``pretrain.epochs=2``); an unscoped or
    wrongly scoped key would apply to nothing, so it is an error naming the scopes."""
    for key in overrides:
        scope = key.split(".", 1)[0] if "." in key else None
        if scope not in scopes:
            choices = ", ".join(f"{s}." for s in scopes)
            close = difflib.get_close_matches(scope, scopes, n=1) if scope else []
            hint = (
                f" (did you mean {close[0]}.{key.split('.', 1)[1]}?)"
                if close
                else (f" (e.g. {scopes[0]}.{key})" if scope is None else "")
            )
            raise InputError(f"--set {key}: a suite override needs a step-kind scope: {choices}{hint}")


def scoped(overrides: dict[str, Any], scope: str) -> dict[str, Any]:
    """The overrides under ``scope.`` with the prefix removed."""
    prefix = scope + "."
    return {k[len(prefix) :]: v for k, v in overrides.items() if k.startswith(prefix)}
