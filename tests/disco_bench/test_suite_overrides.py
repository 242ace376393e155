"""``run --set eval.ckpt=X pretrain.data=Y``: the dry run lists X and Y (not ``@teacher`` and the suite's
dataset), the step hashes change (a step done on the suite's own checkpoint or data is not done for
the override), records name the overriding folder, and a path that is not there stops the run
before anything is written."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest

from disco_bench.cli import main
from disco_bench.planning import build_context, plan
from disco_bench.suite import load_suite
from tests.pretrain.helpers import save_student

SUITE = (
    "name: tiny\n"
    "datasets:\n"
    "  d: {kind: imagefolder, path: d, generate: {classes: 3, train_per_class: 8, val_per_class: 4, image_size: 16}}\n"
    "steps:\n"
    "  - {id: s, kind: pretrain, with: {method: moco, student: test_resnet, data: d, epochs: 1, batch_size: 4,\n"
    "                                   image_size: 16, queue_size: 16, key_momentum: 0.9}}\n"
    "  - {id: e, kind: eval, task: linear, with: {ckpt: '@s', data: d, protocol: fast, image_size: 16}}\n"
)


@pytest.fixture()
def suite_file(tmp_path) -> Path:
    (tmp_path / "suite.yaml").write_text(SUITE)
    return tmp_path / "suite.yaml"


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_the_dry_run_lists_the_overriding_checkpoint_and_data(suite_file, tmp_path, tiny_imagefolder):
    ckpt = save_student(tmp_path / "other.pt")
    code, out, err = cli(
        "run", "--suite", str(suite_file), "--out", str(tmp_path / "o"), "--dry-run",
        "--set", f"eval.ckpt={ckpt}", f"pretrain.data={tiny_imagefolder}",
    )  # fmt: skip
    assert code == 0, err
    pretrain_lines, eval_lines = out.split("[2/2]")
    assert f"data {tiny_imagefolder} (--set pretrain.data)" in pretrain_lines
    assert "data d (" not in pretrain_lines
    assert f"of {ckpt}" in eval_lines and f"ckpt {ckpt} (--set eval.ckpt)" in eval_lines
    assert "@s" not in eval_lines


def hashes(suite_file: Path, out: Path, overrides: dict) -> dict[str, str]:
    suite = load_suite(str(suite_file))
    ctx = build_context(suite, out, None, overrides, progress=False, create=False)
    return {step.id: h for step, h in plan(suite, ctx)}


def test_an_override_of_a_path_changes_the_step_hash(suite_file, tmp_path, tiny_imagefolder):
    plain = hashes(suite_file, tmp_path / "o", {})
    data = hashes(suite_file, tmp_path / "o", {"pretrain.data": str(tiny_imagefolder)})
    ckpt = hashes(suite_file, tmp_path / "o", {"eval.ckpt": str(tmp_path / "x.pt")})
    assert data["s"] != plain["s"] and data["e"] != plain["e"]  # e reads s's checkpoint
    assert ckpt["s"] == plain["s"] and ckpt["e"] != plain["e"]


def test_records_name_the_overriding_data_folder(suite_file, tmp_path, tiny_imagefolder):
    data = Path(shutil.copytree(tiny_imagefolder, tmp_path / "digits"))
    code, _, err = cli(
        "run", "--suite", str(suite_file), "--out", str(tmp_path / "o"), "--quiet", "--only", "s",
        "--set", f"pretrain.data={data}",
    )  # fmt: skip
    assert code == 0, err
    text = (tmp_path / "o" / "results.jsonl").read_text()
    assert '"dataset": "digits"' in text and '"dataset": "d"' not in text
    assert f'"path": "{data.resolve()}"' in text


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("eval.ckpt={tmp}/nope.pt", "--set eval.ckpt={tmp}/nope.pt: not found; expected a file"),
        ("eval.ckpt={tmp}", "--set eval.ckpt={tmp}: a folder; expected a file"),
        ("pretrain.data={tmp}/nope", "--set pretrain.data={tmp}/nope: not found; expected a dataset folder"),
        ("pretrain.data={tmp}", "dataset folder not found: {tmp}/train"),
        ("pretrain.teacher_ckpt={tmp}/t.pt", "--set pretrain.teacher_ckpt={tmp}/t.pt: not found"),
    ],
)
def test_an_override_path_that_is_not_there_stops_the_run_before_anything_is_written(
    suite_file, tmp_path, setting, says
):
    tmp = tmp_path / "given"
    tmp.mkdir()
    code, _, err = cli(
        "run", "--suite", str(suite_file), "--out", str(tmp_path / "o"), "--quiet",
        "--set", setting.format(tmp=tmp),
    )  # fmt: skip
    assert code == 2 and err.startswith("error: " + says.format(tmp=tmp)) and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
