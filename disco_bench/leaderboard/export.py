"""The CSV files beside LEADERBOARD.md: every paper cell (leaderboard.csv), every record (results.csv)."""

from __future__ import annotations

import pandas as pd

from disco_bench.leaderboard.cells import Cell


def cells_csv(cells: list[Cell]) -> str:
    rows = [
        {
            "table": c.table,
            "student": c.student,
            "column": c.column,
            "ours_mean": c.mean,
            "ours_std": c.std,
            "n": len(c.records),
            "paper": c.paper,
            "delta": None if c.mean is None or c.paper is None else c.mean - c.paper,
            "setting": c.setting or "",
            "other_settings": len(c.other_pools),
            "records": " ".join(r["id"] for r in c.records),
            "fill_command": c.command or "",
        }
        for c in cells
    ]
    return pd.DataFrame(rows).to_csv(index=False)


def records_csv(records: list[dict]) -> str:
    """One row per record, its protocol and artifacts left out (they are in results.jsonl)."""
    return pd.DataFrame(
        [{k: v for k, v in r.items() if k not in ("protocol", "artifacts", "run")} for r in records]
    ).to_csv(index=False)
