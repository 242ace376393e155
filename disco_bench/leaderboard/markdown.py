"""LEADERBOARD.md from the records.

Every view is a function of the tidy table (``leaderboard.table``), read from the records once.

- One table per table of the paper (``paper_numbers.yaml``): rows are students, columns what
  produced the number, each cell "ours (paper, Δ)" with mean ± std over the seeds of one setting,
  and a link to that setting. A missing cell shows "—" and the command that would fill it (the
  step the column names in ``paper_numbers.yaml``). Only tables with at least one number of ours are
  drawn; the others are listed with the command that measures them. Under each table, every row
  says where its numbers came from (step, record ids, checkpoint hash, config hash), and each
  column's paper setting is linked.
- Then every record by task, one row per setting (seeds pooled), labelled by what differs from
  the paper's setting where the paper has a column for that method.
- Then every setting in full (the links' targets).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from disco_bench.claims import claim_rows, claims_section
from disco_bench.leaderboard.cells import Cell, fmt, setting_link, table_cells
from disco_bench.leaderboard.matching import (
    IDENTITY,
    describe_differences,
    differences,
    for_student,
    identity_matches,
)
from disco_bench.leaderboard.paper import PAPER_FILE, Column, PaperTable, paper_file
from disco_bench.leaderboard.plots import bar_chart, claims_chart, semisup_curve, task_chart
from disco_bench.leaderboard.table import tidy


def _source(cell: Cell, col: Column) -> str:
    recs = cell.records
    steps = sorted({str(r.get("step")) for r in recs})
    ids = ", ".join((r.get("id") or "(no id)")[:8] for r in recs[:3]) + ("…" if len(recs) > 3 else "")
    seeds = ", ".join(str(s) for s in sorted({r.get("seed") for r in recs}, key=str))
    ckpts = ", ".join(sorted({str(r.get("checkpoint_sha256"))[:10] for r in recs}))
    configs = ", ".join(sorted({str(r.get("config_hash"))[:8] for r in recs}))
    return (
        f"{col.name} ← step {', '.join(steps)}; records {ids} (seeds {seeds}); ckpt {ckpts}; config {configs}"
    )


def paper_setting_anchor(col: Column) -> str:
    extra = col.setting_text().removeprefix(col.setting)
    return f"[{col.setting}](#paper-setting-{col.setting}){extra}"


def render_table(table: PaperTable, grid: list[list[Cell]], plot: str | None) -> list[str]:
    out = [f"### {table.title}", ""]
    out.append("| student | " + " | ".join(c.name for c in table.columns) + " |")
    out.append("|---|" + "---|" * len(table.columns))
    for student, row in zip(table.rows, grid, strict=True):
        out.append(f"| {student} | " + " | ".join(c.text() for c in row) + " |")
    out.append("")
    source = f"Source: {table.source}. " if table.source else ""
    settings = dict.fromkeys(c.setting for c in table.columns if c.setting)
    out += [
        f"{source}Paper settings: "
        + "; ".join(f"{c.name} {paper_setting_anchor(c)}" for c in table.columns if c.setting)
        + "."
        if settings
        else source.strip(),
        "",
    ]
    if table.notes:
        out += [f"Note: {table.notes}", ""]
    sources = [
        (student, [_source(c, col) for c, col in zip(row, table.columns, strict=True) if c.records])
        for student, row in zip(table.rows, grid, strict=True)
    ]
    out += ["Sources:", ""] + [f"- {student}: " + "; ".join(s) for student, s in sources if s] + [""]
    if plot:
        out += [f"![{table.title}]({plot})", ""]
    return out


def artifact_link(art: str, out: Path) -> str:
    """A recorded file as a link from OUT: records name it relative to OUT (suite steps) or, from an
    older run given a relative --out, relative to the folder the run started in (as --out was)."""
    path = Path(art)
    if path.is_absolute():
        return os.path.relpath(path, Path(out).absolute())
    if not (Path(out) / path).exists() and path.exists():
        return os.path.relpath(path.absolute(), Path(out).absolute())
    return art


def figure_links(records, out: Path) -> list[str]:
    """The PNGs analysis steps recorded (t-SNE panels, information planes), linked relative to OUT."""
    seen: dict[str, str] = {}
    for r in records:
        for art in r.get("artifacts") or []:
            if str(art).lower().endswith(".png") and art not in seen:
                seen[art] = f"{r['task']} ({r.get('step') or r.get('label') or r['id'][:8]})"
    lines = []
    for art, who in seen.items():
        rel = artifact_link(art, out)
        lines.append(f"- {who}: [{Path(art).name}]({rel})")
    return lines


# --- the per-task tables (every record) ------------------------------------------------------------


def short_setting(record: dict) -> str:
    """The settings a row's numbers share, in short (all of them: the setting's link)."""
    protocol = record.get("protocol") or {}
    pre = protocol if record.get("task") == "pretrain" else protocol.get("pretrain") or {}
    ev = {} if record.get("task") == "pretrain" else protocol.get("eval") or {}
    parts = [f"{ev['protocol']} probe"] if ev.get("protocol") else []
    if pre.get("max_steps"):  # ended by max_steps: its steps, not the epochs it was planned for
        parts += [f"{pre['max_steps']} steps (max_steps; {pre.get('epochs')} ep planned)"]
    elif pre.get("epochs") is not None:
        parts += [f"{pre['epochs']} ep"]
    parts += [f"hidden {pre['hidden']}"] if pre.get("hidden") is not None else []
    return ", ".join(parts) or "—"


def versus_paper(record: dict, tables: tuple[PaperTable, ...], have: dict | None = None) -> str:
    """Whether a record has the paper's setting for its method, or what differs from it."""
    closest: tuple[int, str] | None = None
    for table in tables:
        if record.get("student") not in table.rows:
            continue
        for col in table.columns:
            if not identity_matches(record, table, col, record.get("student"), check_metric=False):
                continue
            diff = differences(record, for_student(col.fields, table.task, record.get("student")), have=have)
            if not diff:
                return f"paper setting ({table.title.split(':')[0]})"
            if closest is None or len(diff) < closest[0]:
                closest = (len(diff), f"vs paper ({col.name}): {describe_differences(diff)}")
    return closest[1] if closest else ""


