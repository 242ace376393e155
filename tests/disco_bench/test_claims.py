"""The claims' arithmetic: verdicts by hand on crafted records (pre-training records joined to the
evaluation records through the checkpoint's sha256, as a real run writes them)."""

from __future__ import annotations

import pytest

from disco_bench.claims import (
    CLAIMS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    claim_rows,
    claims_section,
    probe_agreement,
    reproduced,
)
from disco_bench.leaderboard.paper import paper_tables
from disco_bench.leaderboard.table import tidy
from disco_bench.stats import PAIRED, WELCH, difference

TEACHER = "t" * 64


def pretrain(method, seed, *, hidden=2048, epochs=5, teacher=TEACHER, student="mobilenetv3_small_050",
             dataset="toy", sha=None) -> dict:  # fmt: skip
    protocol = {"method": method, "seed": seed, "epochs": epochs, "batch_size": 64, "image_size": 32,
                "hidden": hidden, "teacher_ckpt": {"sha256": teacher} if teacher else None}  # fmt: skip
    return {
        "task": "pretrain",
        "metric": "final_loss",
        "value": 1.0,
        "method": method,
        "student": student,
        "dataset": dataset,
        "seed": seed,
        "checkpoint_sha256": sha or f"{method}-{seed}-{hidden}-{epochs}-{teacher}-{dataset}",
        "protocol": protocol,
    }


def evaluate(pre: dict, value: float, *, task="linear", metric="top1", dataset=None, probe="fast") -> dict:
    return {
        "task": task,
        "metric": metric,
        "value": value,
        "method": pre["method"],
        "student": pre["student"],
        "dataset": dataset or pre["dataset"],
        "seed": pre["seed"],
        "checkpoint_sha256": pre["checkpoint_sha256"],
        "protocol": {"pretrain": pre["protocol"], "eval": {"protocol": probe, "image_size": 32}},
        "label": f"{pre['method']} h{pre['protocol']['hidden']}",
    }


def runs(method, values, **kw) -> list[dict]:
    """Pre-training and linear records of one method, one seed per value."""
    out = []
    for seed, v in enumerate(values):
        pre = pretrain(method, seed, **kw)
        out += [pre, evaluate(pre, v)]
    return out


def teacher(value: float, dataset="toy") -> list[dict]:
    pre = pretrain("moco", 0, epochs=30, teacher=None, student="resnet14t", dataset=dataset, sha=TEACHER)
    return [pre, evaluate(pre, value)]


def rows_of(records, key):
    return [r for r in claim_rows(tidy(records)) if r.claim.key == key]


def summary_of(records) -> dict:
    return {s["claim"].key: s for s in reproduced(claim_rows(tidy(records)))}


def test_table1_rows_compare_only_runs_of_one_context():
    recs = runs("disco", [70.0, 72.0, 74.0]) + runs("moco", [60.0, 61.0, 62.0], hidden=1024, teacher=None)
    recs += runs("moco", [99.0, 99.0, 99.0], epochs=10, teacher=None)  # another budget: never compared
    recs += runs("seed", [73.0, 73.0, 73.0]) + runs(
        "seed", [10.0, 10.0, 10.0], teacher="x" * 64
    )  # other teacher
    recs += runs("moco", [5.0, 5.0, 5.0], teacher=None, dataset="other")  # pre-trained on other data
    (moco,) = rows_of(recs, "linear-moco")
    assert moco.left.values == (70.0, 72.0, 74.0) and moco.right.values == (60.0, 61.0, 62.0)
    # paired by seed: differences 10, 11, 12 -> 11 ± t(0.975, 2) / sqrt(3)
    assert moco.diff == difference([70, 72, 74], [60, 61, 62], pair_by=([0, 1, 2], [0, 1, 2]))
    assert moco.diff.method == PAIRED and moco.diff.low > 0 and moco.verdict == HOLDS
    (seed,) = rows_of(recs, "linear-seed")
    assert seed.right.values == (73.0, 73.0, 73.0) and seed.gap == pytest.approx(-1.0)
    assert seed.verdict == INCONCLUSIVE and "wrong side of the margin" in seed.note  # -1 against "by > 2"


