"""The suite runner on cheap fake steps: order, skip-done, resume, failure isolation, retry, --only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from disco_bench.results import read_records
from disco_bench.runner import run_suite
from disco_bench.suite import load_suite
from infra.errors import InputError

pytestmark = pytest.mark.usefixtures("fake_kind")


def write_suite(path: Path, step_list: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"name": "t", "steps": step_list}))
    return path


def chain(**params) -> list[dict]:
    """a -> b -> c, and d on its own; ``params[id]`` adds to that step's settings."""
    base = {"a": {}, "b": {"ckpt": "@a"}, "c": {"ckpt": "@b"}, "d": {}}
    return [
        {
            "id": k,
            "kind": "fake",
            "tags": ["odd" if k in "ac" else "even"],
            "with": {**v, **params.get(k, {})},
        }
        for k, v in base.items()
    ]


def run(tmp_path, step_list, **kwargs) -> tuple[int, list[str], Path]:
    out = tmp_path / "out"
    suite = load_suite(str(write_suite(tmp_path / "suite.yaml", step_list)))
    lines: list[str] = []
    code = run_suite(suite, out, None, {}, progress=False, echo=lines.append, **kwargs)
    return code, lines, out


def order(out: Path) -> list[str]:
    return (out / "order.txt").read_text().split() if (out / "order.txt").exists() else []


def status(lines: list[str], step: str) -> str:
    return next(
        line
        for line in lines
        if line.split(":")[0].endswith(f"] {step}")
        and ":" in line
        and any(w in line for w in ("finished", "FAILED", "skipped"))
    )


def test_steps_run_in_dependency_order_and_write_records(tmp_path):
    code, lines, out = run(tmp_path, chain())
    assert code == 0
    assert order(out) == ["a", "b", "c", "d"]
    assert sorted(r["step"] for r in read_records(out / "results.jsonl")) == ["a", "b", "c", "d"]
    assert (out / "LEADERBOARD.md").exists()


def test_done_steps_are_skipped_by_config_hash(tmp_path):
    run(tmp_path, chain())
    before = (tmp_path / "out" / "results.jsonl").read_text()
    code, lines, out = run(tmp_path, chain())
    assert code == 0 and order(out) == ["a", "b", "c", "d"]  # nothing ran again
    assert sum("skipped, already done" in line for line in lines) == 4
    assert (out / "results.jsonl").read_text() == before


def test_a_changed_config_reruns_the_step_and_everything_downstream(tmp_path):
    run(tmp_path, chain())
    code, lines, out = run(tmp_path, chain(b={"value": 1.0}))
    assert code == 0
    assert order(out)[4:] == ["b", "c"]  # a and d unchanged; c depends on b's hash


def test_an_interrupted_step_resumes_where_it_stopped(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, chain(b={"work": 5, "interrupt_at": 2}))
    out = tmp_path / "out"
    assert [r["step"] for r in read_records(out / "results.jsonl")] == ["a"]  # b left no record
    code, lines, out = run(tmp_path, chain(b={"work": 5, "interrupt_at": 2}))
    assert code == 0
    assert order(out) == ["a", "b", "b", "c", "d"]  # a was done; b started again
    b = next(r for r in read_records(out / "results.jsonl") if r["step"] == "b")
    assert b["value"] == 3.0  # units 2, 3, 4: resumed from its progress, not from zero


def test_a_failure_skips_its_dependants_and_the_rest_go_on(tmp_path):
    code, lines, out = run(tmp_path, chain(b={"fail_times": 99}))
    assert code == 1
    assert order(out) == ["a", "b", "d"]
    assert "FAILED: RuntimeError: b failed on purpose" in status(lines, "b")
    assert "skipped (needs b, which did not finish)" in status(lines, "c")
    assert "b failed on purpose" in (out / "logs" / "b.err").read_text()
    assert {r["step"] for r in read_records(out / "results.jsonl")} == {"a", "d"}
    assert "2 ran, 0 already done, 2 failed or skipped" in lines


def test_retry_runs_a_failed_step_again(tmp_path):
    code, lines, out = run(tmp_path, chain(b={"fail_times": 2}), retries=2)
    assert code == 0
    assert order(out).count("b") == 3
    assert sum("retrying" in line for line in lines) == 2


