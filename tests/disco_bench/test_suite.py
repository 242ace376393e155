"""Suite files: named subsets, registry checks, and the full suite's dry run and data check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from disco_bench.cli import main
from disco_bench.leaderboard.matching import cell_matches
from disco_bench.leaderboard.paper import paper_tables
from disco_bench.suite import available_suites, load_suite, select_steps
from infra.errors import InputError

SUBSETS = [
    "table1",
    "table3",
    "table4",
    "table5",
    "testbeds",
    "semisup",
    "cifar",
    "analysis",
    "teachers_appendix",
]


@pytest.fixture(scope="module")
def full():
    return load_suite("full")


def test_subsets_are_closed_under_dependencies(full):
    ids = {s.id for s in full.steps}
    for name in SUBSETS:
        sub = load_suite(name)
        have = {s.id for s in sub.steps}
        assert sub.extends == "full" and have <= ids and have
        assert all(need in have for s in sub.steps for need in s.needs), name


def test_table3_subset_is_disco_star_beside_disco(full):
    ids = {s.id for s in load_suite("table3").steps}
    assert "linear-discostar-r50-resnet18" in ids and "linear-disco-r50-resnet18" in ids
    assert not any("-h512-" in i or "seed" in i for i in ids)


# Paper columns no step of `full` measures yet, each with the reason (the leaderboard says "no step").
NOT_IN_FULL = {
    ("table1", "supervised"): "supervised training is not a pre-training method here",
    ("table1_top5", "supervised"): "supervised training is not a pre-training method here",
    ("teachers", "sela"): "no SeLa-V2 teacher step (its file loads in SwAV's layout)",
    ("other_teachers", "sela"): "no SeLa-V2 teacher step",
    ("voc07_teacher_detection", "moco-ap"): "MoCo's own 24k-iteration VOC recipe is not a step",
    ("voc07_teacher_detection", "moco-ap50"): "MoCo's own 24k-iteration VOC recipe is not a step",
    ("voc07_teacher_detection", "moco-ap75"): "MoCo's own 24k-iteration VOC recipe is not a step",
}


def test_every_paper_cell_has_a_step_in_full():
    missing = []
    for table in paper_tables():
        for student, values in table.rows.items():
            for col, paper in zip(table.columns, values, strict=True):
                if paper is None or (table.key, col.key) in NOT_IN_FULL:
                    continue
                if col.step_id(student) is None:
                    missing.append(f"{table.key}/{col.key}/{student}")
    assert not missing


def test_the_step_a_cell_names_exists_in_full_and_would_fill_it():
    """The report takes a cell's command from paper_numbers.yaml; here every named step is planned
    from the full suite and its would-be record must match the cell (scale and run outcomes aside)."""
    from tests.disco_bench.planned_records import suite_candidates

    planned = dict(suite_candidates("full"))
    wrong = []
    for table in paper_tables():
        for student in table.rows:
            for col in table.columns:
                step = col.step_id(student)
                if step is None:
                    continue
                pseudo = planned.get(step)
                if pseudo is None or not cell_matches(
                    pseudo, table, col, student, check_metric=False, partial=True
                ):
                    wrong.append(f"{table.key}/{col.key}/{student}: {step}")
    assert not wrong


def test_the_columns_said_to_have_no_step_have_none():
    for table in paper_tables():
        for col in table.columns:
            if (table.key, col.key) in NOT_IN_FULL:
                assert all(col.step_id(s) is None for s in table.rows), (
                    table.key,
                    col.key,
                )


def test_an_unregistered_method_fails_when_the_suite_loads(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"steps": [{"id": "x", "kind": "pretrain", "with": {"method": "mocco"}}]}))
    with pytest.raises(InputError) as exc:
        load_suite(str(path))
    msg = str(exc.value)
    assert "'x'" in msg and "mocco" in msg and "disco" in msg and "\n" not in msg


def test_an_unregistered_task_fails_when_the_suite_loads(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"steps": [{"id": "e", "kind": "eval", "task": "segmentation", "with": {}}]})
    )
    with pytest.raises(InputError, match="segmentation"):
        load_suite(str(path))


def test_a_subset_of_a_subset_and_bad_selects(tmp_path):
    (tmp_path / "base.yaml").write_text(
        yaml.safe_dump({"steps": [{"id": "p", "kind": "eval", "task": "linear", "tags": ["t"], "with": {}}]})
    )
    (tmp_path / "sub.yaml").write_text(
        yaml.safe_dump({"extends": str(tmp_path / "base.yaml"), "select": ["t"]})
    )
    assert [s.id for s in load_suite(str(tmp_path / "sub.yaml")).steps] == ["p"]
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump({"extends": str(tmp_path / "base.yaml"), "select": ["zz"]})
    )
    with pytest.raises(InputError, match="'zz' matches no step"):
        load_suite(str(tmp_path / "bad.yaml"))


def test_select_keeps_suite_order(full):
    picked = select_steps(full.steps, ["linear-disco-r101-resnet18"])
    assert [s.id for s in picked] == ["teacher-r101", "disco-r101-resnet18", "linear-disco-r101-resnet18"]


def test_every_suite_loads():
    for name in available_suites():
        assert load_suite(name).steps, name


def test_full_dry_run_without_data_lists_every_step(tmp_path, capsys, full):
    assert main(["run", "--suite", "full", "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    for step in full.steps:
        assert f"] {step.id} [todo]" in printed
    assert "$DATA_ROOT/imagenet" in printed and "GPU-hours" in printed.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_full_run_without_data_stops_at_once_naming_the_first_missing_path(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    assert (
        main(["run", "--suite", "full", "--out", str(tmp_path / "out"), "--data-root", str(empty), "--quiet"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty / "imagenet" / "train") in err[0], err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_full_run_checks_every_dataset_before_any_step(tmp_path, capsys, tiny_imagefolder):
    """ImageNet present, CIFAR missing: still no step runs."""
    root = tmp_path / "data"
    (root / "imagenet").parent.mkdir(parents=True)
    (root / "imagenet").symlink_to(Path(tiny_imagefolder))
    assert (
        main(["run", "--suite", "full", "--out", str(tmp_path / "out"), "--data-root", str(root), "--quiet"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cifar-10-batches-py" in err[0], err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_full_run_without_data_root_names_the_dataset(tmp_path, capsys):
    assert main(["run", "--suite", "table1", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "imagenet" in err[0] and "--data-root" in err[0]


def test_a_kd_probe_reads_the_teacher_probes_classifier_and_its_hash_follows_it(full):
    import dataclasses

    from disco_bench.planning import build_context, plan, restrict

    kd = next(s for s in full.steps if s.id == "linear-kd-moco-resnet18")
    assert set(kd.needs) == {"moco-resnet18", "linear-teacher-r50"}

    def planned(suite) -> tuple[dict, object]:
        suite = restrict(suite, ["linear-kd-moco-resnet18"])
        ctx = build_context(suite, Path("/out"), None, {}, progress=False, create=False)
        return {s.id: h for s, h in plan(suite, ctx)}, ctx

    hashes, ctx = planned(full)
    assert ctx.reference("@linear-teacher-r50:classifier") == Path(
        "/out/eval/linear-teacher-r50/classifier.pt"
    )
    with pytest.raises(
        InputError, match="@linear-teacher-r50:weights: unknown product; choose from classifier"
    ):
        ctx.reference("@linear-teacher-r50:weights")
    other_teacher_probe = [
        dataclasses.replace(s, params=s.params | {"epochs": 90}) if s.id == "linear-teacher-r50" else s
        for s in full.steps
    ]
    changed, _ = planned(dataclasses.replace(full, steps=other_teacher_probe))
    assert changed["linear-teacher-r50"] != hashes["linear-teacher-r50"]
    assert (
        changed["linear-kd-moco-resnet18"] != hashes["linear-kd-moco-resnet18"]
    )  # only through the reference
    assert changed["moco-resnet18"] == hashes["moco-resnet18"]