def test_variants_get_their_own_rows_and_one_seed_has_no_interval():
    recs = runs("disco", [70.0, 72.0, 74.0]) + runs("disco", [40.0], hidden=512)
    recs += runs("moco", [60.0, 61.0, 62.0], teacher=None)
    sweep = rows_of(recs, "t4-1024") + rows_of(recs, "linear-moco")
    assert len(rows_of(recs, "linear-moco")) == 1  # hidden 512 is not "DisCo (hidden 2048)"
    (widest,) = [r for r in sweep if r.claim.key == "linear-moco"]
    assert widest.left.values == (70.0, 72.0, 74.0)
    recs += runs("disco*", [50.0, 52.0, 54.0], hidden=1024)
    (step,) = rows_of(recs, "t4-1024")  # disco* at hidden 1024 is the sweep's 1024 point
    assert step.right.values == (40.0,) and step.verdict == INCONCLUSIVE and "needs ≥ 2 seeds" in step.note
    assert step.diff is None and not step.tested


def test_headroom_needs_the_margin_and_a_random_init_joins_every_context():
    recs = teacher(80.0) + runs("moco", [60.0, 61.0, 62.0], teacher=None)
    for seed, v in enumerate([11.0, 12.0, 13.0]):
        init = {"task": "checkpoint", "metric": "backbone_params_m", "value": 0.4, "method": "random-init",
                "student": "mobilenetv3_small_050", "checkpoint_sha256": f"init{seed}", "seed": seed,
                "dataset": "-", "protocol": {"init": "random"}}  # fmt: skip
        probe = {**init, "task": "linear", "metric": "top1", "value": v, "dataset": "toy",
                 "protocol": {"pretrain": {}, "eval": {"protocol": "fast", "image_size": 32}}}  # fmt: skip
        recs += [init, probe]
    recs += runs("disco", [70.0, 70.0, 70.0])  # makes TEACHER a teacher
    (moco,) = rows_of(recs, "headroom-moco")
    assert (
        moco.gap == pytest.approx(19.0)
        and moco.diff.method.startswith("one-sample")
        and moco.verdict == HOLDS
    )
    assert moco.diff.low > 10  # the teacher is one fixed checkpoint; the margin of 10 is cleared
    (rand,) = rows_of(recs, "headroom-random")
    assert (
        rand.right.values == (11.0, 12.0, 13.0) and rand.gap == pytest.approx(68.0) and rand.verdict == HOLDS
    )


def test_several_checkpoint_tasks_take_method_and_head_from_the_checkpoints_own_record():
    """t-SNE records carry the step's first checkpoint in protocol; extra names the one measured."""
    recs = []
    for seed in range(3):
        wide, narrow = pretrain("disco", seed), pretrain("moco", seed, hidden=1024, teacher=None)
        recs += [wide, narrow]
        for pre, score in ((wide, 0.30 + seed / 100), (narrow, 0.10 + seed / 50)):
            recs.append(
                {
                    **evaluate(wide, score, task="tsne", metric="silhouette"),  # protocol: the first ckpt's
                    "extra": {
                        "ckpt": pre["method"],
                        "arch": pre["student"],
                        "method": pre["method"],
                        "teacher": None,
                        "sha256": pre["checkpoint_sha256"],
                    },  # fmt: skip
                    "step": f"tsne-s{seed}",
                }
            )
    (row,) = rows_of(recs, "tsne-silhouette")
    assert row.left.values == pytest.approx((0.30, 0.31, 0.32))
    assert row.right.values == pytest.approx((0.10, 0.12, 0.14))
    assert row.gap == pytest.approx(0.19) and row.verdict == HOLDS and row.diff.method == PAIRED


def test_information_plane_uses_each_checkpoints_last_epoch():
    recs = []
    for seed in range(3):
        for hidden, xt in ((2048, 2.0), (512, 3.0)):
            pre = pretrain("disco", seed, hidden=hidden)
            recs.append(pre)
            for epoch, value in (
                (1, 9.0),
                (5, xt + seed / (10 if hidden == 2048 else 40)),
            ):  # epoch 1 is ignored
                rec = evaluate(pre, value, task="mi", metric="mi_xt_bits")
                rec["extra"] = {"ckpt": "x", "arch": pre["student"], "method": "disco", "teacher": None,
                                "sha256": pre["checkpoint_sha256"], "epoch": epoch}  # fmt: skip
                rec["step"] = "mi"
                recs.append(rec)
    (row,) = rows_of(recs, "mi-xt")
    assert row.left.values == pytest.approx((2.0, 2.1, 2.2)) and row.right.values == pytest.approx(
        (3.0, 3.025, 3.05)
    )
    assert row.gap == pytest.approx(-0.925) and row.verdict == HOLDS  # every pair about 1 bit lower


