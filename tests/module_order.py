"""The order test modules go out to xdist workers: longest first, by how long each took in a whole
run (``tests/module_durations.json``, setup, call and teardown summed, module fixtures included, written
by ``pytest -n auto --dist loadscope --store-module-durations``). It only orders the modules; a module
the file does not list runs after those it does."""

from __future__ import annotations

import json
from pathlib import Path

MODULE_DURATIONS = Path(__file__).with_name("module_durations.json")


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def recorded(durations: Path = MODULE_DURATIONS) -> dict[str, float]:
    """Seconds per module as the file lists them ({} without the file)."""
    return json.loads(durations.read_text()) if durations.exists() else {}


def longest_first(items: list, durations: Path = MODULE_DURATIONS) -> None:
    """Sort ``items`` (pytest items) in place, longest module first: the greedy order that leaves the
    least for the last worker. Tests inside a module, and modules that took equally long, keep their order."""
    seconds = recorded(durations)
    items.sort(key=lambda item: -seconds.get(module_of(item.nodeid), 0.0))


def store(seconds_by_module: dict[str, float], durations: Path = MODULE_DURATIONS) -> None:
    """Update the file with the modules this run measured; the others keep their entries (a run of a few
    files, or one stopped early, changes only what it ran)."""
    ranked = sorted((recorded(durations) | seconds_by_module).items(), key=lambda kv: (-kv[1], kv[0]))
    durations.write_text(json.dumps({m: round(s, 1) for m, s in ranked}, indent=1) + "\n")
