"""The leaderboard's pictures (matplotlib, files only; each as PNG and SVG): a bar chart per paper
table, one per task of the user's own results, the semi-supervised curve and the claims' intervals.
Legends sit outside the axes and every figure is saved with a tight bounding box, so they fit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from disco_bench.leaderboard.cells import Cell
from disco_bench.leaderboard.paper import PaperTable
from infra.checkpoint import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    matplotlib.rcParams["svg.hashsalt"] = "disco-bench"  # the same picture gives the same SVG bytes
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """``path`` (a .png) and its .svg twin."""
    for fmt in ("png", "svg"):
        target = path.with_suffix(f".{fmt}")
        # no date in the file: a regenerated leaderboard's pictures differ only where the data does
        meta = {"Date": None} if fmt == "svg" else {}
        atomic_write(
            target,
            lambda handle, fmt=fmt, meta=meta: fig.savefig(
                handle, format=fmt, dpi=100, bbox_inches="tight", metadata=meta
            ),
        )


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
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    plt.close(fig)
    return path


# The metric a task's chart shows; tasks not named here get no chart (pre-training's losses and
# throughput, checkpoints read from files, the information plane, which draws its own figures).
TASK_METRIC = {"linear": "top1", "semisup": "top1", "cifar": "top1", "knn": "top1", "detection": "AP50",
               "tsne": "knn5_top1"}  # fmt: skip


def task_chart(rows: pd.DataFrame, task: str, path: Path) -> Path | None:
    """Every row of a per-task table (one setting each, seeds pooled) as a bar with its std, grouped
    by evaluation dataset; None when the task has nothing to compare (fewer than two rows)."""
    metric = TASK_METRIC.get(task)
    sub = rows[(rows.task == task) & (rows.metric == metric)]
    if metric is None or sub.empty:
        return None
    stats = (
        sub.assign(who=[f"{lab} · {stu}" for lab, stu in zip(sub.label, sub.student, strict=True)])
        .groupby(["dataset", "who", "setting"], sort=False)
        .value.agg(["mean", "std", "count"])
        .reset_index()
    )
    if len(stats) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(stats) + 2), 3.6))
    colours = {d: f"C{i}" for i, d in enumerate(dict.fromkeys(stats.dataset))}
    xs = range(len(stats))
    ax.bar(list(xs), stats["mean"], 0.7, yerr=stats["std"].fillna(0), capsize=2,
           color=[colours[d] for d in stats.dataset])  # fmt: skip
    ax.set_xticks(list(xs), [f"{w} (n={n})" for w, n in zip(stats.who, stats["count"], strict=True)],
                  rotation=60, ha="right", fontsize=6)  # fmt: skip
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: mean ± std over seeds, one bar per setting", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    ax.legend(
        handles, list(colours), title="evaluated on", fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0)
    )
    _save(fig, path)
    plt.close(fig)
    return path


def claims_chart(rows: list, path: Path) -> Path | None:
    """Each tested claim row's difference with its 95 % interval, beside 0 and the declared margin
    (the claims' rows from ``disco_bench.claims``); None when no row has an interval."""
    tested = [r for r in rows if r.diff is not None]
    if not tested:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(tested) + 1.2))
    colour = {"holds": "C2", "does not hold": "C3", "inconclusive": "C7"}
    for y, r in enumerate(tested):
        ax.errorbar(r.diff.diff, y, xerr=[[r.diff.diff - r.diff.low], [r.diff.high - r.diff.diff]], fmt="o",
                    color=colour[r.verdict], capsize=2, markersize=3)  # fmt: skip
        if r.claim.margin:
            bound = -r.claim.margin if r.claim.rule in ("less", "non_inferior") else r.claim.margin
            ax.plot([bound], [y], marker="|", color="k", markersize=8)
            if r.claim.rule == "equivalent":
                ax.plot([-bound], [y], marker="|", color="k", markersize=8)
    ax.axvline(0, color="k", linewidth=0.6)
    ax.set_yticks(range(len(tested)), [f"{r.claim.key} · {r.pretrained_on or r.dataset}" for r in tested],
                  fontsize=6)  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlabel("difference (left − right), 95 % interval; | = declared margin")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c) for c in colour.values()]
    ax.legend(handles, list(colour), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
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
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    plt.close(fig)
    return path