def last_epochs(df: pd.DataFrame) -> pd.DataFrame:
    """Of per-epoch rows (information plane), the last epoch of each curve: the per-task table shows
    where a curve ends; the whole curve is in the step's figure."""
    epoch = pd.Series([(r.get("extra") or {}).get("epoch") for r in df.record], index=df.index, dtype=object)
    key = [
        tuple(str(v) for v in k)
        for k in zip(df.step, df.label, df.metric, df.seed, df.config_hash, strict=True)
    ]
    last: dict[tuple, int] = {}
    for k, e in zip(key, epoch, strict=True):
        if e is not None:
            last[k] = max(last.get(k, e), e)
    keep = [e is None or e == last.get(k) for k, e in zip(key, epoch, strict=True)]
    return df[keep]


def task_frame(df: pd.DataFrame, tables: tuple[PaperTable, ...] = ()) -> pd.DataFrame:
    """The tidy table as the per-task tables show it: last epochs only, display labels added."""
    df = last_epochs(df).copy()
    df["pretrained_on"] = df.pretrained_on.fillna("—")
    for col in ("label", "teacher", "method"):
        df[col] = df[col].fillna("—")
    df["short_setting"] = [short_setting(r) for r in df.record]
    df["paper"] = [versus_paper(r, tables, have) for r, have in zip(df.record, df.settings, strict=True)]
    return df