def test_semisup_claims_read_their_own_subset():
    recs = []
    for method, values in (("disco", [40.0, 41.0, 42.0]), ("moco", [20.0, 21.5, 22.0])):
        for seed, v in enumerate(values):
            pre = pretrain(method, seed, teacher=None if method == "moco" else TEACHER)
            recs += [pre, evaluate(pre, v, task="semisup", dataset="toy@1%")]
            recs.append(evaluate(pre, 100 - v, task="semisup", dataset="toy@10%"))
    (one,) = rows_of(recs, "semisup@1%-moco")
    assert one.gap == pytest.approx(19.5 + 1 / 3) and one.verdict == HOLDS
    (ten,) = rows_of(recs, "semisup@10%-moco")
    assert ten.gap == pytest.approx(-19.5 - 1 / 3) and ten.verdict == FAILS


def test_reproduced_needs_a_hold_on_every_dataset_and_at_least_two():
    both = []
    for dataset, disco in (("a", [70.0, 71.0, 72.0]), ("b", [50.0, 51.0, 52.0])):
        both += runs("disco", disco, dataset=dataset) + runs(
            "moco", [60.0, 60.5, 61.0], teacher=None, dataset=dataset
        )
    summary = summary_of(both)
    assert summary["linear-moco"]["verdicts"] == {"a": HOLDS, "b": FAILS}
    assert summary["linear-moco"]["reproduced"] is False
    one = runs("disco", [70.0, 71.0, 72.0], dataset="a") + runs(
        "moco", [60.0, 60.5, 61.0], teacher=None, dataset="a"
    )
    assert summary_of(one)["linear-moco"]["reproduced"] is False  # one dataset is not a reproduction
    text = "\n".join(claims_section(tidy(both)))
    assert "**does not hold**" in text and "| no |" in text and "Holm-adjusted" in text
    assert "+10.5 [" in text  # the difference with its interval


def test_probe_agreement_counts_swapped_pairs():
    recs = []
    for method, fast, paper in (("disco", 50.0, 70.0), ("seed", 45.0, 60.0), ("moco", 46.0, 30.0)):
        pre = pretrain(method, 0, teacher=None if method == "moco" else TEACHER)
        recs += [pre, evaluate(pre, fast), evaluate(pre, paper, probe="paper")]
    (a,) = probe_agreement(tidy(recs))
    assert [n for n, _ in a["paper_order"]] == ["disco h2048", "seed h2048", "moco h2048"]
    assert [n for n, _ in a["fast_order"]] == ["disco h2048", "moco h2048", "seed h2048"]
    assert (a["pairs"], a["swapped"]) == (3, 1) and a["tau"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.key)
def test_every_claim_states_its_source_direction_and_margin(claim):
    assert claim.source and claim.quote and claim.rule in {"greater", "less", "non_inferior", "equivalent"}
    assert claim.margin >= 0
    if claim.rule in ("non_inferior", "equivalent"):  # only with a margin declared in the claim
        assert claim.margin > 0
    assert [c.key for c in CLAIMS].count(claim.key) == 1


def _paper_column(table: str, column: str) -> dict[str, float]:
    t = next(t for t in paper_tables() if t.key == table)
    i = [c.key for c in t.columns].index(column)
    return {student: values[i] for student, values in t.rows.items() if values[i] is not None}


@pytest.mark.parametrize(("key", "table", "column"), [("t5-improve-at", "table5", "at"),
                                                       ("t5-improve-rkd", "table5", "rkd"),
                                                       ("t5-improve-kd", "table5", "kd")])  # fmt: skip
def test_a_caveat_stands_exactly_where_the_papers_numbers_contradict_its_sentence(key, table, column):
    """ "All distillation approaches bring improvement": a caveat where the paper's own Table 5 has a
    distiller below MoCo-v2 alone (Table 1) for some student, none where every one is above."""
    mine, moco = _paper_column(table, column), _paper_column("table1", "moco")
    contradicted = any(v < moco[s] for s, v in mine.items() if s in moco)
    claim = next(c for c in CLAIMS if c.key == key)
    assert bool(claim.caveat) == contradicted