def test_retry_gives_up_after_n_more_attempts(tmp_path):
    code, lines, out = run(tmp_path, chain(b={"fail_times": 2}), retries=1)
    assert code == 1 and order(out).count("b") == 2


def test_bad_input_is_not_retried(tmp_path):
    code, lines, out = run(tmp_path, chain(b={"bad_input": True}), retries=3)
    assert code == 1 and order(out).count("b") == 1
    assert "InputError: step b: bad input" in status(lines, "b")


def test_only_pulls_in_dependencies(tmp_path):
    code, lines, out = run(tmp_path, chain(), only=["c"])
    assert code == 0 and order(out) == ["a", "b", "c"]  # d not selected


def test_only_skips_dependencies_that_are_done(tmp_path):
    run(tmp_path, chain(), only=["a"])
    code, lines, out = run(tmp_path, chain(), only=["c"])
    assert order(out) == ["a", "b", "c"]  # a ran once, in the first run
    assert any(line.startswith("[1/3] a: skipped, already done") for line in lines)


@pytest.mark.parametrize(
    ("pattern", "ran"), [("even", ["a", "b", "d"]), ("[cd]", ["a", "b", "c", "d"]), ("a*", ["a"])]
)
def test_only_matches_tags_and_globs(tmp_path, pattern, ran):
    code, lines, out = run(tmp_path, chain(), only=[pattern])  # tag 'even' is b and d; b needs a
    assert order(out) == ran


def test_only_with_no_match_is_one_line(tmp_path):
    with pytest.raises(InputError) as exc:
        run(tmp_path, chain(), only=["nope*"])
    assert "nope*" in str(exc.value) and "\n" not in str(exc.value)


def test_dry_run_lists_needs_produces_and_cost_and_runs_nothing(tmp_path):
    code, lines, out = run(tmp_path, chain(), dry_run=True)
    text = "\n".join(lines)
    assert code == 0 and not order(out)
    for step in "abcd":
        assert f"] {step} [todo]" in text
    assert "needs: @a" in text and "produces: records in" in text and "cost: ? GPU-h" in text
    assert "4 steps, 4 to run" in lines[-1]


def test_records_of_a_failed_run_are_kept(tmp_path):
    run(tmp_path, chain(c={"fail_times": 1}))
    code, lines, out = run(tmp_path, chain(c={"fail_times": 1}))
    assert code == 0  # the second attempt of c (its attempts file persists) succeeds
    assert order(out) == ["a", "b", "c", "d", "c"]
    assert json.loads((out / "results.jsonl").read_text().splitlines()[-1])["step"] == "c"


def test_the_fake_kind_comes_from_the_plugin_the_fixture_names(tmp_path, monkeypatch):
    from disco_bench.plugins import PLUGINS_VARIABLE
    from disco_bench.steps import STEP_KINDS

    assert "fake" not in STEP_KINDS  # the earlier tests' runs registered it; the fixture took it out again
    monkeypatch.delenv(PLUGINS_VARIABLE)
    with pytest.raises(InputError, match="unknown kind 'fake'; choose from checkpoint, eval, init, pretrain"):
        run(tmp_path, chain())
    monkeypatch.setenv(PLUGINS_VARIABLE, "fake_steps")
    assert run(tmp_path, chain())[0] == 0 and "fake" in STEP_KINDS


@pytest.mark.parametrize(
    ("plugins", "why"),
    [
        ("no_such_plugin", "cannot import 'no_such_plugin'"),
        ("json", "module 'json' has no register_step_kinds()"),
    ],
)
def test_a_plugin_that_cannot_be_loaded_is_one_error_line(tmp_path, monkeypatch, capsys, plugins, why):
    from disco_bench.cli import main

    monkeypatch.setenv("DISCO_BENCH_PLUGINS", plugins)
    code = main(["run", "--suite", "smoke", "--out", str(tmp_path / "o"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert (
        err.startswith(f"error: DISCO_BENCH_PLUGINS={plugins}: {why}") and "expected comma-separated" in err
    )
