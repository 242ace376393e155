"""A suite that builds on another (``include: BASE``) run with ``--reuse BASE_OUT`` takes the base
run's finished steps (records, checkpoints, eval folders) instead of running them again, and runs
only what it adds; ``--dataset KEY=PATH`` puts a user's folder in the place of a suite dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from disco_bench.cli import main
from disco_bench.results import read_records
from disco_bench.runner import run_suite
from disco_bench.suite import give_datasets, load_suite
from infra.errors import InputError

TINY = {
    "kind": "imagefolder",
    "path": "tiny",
    "generate": {"classes": 3, "train_per_class": 6, "val_per_class": 3, "image_size": 16, "seed": 4},
}
BASE = {
    "name": "base",
    "datasets": {"tiny": TINY},
    "defaults": {"eval": {"protocol": "fast", "image_size": 16}},
    "steps": [
        {"id": "init", "kind": "init", "with": {"student": "resnet10t", "seed": 3, "hidden": 64}},
        {"id": "work", "kind": "fake", "with": {"ckpt": "@init"}},
        {"id": "tsne", "kind": "fake", "with": {"value": 1.0}},
    ],
}
MORE = {
    "name": "more",
    "include": "base.yaml",
    "steps": [{"id": "extra", "kind": "fake", "with": {"ckpt": "@init"}}],
}


def _write(folder: Path, name: str, content: dict) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(content))
    return path


def _run(suite_file: Path, out: Path, **kwargs) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = run_suite(
        load_suite(str(suite_file)),
        out,
        None,
        {},
        progress=False,
        echo=lines.append,
        **kwargs,
    )
    return code, lines


def _order(out: Path) -> list[str]:
    return (out / "order.txt").read_text().split() if (out / "order.txt").exists() else []


@pytest.fixture
def base_run(tmp_path, fake_kind):
    _write(tmp_path, "base.yaml", BASE)
    more = _write(tmp_path, "more.yaml", MORE)
    base_out = tmp_path / "base-out"
    code, _ = _run(tmp_path / "base.yaml", base_out)
    assert code == 0
    (base_out / "eval" / "tsne").mkdir(parents=True)
    (base_out / "eval" / "tsne" / "picture.png").write_bytes(b"png")
    return tmp_path, more, base_out


def test_an_including_suite_starts_with_the_base_steps_and_shares_its_defaults(tmp_path):
    _write(tmp_path, "base.yaml", BASE)
    suite = load_suite(str(_write(tmp_path, "more.yaml", MORE)))
    assert [s.id for s in suite.steps] == ["init", "work", "tsne", "extra"]
    assert suite.defaults == BASE["defaults"] and suite.datasets == BASE["datasets"]
    assert suite.includes == "base" and suite.steps[-1].needs == ["init"]


def test_reuse_takes_the_base_runs_steps_and_runs_only_the_new_one(base_run):
    folder, more, base_out = base_run
    out = folder / "more-out"
    code, lines = _run(more, out, reuse=base_out)
    assert code == 0
    assert _order(out) == ["extra"]  # nothing of the base ran again
    assert sum(": taken from" in line for line in lines) == 3
    assert "1 ran, 0 already done, 3 taken from --reuse, 0 failed or skipped" in lines
    theirs = {r["id"]: r for r in read_records(base_out / "results.jsonl")}
    mine = {r["id"]: r for r in read_records(out / "results.jsonl")}
    assert {i: mine[i] for i in theirs} == theirs  # the base's records, unchanged
    assert {r["step"] for r in mine.values()} == {"init", "work", "tsne", "extra"}
    ckpt, their_ckpt = out / "checkpoints/init/final.pt", base_out / "checkpoints/init/final.pt"
    assert ckpt.read_bytes() == their_ckpt.read_bytes()
    assert (out / "eval/tsne/picture.png").read_bytes() == b"png"
    shutil.rmtree(base_out)  # the new folder stands alone
    code, lines = _run(more, out)
    assert code == 0 and sum("skipped, already done" in line for line in lines) == 4 and ckpt.exists()


def test_a_step_whose_config_differs_from_the_base_runs_is_run_not_taken(base_run):
    folder, more, base_out = base_run
    changed = {**BASE, "steps": [*BASE["steps"][:2], {"id": "tsne", "kind": "fake", "with": {"value": 2.0}}]}
    _write(folder, "base.yaml", changed)
    code, lines = _run(more, folder / "more-out", reuse=base_out)
    assert code == 0 and _order(folder / "more-out") == ["tsne", "extra"]


def test_a_step_whose_checkpoint_is_gone_from_the_base_run_is_run(base_run):
    folder, more, base_out = base_run
    os.remove(base_out / "checkpoints/init/final.pt")
    code, lines = _run(more, folder / "more-out", reuse=base_out)
    assert code == 0
    assert not any(line.startswith("[1/4] init: taken") for line in lines)
    assert any(line.startswith("[1/4] init: finished") for line in lines)


def test_the_dry_run_marks_what_would_be_taken(base_run):
    folder, more, base_out = base_run
    lines: list[str] = []
    run_suite(load_suite(str(more)), folder / "o", None, {}, dry_run=True, echo=lines.append, reuse=base_out)
    assert [line.split()[2] for line in lines if line.startswith("[")] == ["[reuse]"] * 3 + ["[todo]"]
    assert not (folder / "o" / "results.jsonl").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"defaults": {"eval": {"image_size": 32}}}, "unknown key 'defaults'"),
        ({"datasets": {"tiny": TINY}}, "datasets.tiny: already defined by the included suite base"),
        ({"steps": [{"id": "work", "kind": "fake"}]}, "duplicate step id 'work'"),
        ({"include": "more.yaml"}, "which leads back to this file (a cycle)"),
    ],
)
def test_an_including_suite_that_would_change_the_base_is_one_line(tmp_path, change, message):
    _write(tmp_path, "base.yaml", BASE)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_suite(str(_write(tmp_path, "more.yaml", {**MORE, **change})))


def test_reuse_of_a_folder_without_records_is_one_line(tmp_path, capsys):
    _write(tmp_path, "base.yaml", BASE)
    (tmp_path / "empty").mkdir()
    code = main(["run", "--suite", str(tmp_path / "base.yaml"), "--out", str(tmp_path / "o"), "--reuse",
                 str(tmp_path / "empty"), "--dry-run"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: --reuse {tmp_path / 'empty'}: expected a run's output folder holding "
                                 "results.jsonl; found none"]  # fmt: skip


def test_a_given_dataset_replaces_the_suites_and_is_named_after_its_folder(tmp_path):
    _write(tmp_path, "base.yaml", BASE)
    mine = tmp_path / "flowers"
    mine.mkdir()
    suite = give_datasets(load_suite(str(tmp_path / "base.yaml")), {"tiny": str(mine)})
    assert suite.datasets["tiny"] == {"kind": "imagefolder", "path": str(mine.resolve()), "name": "flowers"}
    assert suite.dataset_name("tiny") == "flowers" and suite.given == {"tiny": str(mine)}


@pytest.mark.parametrize(
    "given, message",
    [
        ({"other": "."}, "--dataset other=.: suite base has no dataset 'other'; its datasets: tiny"),
        ({"tiny": "no/such/folder"}, "--dataset tiny=no/such/folder: expected a folder"),
    ],
)
def test_a_bad_given_dataset_is_one_line(tmp_path, given, message):
    _write(tmp_path, "base.yaml", BASE)
    with pytest.raises(InputError, match=message):
        give_datasets(load_suite(str(tmp_path / "base.yaml")), given)


def test_a_given_dataset_enters_the_hash_of_the_steps_that_read_it(tmp_path):
    from disco_bench.planning import build_context, plan

    base = dict(
        BASE,
        steps=[{"id": "probe", "kind": "eval", "task": "linear", "with": {"ckpt": "@x", "data": "tiny"}}],
    )
    base["steps"].insert(0, {"id": "x", "kind": "init", "with": {"student": "resnet10t"}})
    suite = load_suite(str(_write(tmp_path, "base.yaml", base)))
    mine = tmp_path / "mine"
    mine.mkdir()

    def hashes(s):
        ctx = build_context(s, tmp_path / "o", None, {}, progress=False, create=False)
        return dict((step.id, h) for step, h in plan(s, ctx))

    generated, given = hashes(suite), hashes(give_datasets(suite, {"tiny": str(mine)}))
    assert generated["x"] == given["x"] and generated["probe"] != given["probe"]


def test_a_given_dataset_reaches_the_process_that_runs_a_step():
    from disco_bench.cli import _given_datasets, build_parser
    from disco_bench.launchers import step_command
    from disco_bench.step_request import StepRequest

    request = StepRequest(suite="cpu", step="moco-a-s0", out="o", datasets={"a": "/data/mine"})
    cmd = step_command(request, Path("r.json"))
    args = build_parser().parse_args(cmd[cmd.index("step") :])
    assert _given_datasets(args.dataset) == {"a": "/data/mine"}
