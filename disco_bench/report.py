"""``python -m disco_bench report``: LEADERBOARD.md, leaderboard.csv, results.csv and plots/ under
OUT, generated from ``OUT/results.jsonl`` alone (the pieces: ``disco_bench.leaderboard``)."""

from __future__ import annotations

from pathlib import Path

from disco_bench.leaderboard.export import cells_csv, records_csv
from disco_bench.leaderboard.markdown import COMMAND_SUITE, render
from disco_bench.results import read_records
from pretrain.checkpoint import atomic_write_text


def write_report(out: str | Path, command_suite: str | None = COMMAND_SUITE) -> Path:
    """LEADERBOARD.md, leaderboard.csv (paper-table cells), results.csv (every record) and plots/ under OUT."""
    out = Path(out)
    records = read_records(out / "results.jsonl")
    markdown, cells = render(records, out, command_suite=command_suite)
    board = atomic_write_text(out / "LEADERBOARD.md", markdown)
    if records:
        atomic_write_text(out / "results.csv", records_csv(records))
        atomic_write_text(out / "leaderboard.csv", cells_csv(cells))
    return board
