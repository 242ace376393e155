"""``python -m disco_bench report``: LEADERBOARD.md, leaderboard.csv, results.csv and plots/ under
OUT, generated from ``OUT/results.jsonl`` alone. The records are read once into the tidy table
(``leaderboard.table``); every file is a view of it (the pieces: ``disco_bench.leaderboard``)."""

from __future__ import annotations

from pathlib import Path

from disco_bench.leaderboard.export import cells_csv
from disco_bench.leaderboard.markdown import render
from disco_bench.leaderboard.table import export_csv, tidy
from disco_bench.results import read_records
from infra.checkpoint import atomic_write_text


def write_report(out: str | Path) -> Path:
    """LEADERBOARD.md, leaderboard.csv (paper-table cells and every other pool of runs), results.csv
    (the tidy table: a row per measurement) and plots/ under OUT."""
    out = Path(out)
    df = tidy(read_records(out / "results.jsonl"))
    markdown, cells = render(df, out)
    board = atomic_write_text(out / "LEADERBOARD.md", markdown)
    if not df.empty:
        atomic_write_text(out / "results.csv", export_csv(df))
        atomic_write_text(out / "leaderboard.csv", cells_csv(cells, df))
    return board
