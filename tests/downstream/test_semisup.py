"""Semi-supervised subsets: SimCLR lists (first line kept) and deterministic stratified fractions."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from downstream import semisup
from downstream.semisup import (
    choose_subset,
    indices_from_list,
    read_simclr_list,
    stratified_subset,
    subset_sha256,
)
from infra.errors import InputError
from pretrain.data import image_folder

pytestmark = pytest.mark.usefixtures("single_thread")

SAMPLES = [
    ("/d/train/a/a_1.JPEG", 0),
    ("/d/train/a/a_2.JPEG", 0),
    ("/d/train/b/b_1.JPEG", 1),
    ("/d/train/b/b_2.JPEG", 1),
]


def test_list_reader_keeps_the_first_line(tmp_path):
    lst = tmp_path / "1percent.txt"
    lst.write_text(
        "a_2.JPEG\nb_1.JPEG\n\n"
    )  # no header: the first line is an image (docs/method.md#defect-semisup-header)
    assert read_simclr_list(lst) == ["a_2.JPEG", "b_1.JPEG"]
    assert indices_from_list(SAMPLES, read_simclr_list(lst), "list") == [1, 2]


def test_list_names_missing_images(tmp_path):
    with pytest.raises(
        InputError, match=r"list: 1 of 2 listed images are not in the training folder, e.g. c_9.JPEG"
    ):
        indices_from_list(SAMPLES, ["a_1.JPEG", "c_9.JPEG"], "list")


def test_file_names_repeated_across_classes_need_the_class_folder():
    twins = [("/d/train/a/x.png", 0), ("/d/train/b/x.png", 1)]
    with pytest.raises(
        InputError, match="x.png occurs in several class folders; write it as class_folder/file_name"
    ):
        indices_from_list(twins, ["x.png"], "list")
    assert indices_from_list(twins, ["b/x.png"], "list") == [1]


def test_empty_or_absent_list_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_simclr_list(tmp_path / "empty.txt")
    with pytest.raises(InputError, match="subset list not found"):
        read_simclr_list(tmp_path / "nope.txt")


def test_stratified_subset_is_fixed_by_seed_and_proportional():
    labels = [0] * 100 + [1] * 50 + [2] * 7
    first = stratified_subset(labels, 0.1, seed=3)
    assert first == stratified_subset(labels, 0.1, seed=3)
    assert first != stratified_subset(labels, 0.1, seed=4)
    # round(0.1 x n_c), at least one: 10, 5 and 1 (0.7 rounds to 1)
    assert Counter(labels[i] for i in first) == {0: 10, 1: 5, 2: 1}
    assert first == sorted(set(first))


def test_stratified_subset_rejects_bad_fractions():
    with pytest.raises(InputError, match=r"subset_fraction=0.0: expected a fraction in \(0, 1\]"):
        stratified_subset([0, 1], 0.0, 0)


def test_subset_hash_ignores_where_the_data_lives():
    moved = [(p.replace("/d/", "/elsewhere/"), y) for p, y in SAMPLES]
    assert subset_sha256(SAMPLES, [0, 3]) == subset_sha256(moved, [3, 0])
    assert subset_sha256(SAMPLES, [0, 3]) != subset_sha256(SAMPLES, [0, 2])


def test_subset_of_a_real_folder_is_identical_across_runs(tiny_imagefolder, eval_cfg):
    samples = image_folder(Path(tiny_imagefolder) / "train").samples
    cfg = dataclasses.replace(eval_cfg, subset_fraction=0.25)
    (a, desc_a), (b, desc_b) = choose_subset(samples, cfg), choose_subset(samples, cfg)
    assert (
        a == b and desc_a == desc_b and desc_a["size"] == 6 and desc_a["of"] == 24
    )  # 2 of 8 in each of 3 classes
    assert Counter(samples[i][1] for i in a) == {0: 2, 1: 2, 2: 2}


@pytest.mark.parametrize("protocol", ["fast", "paper"])
def test_semisup_from_a_list_runs_and_records_the_subset(eval_cfg, tiny_imagefolder, tmp_path, protocol):
    samples = image_folder(Path(tiny_imagefolder) / "train").samples
    # the embedded files are 00000.png, ... in every class folder, so the list names class_folder/file_name
    picked = [
        f"{Path(samples[i][0]).parent.name}/{Path(samples[i][0]).name}"
        for i in (0, 1, 2, 8, 9, 10, 16, 17, 18)
    ]
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(picked) + "\n")
    cfg = dataclasses.replace(eval_cfg, protocol=protocol, epochs=1, subset_list=str(lst))
    result = semisup.evaluate(cfg, progress=False)
    assert {m.metric for m in result.measurements} == {"top1", "top5"}
    subset = result.protocol["subset"]
    assert subset["source"] == "list" and subset["size"] == 9 and result.protocol["train_images"] == 9
    assert "subset_fraction" not in result.protocol and result.protocol["subset_list"] == str(lst)
    assert subset["sha256"] == subset_sha256(samples, [0, 1, 2, 8, 9, 10, 16, 17, 18])
    assert result.measurements[0].dataset == "embedded@list.txt"
    if protocol == "paper":
        assert result.protocol["lr"] == 3.0


def test_semisup_by_fraction_names_the_fraction(eval_cfg):
    result = semisup.evaluate(dataclasses.replace(eval_cfg, subset_fraction=0.5), progress=False)
    assert result.measurements[0].dataset == "embedded@50%"
    assert "subset_list" not in result.protocol and result.protocol["subset_fraction"] == 0.5
    assert result.protocol["subset"] | {"sha256": None} == {
        "source": "stratified",
        "fraction": 0.5,
        "seed": 0,
        "size": 12,
        "of": 24,
        "sha256": None,
    }


def test_a_subset_far_from_its_fraction_is_named_by_its_true_share():
    from downstream.semisup import subset_flags, subset_label

    digits = {"source": "stratified", "fraction": 0.01, "size": 10, "of": 1437}
    assert subset_label(digits) == "0.70%"  # 10 / 1437 = 0.696%
    assert subset_flags(digits) == [
        "subset of 10 of 1437 train images (0.70%), not the 1% asked (at least one image per class, rounded per class)"
    ]
    imagenet = {"source": "stratified", "fraction": 0.01, "size": 12_811, "of": 1_281_167}
    assert subset_label(imagenet) == "1%" and subset_flags(imagenet) == []  # 0.99993%: the paper's 1%
    assert subset_label({"source": "list", "list": "1percent.txt"}) == "1percent.txt"