def task_table(df: pd.DataFrame, task: str) -> str:
    sub = df[df.task == task]
    metrics = list(dict.fromkeys(sub.metric))
    keys = ["label", "method", "student", "teacher", "dataset"]
    if task not in ("pretrain", "checkpoint"):  # an evaluation: on what its checkpoints were pre-trained
        keys.append("pretrained_on")
    # a contrastive loss beside chance: InfoNCE over the positive and K queued keys starts at ln(K + 1)
    chance = task == "pretrain" and "final_loss_con" in metrics
    extra = ["chance ln(K+1)"] if chance else []
    lines = [
        "| "
        + " | ".join([k.replace("_", " ") for k in keys] + metrics + extra + ["setting", "source"])
        + " |",
        "|" + "---|" * (len(keys) + len(metrics) + len(extra) + 2),
    ]
    for key, group in sub.groupby(keys + ["setting"], sort=False):
        key = key[:-1]
        cells = []
        for metric in metrics:
            vals = group[group.metric == metric].value
            cells.append(fmt(vals) if not vals.empty else "—")
        if chance:
            queue = ((group.record.iloc[0].get("protocol") or {}).get("queue_size")) if len(group) else None
            cells.append(f"{math.log(queue + 1):.2f}" if isinstance(queue, int) and queue > 0 else "—")
        ckpts = sorted({str(c)[:10] for c in group.checkpoint_sha256.dropna()})
        configs = sorted({str(c)[:8] for c in group.config_hash.dropna()})
        ids = sorted({str(i) for i in group.id if i})
        source = (
            f"records {', '.join(ids[:2])}{'…' if len(ids) > 2 else ''}; "
            f"ckpt {', '.join(ckpts)}; config {', '.join(configs)}"
        )
        paper = next((p for p in group.paper if p), "")
        flags = sorted({d for d in group.degenerate if d})
        if flags:
            paper = f"{paper}; " if paper else ""
            paper += "**degenerate**: " + "; ".join(flags)
        setting = f"{group.short_setting.iloc[0]}; {setting_link(group.setting.iloc[0])}" + (
            f"; {paper}" if paper else ""
        )
        lines.append("| " + " | ".join([str(k) for k in key] + cells + [setting, source]) + " |")
    return "\n".join(lines)


TASK_TITLES = {
    "linear": "Linear probe (top-1 / top-5 %)",
    "semisup": "Semi-supervised linear probe (top-1 / top-5 %)",
    "cifar": "CIFAR transfer, linear probe (top-1 / top-5 %)",
    "knn": "kNN (top-1 / top-5 %)",
    "detection": "Detection and segmentation",
    "tsne": "t-SNE class separation",
    "mi": "Information plane (bits, per epoch)",
    "pretrain": "Pre-training (final loss terms, throughput)",
    "checkpoint": "Checkpoints read from files",
}


def _value(v: Any) -> str:
    return "[" + ", ".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)


def settings_section(df: pd.DataFrame, used_paper: dict[str, dict]) -> list[str]:
    """Every setting in full: the paper's (by name) and those of the records (by id)."""
    out = [
        "## Settings",
        "",
        "Every field that can change a number. Runs pool into one mean ± std only within one setting; "
        "a field a record does not carry reads as unknown.",
        "",
    ]
    for name, fields in used_paper.items():
        out += [
            f"### paper setting {name}",
            "",
            "; ".join(f"{k}={_value(v)}" for k, v in sorted(fields.items())),
            "",
        ]
    seen = set()
    for sid, record, fields, trained in zip(
        df.setting, df.record, df.settings, df.pretrained_on, strict=True
    ):
        if sid in seen:
            continue
        seen.add(sid)
        ident = ", ".join(
            f"{k} {record.get(k)}" for k in IDENTITY if k not in ("metric", "split") and record.get(k)
        )
        if trained not in (None, "—") and trained != str(record.get("dataset")).split("@")[0]:
            ident += f", pre-trained on {trained}"
        body = "; ".join(f"{k}={_value(v)}" for k, v in sorted(fields.items())) or "(no protocol recorded)"
        out += [f"### setting {sid}", "", f"{ident}: {body}", ""]
    return out