def test_no_comparable_records_means_no_section():
    assert claims_section(tidy(runs("moco", [60.0], teacher=None))) == []


def test_a_transfer_claim_is_reproduced_per_pretraining_dataset():
    """CIFAR rows of checkpoints pre-trained on a and on b (each on its own transfer set) count for a and b."""
    recs = []
    for dataset, cifar in (("a", "cifar-a"), ("b", "cifar-b")):
        for method, values in (("disco", [50.0, 51.0, 52.0]), ("moco", [30.0, 31.5, 32.0])):
            for seed, v in enumerate(values):
                pre = pretrain(method, seed, dataset=dataset, teacher=None if method == "moco" else TEACHER)
                recs += [pre, evaluate(pre, v, task="cifar", dataset=cifar)]
    summary = summary_of(recs)["cifar-moco"]
    assert summary["verdicts"] == {"a": HOLDS, "b": HOLDS} and summary["reproduced"] is True


def test_a_detector_that_finds_nothing_is_no_evidence():
    recs = []
    for method, values in (("disco", [0.0, 0.2, 0.1]), ("moco", [0.0, 0.0, 0.1])):
        for seed, v in enumerate(values):
            pre = pretrain(method, seed, teacher=None if method == "moco" else TEACHER)
            recs += [pre, evaluate(pre, v, task="detection", metric="AP50", dataset="det")]
    (row,) = rows_of(recs, "det-moco-VOC")
    assert (
        row.gap == pytest.approx(0.3 / 3 - 0.1 / 3)
        and row.verdict == INCONCLUSIVE
        and "no signal" in row.note
    )
    recs = [{**r, "value": r["value"] + 20 + 5 * (r["method"] == "disco")} if r["task"] == "detection" else r
            for r in recs]  # fmt: skip
    (row,) = rows_of(recs, "det-moco-VOC")
    assert row.verdict == HOLDS  # above the floor, and better by more than the declared 1 AP50


def test_a_one_seed_variant_does_not_overrule_the_seeded_verdict():
    """Seed 0 probed a second way (the paper probe) is its own context with n=1: shown, inconclusive,
    but the dataset's verdict in the reproduction table is the seeded row's."""
    recs = []
    for dataset in ("a", "b"):
        for method, values in (("disco", [70.0, 71.0, 72.0]), ("moco", [50.0, 50.5, 51.0])):
            for seed, v in enumerate(values):
                pre = pretrain(method, seed, dataset=dataset, teacher=None if method == "moco" else TEACHER)
                recs += [pre, evaluate(pre, v)]
                if seed == 0:
                    recs.append(evaluate(pre, v - 5, probe="paper"))
    rows = rows_of(recs, "linear-moco")
    assert sorted((r.tested, r.verdict) for r in rows) == [(False, INCONCLUSIVE)] * 2 + [(True, HOLDS)] * 2
    summary = summary_of(recs)["linear-moco"]
    assert summary["verdicts"] == {"a": HOLDS, "b": HOLDS} and summary["reproduced"] is True


def test_the_board_draws_every_tested_claims_interval(tmp_path):
    from disco_bench.leaderboard.markdown import render

    recs = runs("disco", [70.0, 71.0, 72.0]) + runs("moco", [60.0, 60.5, 61.0], teacher=None)
    text, _ = render(tidy(recs), out=tmp_path)
    assert "![every tested claim's difference with its 95 % interval](plots/claims.png)" in text
    assert (tmp_path / "plots" / "claims.png").stat().st_size > 1000
    assert "</svg>" in (tmp_path / "plots" / "claims.svg").read_text()


