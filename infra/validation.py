"""Field-by-field validation of the typed configs: each field carries its own rule.

A field of a typed config is declared once, with :func:`setting`: its default, its rule, whether
it changes numbers (is part of the protocol a record carries) and who reads it (which methods or
tasks); the rule tables, protocol filters and "does this setting apply" checks are derived from
that declaration. A config calls :func:`validate_fields` from ``__post_init__``, so every way of
building it (the CLI, ``--set``, a suite step, Python) checks every field in this one place. A value is first checked
against the field's type hint (YAML-typed ``--set`` values are coerced where that is lossless:
``3`` for a float, ``[1, 2]`` for a tuple), then against its rule. A bad value is a
:class:`FieldError` naming the field, the value and what was expected, in one line.

The rules also hand out invalid examples (``bad_values``), so one test can drive every command
with a bad value of every field, and a new field is covered by adding its rule.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from infra.errors import InputError


class FieldError(InputError):
    """A config field holds a bad value; ``field`` names it (callers prefix where the value came from)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# --- types ------------------------------------------------------------------------------------------


_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURAL.get(args[0], 'values')}"
        return f"a list of {len(args)} {_PLURAL.get(args[0], 'values')}"
    if origin is list:
        return f"a list of {_PLURAL.get(args[0], 'values')}" if args else "a list"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        dict: "a mapping",
    }.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce_one(hint: Any, value: Any) -> tuple[bool, Any]:
    """(True, value as ``hint``) or (False, None) when ``value`` is not of that type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    base = origin or hint
    if hint is Any:
        return True, value
    if base is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot, no sign) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if base is int:
        return (True, value) if isinstance(value, int) and not isinstance(value, bool) else (False, None)
    if base is bool:
        return (True, value) if isinstance(value, bool) else (False, None)
    if base is str:
        return (True, value) if isinstance(value, str) else (False, None)
    if base is dict:
        return (True, value) if isinstance(value, dict) else (False, None)
    if base in (tuple, list):
        if not isinstance(value, list | tuple):
            return False, None
        if (
            base is tuple
            and args
            and not (len(args) == 2 and args[1] is Ellipsis)
            and len(args) != len(value)
        ):
            return False, None
        items = []
        for i, item in enumerate(value):
            item_hint = (args[0] if base is list or args[-1] is Ellipsis else args[i]) if args else Any
            ok, item = _coerce_one(item_hint, item)
            if not ok:
                return False, None
            items.append(item)
        return True, (tuple(items) if base is tuple else items)
    return (True, value) if isinstance(value, base) else (False, None)


def coerce(hint: Any, value: Any, name: str, where: str = "") -> Any:
    """``value`` as the type ``hint`` names (see the module doc), or a FieldError naming ``name``."""
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        ok, converted = _coerce_one(option, value)
        if ok:
            return converted
    raise FieldError(name, f"{where}{name}={_show(value)}: expected {_type_name(hint)}")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


# --- rules ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Free:
    """Any value of the field's type (paths, names resolved elsewhere, free text)."""

    def check(self, value: Any) -> str | None:
        return None

    def bad_values(self) -> list[Any]:
        return []


@dataclass(frozen=True)
class Range:
    """A finite number within bounds; ``low_open``/``high_open`` exclude the bound itself."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False  # for the examples only: whole numbers

    def expected(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_num(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_num(self.high)}")
        kind = "an integer" if self.integer else "a number"
        return f"{kind} {' and '.join(parts)}" if parts else kind

    def check(self, value: Any) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return f"a finite {self.expected()[2:]}"
        ok = True
        if self.low is not None:
            ok &= value > self.low if self.low_open else value >= self.low
        if self.high is not None:
            ok &= value < self.high if self.high_open else value <= self.high
        return None if ok else self.expected()

    def bad_values(self) -> list[Any]:
        out = []
        if self.low is not None:
            below = self.low if self.low_open else self.low - 1
            out.append(int(below) if self.integer else below)
            if self.low >= 0:
                out.append(-4 if self.integer else -4.0)
        if self.high is not None:
            above = self.high if self.high_open else self.high + 1
            out.append(int(above) if self.integer else above)
        if not self.integer:
            out.append(float("nan"))
        return list(dict.fromkeys(out))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# a run's seed: torch generators take 64 bits and the samplers derive seed * 1_000_003 + epoch from it
SEED = Range(low=0, high=2**32 - 1, integer=True)


def at_least(low: float) -> Range:
    return Range(low=low, integer=isinstance(low, int))


def positive() -> Range:
    return Range(low=0.0, low_open=True)


def fraction(low_open: bool = False, high_open: bool = False) -> Range:
    return Range(low=0.0, high=1.0, low_open=low_open, high_open=high_open)


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of names; ``options`` may be a callable (a registry read when checked)."""

    options: Sequence[str] | Callable[[], Sequence[str]]

    def names(self) -> list[str]:
        return list(self.options() if callable(self.options) else self.options)

    def check(self, value: Any) -> str | None:
        return None if value in self.names() else f"one of {', '.join(self.names())}"

    def bad_values(self) -> list[Any]:
        return ["bogus"]


