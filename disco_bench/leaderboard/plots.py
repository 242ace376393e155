"""The leaderboard's PNGs (matplotlib, files only): a bar chart per paper table, the
semi-supervised curve."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from disco_bench.leaderboard.cells import Cell
from disco_bench.leaderboard.paper import PaperTable
from pretrain.checkpoint import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100, bbox_inches="tight"))


def bar_chart(table: PaperTable, grid: list[list[Cell]], path: Path) -> Path:
    """Ours beside the paper for every cell we measured (error bars: std over seeds)."""
    plt = _pyplot()
    cells = [
        (f"{c.student}\n{col.name}", c)
        for row in grid
        for c, col in zip(row, table.columns, strict=True)
        if c.records
    ]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(cells)), 3.6))
    xs = range(len(cells))
    ax.bar(
        [x - 0.2 for x in xs],
        [c.mean for _, c in cells],
        0.4,
        yerr=[c.std or 0 for _, c in cells],
        label="ours",
    )
    ax.bar(
        [x + 0.2 for x in xs], [c.paper if c.paper is not None else 0 for _, c in cells], 0.4, label="paper"
    )
    ax.set_xticks(list(xs), [name for name, _ in cells], fontsize=7)
    ax.set_ylabel(table.columns[0].metric)
    ax.set_title(table.title, fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def label_fraction(record: dict) -> float | None:
    """The labelled fraction of a semi-supervised record: subset size / train size (downstream.semisup)."""
    subset = (record.get("protocol") or {}).get("eval", {}).get("subset") or {}
    if subset.get("size") and subset.get("of"):
        return subset["size"] / subset["of"]
    return subset.get("fraction")


def semisup_curve(records: list[dict], path: Path) -> Path | None:
    rows = [(r, label_fraction(r)) for r in records if r["task"] == "semisup" and r["metric"] == "top1"]
    rows = [(r, f) for r, f in rows if f]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    df = pd.DataFrame(
        [
            {
                "who": f"{r.get('method')} {r.get('student')}"
                + (f" ← {r['teacher']}" if r.get("teacher") else "")
                + f" ({r['dataset'].split('@')[0]})",
                "pct": 100 * f,
                "top1": r["value"],
            }
            for r, f in rows
        ]
    )
    for who, group in df.groupby("who", sort=True):
        stats = group.groupby("pct").top1.agg(["mean", "std"]).reset_index()
        ax.errorbar(stats.pct, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=who)
    ax.set_xscale("log")
    ax.set_xlabel("labelled images (%)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Semi-supervised linear probe", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
    return path
