"""The CLI offers exactly the launchers the registry has (``launchers.LAUNCHERS``), and names them on a typo."""

from __future__ import annotations

import pytest

from disco_bench import launchers
from disco_bench.cli import build_parser, main


def launcher_choices() -> list[str]:
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    return list(next(a for a in run._actions if a.dest == "launcher").choices)


def test_the_launcher_choices_follow_the_registry(monkeypatch):
    assert launcher_choices() == list(launchers.LAUNCHERS)
    monkeypatch.setattr(
        launchers, "LAUNCHERS", (*launchers.LAUNCHERS, "kubernetes")
    )  # a launcher added later
    assert launcher_choices()[-1] == "kubernetes"


def test_an_unknown_launcher_is_one_line_naming_the_registered_ones(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--suite", "smoke", "--out", str(tmp_path / "o"), "--launcher", "torchrunn"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: ") and "torchrunn" in err and all(name in err for name in launchers.LAUNCHERS)
    )
    assert "\n" not in err and not (tmp_path / "o").exists()
