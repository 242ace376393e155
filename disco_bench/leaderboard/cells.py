"""The paper tables' cells. A cell holds one pool of runs: the records that fill it (its setting,
``matching.cell_matches``) and share every setting but the seed (``matching.setting_id``). When
records of several such settings fill a cell (e.g. the same protocol on two accelerators), the
largest pool is shown and the others are counted."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from disco_bench.leaderboard.matching import cell_matches
from disco_bench.leaderboard.paper import PaperTable
from disco_bench.leaderboard.table import rows_of


def fmt(values: pd.Series | list[float]) -> str:
    """Two decimals, or three significant digits when the mean is small (a mean-reduced loss of 0.0012)."""
    values = pd.Series(list(values), dtype=float)
    mean = values.mean()
    spec = ".3g" if mean != 0 and abs(mean) < 0.1 else ".2f"
    if len(values) > 1:
        return f"{mean:{spec}} ± {values.std(ddof=1):{spec}} (n={len(values)})"
    return f"{mean:{spec}}"


def setting_link(sid: str) -> str:
    return f"[setting {sid}](#setting-{sid})"


@dataclass
class Cell:
    table: str
    student: str
    column: str
    paper: float | None
    records: list[dict] = field(default_factory=list)  # the pool shown
    command: str | None = None
    other_pools: list[list[dict]] = field(default_factory=list)  # records of other settings that also fit
    setting: str | None = None  # the pool's setting id (the tidy table's ``setting``)

    @property
    def mean(self) -> float | None:
        return sum(r["value"] for r in self.records) / len(self.records) if self.records else None

    @property
    def std(self) -> float | None:
        return (
            float(pd.Series([r["value"] for r in self.records]).std(ddof=1))
            if len(self.records) > 1
            else None
        )

    def text(self) -> str:
        paper = "" if self.paper is None else f"paper {self.paper:.1f}"
        if self.records:
            delta = f", Δ {self.mean - self.paper:+.2f}" if self.paper is not None else ""
            others = (
                f"; {len(self.other_pools)} more setting{'s' * (len(self.other_pools) > 1)} in the per-task tables"
                if self.other_pools
                else ""
            )
            return (
                fmt([r["value"] for r in self.records])
                + (" (n=1)" if len(self.records) == 1 else "")  # how many runs the cell pools, always said
                + (f" ({paper}{delta})" if paper else "")
                + f" {setting_link(self.setting)}{others}"
            )
        fill = f" `{self.command}`" if self.command else " (no step in the suites yet)"
        return "—" + (f" ({paper})" if paper else "") + fill


def table_cells(table: PaperTable, df: pd.DataFrame) -> list[list[Cell]]:
    """Each cell's pools of matching rows (largest first, ties: first seen), with its fill command."""
    candidates = df[df.task == table.task] if not df.empty else df
    grid = []
    for student, paper_values in table.rows.items():
        mine = candidates[candidates.student == student] if not candidates.empty else candidates
        row = []
        for col, paper in zip(table.columns, paper_values, strict=True):
            fits = [
                (r.setting, r.record)
                for r in rows_of(mine, "setting", "record", "settings")
                if cell_matches(r.record, table, col, student, have=r.settings)
            ]
            groups: dict[str, list[dict]] = {}
            for setting, record in fits:
                groups.setdefault(setting, []).append(record)
            ordered = sorted(groups.items(), key=lambda kv: len(kv[1]), reverse=True)
            shown = ordered[0] if ordered else (None, [])
            row.append(
                Cell(
                    table.key,
                    student,
                    col.key,
                    paper,
                    shown[1],
                    None if shown[1] else col.fill_command(student),
                    [records for _, records in ordered[1:]],
                    shown[0],
                )
            )
        grid.append(row)
    return grid
