"""CIFAR pickles: the official layouts and keys, the safe loader, and the transfer task end to end."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode

from disco_bench.embedded_cifar import EmbeddedCifarConfig, draw_split
from downstream import cifar
from downstream.cifar import find_cifar, load_cifar, read_batch
from downstream.kd import load_classifier
from infra.errors import InputError
from tests.pretrain.helpers import hand_topk_accuracy


def _official_rows() -> tuple[np.ndarray, np.ndarray]:
    """Two 32x32 images with known pixels, as CIFAR rows: 1024 red, 1024 green, 1024 blue values."""
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[0, 0, 1] = (10, 20, 30)  # row 0, column 1
    images[1, 31, 0] = (200, 100, 50)  # row 31, column 0
    rows = np.zeros((2, 3072), np.uint8)
    rows[0, 1], rows[0, 1024 + 1], rows[0, 2048 + 1] = 10, 20, 30
    rows[1, 31 * 32], rows[1, 1024 + 31 * 32], rows[1, 2048 + 31 * 32] = 200, 100, 50
    return rows, images


def _dump(path, obj):
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def test_reads_a_hand_written_cifar10_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows, images = _official_rows()
    for b in range(1, 6):
        _dump(
            folder / f"data_batch_{b}",
            {
                b"batch_label": b"x",
                b"labels": [b % 2, 1 - b % 2],
                b"data": rows,
                b"filenames": [b"a.png", b"b.png"],
            },
        )
    _dump(folder / "test_batch", {b"labels": [1, 0], b"data": rows[::-1].copy()})
    _dump(folder / "batches.meta", {b"label_names": [b"airplane", b"automobile"], b"num_cases_per_batch": 2})
    data = load_cifar(tmp_path)
    assert data.layout.name == "cifar10" and data.classes == ["airplane", "automobile"]
    assert np.array_equal(data.train[0][:2], images) and data.train[0].shape == (10, 32, 32, 3)
    assert data.train[1].tolist() == [1, 0, 0, 1, 1, 0, 0, 1, 1, 0]
    assert np.array_equal(data.test[0], images[::-1]) and data.test[1].tolist() == [1, 0]


def test_reads_a_hand_written_cifar100_folder(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rows, images = _official_rows()
    for split in ("train", "test"):
        _dump(
            folder / split,
            {b"filenames": [b"a", b"b"], b"fine_labels": [2, 0], b"coarse_labels": [0, 0], b"data": rows},
        )
    _dump(
        folder / "meta", {b"fine_label_names": [b"apple", b"bear", b"cloud"], b"coarse_label_names": [b"g"]}
    )
    data = load_cifar(folder)  # the pickle folder itself works too
    assert data.layout.name == "cifar100" and data.classes == ["apple", "bear", "cloud"]
    assert np.array_equal(data.test[0], images) and data.train[1].tolist() == [2, 0]


def test_missing_key_is_named(tmp_path):
    _dump(tmp_path / "test_batch", {b"data": np.zeros((1, 3072), np.uint8)})
    with pytest.raises(InputError, match=r"test_batch lacks key b'labels' \(has: data\)"):
        read_batch(tmp_path / "test_batch", "labels")


def test_wrong_data_shape_is_named(tmp_path):
    _dump(tmp_path / "b", {b"data": np.zeros((1, 100), np.uint8), b"labels": [0]})
    with pytest.raises(InputError, match=r"b'data' is uint8 \(1, 100\); expected uint8 \(N, 3072\)"):
        read_batch(tmp_path / "b", "labels")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    _dump(tmp_path / "test_batch", {b"data": _RunsCode(), b"labels": [0]})
    with pytest.raises(InputError, match="refusing to load posix.system|refusing to load os.system"):
        read_batch(tmp_path / "test_batch", "labels")


def test_folder_errors_say_what_was_expected(tmp_path, tiny_cifar10, tiny_cifar100):
    with pytest.raises(InputError, match=r"no CIFAR pickle folder at .*cifar-10-batches-py/ \(data_batch_1"):
        find_cifar(tmp_path)
    both = tmp_path / "both"
    both.mkdir()
    for src in (tiny_cifar10, tiny_cifar100):
        for child in src.iterdir():
            if child.is_dir():
                (both / child.name).symlink_to(child)
    with pytest.raises(InputError, match="set cifar_variant=cifar10 or cifar100"):
        find_cifar(both)
    assert find_cifar(both, "cifar100")[0].name == "cifar100"


def test_generator_round_trips_through_the_loader(tiny_cifar10, tiny_cifar100):
    cfg10 = EmbeddedCifarConfig(variant="cifar10", classes=3, train_per_class=10, test_per_class=4)
    rows, labels, _ = draw_split(cfg10, "train")
    data = load_cifar(tiny_cifar10)
    assert sorted(p.name for p in (tiny_cifar10 / "cifar-10-batches-py").iterdir()) == [
        "batches.meta",
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ]
    assert np.array_equal(data.train[0], rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert data.train[1].tolist() == labels and data.classes == ["hstripes", "vstripes", "checker"]
    c100 = load_cifar(tiny_cifar100)
    assert (
        c100.layout.name == "cifar100" and len(c100.classes) == 7 and c100.train[0].shape == (21, 32, 32, 3)
    )
    with open(tiny_cifar100 / "cifar-100-python" / "train", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")  # the official recipe on the CIFAR web page
    assert {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"} == set(raw)
    assert raw[b"coarse_labels"] == [c // 5 for c in raw[b"fine_labels"]]


def test_transforms_upsample_bicubic_to_image_size():
    train, test = cifar.train_transform(48), cifar.test_transform(48)
    assert train.transforms[0].interpolation == InterpolationMode.BICUBIC
    assert test.transforms[0].interpolation == InterpolationMode.BICUBIC
    from PIL import Image

    img = Image.fromarray(np.full((32, 32, 3), 128, np.uint8))
    assert train(img).shape == test(img).shape == torch.Size([3, 48, 48])


@pytest.mark.parametrize("protocol", ["fast", "paper"])
def test_cifar_task_returns_top1_and_top5(eval_cfg, tiny_cifar10, protocol):
    cfg = dataclasses.replace(eval_cfg, data=str(tiny_cifar10), protocol=protocol, epochs=1)
    result = cifar.evaluate(cfg, progress=False)
    assert [(m.metric, m.dataset, m.split) for m in result.measurements] == [
        ("top1", "cifar10", "test"),
        ("top5", "cifar10", "test"),
    ]
    # 12 test images: every accuracy is a multiple of 100/12
    assert all(round(m.value * 12 / 100, 6).is_integer() for m in result.measurements)
    assert result.protocol["variant"] == "cifar10" and result.protocol["train_images"] == 30
    if protocol == "paper":
        assert result.protocol["lr"] == 3.0


@pytest.mark.parametrize("protocol", ["fast", "paper"])
def test_cifar100_top1_and_top5_are_those_of_the_trained_head_scored_by_hand(
    eval_cfg, tiny_cifar100, protocol
):
    cfg = dataclasses.replace(
        eval_cfg, data=str(tiny_cifar100), protocol=protocol, epochs=1, kd_save_classifier=True
    )
    result = cifar.evaluate(cfg, progress=False)
    values = {m.metric: m.value for m in result.measurements}
    assert result.measurements[0].dataset == "cifar100" and set(values) == {"top1", "top5"}
    classifier, _ = load_classifier(Path(cfg.out) / "classifier.pt")
    test = cifar.cifar_probe_data(cfg.data, cfg.image_size)[0].val
    images, labels = zip(*(test[i] for i in range(len(test))))
    with torch.no_grad():
        logits = classifier.eval()(torch.stack(images))
    assert logits.shape == (14, 7)  # 7 classes x 2 test images: top-5 can miss
    assert values["top1"] == pytest.approx(hand_topk_accuracy(logits, labels, 1))
    assert values["top5"] == pytest.approx(hand_topk_accuracy(logits, labels, 5))
    assert values["top5"] < 100.0
