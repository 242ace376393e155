"""leaderboard.csv: every paper cell, then every pool of the user's own runs (one setting, seeds
pooled, a per-epoch curve at its last epoch as the per-task tables show it) that fills no paper
cell, so the file holds the whole board and loads in pandas as is."""

from __future__ import annotations

import pandas as pd

from disco_bench.leaderboard.cells import Cell
from disco_bench.leaderboard.markdown import last_epochs


def cells_csv(cells: list[Cell], df: pd.DataFrame) -> str:
    rows = [
        {
            "table": c.table,
            "student": c.student,
            "column": c.column,
            "task": None,
            "metric": None,
            "dataset": None,
            "method": None,
            "teacher": None,
            "pretrained_on": None,
            "ours_mean": c.mean,
            "ours_std": c.std,
            "n": len(c.records),
            "paper": c.paper,
            "delta": None if c.mean is None or c.paper is None else c.mean - c.paper,
            "setting": c.setting or "",
            "other_settings": len(c.other_pools),
            "records": " ".join(r["id"] for r in c.records if r.get("id")),
            "fill_command": c.command or "",
        }
        for c in cells
    ]
    # the records themselves, not their ids: a record may have none, and None would match every other
    in_cells = {id(r) for c in cells for r in c.records}
    own = last_epochs(df[[id(r) not in in_cells for r in df.record]]) if not df.empty else df
    keys = ["task", "metric", "dataset", "student", "method", "teacher", "pretrained_on", "setting"]
    if not own.empty:
        grouped = own.assign(**{k: own[k].fillna("") for k in keys}).groupby(keys, sort=False)
        for key, group in grouped:
            values = group.value.astype(float)
            rows.append(
                dict(zip(keys, key, strict=True))
                | {
                    "table": "own",
                    "column": group.label.dropna().iloc[0] if group.label.notna().any() else "",
                    "ours_mean": values.mean(),
                    "ours_std": values.std(ddof=1) if len(values) > 1 else None,
                    "n": len(values),
                    "paper": None,
                    "delta": None,
                    "other_settings": 0,
                    "records": " ".join(str(i) for i in group.id if i),
                    "fill_command": "",
                }
            )
    return pd.DataFrame(rows).to_csv(index=False)
