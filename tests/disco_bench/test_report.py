"""The leaderboard from a fixed records file: a golden file, plus the rules behind its cells.

Regenerate the golden file after an intended change with UPDATE_GOLDEN=1 and read the diff.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from paper_records import linear_record

from disco_bench.leaderboard.markdown import render
from disco_bench.leaderboard.matching import cell_matches
from disco_bench.leaderboard.paper import paper_tables
from disco_bench.report import write_report
from infra.errors import InputError

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    shutil.copy(GOLDEN / "records.jsonl", out / "results.jsonl")
    write_report(out)
    return out


def test_leaderboard_matches_the_golden_file(board):
    text = (board / "LEADERBOARD.md").read_text()
    if os.environ.get("UPDATE_GOLDEN"):
        (GOLDEN / "LEADERBOARD.md").write_text(text)
    assert text == (GOLDEN / "LEADERBOARD.md").read_text()


def cells(board) -> pd.DataFrame:
    return pd.read_csv(board / "leaderboard.csv").set_index(["table", "student", "column"])


def test_seeds_are_averaged_and_compared_with_the_paper(board):
    cell = cells(board).loc[("table1", "resnet18", "moco")]
    assert (
        cell.n == 2
        and cell.ours_mean == pytest.approx(51.5)
        and cell.ours_std == pytest.approx(0.7071, abs=1e-4)
    )
    assert cell.paper == 52.2 and cell.delta == pytest.approx(-0.7)
    assert "51.50 ± 0.71 (n=2) (paper 52.2, Δ -0.70)" in (board / "LEADERBOARD.md").read_text()


def test_numbers_outside_the_papers_setting_are_not_compared(board):
    """Embedded data (40.0), the fast probe (50.0) and 100-epoch pre-training (58.0) stay out of Table 1."""
    table1 = cells(board).loc["table1"]
    assert table1.loc[("resnet18", "disco-r50")].ours_mean == 61.0
    board_text = (board / "LEADERBOARD.md").read_text()
    section = board_text.split("### Table 1: ImageNet linear top-1")[1].split("###")[0]
    assert "40.00" not in section and "50.00" not in section and "58.00" not in section
    assert "40.00" in board_text and "58.00" in board_text  # still shown in the per-task tables


def test_missing_cells_name_the_step_that_fills_them(board):
    """The command comes from the column's step in paper_numbers.yaml (the report plans nothing)."""
    row = cells(board).loc[("table1", "resnet18", "seed-r50")]
    assert row.n == 0 and row.fill_command == (
        "python -m disco_bench run --suite full --data-root DATA --only linear-seed-r50-resnet18"
    )
    assert pd.isna(cells(board).loc[("table1", "resnet18", "supervised")].fill_command)  # no step names it


def test_results_csv_is_the_tidy_table_and_leaderboard_csv_has_the_users_rows(board):
    import json

    results = pd.read_csv(board / "results.csv")
    assert {"setting", "pretrained_on", "pretrain.hidden", "eval.protocol", "run.threads"} <= set(
        results.columns
    )
    assert len(results) == len((board / "results.jsonl").read_text().splitlines())
    protocol = json.loads(results.protocol.dropna().iloc[0])  # JSON text, not a Python repr
    assert isinstance(protocol, dict)
    assert results.groupby("setting").value.count().sum() == len(results)  # a user can group by setting
    board_csv = pd.read_csv(board / "leaderboard.csv")
    own = board_csv[board_csv.table == "own"]
    assert len(own) and own.n.sum() + board_csv[board_csv.table != "own"].n.sum() >= len(own)
    in_cells = set(" ".join(board_csv[board_csv.table != "own"].records.dropna()).split())
    assert not in_cells & set(" ".join(own.records.dropna()).split())  # a record is in one row only


def test_each_row_says_where_its_numbers_came_from(board):
    text = (board / "LEADERBOARD.md").read_text()
    assert "- resnet18: MoCo-v2 ← step linear-moco-resnet18; records" in text
    assert "(seeds 0, 1); ckpt sharesnet1; config cfglinea" in text


