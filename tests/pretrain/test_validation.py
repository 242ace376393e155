"""infra.validation: the type coercion and the rules every config field goes through."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from infra.validation import (
    FREE,
    Each,
    FieldError,
    OneOf,
    OrNull,
    Range,
    at_least,
    coerce,
    fraction,
    positive,
    validate_fields,
)


@pytest.mark.parametrize(
    "hint, given, expected",
    [
        (float, 3, 3.0),  # YAML reads 3 as an int
        (float, "1e-4", 1e-4),  # YAML 1.1 reads 1e-4 as a string
        (tuple[int, ...], [20, 200], (20, 200)),
        (tuple[float, float], [0.1, 1], (0.1, 1.0)),
        (list[str], ["a", "b"], ["a", "b"]),
        (int | None, None, None),
        (bool, False, False),
    ],
)
def test_lossless_coercions(hint, given, expected):
    got = coerce(hint, given, "f")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "hint, given, message",
    [
        (int, True, "f=True: expected an integer"),  # a bool is not a count
        (int, 2.5, "f=2.5: expected an integer"),
        (bool, "yes please", "f='yes please': expected true or false"),
        (str, [1, 2], "f=[1, 2]: expected a string"),
        (tuple[int, ...], ["a", "b"], "f=['a', 'b']: expected a list of integers"),
        (tuple[float, float], [0.5], "f=[0.5]: expected a list of 2 numbers"),
        (int | None, "x", "f='x': expected an integer or null"),
        (float, None, "f=null: expected a number"),
    ],
)
def test_wrong_types_name_the_field_value_and_type(hint, given, message):
    with pytest.raises(FieldError) as exc:
        coerce(hint, given, "f")
    assert str(exc.value) == message and exc.value.field == "f"


def test_ranges_say_what_is_expected_and_reject_nan_and_inf():
    assert at_least(1).check(1) is None and at_least(1).check(0) == "an integer >= 1"
    assert positive().check(0.0) == "a number > 0" and positive().check(1e-9) is None
    assert fraction(low_open=True).check(0.0) == "a number > 0 and <= 1" and fraction().check(1.0) is None
    assert fraction(high_open=True).check(1.0) == "a number >= 0 and < 1"
    assert positive().check(math.nan) == "a finite number > 0"
    assert positive().check(math.inf) == "a finite number > 0"
    assert (
        OrNull(at_least(1)).check(None) is None and OrNull(at_least(1)).check(0) == "null or an integer >= 1"
    )
    assert OneOf(("sum", "mean")).check("avg") == "one of sum, mean"
    assert Each(at_least(1)).check(()) == "a non-empty list, each item an integer >= 1"
    assert Each(fraction(low_open=True), ordered=True).check((0.5, 0.2)).endswith("in increasing order")


def test_bad_examples_fail_their_own_rule():
    for rule in (
        at_least(0),
        at_least(1),
        positive(),
        fraction(),
        fraction(low_open=True, high_open=True),
        Range(low=2, high=11, integer=True),
        OneOf(("a", "b")),
        OrNull(at_least(1)),
        Each(at_least(1)),
        Each(fraction(low_open=True), ordered=True),
    ):
        assert rule.bad_values(), rule
        for value in rule.bad_values():
            assert rule.check(value if not isinstance(value, list) else tuple(value)), (rule, value)


@dataclass
class Tiny:
    steps: int = 1
    lr: float = 0.1
    name: str = "x"

    def __post_init__(self):
        validate_fields(self, {"steps": at_least(1), "lr": positive(), "name": FREE})


@dataclass
class Unruled:
    steps: int = 1

    def __post_init__(self):
        validate_fields(self, {})


def test_validate_fields_coerces_in_place_and_reports_the_first_bad_field():
    assert Tiny(lr=2).lr == 2.0 and isinstance(Tiny(lr=2).lr, float)
    with pytest.raises(FieldError, match=r"^steps=0: expected an integer >= 1$"):
        Tiny(steps=0, lr=-1.0)


def test_a_field_without_a_rule_is_a_programming_error():
    with pytest.raises(TypeError, match="Unruled.steps has no validation rule"):
        Unruled()


def _methods() -> list[str]:
    from pretrain.methods import METHODS

    return sorted(METHODS)


@pytest.mark.parametrize("method", _methods())
def test_every_method_takes_a_teacher_exactly_when_it_reads_one(method):
    """Built with a teacher whatever it declares, a method's forward calls that teacher exactly when
    the method says it needs one, and the config asks for a teacher file exactly then."""
    from infra.errors import InputError
    from pretrain.config import PretrainConfig
    from pretrain.methods import METHODS
    from pretrain.models import build_backbone
    from tests.pretrain.helpers import tiny_cfg, tiny_teacher, views_for

    cfg = tiny_cfg(method, image_size=16)
    teacher = tiny_teacher(dim=cfg.dim)
    calls = []
    teacher.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    torch.manual_seed(0)
    built = METHODS[method](cfg, build_backbone(cfg.student), teacher).train()
    out = built(views_for(built, batch=4))
    assert torch.isfinite(out["loss"])
    reads_one = bool(calls)
    assert METHODS[method].needs_teacher == reads_one, (
        f"{method}: forward called the teacher {len(calls)} times"
    )

    given, missing = PretrainConfig(method=method, teacher_ckpt="t.pt"), PretrainConfig(method=method)
    if reads_one:
        given.check_teacher()
        with pytest.raises(InputError, match="needs a teacher"):
            missing.check_teacher()
    else:
        missing.check_teacher()
        with pytest.raises(FieldError, match=f"method '{method}' takes no teacher"):
            given.check_teacher()


def test_a_teacher_may_come_before_the_method_that_reads_it_and_the_finished_config_must_agree():
    from disco_bench.config import replace
    from infra.errors import InputError
    from pretrain.config import PretrainConfig

    # the CLI's flags (--teacher-ckpt) before its --set method=disco; a suite's defaults before its step
    finished = replace(PretrainConfig(teacher_ckpt="t.pt"), {"method": "disco"})
    finished.check_teacher()
    with pytest.raises(FieldError, match=r"^teacher_ckpt=t.pt: method 'moco' takes no teacher; drop it"):
        PretrainConfig(teacher_ckpt="t.pt").check_teacher()
    with pytest.raises(InputError, match=r"^method 'disco' needs a teacher: pass --teacher-ckpt PATH$"):
        PretrainConfig(method="disco").check_teacher()
