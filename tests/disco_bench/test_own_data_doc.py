"""docs/own-data.md: every command in it parses as written, and its suite file loads and dry-runs
on a data root laid out as the page says."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from disco_bench.cli import build_parser, main

DOC = Path(__file__).resolve().parents[2] / "docs" / "own-data.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def commands() -> list[list[str]]:
    """Each ``python -m disco_bench ...`` of the bash blocks, continuation lines joined, as argv."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line)
            if words[:3] == ["python", "-m", "disco_bench"]:
                found.append(words[3:])
    return found


def test_the_page_has_its_five_cases():
    assert len(commands()) >= 9 and len(blocks("yaml")) == 1
    kinds = {argv[0] if argv[0] != "eval" else f"eval {argv[1]}" for argv in commands()}
    assert {"pretrain", "eval linear", "eval detection", "eval knn", "run", "report"} <= kinds


@pytest.mark.parametrize("argv", commands(), ids=lambda argv: " ".join(argv[:2]))
def test_every_command_parses_as_written(argv):
    build_parser().parse_args(argv)  # an unknown flag or a bad choice exits 2


def test_the_suite_loads_and_dry_runs_on_the_data_root_the_page_describes(tmp_path, tiny_imagefolder, capsys):
    from tests.pretrain.helpers import save_student

    suite = tmp_path / "my_suite.yaml"
    suite.write_text(blocks("yaml")[0])
    root = tmp_path / "data"
    shutil.copytree(tiny_imagefolder, root / "mydata")
    (root / "teachers").mkdir()
    save_student(root / "teachers" / "moco_v2_200ep_pretrain.pth.tar")
    dry_run = next(argv for argv in commands() if argv[0] == "run" and "--dry-run" in argv)
    argv = [a.replace("~/data", str(root)).replace("runs/suite", str(tmp_path / "out")) for a in dry_run]
    assert main([a if a != "my_suite.yaml" else str(suite) for a in argv]) == 0
    listing = capsys.readouterr().out
    assert "8 steps, 8 to run" in listing and "size of the dataset unknown" not in listing


def test_the_one_hour_tier_runs_on_the_folder_the_page_names(tmp_path, tiny_imagefolder, capsys):
    own = next(argv for argv in commands() if argv[:3] == ["run", "--suite", "cpu"])
    mine = tmp_path / "mydata"
    shutil.copytree(tiny_imagefolder, mine)
    argv = [
        a.replace("~/data/mydata", str(mine)).replace("runs/cpu-mine", str(tmp_path / "out")) for a in own
    ]
    assert main([*argv, "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert f"data a ({mine.resolve()})" in listing and "embedded-cpu-b" not in listing
    assert "teacher-a [todo]" in listing and "teacher-b" not in listing
