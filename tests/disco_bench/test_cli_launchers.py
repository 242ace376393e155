"""The CLI offers exactly the launchers the registry has (``launchers.LAUNCHERS``), and names them on a typo."""

from __future__ import annotations

import pytest

from disco_bench import launchers
from disco_bench.cli import build_parser, main


def accepts(launcher: str) -> bool:
    """Whether ``run --launcher LAUNCHER`` parses (argparse exits 2 on a name it was not offered)."""
    try:
        args = build_parser().parse_args(["run", "--suite", "smoke", "--launcher", launcher])
    except SystemExit as exc:
        assert exc.code == 2
        return False
    return args.launcher == launcher


def test_the_launcher_choices_follow_the_registry(monkeypatch, capsys):
    assert all(accepts(name) for name in launchers.LAUNCHERS)
    assert not accepts("kubernetes")
    capsys.readouterr()
    monkeypatch.setattr(
        launchers, "LAUNCHERS", (*launchers.LAUNCHERS, "kubernetes")
    )  # a launcher added later
    assert accepts("kubernetes")


def test_an_unknown_launcher_is_one_line_naming_the_registered_ones(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--suite", "smoke", "--out", str(tmp_path / "o"), "--launcher", "torchrunn"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: ") and "torchrunn" in err and all(name in err for name in launchers.LAUNCHERS)
    )
    assert "\n" not in err and not (tmp_path / "o").exists()
