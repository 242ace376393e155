"""The binning MI estimator on cases with known answers, and the information-plane task end to end."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from disco_bench.cli import main
from downstream import mi
from infra.errors import InputError


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- binning ----------------------------------------------------------------------------------------


def test_bins_are_equal_width_on_0_1_and_1_goes_to_the_last():
    probs = np.array([[0.0, 0.5, 1.0, 0.999, 0.0334]])
    assert mi.bin_probabilities(probs, 30).tolist() == [[0, 15, 29, 29, 1]]
    assert mi.bin_probabilities(np.array([[0.2, 0.34, 0.7, 1.0]]), 3).tolist() == [[0, 1, 2, 2]]


def test_bin_probabilities_rejects_values_outside_0_1():
    with pytest.raises(ValueError, match=r"\[0, 1\], got range \[-0.1, 0.5\]"):
        mi.bin_probabilities(np.array([[-0.1, 0.5]]), 30)


# --- known answers ---------------------------------------------------------------------------------


def test_t_a_one_hot_copy_of_y_gives_h_y():
    # Y = [0, 0, 1, 2]: p = (1/2, 1/4, 1/4), H(Y) = 1/2 + 2/4 + 2/4 = 1.5 bits
    y = np.array([0, 0, 1, 2])
    point = mi.information_point(np.eye(3)[y], y, bins=30)
    assert point["h_y_bits"] == 1.5
    assert point["mi_ty_bits"] == 1.5
    assert point["mi_xt_bits"] == 1.5  # T takes 3 patterns with the same frequencies as Y
    assert point["patterns"] == 3


def test_one_hot_copy_with_three_equiprobable_classes_gives_log2_3():
    y = np.array([2, 0, 1, 1, 0, 2])
    assert mi.information_point(np.eye(3)[y], y)["mi_ty_bits"] == pytest.approx(math.log2(3), abs=1e-12)


def test_n_inputs_with_distinct_patterns_give_log2_n():
    p = np.array([0.05, 0.25, 0.45, 0.65, 0.85])  # bins 1, 7, 13, 19, 25 of 30: all distinct
    probs = np.stack([p, 1 - p], axis=1)
    assert mi.information_point(probs, np.zeros(5, int))["mi_xt_bits"] == pytest.approx(
        math.log2(5), abs=1e-12
    )
    assert mi.information_point(probs, np.zeros(5, int))["mi_ty_bits"] == 0.0  # one label: nothing to know


def test_identical_patterns_carry_no_information():
    probs = np.tile([[0.2, 0.8]], (8, 1))
    point = mi.information_point(probs, np.arange(8) % 2)
    assert (point["mi_xt_bits"], point["mi_ty_bits"], point["patterns"]) == (0.0, 0.0, 1)


def test_independent_t_and_y_give_about_zero_within_the_bias_bound():
    # (|T|-1)(|Y|-1) / (2 N ln 2) = 3 * 2 / (2 * 20000 * ln 2) = 2.164e-4 bits
    bias = mi.independence_bias_bits(4, 3, 20000)
    assert bias == pytest.approx(2.1640425613334453e-4, rel=1e-12)
    rng = np.random.default_rng(0)
    t, y = rng.integers(0, 4, 20000), rng.integers(0, 3, 20000)
    # 2 N ln2 * I is ~ chi-square with 6 dof; P(chi2_6 > 24) ~ 5e-4, so 4x the mean bounds it
    assert 0.0 <= mi.mi_ty_bits(t, y) <= 4 * bias


def test_the_bias_bound_is_the_mean_of_plug_in_mi_under_independence():
    rng = np.random.default_rng(1)
    n = 1000
    values = [mi.mi_ty_bits(rng.integers(0, 4, n), rng.integers(0, 3, n)) for _ in range(300)]
    # the mean of 300 draws has a relative std of sqrt(12) / 6 / sqrt(300) = 3.3%
    assert np.mean(values) == pytest.approx(mi.independence_bias_bits(4, 3, n), rel=0.10)


@pytest.mark.parametrize("chain", [(30, 15, 5, 1), (30, 10, 5, 1), (30, 6, 3, 1), (30, 2, 1)])
def test_fewer_nested_bins_never_increase_ixt(chain):
    # A bin count that divides another merges whole bins, so the patterns can only merge.
    rng = np.random.default_rng(0)
    for seed in range(5):
        probs = softmax_rows(np.random.default_rng(seed).normal(scale=2.0, size=(300, 4)))
        ixt = [mi.information_point(probs, rng.integers(0, 3, 300), b)["mi_xt_bits"] for b in chain]
        assert all(a >= b for a, b in zip(ixt, ixt[1:])), (chain, ixt)
        assert ixt[-1] == 0.0  # one bin: one pattern


def test_non_nested_bin_counts_can_increase_ixt():
    # 3 bins put 0.4 and 0.6 in the same bin [1/3, 2/3); 2 bins split them at 1/2.
    probs = np.array([[0.4, 0.6], [0.6, 0.4]])
    assert mi.information_point(probs, np.array([0, 1]), 3)["mi_xt_bits"] == 0.0
    assert mi.information_point(probs, np.array([0, 1]), 2)["mi_xt_bits"] == 1.0


def test_ity_stays_within_h_t_and_h_y():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 5, 400)
        probs = softmax_rows(rng.normal(size=(400, 5)) + 3 * np.eye(5)[y])
        point = mi.information_point(probs, y)
        assert 0.0 <= point["mi_ty_bits"] <= min(point["mi_xt_bits"], point["h_y_bits"]) + 1e-12


# --- the task -------------------------------------------------------------------------------------


def test_mi_task_records_every_epoch_of_every_checkpoint(eval_cfg):
    cfg = dataclasses.replace(
        eval_cfg, ckpts=[eval_cfg.ckpt, eval_cfg.ckpt], ckpt_labels=["a", "b"], epochs=2
    )
    result = mi.evaluate(cfg, progress=False)
    assert len(result.measurements) == 2 * 3 * 2  # checkpoints x (epoch 0 + 2 epochs) x (I(X;T), I(T;Y))
    keys = [(m.extra["ckpt"], m.extra["epoch"], m.metric) for m in result.measurements]
    assert keys[:6] == [
        ("a", 0, "mi_xt_bits"),
        ("a", 0, "mi_ty_bits"),
        ("a", 1, "mi_xt_bits"),
        ("a", 1, "mi_ty_bits"),
        ("a", 2, "mi_xt_bits"),
        ("a", 2, "mi_ty_bits"),
    ]
    assert {m.extra["log_base"] for m in result.measurements} == {2}
    assert {m.split for m in result.measurements} == {"train"}
    for m in result.measurements:  # 24 train images, 3 classes
        bound = math.log2(24) if m.metric == "mi_xt_bits" else math.log2(3)
        assert 0.0 <= m.value <= bound + 1e-12
    png, csv = result.artifacts
    assert Image.open(png).format == "PNG" and Image.open(png).size == (640, 480)
    table = pd.read_csv(csv)
    assert len(table) == 6
    a, b = table[table.ckpt == "a"], table[table.ckpt == "b"]  # the same checkpoint twice: the same curve
    assert a.mi_xt_bits.tolist() == b.mi_xt_bits.tolist() and a.mi_ty_bits.tolist() == b.mi_ty_bits.tolist()
    assert result.source["arch"] == "resnet10t" and result.protocol["log_base"] == 2


def test_mi_paper_protocol_trains_on_augmented_images(eval_cfg):
    cfg = dataclasses.replace(eval_cfg, protocol="paper", epochs=1, mi_bins=10)
    result = mi.evaluate(cfg, progress=False)
    assert [m.extra["epoch"] for m in result.measurements] == [0, 0, 1, 1]
    assert result.protocol["training_inputs"] == "augmented images" and result.protocol["bins"] == 10


def test_bad_bin_count_is_one_line(eval_cfg):
    with pytest.raises(InputError, match=r"^mi_bins=0: expected an integer >= 1"):
        mi.evaluate(dataclasses.replace(eval_cfg, mi_bins=0), progress=False)


def test_labels_must_match_the_checkpoints(eval_cfg):
    cfg = dataclasses.replace(eval_cfg, ckpts=[eval_cfg.ckpt, eval_cfg.ckpt], ckpt_labels=["only one"])
    with pytest.raises(InputError, match="ckpt_labels has 1 names for 2 checkpoints"):
        mi.evaluate(cfg, progress=False)


def test_cli_eval_mi_takes_several_checkpoints(eval_cfg, tmp_path, capsys):
    ck = eval_cfg.ckpt
    code = main(
        [
            "eval",
            "mi",
            "--ckpt",
            ck,
            "--ckpt",
            ck,
            "--data",
            eval_cfg.data,
            "--protocol",
            "fast",
            "--epochs",
            "1",
            "--image-size",
            "16",
            "--out",
            str(tmp_path),
            "--quiet",
            "--set",
            "device=cpu",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {r["extra"]["ckpt"] for r in records} == {"random-init resnet10t", "random-init resnet10t #2"}
    assert len(records) == 2 * 2 * 2 and len({r["id"] for r in records}) == 8
    assert "[ckpt random-init resnet10t #2, epoch 1]" in capsys.readouterr().out


def test_cli_other_tasks_take_exactly_one_checkpoint(eval_cfg, tmp_path, capsys):
    code = main(
        [
            "eval",
            "linear",
            "--ckpt",
            eval_cfg.ckpt,
            "--ckpt",
            eval_cfg.ckpt,
            "--data",
            eval_cfg.data,
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: eval linear takes exactly one --ckpt, got 2; only mi, tsne compare several")
    assert err.count("\n") == 1


def test_mi_reads_cifar_pickles_with_the_cifar_lr(eval_cfg, tiny_cifar10):
    cfg = dataclasses.replace(eval_cfg, data=str(tiny_cifar10), epochs=1)
    result = mi.evaluate(cfg, progress=False)
    assert {m.dataset for m in result.measurements} == {"cifar10"}
    assert result.protocol["lr_per_checkpoint"] == {
        "random-init resnet10t": 3.0
    }  # docs/method.md#cifar: CIFAR probe lr 3
    for m in result.measurements:  # 30 train images (3 classes x 10)
        assert m.value <= (math.log2(30) if m.metric == "mi_xt_bits" else math.log2(3)) + 1e-12


def test_measuring_in_chunks_gives_the_same_points(eval_cfg, monkeypatch):
    cfg = dataclasses.replace(eval_cfg, epochs=1)
    whole = [m.value for m in mi.evaluate(cfg, progress=False).measurements]
    monkeypatch.setattr(mi, "MEASURE_CHUNK", 5)  # 24 images: chunks of 5, 5, 5, 5, 4
    assert [m.value for m in mi.evaluate(cfg, progress=False).measurements] == whole


def test_a_trained_classifier_at_chance_flags_its_point():
    # 1,437 images, largest class 10% (0.1): two standard errors = 200 x sqrt(0.09 / 1437) = 1.58 points
    at_chance = {"epoch": 3, "top1": 10.4, "chance_top1": 10.0, "n": 1437, "patterns": 1}
    (flag,) = mi.chance_flags(at_chance)
    assert flag.startswith(
        "mi: classifier at chance at epoch 3 (top-1 10.4% vs 10.0% for the largest class, 1 binned pattern)"
    )
    assert mi.chance_flags(at_chance | {"patterns": 40}) != []  # 10.4 < 11.58: still chance
    assert mi.chance_flags(at_chance | {"patterns": 40, "top1": 11.7}) == []  # above two standard errors
    assert mi.chance_flags(at_chance | {"epoch": 0}) == []  # before training: chance by design


def test_the_chance_flag_reaches_the_measurements_of_an_untrained_curve(eval_cfg):
    # a random-init backbone and a 0-lr-like tiny lr: the classifier stays at its initial guess
    cfg = dataclasses.replace(eval_cfg, epochs=1, lr=1e-12)
    result = mi.evaluate(cfg, progress=False)
    trained = [m for m in result.measurements if m.extra["epoch"] == 1]
    assert trained and all(
        m.extra["degenerate"][0].startswith("mi: classifier at chance at epoch 1") for m in trained
    )
    assert all("degenerate" not in m.extra for m in result.measurements if m.extra["epoch"] == 0)
