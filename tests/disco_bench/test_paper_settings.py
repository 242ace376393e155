"""A paper cell, and a "mean ± std over seeds", pool only runs of one complete protocol: crafted
records (tests/disco_bench/paper_records.py) varied in one field at a time."""

from __future__ import annotations

import copy

import pytest
from paper_records import linear_record

from disco_bench.leaderboard.cells import table_cells
from disco_bench.leaderboard.markdown import render, task_frame
from disco_bench.leaderboard.paper import paper_tables
from disco_bench.leaderboard.table import tidy

# (dotted path, a value that changes the number): every setting of a DisCo run and its probe
VARIANTS = [
    ("pretrain.hidden", 512),
    ("pretrain.distill_weight", 0.5),
    ("pretrain.distill_reduction", "mean"),
    ("pretrain.teacher_bn", "train"),
    ("pretrain.run.per_process_batch", 64),
    ("pretrain.run.processes", 4),
    ("pretrain.epochs", 100),
    ("pretrain.batch_size", 512),
    ("pretrain.image_size", 160),
    ("pretrain.base_lr", 0.06),
    ("pretrain.sgd_momentum", 0.8),
    ("pretrain.weight_decay", 0.0005),
    ("pretrain.schedule", "constant"),
    ("pretrain.max_steps", 1000),
    ("pretrain.dim", 256),
    ("pretrain.queue_size", 16384),
    ("pretrain.key_momentum", 0.99),
    ("pretrain.temperature", 0.07),
    ("pretrain.aug_impl", "fast"),
    ("pretrain.amp", "bf16"),
    ("pretrain.teacher_amp", "bf16"),
    ("pretrain.teacher_ckpt.format", "swav"),
    ("pretrain.teacher_ckpt.head.hidden", 4096),
    ("pretrain.teacher_ckpt.head.batchnorm", True),
    ("eval.protocol", "fast"),
    ("eval.epochs", 90),
    ("eval.batch_size", 1024),
    ("eval.image_size", 160),
    ("eval.lr", 10.0),
    ("eval.lr_milestones", [0.5, 0.75]),
    ("eval.weight_decay", 0.0001),
    ("eval.solver", "lbfgs"),
    ("eval.head_init_std", 0.001),
    # settings the paper never states: a probe with KD, an option added later
    ("eval.kd_alpha", 0.5),
    ("pretrain.new_option", True),
]
# Recorded, they split pools, but the paper does not fix them
ENVIRONMENT = [
    ("run.threads", 1),
    ("pretrain.run.threads", 1),
    ("pretrain.run.accelerator", "cpu x86_64"),
    ("pretrain.run.versions.torch", "2.5.0"),
    ("eval.amp", "none"),
]


def table(key: str):
    return next(t for t in paper_tables() if t.key == key)


def cell(
    records: list[dict], table_key: str = "table1", column: str = "disco-r50", student: str = "resnet18"
):
    t = table(table_key)
    grid = table_cells(t, tidy(records))
    row = grid[list(t.rows).index(student)]
    return row[[c.key for c in t.columns].index(column)]


def varied(record: dict, path: str, value) -> dict:
    record = copy.deepcopy(record)
    scope, *keys = path.split(".")
    target = record["run"] if scope == "run" else record["protocol"][scope]
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value
    return record


def test_a_paper_setting_record_fills_the_cell_and_seeds_pool():
    runs = [linear_record(value=61.0, seed=0), linear_record(value=60.0, seed=1)]
    c = cell(runs)
    assert len(c.records) == 2 and c.mean == 60.5 and not c.other_pools
    assert "60.50 ± 0.71 (n=2) (paper 60.6, Δ -0.10) [setting " in c.text()


@pytest.mark.parametrize(("path", "value"), VARIANTS, ids=[p for p, _ in VARIANTS])
def test_a_variant_of_any_setting_stays_out_of_the_paper_cell_and_out_of_its_pool(path, value):
    paper = linear_record(value=61.0, seed=0)
    variant = varied(linear_record(value=40.0, seed=1, rid="v"), path, value)
    c = cell([paper, variant])
    assert [r["id"] for r in c.records] == [
        "r0"
    ] and not c.other_pools  # 61.00 (n=1), the variant not averaged in
    assert cell([variant]).records == []
    rows = task_frame(tidy([paper, variant]), paper_tables())
    assert rows.setting.nunique() == 2  # its own row in the per-task table ...
    label = rows.set_index("id").loc["v1", "paper"]
    if path == "pretrain.hidden":  # hidden 512 is the paper's setting of another table
        assert label == "paper setting (Table 4)"
    else:
        assert label.startswith("vs paper (") and path.split(".")[-1] in label  # ... labelled by what differs


@pytest.mark.parametrize(("path", "value"), ENVIRONMENT, ids=[p for p, _ in ENVIRONMENT])
def test_where_a_run_ran_does_not_keep_it_out_of_the_cell_but_splits_the_pool(path, value):
    paper = [linear_record(value=61.0, seed=0), linear_record(value=60.0, seed=1)]
    other = varied(linear_record(value=40.0, seed=2, rid="v"), path, value)
    c = cell(paper + [other])
    assert c.mean == 60.5 and len(c.records) == 2 and [p[0]["id"] for p in c.other_pools] == ["v2"]
    assert "1 more setting in the per-task tables" in c.text()


def test_the_issues_example_hidden_512_is_table_4_not_table_1():
    """DisCo R-18 from R-50: hidden 2048 (61.0) and hidden 512 (40.0, a Table 4 run)."""
    wide = linear_record(value=61.0)
    narrow = varied(linear_record(value=40.0, seed=1, rid="n"), "pretrain.hidden", 512)
    assert cell([wide, narrow]).text().startswith("61.00 (n=1) (paper 60.6, Δ +0.40)")
    assert cell([wide, narrow], "table3", "disco").records == [wide]
    assert cell([wide, narrow], "table4", "h512").records == [narrow]
    assert cell([wide, narrow], "table4", "h2048").records == [wide]


def test_records_written_before_the_run_fields_existed_pool_only_with_each_other():
    old = [linear_record(value=v, seed=s, rid="o") for s, v in enumerate([50.0, 52.0])]
    for r in old:
        del r["run"], r["protocol"]["pretrain"]["run"]
    new = linear_record(value=61.0, seed=5)
    assert cell(old + [new]).records == [new]  # unknown processes and batch: not the paper's 8 x 32
    rows = task_frame(tidy(old + [new]), paper_tables())
    assert rows.setting.nunique() == 2 and rows[rows.id.str.startswith("o")].setting.nunique() == 1


def test_the_board_links_each_cell_to_its_setting_in_full():
    text, _ = render([linear_record(value=61.0, seed=0), linear_record(value=60.0, seed=1)])
    link = text.split("(n=2) (paper 60.6, Δ -0.10) [setting ")[1].split("]")[0]
    section = text.split(f"### setting {link}")[1].split("###")[0]
    assert "pretrain.hidden=2048" in section and "pretrain.run.per_process_batch=32" in section
    assert "pretrain.distill_reduction=sum" in section and "eval.protocol=paper" in section
    assert "### paper setting disco-linear" in text and "[disco-linear](#paper-setting-disco-linear)" in text
