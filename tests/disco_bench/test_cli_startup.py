"""The commands a user tries first (``--help``, ``list``, ``report``) import no deep-learning
library: each such import costs seconds before the command can answer. Checked in a fresh
interpreter, by what is in ``sys.modules`` afterwards (not by a clock)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "timm", "matplotlib", "detectron2", "torchvision", "sklearn")


def heavy_modules_after(code: str) -> list[str]:
    """The HEAVY libraries a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_cli_and_building_its_parser_imports_no_heavy_library():
    assert heavy_modules_after("import disco_bench.cli as cli\ncli.build_parser()") == []


def test_help_of_every_command_imports_no_heavy_library():
    code = (
        "import contextlib, io\nimport disco_bench.cli as cli\n"
        "for argv in (['--help'], ['eval', '--help'], ['pretrain', '--help'], ['run', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        cli.main(argv)\n"
    )
    assert heavy_modules_after(code) == []


def test_list_imports_no_heavy_library():
    assert heavy_modules_after("import disco_bench.cli as cli\ncli.main(['list'])") == []


def test_report_and_the_modules_it_reads_records_with_import_no_torch(tmp_path):
    code = (
        "import disco_bench.cli as cli, disco_bench.results, disco_bench.leaderboard.markdown\n"
        f"assert cli.main(['report', '--out', {str(tmp_path)!r}]) == 0\n"
    )
    assert heavy_modules_after(code) == []
    assert (tmp_path / "LEADERBOARD.md").read_text().endswith("No records yet.\n")


def test_a_registry_imports_an_entry_when_it_is_looked_up():
    code = (
        "import sys\nfrom downstream.registry import TASKS\nfrom pretrain.methods import METHODS\n"
        "assert sorted(TASKS) and 'downstream.knn' not in sys.modules and 'pretrain.methods.moco' not in sys.modules\n"
        "import downstream.knn\nassert TASKS['knn'] is downstream.knn\n"
        "from pretrain.methods.moco import MoCo\nassert METHODS['moco'] is MoCo and METHODS.get('nope') is None\n"
    )
    assert "torch" in heavy_modules_after(code)  # looking a task up imported it (and torch with it)