def test_a_checkpoint_measured_twice_is_one_replicate_not_two():
    """Two evaluations of one checkpoint are one replicate: they are averaged per checkpoint, so the
    arm's n counts checkpoints and the pairing by seed still holds."""
    recs = runs("moco", [60.0, 61.0, 63.0], teacher=None)
    for seed, values in enumerate([(70.0, 70.5), (72.0, 72.5), (73.0, 73.5)]):
        pre = pretrain("disco", seed)
        recs += [pre] + [evaluate(pre, v) for v in values]
    (row,) = rows_of(recs, "linear-moco")
    assert row.left.values == (70.25, 72.25, 73.25) and row.left.seeds == (0, 1, 2)
    assert row.diff == difference([70.25, 72.25, 73.25], [60, 61, 63], pair_by=([0, 1, 2], [0, 1, 2]))
    assert row.diff.method == PAIRED and row.diff.n_left == 3
    assert "(n=3; 6 records, averaged per checkpoint)" in row.left.text()
    # two checkpoints of one seed (a rerun) are two values, never paired
    rerun = pretrain("disco", 2, sha="rerun-of-seed-2")
    (row,) = rows_of([*recs, rerun, evaluate(rerun, 74.0)], "linear-moco")
    assert row.left.seeds == (0, 1, 2, 2) and row.diff.method == WELCH


def test_a_teacher_rows_untested_dataset_is_not_hidden_by_another_students_tested_row():
    """A teacher claim is read per student of the other arm: student B's one-seed row on c is B's
    verdict on c (inconclusive), whatever student A's tested row on c says, so B is not reproduced."""
    recs = []
    for d in "abc":
        pre = pretrain("moco", 0, epochs=30, teacher=None, student="resnet14t", dataset=d, sha=f"teacher-{d}")
        recs += [pre, evaluate(pre, 80.0)] + runs(
            "disco", [70.0, 70.5, 71.0], teacher=f"teacher-{d}", dataset=d
        )
        recs += runs("moco", [60.0, 61.0, 62.0][: 1 if d == "c" else 3], teacher=None, dataset=d, student="B")
    recs += runs("moco", [60.0, 61.0, 62.0], teacher=None, dataset="c", student="A")
    by_student = {
        s["student"]: s for s in reproduced(claim_rows(tidy(recs))) if s["claim"].key == "headroom-moco"
    }
    assert by_student["B"]["verdicts"] == {"a": HOLDS, "b": HOLDS, "c": INCONCLUSIVE}
    assert by_student["B"]["reproduced"] is False
    assert by_student["A"]["verdicts"] == {"c": HOLDS}


def _on_data(recs: list[dict], name: str, fingerprint: str) -> list[dict]:
    """The records as a run that recorded its pre-training data (name, content fingerprint, path)."""
    data = {"name": name, "fingerprint": fingerprint, "path": f"/data/{name}"}
    out = []
    for r in recs:
        pre = r["protocol"] if r["task"] == "pretrain" else r["protocol"]["pretrain"]
        pre = {**pre, "data": data}
        protocol = pre if r["task"] == "pretrain" else {**r["protocol"], "pretrain": pre}
        out.append({**r, "protocol": protocol, "checkpoint_sha256": f"{r['checkpoint_sha256']}-{name}"})
    return out


def test_one_dataset_under_two_names_is_not_two_reproductions():
    """ "Reproduced" counts pre-training data by content: the same fingerprint under two names is one
    dataset, and one name over two contents is two."""
    one = runs("disco", [70.0, 72.0, 74.0]) + runs("moco", [60.0, 61.0, 62.0], teacher=None)
    recs = _on_data(one, "toy", "f" * 64) + _on_data(one, "toy-copy", "f" * 64)
    summary = summary_of(recs)["linear-moco"]
    assert summary["verdicts"] == {"toy / toy-copy": HOLDS} and summary["reproduced"] is False
    recs = _on_data(one, "toy", "f" * 64) + _on_data(one, "toy", "e" * 64)
    summary = summary_of(recs)["linear-moco"]
    assert summary["verdicts"] == {"toy (ffffffff)": HOLDS, "toy (eeeeeeee)": HOLDS} and summary["reproduced"]
    recs += _on_data(one, "toy2", "f" * 64)  # a name shared with another content is never shown bare
    assert set(summary_of(recs)["linear-moco"]["verdicts"]) == {"toy / toy2 (ffffffff)", "toy (eeeeeeee)"}