def render(
    table: pd.DataFrame | list[dict], out: Path | None = None, paper_path: Path = PAPER_FILE
) -> tuple[str, list[Cell]]:
    """(markdown, every cell of every paper table) from the tidy table (or the records it is read
    from). With ``out``, the plots are written under OUT/plots."""
    df = table if isinstance(table, pd.DataFrame) else tidy(table)
    parts = [
        "# disco-bench leaderboard",
        "",
        "Generated by `python -m disco_bench report` from `results.jsonl`; do not edit by hand.",
        "Cells: ours (paper, Δ = ours − paper); mean ± std (n runs) over the seeds of one setting, linked. "
        "A number is set beside the paper's only when task, dataset, metric, method, teacher and every setting "
        "of pre-training and evaluation are the paper's (`disco_bench/paper_numbers.yaml`); everything else is "
        "in the per-task tables below, labelled by what differs.",
        "",
    ]
    if df.empty:
        return "\n".join(parts + ["No records yet."]) + "\n", []
    settings, tables = paper_file(Path(paper_path))
    all_cells: list[Cell] = []
    drawn, waiting = [], []
    for paper_table in tables:
        grid = table_cells(paper_table, df)
        all_cells += [c for row in grid for c in row]
        (drawn if any(c.records for row in grid for c in row) else waiting).append((paper_table, grid))
    parts += ["## The paper's tables", ""]
    used_paper: dict[str, dict] = {}
    for paper_table, grid in drawn:
        used_paper |= {c.setting: settings.get(c.setting, c.fields) for c in paper_table.columns if c.setting}
        plot = None
        if out is not None:
            plot = os.path.relpath(
                bar_chart(paper_table, grid, Path(out) / "plots" / f"{paper_table.key}.png"), out
            )
        parts += render_table(paper_table, grid, plot)
    if waiting:
        parts += ["Not measured yet (no matching record):", ""]
        for paper_table, _ in waiting:
            how = (
                f": `python -m disco_bench run --suite {paper_table.suite} --data-root DATA`"
                if paper_table.suite
                else " (no suite measures it yet)"
            )
            parts.append(f"- {paper_table.title}{how}")
        parts.append("")
    rows = claim_rows(df)
    chart = None
    if out is not None:
        drawn_claims = claims_chart(rows, Path(out) / "plots" / "claims.png")
        chart = os.path.relpath(drawn_claims, out) if drawn_claims else None
    parts += claims_section(df, rows, chart)
    shown = task_frame(df, tables)
    parts += ["## All results by task", ""]
    order = [t for t in TASK_TITLES if t in set(shown.task)] + sorted(set(shown.task) - set(TASK_TITLES))
    for task in order:
        parts += [f"### {TASK_TITLES.get(task, task)}", "", task_table(shown, task), ""]
        picture = (
            task_chart(shown, task, Path(out) / "plots" / f"task-{task}.png") if out is not None else None
        )
        if picture:
            parts += [f"![{task}]({os.path.relpath(picture, out)}) (also as SVG beside it)", ""]
    figures = []
    if out is not None:
        curve = semisup_curve(list(df.record), Path(out) / "plots" / "semisup.png")
        if curve:
            figures.append(
                f"- semi-supervised top-1 against labelled fraction: [semisup.png]({os.path.relpath(curve, out)})"
            )
        figures += figure_links(list(df.record), Path(out))
    if figures:
        parts += ["## Figures", ""] + figures + [""]
    hw = sorted(set(df.hardware.dropna()))
    versions = sorted(set(df.code_version.dropna()))
    parts += [
        "## Provenance",
        "",
        f"- records: {len(df)}",
        f"- code: {', '.join(versions)}",
        f"- hardware: {'; '.join(hw)}",
        "",
    ]
    parts += settings_section(shown, used_paper)
    return "\n".join(parts), all_cells
