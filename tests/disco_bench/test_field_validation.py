"""Every typed config field is checked in one place (its class's rule table, infra.validation), so
every command that builds the config rejects a bad value the same way: exit 2, one ``error:`` line
naming the field and what is expected, no traceback, nothing left in ``--out``.

The cases are generated from the dataclass fields and their rules (a wrong type, then the rule's own
invalid examples: zero, negative, out of range, NaN, an unknown choice), so a new field is covered
by being added. The commands run in-process (a few milliseconds each); one case runs as a real
subprocess to show that the same holds at the process boundary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import disco_bench.embedded as embedded
import disco_bench.embedded_cifar as embedded_cifar
import disco_bench.embedded_detection as embedded_detection
import disco_bench.steps as steps
import downstream.config as eval_config
import pretrain.config as pretrain_config
from infra.validation import FieldError, wrong_type_value
from tests.pretrain.helpers import pretrain_args, run_main

ROOT = Path(__file__).resolve().parents[2]

# (config class, its rule table): every typed config a command builds from user input
CONFIGS = [
    (pretrain_config.PretrainConfig, pretrain_config.FIELD_RULES),
    (eval_config.EvalConfig, eval_config.FIELD_RULES),
    (embedded.EmbeddedConfig, embedded.FIELD_RULES),
    (embedded_cifar.EmbeddedCifarConfig, embedded_cifar.FIELD_RULES),
    (embedded_detection.EmbeddedDetectionConfig, embedded_detection.FIELD_RULES),
    (steps.InitConfig, steps.INIT_FIELD_RULES),
]


def bad_values(cls: type, name: str, rules: dict) -> list:
    hint = typing.get_type_hints(cls)[name]
    return [wrong_type_value(hint), *rules[name].bad_values()]


def as_yaml(value) -> str:
    """The text of ``--set key=TEXT`` that YAML reads back as ``value``."""
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    return json.dumps(value)


def cases_for(cls: type, rules: dict, first_only: bool = False) -> list[tuple[str, object]]:
    out = []
    for f in dataclasses.fields(cls):
        values = bad_values(cls, f.name, rules)
        out += [(f.name, v) for v in (values[:1] if first_only else values)]
    return out


# command -> (config class and rules, argv builder (tmp, key=value) -> argv, scope prefix of the key)
def pretrain_argv(tmp: Path, setting: str) -> list[str]:
    return pretrain_args(
        tmp / "data",
        tmp / "out",
        student="resnet10t",
        epochs=None,
        batch_size=None,
        image_size=None,
        sets=(setting,),
        save_every=None,
    )


def eval_argv(tmp: Path, setting: str) -> list[str]:
    return [
        "eval",
        "linear",
        "--ckpt",
        str(tmp / "ckpt.pt"),
        "--data",
        str(tmp / "data"),
        "--out",
        str(tmp / "out"),
        "--quiet",
        "--set",
        setting,
    ]


def data_argv(tmp: Path, setting: str) -> list[str]:
    return ["data", "make", "--out", str(tmp / "out"), "--set", setting]


def run_argv(tmp: Path, setting: str) -> list[str]:
    return ["run", "--suite", "smoke", "--out", str(tmp / "out"), "--quiet", "--set", setting]


def step_argv(tmp: Path, setting: str) -> list[str]:
    return [
        "step",
        "--suite",
        "smoke",
        "--step",
        "teacher",
        "--out",
        str(tmp / "out"),
        "--quiet",
        "--set",
        setting,
    ]


P, E = CONFIGS[0], CONFIGS[1]
COMMANDS = [
    # every field with every bad value where the config is the command's own ...
    ("pretrain", pretrain_argv, "", cases_for(*P)),
    ("eval", eval_argv, "", cases_for(*E)),
    ("data make", data_argv, "", cases_for(*CONFIGS[2])),
    # ... and each field once through a suite's scoped --set (the rules are the same objects)
    ("run", run_argv, "pretrain.", cases_for(*P, first_only=True)),
    ("run", run_argv, "eval.", cases_for(*E, first_only=True)),
    ("step", step_argv, "pretrain.", cases_for(*P, first_only=True)),
    ("step", step_argv, "eval.", cases_for(*E, first_only=True)),
]
CASES = [(cmd, build, scope, key, value) for cmd, build, scope, cases in COMMANDS for key, value in cases]


@pytest.mark.parametrize("cls, rules", CONFIGS, ids=[c.__name__ for c, _ in CONFIGS])
def test_every_field_has_exactly_one_rule_and_the_defaults_pass(cls, rules):
    assert set(rules) == {f.name for f in dataclasses.fields(cls)}
    cls()  # the defaults are valid


@pytest.mark.parametrize(
    "cmd, build, scope, key, value", CASES, ids=[f"{c[0]}-{c[2]}{c[3]}={as_yaml(c[4])}" for c in CASES]
)
def test_a_bad_value_of_any_field_is_one_line_exit_2_and_no_output(cmd, build, scope, key, value, tmp_path):
    code, err = run_main(build(tmp_path, f"{scope}{key}={as_yaml(value)}"))
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{scope}{key}=" in err and "expected" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cls, rules", CONFIGS, ids=[c.__name__ for c, _ in CONFIGS])
def test_the_same_rules_hold_when_built_in_python(cls, rules):
    for name, value in cases_for(cls, rules):
        with pytest.raises(FieldError) as exc:
            cls(**{name: value})
        assert exc.value.field == name and str(exc.value).startswith(f"{name}=")


def test_repeated_set_flags_merge(tmp_path):
    argv = pretrain_argv(tmp_path, "seed=0") + ["--set", "queue_size=0"]  # the second --set is not dropped
    code, err = run_main(argv)
    assert code == 2 and err.startswith("error: --set queue_size=0: expected an integer >= 1"), err


@pytest.mark.parametrize(
    "setting, hint",
    [("pretrian.epochs=1", "(did you mean pretrain.epochs?)")],  # no scope at all: test_errors.py
)
def test_a_suite_override_without_a_known_scope_is_an_error_naming_the_scopes(setting, hint, tmp_path):
    code, err = run_main(run_argv(tmp_path, setting))
    assert (
        code == 2
        and err
        == f"error: --set {setting.split('=')[0]}: a suite override needs a step-kind scope: "
        f"pretrain., eval. {hint}\n"
    ), err
    assert not (tmp_path / "out").exists()


def test_a_bad_value_is_one_line_at_the_process_boundary_too(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "disco_bench", *pretrain_argv(tmp_path, "distill_reduction=avg")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: --set distill_reduction='avg': expected one of sum, mean\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--retry", "-1"], "error: disco-bench run: argument --retry: -1: expected an integer >= 0\n"),
        (["--jobs", "0"], "error: --jobs 0: expected 1 or more steps at a time\n"),
        (
            ["--nproc", "0", "--launcher", "torchrun"],
            "error: --nproc 0: expected at least 1 process per step\n",
        ),
    ],
)
def test_run_only_flags_are_checked_before_anything_runs(flags, message, tmp_path):
    assert run_main(run_argv(tmp_path, "pretrain.seed=0") + flags) == (2, message)
    assert not (tmp_path / "out").exists()