def test_seeds_that_agree_exactly_give_no_interval():
    """Scores on a grid (accuracy on a few hundred images) can repeat: three pairs of seeds that
    differ by exactly 3 points have a spread of 0, and a zero-width interval would call the claim
    certain on no evidence of the spread. Such a row is shown, untested, and says why."""
    recs = runs("disco", [23.0, 25.0, 24.0]) + runs("moco", [20.0, 22.0, 21.0], teacher=None)
    (row,) = rows_of(recs, "linear-moco")
    assert row.diff.sd == 0 and not row.tested and row.verdict == INCONCLUSIVE
    assert "no spread" in row.note
    # the same in floating point: 23.3 − 20.2 and 25.7 − 22.6 differ in their last bits only
    recs = runs("disco", [23.3, 25.7, 24.1]) + runs("moco", [20.2, 22.6, 21.0], teacher=None)
    (row,) = rows_of(recs, "linear-moco")
    assert 0 < row.diff.sd < 1e-12 and not row.tested and "no spread" in row.note
    recs = runs("disco", [23.0, 25.0, 24.0]) + runs("moco", [20.0, 22.0, 21.5], teacher=None)
    (row,) = rows_of(recs, "linear-moco")
    assert row.tested and row.verdict == HOLDS


def test_better_but_not_by_the_margin_is_said_at_the_boards_corrected_level():
    """ "Does not hold" on "by > 2" with a note that it is better at all: that note is a directional
    finding too, so it is read at the board's correction (Bonferroni over the tested rows), not at
    the uncorrected interval."""
    disco = [70.0 + d for d in (0.556, 0.85, 1.144)]  # paired gaps over SEED: mean 0.85, se 0.17
    recs = (
        runs("disco", disco)
        + runs("seed", [70.0, 70.0, 70.0])
        + runs("moco", [60.0, 61.0, 63.0], teacher=None)
    )
    (row,) = rows_of(recs, "linear-seed")
    assert row.diff.low > 0 and row.verdict == FAILS  # uncorrected: better; corrected over 2 rows: not shown
    assert "better" not in row.note
    recs = (
        runs("disco", [71.0, 71.1, 70.95])
        + runs("seed", [70.0, 70.0, 70.0])
        + runs("moco", [60.0, 61.0, 63.0], teacher=None)
    )
    (row,) = rows_of(recs, "linear-seed")
    assert row.verdict == FAILS and row.note == "better, but not by the declared 2"


def test_two_splits_are_never_compared_nor_pooled():
    """A number on the test split and one on the validation split measure different images: DisCo on
    val meets MoCo-v2 on val only, and its test-split scores of the same checkpoints stay apart."""
    recs = []
    for method, val, test in (
        ("disco", [70.0, 72.0, 73.0], [50.0, 51.0, 53.0]),
        ("moco", [60.0, 61.0, 63.0], []),
    ):
        for seed, v in enumerate(val):
            pre = pretrain(method, seed, teacher=None if method == "moco" else TEACHER)
            recs += [pre, evaluate(pre, v) | {"split": "val"}]
            if test:
                recs.append(evaluate(pre, test[seed]) | {"split": "test"})
    (row,) = rows_of(recs, "linear-moco")
    assert row.left.values == (70.0, 72.0, 73.0) and row.left.records == 3


def test_where_a_checkpoint_is_probed_both_ways_the_claims_read_the_paper_probe():
    disco = [pretrain("disco", s) for s in range(3)]
    moco = [pretrain("moco", s, hidden=1024, teacher=None) for s in range(3)]
    # fast: MoCo-v2 alone ahead; paper: DisCo ahead by 10 on every seed
    recs = [*disco, *moco]
    recs += [evaluate(p, v) for p, v in zip(disco, (60.0, 61.0, 62.0), strict=True)]
    recs += [evaluate(p, v) for p, v in zip(moco, (70.0, 71.0, 72.0), strict=True)]
    recs += [evaluate(p, v, probe="paper") for p, v in zip(disco, (50.0, 52.0, 51.0), strict=True)]
    recs += [evaluate(p, v, probe="paper") for p, v in zip(moco, (40.0, 42.0, 41.0), strict=True)]
    (row,) = rows_of(recs, "linear-moco")
    assert row.diff.diff == pytest.approx(10.0)
    # the fast probe is still shown against the paper one, checkpoint by checkpoint
    assert {a["seed"] for a in probe_agreement(tidy(recs))} == {0, 1, 2}


def test_a_checkpoint_probed_only_fast_is_read_as_before():
    recs = runs("disco", [70.0, 72.0, 74.0]) + runs("moco", [60.0, 61.0, 62.0], hidden=1024, teacher=None)
    (row,) = rows_of(recs, "linear-moco")
    assert row.diff.diff == pytest.approx(11.0)
