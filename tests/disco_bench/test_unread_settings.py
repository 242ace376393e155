"""A setting the method, task or protocol does not read is refused with one line where it is given
(a command-line flag, ``--set``, a suite step's ``with``), never silently ignored and recorded; a
suite's defaults and a suite-wide ``--set``, which give settings to every step of a kind, are
dropped for the steps that do not read them (those steps are built and recorded without them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from disco_bench.cli import main
from disco_bench.steps import RunContext, eval_config, pretrain_config
from disco_bench.suite import Step, available_suites
from infra.errors import InputError
from pretrain.config import PretrainConfig
from tests.pretrain.helpers import pretrain_args, run_main

DISTILLERS = "at, at+disco, dino+disco, disco, disco*, distill-only, rkd, rkd+disco, seed, swav+disco"
DISCO_TERM = "at+disco, dino+disco, disco, disco*, distill-only, rkd+disco, swav+disco"


def pretrain_cmd(tmp: Path, method: str, *extra: str) -> list[str]:
    return pretrain_args(tmp / "data", tmp / "out", *extra, method=method, sets=(), save_every=None)


def eval_cmd(tmp: Path, task: str, *extra: str) -> list[str]:
    return [
        "eval",
        task,
        "--ckpt",
        str(tmp / "c.pt"),
        "--data",
        str(tmp / "d"),
        "--out",
        str(tmp / "out"),
        *extra,
    ]


PRETRAIN_CASES = [
    (
        "moco",
        ["--teacher", "resnet50"],
        f"--teacher resnet50: method 'moco' takes no teacher; drop it, or choose a distiller ({DISTILLERS})",
    ),
    (
        "moco",
        ["--set", "teacher_bn=train", "distill_weight=5"],
        f"--set teacher_bn=train: method 'moco' takes no teacher; drop it, or choose a distiller ({DISTILLERS})",
    ),
    (
        "moco",
        ["--set", "distill_weight=5"],
        f"--set distill_weight=5: method 'moco' does not read distill_weight; drop it, or choose a method that does ({DISCO_TERM})",
    ),
    (
        "swav",
        ["--set", "key_momentum=0.9"],
        "--set key_momentum=0.9: method 'swav' does not read key_momentum",
    ),
    (
        "dino",
        ["--set", "seed_teacher_temp=0.01"],
        "--set seed_teacher_temp=0.01: method 'dino' does not read seed_teacher_temp; drop it, or choose a method that does (seed)",
    ),
]
EVAL_CASES = [
    ("linear", ["--trials", "3"], "--trials 3: eval linear does not read det_trials; drop it (read by detection)"),
    ("linear", ["--dataset", "coco"], "--dataset coco: eval linear does not read det_dataset; drop it (read by detection)"),
    ("linear", ["--backend", "detectron2"], "--backend detectron2: eval linear does not read det_backend; drop it (read by detection)"),
    ("linear", ["--max-iter", "50"], "--max-iter 50: eval linear does not read det_max_iter; drop it (read by detection)"),
    ("linear", ["--classes", "3"], "--classes 3: eval linear does not read classes; drop it (read by tsne)"),
    ("knn", ["--per-class", "3"], "--per-class 3: eval knn does not read per_class; drop it (read by tsne)"),
    ("linear", ["--protocol", "fast", "--epochs", "3"], "--epochs 3: eval linear under protocol fast does not read epochs; drop it (read under protocol paper)"),
    ("semisup", ["--protocol", "fast", "--set", "lr=0.1"], "--set lr=0.1: eval semisup under protocol fast does not read lr"),
    ("linear", ["--set", "knn_k=[5]"], "--set knn_k=[5]: eval linear does not read knn_k; drop it (read by knn)"),
    ("linear", ["--set", "subset_fraction=0.5"], "--set subset_fraction=0.5: eval linear does not read subset_fraction; drop it (read by semisup)"),
    ("linear", ["--set", "kd_alpha=0.3"], "--set kd_alpha=0.3: eval linear without a KD teacher does not read kd_alpha; drop it, or set kd_teacher"),
    ("knn", ["--protocol", "fast"], "--protocol fast: eval knn does not read protocol; drop it (read by linear, semisup, cifar, mi)"),
    ("detection", ["--set", "feature_batch_size=64"], "--set feature_batch_size=64: eval detection does not read feature_batch_size"),
    # no task reads a free-form mapping: the key does not exist (it was parsed as {'foo:1': None})
    ("linear", ["--set", "extra={foo:1}"], "--set unknown key 'extra'"),
]  # fmt: skip


@pytest.mark.parametrize(
    "method, extra, message", PRETRAIN_CASES, ids=[" ".join(c[1]) for c in PRETRAIN_CASES]
)
def test_pretrain_refuses_a_setting_its_method_does_not_read(method, extra, message, tmp_path):
    code, err = run_main(pretrain_cmd(tmp_path, method, *extra))
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "task, extra, message", EVAL_CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in EVAL_CASES]
)
def test_eval_refuses_a_setting_its_task_or_protocol_does_not_read(task, extra, message, tmp_path):
    code, err = run_main(eval_cmd(tmp_path, task, *extra))
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "task, extra",
    [
        ("detection", ["--image-size", "64", "--trials", "2", "--dataset", "coco", "--max-iter", "5"]),
        ("tsne", ["--classes", "3", "--per-class", "2"]),
        ("linear", ["--protocol", "fast", "--set", "fast_max_iter=5"]),
        ("linear", ["--set", "kd_teacher=t.pt", "kd_alpha=0.3"]),
        ("mi", ["--protocol", "fast", "--epochs", "2"]),  # mi trains its SGD probe under either protocol
    ],
)
def test_a_setting_the_task_reads_passes_the_check(task, extra, tmp_path):
    code, err = run_main(eval_cmd(tmp_path, task, *extra))
    assert code == 2 and "not found" in err and "does not read" not in err, (
        err
    )  # stops at the missing checkpoint


def context(tmp_path: Path, defaults: dict, overrides: dict | None = None) -> RunContext:
    return RunContext(tmp_path, {"d": tmp_path / "d"}, defaults, overrides or {})


def test_suite_defaults_a_method_does_not_read_are_dropped_for_its_steps(tmp_path):
    ctx = context(tmp_path, {"pretrain": {"distill_weight": 256.0, "teacher_bn": "train", "epochs": 3}})
    moco = pretrain_config(Step("m", "pretrain", {"method": "moco", "data": "d"}), ctx)
    disco = pretrain_config(
        Step("s", "pretrain", {"method": "disco", "teacher_ckpt": "t.pt", "data": "d"}), ctx
    )
    plain = PretrainConfig()
    assert (moco.distill_weight, moco.teacher_bn, moco.epochs) == (plain.distill_weight, plain.teacher_bn, 3)
    assert "distill_weight" not in moco.protocol() and "teacher_bn" not in moco.protocol()
    assert (disco.distill_weight, disco.teacher_bn, disco.epochs) == (256.0, "train", 3)


def test_a_suite_wide_set_is_dropped_where_unread_and_applied_where_read(tmp_path):
    ctx = context(tmp_path, {}, {"pretrain.distill_weight": 5.0, "pretrain.seed_teacher_temp": 0.01})
    moco = pretrain_config(Step("m", "pretrain", {"method": "moco"}), ctx)
    seed = pretrain_config(Step("s", "pretrain", {"method": "seed", "teacher_ckpt": "t.pt"}), ctx)
    assert dataclasses.asdict(moco) == dataclasses.asdict(
        pretrain_config(Step("m", "pretrain", {"method": "moco"}), context(tmp_path, {}))
    )
    assert (seed.seed_teacher_temp, seed.distill_weight) == (0.01, PretrainConfig().distill_weight)


def test_a_suite_step_that_gives_its_method_an_unread_setting_is_refused(tmp_path):
    step = Step("chosen-moco", "pretrain", {"method": "moco", "distill_weight": 1024})
    with pytest.raises(
        InputError,
        match=r"^step chosen-moco: distill_weight=1024: method 'moco' does not read distill_weight; drop it",
    ):
        pretrain_config(step, context(tmp_path, {}))


def test_eval_defaults_follow_each_steps_task_and_protocol(tmp_path):
    ctx = context(tmp_path, {"eval": {"protocol": "fast", "epochs": 3, "knn_k": [5], "image_size": 32}})
    linear = eval_config(Step("l", "eval", {"ckpt": "c.pt"}, task="linear"), ctx)
    knn = eval_config(Step("k", "eval", {"ckpt": "c.pt"}, task="knn"), ctx)
    assert (linear.protocol, linear.epochs, linear.knn_k, linear.image_size) == ("fast", 100, (20, 200), 32)
    assert (knn.protocol, knn.knn_k, knn.image_size) == ("paper", (5,), 32)  # knn reads no protocol
    with pytest.raises(InputError, match=r"^step k: protocol=fast: eval knn does not read protocol"):
        eval_config(
            Step("k", "eval", {"ckpt": "c.pt", "protocol": "fast"}, task="knn"), context(tmp_path, {})
        )


@pytest.mark.parametrize("suite", available_suites())
def test_every_shipped_suite_plans(suite, tmp_path, capsys):
    assert main(["run", "--suite", suite, "--dry-run", "--out", str(tmp_path / "out")]) == 0, (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_suite_wide_set_that_no_step_reads_is_refused_before_anything_runs(dry_run, tmp_path):
    argv = [
        "run",
        "--suite",
        "smoke",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--set",
        "pretrain.seed_teacher_temp=0.1",
    ]
    code, err = run_main(argv + (["--dry-run"] if dry_run else []))
    assert (code, err) == (
        2,
        "error: --set pretrain.seed_teacher_temp=0.1: no pretrain step of this run reads seed_teacher_temp "
        "(method disco, method moco); drop it\n",
    )
    assert not (tmp_path / "out").exists()