def test_plots_are_written_and_linked(board):
    text = (board / "LEADERBOARD.md").read_text()
    for png in ("plots/table1.png", "plots/teachers.png", "plots/semisup.png", "plots/task-linear.png"):
        assert (board / png).stat().st_size > 1000 and png in text
        svg = (board / png).with_suffix(".svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    assert "[tsne.png](eval/tsne/tsne.png)" in text


def test_a_teacher_column_of_any_matches_only_a_distilled_record():
    dino = next(t for t in paper_tables() if t.key == "dino_testbed")
    rec = linear_record("disco", student="vit_tiny_patch16_224") | {
        "method": "dino+disco",
        "teacher": "vit_small_patch16_224",
    }
    rec["protocol"]["pretrain"] |= {"method": "dino+disco", "epochs": 100}
    rec["protocol"]["eval"]["lr"] = 3.0  # the probe's default for a ViT
    assert cell_matches(rec, dino, dino.columns[1], "vit_tiny_patch16_224")
    assert not cell_matches(rec | {"teacher": None}, dino, dino.columns[1], "vit_tiny_patch16_224")


def test_a_bad_paper_file_is_one_line(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text(
        "t: {title: x, task: linear, metric: top1, dataset: imagenet, columns: [{key: a, method: moco}], "
        "rows: {resnet18: [1.0, 2.0]}}"
    )
    with pytest.raises(InputError, match="rows.resnet18: expected 1 values"):
        render([{"task": "linear"}], paper_path=bad)


def test_no_records_is_a_short_board(tmp_path):
    assert write_report(tmp_path).read_text().endswith("No records yet.\n")


def test_small_values_keep_three_significant_digits():
    from disco_bench.leaderboard.cells import fmt as _fmt

    assert _fmt([0.0012]) == "0.0012" and _fmt([5.341, 5.3]) == "5.32 ± 0.03 (n=2)"
    assert _fmt([0.001, 0.003]) == "0.002 ± 0.00141 (n=2)"  # a mean-reduced MSE does not print as 0.00


def test_a_multi_checkpoint_record_shows_its_own_checkpoints_pretraining():
    import json

    from disco_bench.leaderboard.markdown import task_frame
    from disco_bench.leaderboard.table import tidy

    base = json.loads(
        next(line for line in (GOLDEN / "records.jsonl").read_text().splitlines() if '"tsne"' in line)
    )

    def pretrain(sha: str, epochs: int) -> dict:
        return base | {
            "id": f"p{sha}",
            "task": "pretrain",
            "metric": "final_loss",
            "value": 1.0,
            "checkpoint_sha256": sha,
            "protocol": {"epochs": epochs, "hidden": 512},
            "extra": None,
        }

    first = {"epochs": 6, "hidden": 512}  # a tsne step's protocol is its first checkpoint's
    tsne = [
        base
        | {
            "id": f"t{sha}",
            "checkpoint_sha256": "A",
            "protocol": {"eval": {}, "pretrain": first},
            "extra": {"arch": "resnet10t", "method": "disco", "ckpt": sha, "sha256": sha},
        }
        for sha in "ABC"
    ]
    df = task_frame(tidy([pretrain("A", 6), pretrain("B", 40)] + tsne)).set_index("id")
    assert df.loc["tA", "short_setting"] == "6 ep, hidden 512"
    assert df.loc["tB", "short_setting"] == "40 ep, hidden 512"  # not the first checkpoint's 6 epochs
    assert df.loc["tC", "short_setting"] == "—"  # C's pre-training is in no record: nothing is claimed


def test_checkpoints_pretrained_on_different_data_never_share_a_transfer_row():
    """Two MoCo-v2 students with equal protocols, one pre-trained on set a and one on set b, both
    probed on the same CIFAR set: two rows (their seeds would otherwise pool into one mean)."""
    from disco_bench.leaderboard.markdown import task_frame, task_table
    from disco_bench.leaderboard.table import tidy

    protocol = {"epochs": 3, "hidden": 1024, "method": "moco"}
    common = {"method": "moco", "student": "mobilenetv3_small_050", "teacher": None, "seed": 0, "extra": None,
              "config_hash": "c", "label": "MoCo-v2 alone", "run": None}  # fmt: skip
    records = []
    for data in ("a", "b"):
        records.append(common | {"id": f"p{data}", "task": "pretrain", "metric": "final_loss", "value": 1.0,
                                 "dataset": data, "checkpoint_sha256": data, "protocol": protocol})  # fmt: skip
        records.append(common | {"id": f"c{data}", "task": "cifar", "metric": "top1", "value": 30.0,
                                 "dataset": "cifar10", "checkpoint_sha256": data,
                                 "protocol": {"pretrain": protocol, "eval": {"protocol": "fast"}}})  # fmt: skip
    table = task_table(task_frame(tidy(records)), "cifar")
    rows = [line for line in table.splitlines() if line.startswith("| MoCo-v2 alone")]
    assert (
        len(rows) == 2 and "| cifar10 | a |" in rows[0] + rows[1] and "| cifar10 | b |" in rows[0] + rows[1]
    )
    assert "pretrained on" in table.splitlines()[0]
    # and two settings: results.csv, the charts and the setting sections group by it
    df = tidy(records)
    cifar = df[df.task == "cifar"]
    assert cifar.setting.nunique() == 2 and cifar.pool.nunique() == 2
    assert df[df.task == "pretrain"].setting.nunique() == 2  # their own records: the dataset tells them apart
    from disco_bench.leaderboard.markdown import render

    text, _ = render(df)
    assert "dataset cifar10, student mobilenetv3_small_050, method moco, pre-trained on a:" in text


def test_pictures_are_linked_from_out_whichever_way_their_record_names_them(tmp_path, monkeypatch):
    from disco_bench.leaderboard.markdown import artifact_link

    monkeypatch.chdir(tmp_path)
    out = Path("results/cpu")
    (out / "eval" / "t").mkdir(parents=True)
    (out / "eval" / "t" / "tsne.png").write_bytes(b"png")
    assert artifact_link("eval/t/tsne.png", out) == "eval/t/tsne.png"  # relative to OUT (suite steps now)
    assert artifact_link("results/cpu/eval/t/tsne.png", out) == "eval/t/tsne.png"  # relative to the run's cwd
    assert artifact_link(str(tmp_path / "results/cpu/eval/t/tsne.png"), out) == "eval/t/tsne.png"


def test_runs_pretrained_on_different_data_are_two_rows_and_the_same_data_at_two_paths_one():
    """Two MoCo-v2 students, seed 0 both, evaluated on the same digits set: one pre-trained on the
    digits, one on a 5-class subset (another fingerprint) -> two settings, never "n=2". The same
    data read from another path (same fingerprint) pools."""
    from disco_bench.leaderboard.markdown import task_frame, task_table
    from disco_bench.leaderboard.table import tidy

    def run(rid: str, fingerprint: str, path: str) -> dict:
        data = {"name": "digits", "fingerprint": fingerprint, "path": path}
        protocol = {"epochs": 3, "hidden": 512, "method": "moco", "seed": 0, "data": data}
        return {"id": rid, "task": "linear", "metric": "top1", "value": 97.0, "method": "moco",
                "student": "resnet18", "teacher": None, "seed": 0, "dataset": "digits", "extra": None,
                "checkpoint_sha256": rid, "label": "MoCo-v2", "config_hash": "c", "run": None,
                "protocol": {"pretrain": protocol, "eval": {"protocol": "fast"}}}  # fmt: skip

    df = tidy([run("full", "f" * 16, "/data/digits"), run("subset", "5" * 16, "/data/digits5")])
    assert df.setting.nunique() == 2 and set(df.pretrain_data) == {"f" * 16, "5" * 16}
    rows = [
        line for line in task_table(task_frame(df), "linear").splitlines() if line.startswith("| MoCo-v2")
    ]
    assert len(rows) == 2 and all("(n=2)" not in r for r in rows) and all("| digits |" in r for r in rows)
    moved = tidy([run("here", "f" * 16, "/data/digits"), run("there", "f" * 16, "/mnt/copy/digits")])
    assert moved.setting.nunique() == 1  # the path is provenance, not a setting


def test_a_number_from_a_degenerate_state_says_so_and_a_max_steps_run_is_labelled_by_its_steps():
    from disco_bench.leaderboard.markdown import task_frame, task_table
    from disco_bench.leaderboard.table import tidy

    protocol = {"epochs": 22, "max_steps": 8, "hidden": 512, "method": "moco"}
    rec = {"id": "m1", "task": "mi", "metric": "mi_xt_bits", "value": 0.008, "method": "moco",
           "student": "resnet18", "teacher": None, "seed": 0, "dataset": "cifar10", "label": "MoCo-v2",
           "checkpoint_sha256": "a", "config_hash": "c", "run": None,
           "extra": {"degenerate": ["the classifier behind it is at chance (10.4 % top-1, 10 classes)"]},
           "protocol": {"pretrain": protocol, "eval": {"protocol": "paper"}}}  # fmt: skip
    df = tidy([rec])
    assert df.degenerate.iloc[0].startswith("the classifier behind it is at chance")
    line = next(x for x in task_table(task_frame(df), "mi").splitlines() if x.startswith("| MoCo-v2"))
    assert "**degenerate**: the classifier behind it is at chance" in line
    assert "8 steps (max_steps; 22 ep planned)" in line and "22 ep," not in line


def test_a_students_contrastive_loss_is_shown_beside_chance():
    import math

    from disco_bench.leaderboard.markdown import task_frame, task_table
    from disco_bench.leaderboard.table import tidy

    protocol = {"epochs": 5, "hidden": 1024, "method": "moco", "queue_size": 1024}
    recs = [{"id": f"p{m}", "task": "pretrain", "metric": m, "value": v, "method": "moco", "student": "resnet18",
             "teacher": None, "seed": 0, "dataset": "a", "label": "MoCo-v2", "checkpoint_sha256": "s",
             "config_hash": "c", "run": None, "extra": None, "protocol": protocol}
            for m, v in (("final_loss", 6.83), ("final_loss_con", 6.83))]  # fmt: skip
    table = task_table(task_frame(tidy(recs)), "pretrain")
    assert "chance ln(K+1)" in table.splitlines()[0]
    assert f"| {math.log(1025):.2f} |" in table  # 6.93: the loss sits at chance


def test_leaderboard_csv_keeps_records_without_ids_and_an_information_plane_at_its_last_epoch():
    """leaderboard.csv's own rows are the per-task table's: a record with no id still counts (another
    id-less record filling a paper cell does not take it along), and a per-epoch curve counts once per
    seed, at its last epoch (n = seeds, not seeds × epochs)."""
    from disco_bench.leaderboard.export import cells_csv
    from disco_bench.leaderboard.table import tidy

    in_cell = linear_record("disco", 61.0, seed=0) | {"id": None}
    own = linear_record("disco", 33.0, seed=1, student="tiny") | {"id": None}
    curves = []
    for seed in (0, 1):
        for epoch, value in ((0, 9.0), (1, 2.0 + seed)):
            curves.append(
                linear_record("disco", value, seed=seed, rid=f"mi{epoch}-")
                | {"task": "mi", "metric": "mi_xt_bits", "extra": {"epoch": epoch}, "step": "mi"}
            )
    records = [in_cell, own, *curves]
    df = tidy(records)
    _, cells = render(df)
    assert any(r is in_cell for c in cells for r in c.records)
    board = pd.read_csv(__import__("io").StringIO(cells_csv(cells, df)))
    mine = board[(board.table == "own") & (board.task == "linear")]
    assert list(mine.student) == ["tiny"] and list(mine.ours_mean) == [33.0]
    (mi,) = board[(board.table == "own") & (board.task == "mi")].itertuples()
    assert (mi.n, mi.ours_mean) == (2, 2.5)