@dataclass(frozen=True)
class Device:
    """auto | cpu | cuda, where cuda needs a visible CUDA device (auto falls back to the CPU)."""

    def check(self, value: Any) -> str | None:
        if value not in ("auto", "cpu", "cuda"):
            return "one of auto, cpu, cuda"
        if value == "cuda" and not _cuda_available():
            return "auto or cpu (no CUDA device is visible to this process)"
        return None

    def bad_values(self) -> list[Any]:
        return ["bogus"] + ([] if _cuda_available() else ["cuda"])


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class Each:
    """A non-empty list whose every item passes ``rule``; ``length`` fixes its size."""

    rule: Range
    ordered: bool = False  # items must not decrease (e.g. a (min, max) scale range)

    def check(self, value: Any) -> str | None:
        what = f"a non-empty list, each item {self.rule.expected()}" + (
            ", in increasing order" if self.ordered else ""
        )
        if not value or any(self.rule.check(v) for v in value):
            return what
        if self.ordered and any(a > b for a, b in zip(value, value[1:])):
            return what
        return None

    def bad_values(self) -> list[Any]:
        bad = self.rule.bad_values()[0]
        return [[bad, bad] if not self.ordered else [bad, 1]]


@dataclass(frozen=True)
class OrNull:
    """``None`` or a value passing ``rule`` (None usually means "the default of the task/method")."""

    rule: Range | OneOf

    def check(self, value: Any) -> str | None:
        if value is None:
            return None
        problem = self.rule.check(value)
        return f"null or {problem}" if problem else None

    def bad_values(self) -> list[Any]:
        return self.rule.bad_values()


Rule = Free | Range | OneOf | Device | Each | OrNull
FREE = Free()


# metadata keys of a field declared with setting()
RULE, PROTOCOL, READERS = "rule", "protocol", "readers"


def setting(
    default: Any = dataclasses.MISSING,
    rule: Rule = FREE,
    *,
    protocol: bool = True,
    readers: Any = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A config field declared once: its default (or ``factory`` for a mutable one), its ``rule``,
    whether it changes numbers (``protocol``: recorded with them) and who reads it (``readers``:
    None for every reader; otherwise what the owning config's applicability check understands)."""
    metadata = {RULE: rule, PROTOCOL: protocol, READERS: readers}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def field_rules(cls: type) -> dict[str, Rule]:
    """name -> rule of every field of ``cls`` declared with :func:`setting`."""
    return {f.name: f.metadata[RULE] for f in dataclasses.fields(cls) if RULE in f.metadata}


@functools.cache
def protocol_fields(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` that change numbers (declared ``protocol=True``), in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(PROTOCOL))


@functools.cache
def readers_of(cls: type) -> dict[str, Any]:
    """name -> the ``readers`` declared for each field of ``cls``."""
    return {f.name: f.metadata.get(READERS) for f in dataclasses.fields(cls)}


def validate_fields(obj: Any, rules: dict[str, Rule] | None = None) -> None:
    """Coerce and check every field of dataclass ``obj`` in place; the first bad one is a FieldError.

    ``rules``: name -> rule; by default each field's own (declared with :func:`setting`). Every
    field must have a rule: a field added without one is a programming error, caught here.
    """
    if rules is None:
        rules = field_rules(type(obj))
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name not in rules:
            raise TypeError(
                f"{type(obj).__name__}.{f.name} has no validation rule; add one to its rule table"
            )
        given = getattr(obj, f.name)
        value = coerce(hints[f.name], given, f.name)
        problem = (
            rules[f.name].check(value) if value is not None or isinstance(rules[f.name], OrNull) else None
        )
        if problem:
            raise FieldError(f.name, f"{f.name}={_show(given)}: expected {problem}")
        setattr(obj, f.name, value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # evaluates every annotation: once per class, not per config built


def wrong_type_value(hint: Any) -> Any:
    """A value no field of type ``hint`` accepts (for the tests that drive every field)."""
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    bases = {typing.get_origin(o) or o for o in options}
    if bases & {str}:
        return [1, 2]
    if bases & {tuple, list}:
        inner = [typing.get_args(o) for o in options if (typing.get_origin(o) or o) in (tuple, list)][0]
        return "abc" if not inner or inner[0] is str else ["a", "b"]
    if bases & {bool}:
        return "maybe"
    return "abc"
