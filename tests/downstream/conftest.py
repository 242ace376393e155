"""Fixtures for the classification tasks: a randomly initialised encoder saved in this project's
checkpoint format, and tiny CIFAR pickle folders written in the official layouts."""

from __future__ import annotations

import pytest

from disco_bench.embedded import EmbeddedConfig, make_embedded
from disco_bench.embedded_cifar import EmbeddedCifarConfig, make_embedded_cifar
from downstream.config import EvalConfig
from tests.pretrain.helpers import save_student


@pytest.fixture(scope="session")
def encoder_ckpt(tmp_path_factory):
    return save_student(tmp_path_factory.mktemp("ckpt") / "random.pt")


@pytest.fixture(scope="session")
def seven_class_imagefolder(tmp_path_factory):
    """A 7-class ImageFolder (train/ 4 per class, val/ 3 per class) of 16 px images: more classes than
    top-5, so a top-5 accuracy can miss."""
    root = tmp_path_factory.mktemp("data7") / "embedded7"
    return make_embedded(
        root, EmbeddedConfig(classes=7, train_per_class=4, val_per_class=3, image_size=16), progress=False
    )


@pytest.fixture(scope="session")
def tiny_cifar10(tmp_path_factory):
    """OUT/cifar-10-batches-py/ with 3 classes, 10 train and 4 test images each."""
    cfg = EmbeddedCifarConfig(variant="cifar10", classes=3, train_per_class=10, test_per_class=4)
    return make_embedded_cifar(tmp_path_factory.mktemp("c10") / "cifar", cfg)


@pytest.fixture(scope="session")
def tiny_cifar100(tmp_path_factory):
    cfg = EmbeddedCifarConfig(variant="cifar100", classes=7, train_per_class=3, test_per_class=2)
    return make_embedded_cifar(tmp_path_factory.mktemp("c100") / "cifar", cfg)


@pytest.fixture()
def eval_cfg(encoder_ckpt, tiny_imagefolder, tmp_path):
    """An EvalConfig for the tiny ImageFolder at 16 px on the CPU; override fields with dataclasses.replace."""
    return EvalConfig(
        ckpt=encoder_ckpt,
        data=str(tiny_imagefolder),
        out=str(tmp_path / "eval"),
        protocol="fast",
        epochs=2,
        image_size=16,
        batch_size=8,
        device="cpu",
        fast_max_iter=50,
    )
