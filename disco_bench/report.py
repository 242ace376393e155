"""LEADERBOARD.md, leaderboard.csv and results.csv, generated from ``results.jsonl`` alone.

- One table per table of the paper (``paper_numbers.yaml``): rows are students, columns what
  produced the number, each cell "ours (paper, Δ)" with mean ± std over seeds and trials. A
  missing cell shows "—" and the command that would fill it (the step of the ``full`` suite that
  measures it). Only tables with at least one number of ours are drawn; the others are listed
  with the command that measures them. Under each table, every row says where its numbers came
  from (step, record ids, checkpoint hash, config hash).
- Then every record by task (what the embedded suites produce), mean ± std over seeds.
- Plots (PNG, linked): a bar chart per paper table (ours beside the paper), the semi-supervised
  curve, and the figures the analysis steps recorded as artifacts (t-SNE, information plane).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from disco_bench.claims import claims_section
from disco_bench.results import read_records
from disco_bench.suite import available_suites
from pretrain.checkpoint import atomic_write, atomic_write_text
from pretrain.errors import InputError

PAPER_FILE = Path(__file__).parent / "paper_numbers.yaml"
COMMAND_SUITE = "full"  # the suite whose steps fill missing cells
BLOCK_KEYS = {"title", "suite", "task", "metric", "dataset", "where", "columns", "rows", "notes"}
COLUMN_KEYS = {"key", "name", "method", "teacher", "metric", "where"}


# --- the paper's tables -------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    name: str
    method: str
    teacher: str | None
    metric: str
    where: dict


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    suite: str | None
    task: str
    dataset: str
    columns: list[Column]
    rows: dict[str, list[float | None]]  # student -> the paper's value per column
    notes: str = ""


def _table(key: str, raw: Any, where: str) -> PaperTable:
    if not isinstance(raw, dict):
        raise InputError(f"{where} {key}: expected a mapping with keys {', '.join(sorted(BLOCK_KEYS))}")
    unknown = sorted(set(raw) - BLOCK_KEYS)
    if unknown:
        raise InputError(f"{where} {key}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(BLOCK_KEYS))}")
    for need in ("title", "task", "metric", "dataset", "columns", "rows"):
        if need not in raw:
            raise InputError(f"{where} {key}: missing key {need!r}")
    columns = []
    for n, col in enumerate(raw["columns"]):
        bad = sorted(set(col) - COLUMN_KEYS) if isinstance(col, dict) else ["(not a mapping)"]
        if bad or "method" not in col or "key" not in col:
            raise InputError(f"{where} {key}.columns[{n}]: expected keys {', '.join(sorted(COLUMN_KEYS))} "
                             f"with key and method; got {col!r}")
        columns.append(Column(col["key"], col.get("name", col["key"]), col["method"], col.get("teacher"),
                              col.get("metric", raw["metric"]), dict(col.get("where", raw.get("where") or {}))))
    rows = {}
    for student, values in raw["rows"].items():
        if not isinstance(values, list) or len(values) != len(columns):
            raise InputError(f"{where} {key}.rows.{student}: expected {len(columns)} values (null for none), got {values!r}")
        rows[student] = [None if v is None else float(v) for v in values]
    return PaperTable(key, raw["title"], raw.get("suite"), raw["task"], raw["dataset"], columns, rows, raw.get("notes", ""))


@lru_cache(maxsize=4)
def paper_tables(path: Path = PAPER_FILE) -> tuple[PaperTable, ...]:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    return tuple(_table(key, block, str(path)) for key, block in raw.items())


def lookup(record: dict, dotted: str) -> Any:
    """``eval.X`` / ``pretrain.X`` in the record's protocol (a pretrain record's protocol is the
    pretrain one itself); any other name is a top-level field."""
    scope, _, name = dotted.partition(".")
    if not name:
        return record.get(scope)
    protocol = record.get("protocol") or {}
    if record.get("task") == "pretrain":
        protocol = {"pretrain": protocol}
    return (protocol.get(scope) or {}).get(name, "<absent>")


def cell_matches(record: dict, table: PaperTable, col: Column, student: str, check_metric: bool = True) -> bool:
    if record.get("task") != table.task or record.get("dataset") != table.dataset or record.get("student") != student:
        return False
    if check_metric and record.get("metric") != col.metric:
        return False
    if record.get("method") != col.method:
        return False
    teacher = record.get("teacher")
    if (col.teacher == "any" and teacher is None) or col.teacher not in ("any", teacher):
        return False
    for path, want in col.where.items():
        wanted = want if isinstance(want, list) else [want]
        if lookup(record, path) not in wanted:
            return False
    return True


# --- which step of the full suite would fill a cell -----------------------------------------------


@lru_cache(maxsize=4)
def suite_candidates(suite_name: str) -> tuple[tuple[str, dict], ...]:
    """(step id, the record its eval would write, less the numbers) for every eval step of a suite."""
    from disco_bench.runner import architectures, build_context, plan, restrict
    from disco_bench.steps import step_config
    from disco_bench.suite import load_suite

    suite = restrict(load_suite(suite_name), None)
    ctx = build_context(suite, Path("$OUT"), None, {}, progress=False, create=False)
    rows = plan(suite, ctx)
    configs = {s.id: step_config(s, ctx) for s, _ in rows}
    arch = architectures(rows, configs)
    by_id = {s.id: s for s, _ in rows}
    out = []
    for step, _ in rows:
        ref = step.params.get("ckpt")
        if step.kind != "eval" or not (isinstance(ref, str) and ref.startswith("@")):
            continue
        src = by_id[ref[1:]]
        scfg = configs[src.id]
        pretrain = scfg.protocol() if src.kind == "pretrain" else {}
        teacher_ref = src.params.get("teacher_ckpt")
        teacher = arch.get(teacher_ref[1:]) if isinstance(teacher_ref, str) and teacher_ref.startswith("@") else None
        out.append((step.id, {
            "task": step.task, "dataset": suite.dataset_name(step.params["data"]), "student": arch.get(src.id),
            "method": getattr(scfg, "method", None) or None, "teacher": teacher,
            "protocol": {"eval": dataclasses.asdict(configs[step.id]), "pretrain": pretrain},
        }))
    return tuple(out)


def fill_command(table: PaperTable, col: Column, student: str, command_suite: str | None) -> str | None:
    if command_suite is None:
        return None
    for step_id, pseudo in suite_candidates(command_suite):
        if cell_matches(pseudo, table, col, student, check_metric=False):
            return f"python -m disco_bench run --suite {Path(command_suite).stem} --data-root DATA --only {step_id}"
    return None


# --- cells ---------------------------------------------------------------------------------------


def _fmt(values: pd.Series | list[float]) -> str:
    """Two decimals, or three significant digits when the mean is small (a mean-reduced loss of 0.0012)."""
    values = pd.Series(list(values), dtype=float)
    mean = values.mean()
    spec = ".3g" if mean != 0 and abs(mean) < 0.1 else ".2f"
    if len(values) > 1:
        return f"{mean:{spec}} ± {values.std(ddof=1):{spec}} (n={len(values)})"
    return f"{mean:{spec}}"


@dataclass
class Cell:
    table: str
    student: str
    column: str
    paper: float | None
    records: list[dict] = field(default_factory=list)
    command: str | None = None

    @property
    def mean(self) -> float | None:
        return sum(r["value"] for r in self.records) / len(self.records) if self.records else None

    @property
    def std(self) -> float | None:
        return float(pd.Series([r["value"] for r in self.records]).std(ddof=1)) if len(self.records) > 1 else None

    def text(self) -> str:
        paper = "" if self.paper is None else f"paper {self.paper:.1f}"
        if self.records:
            delta = f", Δ {self.mean - self.paper:+.2f}" if self.paper is not None else ""
            return _fmt([r["value"] for r in self.records]) + (f" ({paper}{delta})" if paper else "")
        fill = f" `{self.command}`" if self.command else " (no step in the suites yet)"
        return "—" + (f" ({paper})" if paper else "") + fill


def table_cells(table: PaperTable, records: list[dict]) -> list[list[Cell]]:
    grid = []
    for student, paper_values in table.rows.items():
        row = []
        for col, paper in zip(table.columns, paper_values):
            row.append(Cell(table.key, student, col.key, paper, [r for r in records if cell_matches(r, table, col, student)]))
        grid.append(row)
    return grid


def add_fill_commands(table: PaperTable, grid: list[list[Cell]], command_suite: str | None) -> None:
    for row in grid:
        for cell, col in zip(row, table.columns):
            if not cell.records:
                cell.command = fill_command(table, col, cell.student, command_suite)


def _source(cell: Cell, col: Column) -> str:
    recs = cell.records
    steps = sorted({str(r.get("step")) for r in recs})
    ids = ", ".join(r["id"][:8] for r in recs[:3]) + ("…" if len(recs) > 3 else "")
    seeds = ", ".join(str(s) for s in sorted({r.get("seed") for r in recs}, key=str))
    ckpts = ", ".join(sorted({str(r.get("checkpoint_sha256"))[:10] for r in recs}))
    configs = ", ".join(sorted({str(r.get("config_hash"))[:8] for r in recs}))
    return f"{col.name} ← step {', '.join(steps)}; records {ids} (seeds {seeds}); ckpt {ckpts}; config {configs}"


def render_table(table: PaperTable, grid: list[list[Cell]], plot: str | None) -> list[str]:
    out = [f"### {table.title}", ""]
    out.append("| student | " + " | ".join(c.name for c in table.columns) + " |")
    out.append("|---|" + "---|" * len(table.columns))
    for student, row in zip(table.rows, grid):
        out.append(f"| {student} | " + " | ".join(c.text() for c in row) + " |")
    out.append("")
    if table.notes:
        out += [f"Note: {table.notes}", ""]
    sources = [(student, [_source(c, col) for c, col in zip(row, table.columns) if c.records])
               for student, row in zip(table.rows, grid)]
    out += ["Sources:", ""] + [f"- {student}: " + "; ".join(s) for student, s in sources if s] + [""]
    if plot:
        out += [f"![{table.title}]({plot})", ""]
    return out


# --- plots ---------------------------------------------------------------------------------------


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
    cells = [(f"{c.student}\n{col.name}", c) for row in grid for c, col in zip(row, table.columns) if c.records]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(cells)), 3.6))
    xs = range(len(cells))
    ax.bar([x - 0.2 for x in xs], [c.mean for _, c in cells], 0.4, yerr=[c.std or 0 for _, c in cells], label="ours")
    ax.bar([x + 0.2 for x in xs], [c.paper if c.paper is not None else 0 for _, c in cells], 0.4, label="paper")
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
    df = pd.DataFrame([{"who": f"{r.get('method')} {r.get('student')}" + (f" ← {r['teacher']}" if r.get("teacher") else "")
                        + f" ({r['dataset'].split('@')[0]})", "pct": 100 * f, "top1": r["value"]} for r, f in rows])
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


def figure_links(records: list[dict], out: Path) -> list[str]:
    """The PNGs analysis steps recorded (t-SNE panels, information planes), linked relative to OUT."""
    seen: dict[str, str] = {}
    for r in records:
        for art in r.get("artifacts") or []:
            if str(art).lower().endswith(".png") and art not in seen:
                seen[art] = f"{r['task']} ({r.get('step') or r.get('label') or r['id'][:8]})"
    lines = []
    for art, who in seen.items():
        rel = os.path.relpath(art, out) if Path(art).is_absolute() else art
        lines.append(f"- {who}: [{Path(art).name}]({rel})")
    return lines


# --- the per-task tables (every record) ------------------------------------------------------------


# Protocol entries that vary from seed to seed without being settings: the seed itself and what a
# run found (the fast probe's chosen weight decay and hold-out scores, detection's per-trial losses).
# They must not split the seeds of one setting into separate rows.
RUN_OUTCOMES = {"seed", "chosen_weight_decay", "holdout_top1", "trial_details"}


def _settings_only(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _settings_only(v) for k, v in value.items() if k not in RUN_OUTCOMES}
    return value


def setting(record: dict) -> str:
    """The settings a row's numbers share, in short (the rest is in the record's protocol)."""
    protocol = record.get("protocol") or {}
    pre = protocol if record.get("task") == "pretrain" else protocol.get("pretrain") or {}
    ev = {} if record.get("task") == "pretrain" else protocol.get("eval") or {}
    parts = [f"{ev['protocol']} probe"] if ev.get("protocol") else []
    parts += [f"{pre['epochs']} ep"] if pre.get("epochs") is not None else []
    parts += [f"hidden {pre['hidden']}"] if pre.get("hidden") is not None else []
    return ", ".join(parts) or "—"


def pretrain_protocols(records: list[dict]) -> dict[str, dict]:
    """checkpoint sha256 -> the pre-training protocol that produced it, from the records that carry it."""
    found: dict[str, dict] = {}
    for r in records:
        sha, extra = r.get("checkpoint_sha256"), r.get("extra") or {}
        protocol = r.get("protocol") or {}
        pre = protocol if r.get("task") == "pretrain" else protocol.get("pretrain")
        if sha and pre and "arch" not in extra:
            found.setdefault(sha, pre)
    return found


def per_checkpoint(record: dict, pretrain_by_sha: dict[str, dict] | None = None) -> dict:
    """A record of a step comparing several checkpoints (tsne, mi) names the one it measured in
    ``extra`` (arch, method, teacher, ckpt label); its top-level fields, protocol included, name
    the first checkpoint. The measured checkpoint's own pre-training protocol comes from the
    records that carry it (none known: none shown, rather than the first checkpoint's)."""
    extra = record.get("extra") or {}
    if "arch" not in extra:
        return record
    sha = extra.get("sha256") or record.get("checkpoint_sha256")
    protocol = dict(record.get("protocol") or {})
    protocol["pretrain"] = (pretrain_by_sha or {}).get(sha, {})
    return record | {"student": extra["arch"], "method": extra.get("method"), "teacher": extra.get("teacher"),
                     "label": extra.get("ckpt") or record.get("label"), "checkpoint_sha256": sha, "protocol": protocol}


def last_epochs(records: list[dict]) -> list[dict]:
    """Of per-epoch records (information plane), the last epoch of each curve: the per-task table
    shows where a curve ends; the whole curve is in the step's figure."""
    last: dict[tuple, int] = {}
    key = lambda r: (r.get("step"), r.get("label"), r.get("metric"), r.get("seed"), r.get("config_hash"))  # noqa: E731
    for r in records:
        epoch = (r.get("extra") or {}).get("epoch")
        if epoch is not None:
            last[key(r)] = max(last.get(key(r), epoch), epoch)
    return [r for r in records if (r.get("extra") or {}).get("epoch") in (None, last.get(key(r)))]


def _frame(records: list[dict]) -> pd.DataFrame:
    by_sha = pretrain_protocols(records)
    records = last_epochs([per_checkpoint(r, by_sha) for r in records])
    df = pd.DataFrame(records)
    for col in ("label", "teacher", "method"):
        df[col] = df[col].fillna("—") if col in df else "—"
    # Seeds of one setting share a row; anything else that differs in the protocol splits rows.
    df["protocol_key"] = [json.dumps(_settings_only(r.get("protocol")), sort_keys=True, default=str) for r in records]
    df["setting"] = [setting(r) for r in records]
    return df


def task_table(df: pd.DataFrame, task: str) -> str:
    sub = df[df.task == task]
    metrics = list(dict.fromkeys(sub.metric))
    keys = ["label", "method", "student", "teacher", "dataset"]
    lines = ["| " + " | ".join(keys + metrics + ["setting", "source"]) + " |",
             "|" + "---|" * (len(keys) + len(metrics) + 2)]
    for key, group in sub.groupby(keys + ["protocol_key"], sort=False):
        key = key[:-1]
        cells = []
        for metric in metrics:
            vals = group[group.metric == metric].value
            cells.append(_fmt(vals) if not vals.empty else "—")
        ckpts = sorted({str(c)[:10] for c in group.checkpoint_sha256.dropna()})
        configs = sorted({str(c)[:8] for c in group.config_hash.dropna()})
        source = (f"records {', '.join(sorted(set(group.id))[:2])}{'…' if group.id.nunique() > 2 else ''}; "
                  f"ckpt {', '.join(ckpts)}; config {', '.join(configs)}")
        lines.append("| " + " | ".join([str(k) for k in key] + cells + [group.setting.iloc[0], source]) + " |")
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


# --- the whole board ---------------------------------------------------------------------------------


def render(records: list[dict], out: Path | None = None, paper_file: Path = PAPER_FILE,
           command_suite: str | None = COMMAND_SUITE) -> tuple[str, list[Cell]]:
    """(markdown, every cell of every paper table). With ``out``, the plots are written under OUT/plots."""
    parts = ["# disco-bench leaderboard", "",
             "Generated by `python -m disco_bench report` from `results.jsonl`; do not edit by hand.",
             "Cells: ours (paper, Δ = ours − paper); mean ± std (n) over seeds and trials. "
             "A number is set beside the paper's only when task, dataset, metric, method, teacher and protocol match "
             "(`disco_bench/paper_numbers.yaml`); everything else is in the per-task tables below.", ""]
    if not records:
        return "\n".join(parts + ["No records yet."]) + "\n", []
    all_cells: list[Cell] = []
    drawn, waiting = [], []
    for table in paper_tables(Path(paper_file)):
        grid = table_cells(table, records)
        all_cells += [c for row in grid for c in row]
        (drawn if any(c.records for row in grid for c in row) else waiting).append((table, grid))
    parts += ["## The paper's tables", ""]
    for table, grid in drawn:
        add_fill_commands(table, grid, command_suite)
        plot = None
        if out is not None:
            plot = os.path.relpath(bar_chart(table, grid, Path(out) / "plots" / f"{table.key}.png"), out)
        parts += render_table(table, grid, plot)
    if waiting:
        parts += ["Not measured yet (no matching record):", ""]
        suites = available_suites()
        for table, _ in waiting:
            how = (f": `python -m disco_bench run --suite {table.suite} --data-root DATA`" if table.suite in suites
                   else " (no suite measures it yet)")
            parts.append(f"- {table.title}{how}")
        parts.append("")
    parts += claims_section(records)
    df = _frame(records)
    parts += ["## All results by task", ""]
    order = [t for t in TASK_TITLES if t in set(df.task)] + sorted(set(df.task) - set(TASK_TITLES))
    for task in order:
        parts += [f"### {TASK_TITLES.get(task, task)}", "", task_table(df, task), ""]
    figures = []
    if out is not None:
        curve = semisup_curve(records, Path(out) / "plots" / "semisup.png")
        if curve:
            figures.append(f"- semi-supervised top-1 against labelled fraction: [semisup.png]({os.path.relpath(curve, out)})")
        figures += figure_links(records, Path(out))
    if figures:
        parts += ["## Figures", ""] + figures + [""]
    hw = sorted(set(df.hardware))
    versions = sorted(set(df.code_version))
    parts += ["## Provenance", "", f"- records: {len(df)}", f"- code: {', '.join(versions)}", f"- hardware: {'; '.join(hw)}", ""]
    return "\n".join(parts), all_cells


def cells_csv(cells: list[Cell]) -> str:
    rows = [{"table": c.table, "student": c.student, "column": c.column, "ours_mean": c.mean, "ours_std": c.std,
             "n": len(c.records), "paper": c.paper, "delta": None if c.mean is None or c.paper is None else c.mean - c.paper,
             "records": " ".join(r["id"] for r in c.records), "fill_command": c.command or ""} for c in cells]
    return pd.DataFrame(rows).to_csv(index=False)


def write_report(out: str | Path, command_suite: str | None = COMMAND_SUITE) -> Path:
    """LEADERBOARD.md, leaderboard.csv (paper-table cells), results.csv (every record) and plots/ under OUT."""
    out = Path(out)
    records = read_records(out / "results.jsonl")
    markdown, cells = render(records, out, command_suite=command_suite)
    board = atomic_write_text(out / "LEADERBOARD.md", markdown)
    if records:
        flat = pd.DataFrame([{k: v for k, v in r.items() if k not in ("protocol", "artifacts")} for r in records])
        atomic_write_text(out / "results.csv", flat.to_csv(index=False))
        atomic_write_text(out / "leaderboard.csv", cells_csv(cells))
    return board
