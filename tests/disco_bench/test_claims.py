"""The claims table: hand-computed gaps and bars on synthetic linear records."""

from __future__ import annotations

import pytest

from disco_bench.claims import claim_rows, claims_section

TEACHER_SHA = "t" * 64


def linear(
    method: str,
    value: float,
    seed: int = 0,
    epochs: int = 6,
    hidden: int = 512,
    teacher: str | None = TEACHER_SHA,
    student: str = "resnet10t",
    sha: str | None = None,
) -> dict:
    pre = {
        "epochs": epochs,
        "batch_size": 64,
        "image_size": 32,
        "hidden": hidden,
        "teacher_ckpt": {"sha256": teacher} if teacher else None,
    }
    return {
        "task": "linear",
        "metric": "top1",
        "dataset": "toy",
        "student": student,
        "method": method,
        "value": value,
        "seed": seed,
        "checkpoint_sha256": sha or f"{method}{seed}{epochs}",
        "protocol": {"pretrain": pre, "eval": {"protocol": "fast", "image_size": 32}},
    }


def board() -> list[dict]:
    recs = [linear("disco", v, s, hidden=2048) for s, v in enumerate([70.0, 72.0, 74.0])]  # 72 ± 2
    recs += [linear("moco", v, s, teacher=None) for s, v in enumerate([60.0, 61.0, 62.0])]  # 61 ± 1
    recs += [linear("moco", 99.0, 0, epochs=10, teacher=None)]  # another budget: never compared
    recs += [linear("seed", 73.0, s) for s in range(3)]  # 73 ± 0
    recs += [linear("seed", 10.0, 0, teacher="x" * 64)]  # another teacher: never compared
    recs += [linear("disco*", v, s) for s, v in enumerate([65.0, 66.0])]
    recs += [
        linear("moco", 80.0, 0, epochs=40, hidden=2048, teacher=None, student="resnet14t", sha=TEACHER_SHA)
    ]
    return recs


def test_each_claim_gets_its_hand_computed_gap_bar_and_verdict():
    rows = {r["other_name"]: r for r in claim_rows(board())}
    assert set(rows) == {"MoCo-v2", "SEED", "DisCo*", "teacher"}
    moco = rows["MoCo-v2"]
    assert moco["disco"].mean == 72.0 and moco["disco"].std == pytest.approx(2.0)
    assert moco["other"].values == (60.0, 61.0, 62.0) and moco["gap"] == pytest.approx(11.0)
    assert moco["bar"] == pytest.approx(4.0) and moco["holds"] is True  # 11 > 2 x max(2, 1)
    assert rows["SEED"]["gap"] == pytest.approx(-1.0) and rows["SEED"]["holds"] is False
    assert rows["DisCo*"]["gap"] == pytest.approx(6.5) and rows["DisCo*"]["holds"] is True
    assert "hidden 2048) > DisCo* (hidden 512)" in rows["DisCo*"]["claim"]
    assert (
        rows["teacher"]["other"].values == (80.0,) and rows["teacher"]["holds"] is True
    )  # 80 > best run (73)


def test_one_seed_cannot_clear_a_two_std_bar_and_the_table_says_so():
    recs = [linear("disco", 72.0, hidden=2048), linear("moco", 60.0, teacher=None)]
    (row,) = claim_rows(recs)
    assert row["bar"] is None and row["holds"] is None
    text = "\n".join(claims_section(recs))
    assert "needs ≥ 2 seeds each" in text and "+12.00" in text


def test_the_teacher_must_beat_the_best_student_run():
    recs = board() + [linear("seed", 95.0, 3)]  # one SEED seed above the teacher lifts SEED's mean to 78.5
    teacher = next(r for r in claim_rows(recs) if r["other_name"] == "teacher")
    assert teacher["holds"] is True
    recs = board() + [linear("seed", 130.0, 3)]  # mean (73*3+130)/4 = 87.25 > 80
    teacher = next(r for r in claim_rows(recs) if r["other_name"] == "teacher")
    assert teacher["holds"] is False
    assert "**does not hold**" in "\n".join(claims_section(recs))


def test_no_disco_records_means_no_section():
    assert claims_section([linear("moco", 60.0, teacher=None)]) == []


def test_runs_of_another_setting_are_not_pooled_as_seeds():
    """The issue's case: a hidden-512 DisCo run (40.0) beside two hidden-2048 seeds (70, 72)."""
    recs = [linear("disco", v, s, hidden=2048) for s, v in enumerate([70.0, 72.0])]
    recs += [
        linear("disco", 40.0, 2, hidden=512),
        linear("moco", 60.0, teacher=None),
        linear("moco", 62.0, 1, teacher=None),
    ]
    rows = [r for r in claim_rows(recs) if r["other_name"] == "MoCo-v2"]
    assert sorted(r["disco"].values for r in rows) == [(40.0,), (70.0, 72.0)]  # two settings, two rows
    wide = next(r for r in rows if len(r["disco"].values) == 2)
    assert wide["disco"].mean == 71.0 and wide["gap"] == pytest.approx(10.0) and wide["holds"] is True
