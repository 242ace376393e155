"""Fixtures for the classification tasks: a randomly initialised encoder saved in this project's
checkpoint format, and tiny CIFAR pickle folders written in the official layouts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from disco_bench.embedded_cifar import EmbeddedCifarConfig, make_embedded_cifar
from downstream.config import EvalConfig
from pretrain.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save
from pretrain.models import Encoder, ProjectionHead, build_backbone, feature_dim
from pretrain.train import export_encoder


def save_random_encoder(path, arch: str = "resnet10t", seed: int = 0):
    """A random-init encoder exported exactly as pre-training exports its student."""
    torch.manual_seed(seed)
    backbone = build_backbone(arch)
    encoder = Encoder(backbone, ProjectionHead(feature_dim(backbone), 32, 16))
    payload = {"format": CHECKPOINT_FORMAT, "kind": "pretrain", "done": True, "config": {"method": "random-init"},
               "protocol": {}, "encoder": export_encoder(SimpleNamespace(student=encoder), SimpleNamespace(student=arch))}
    return atomic_torch_save(payload, path)


@pytest.fixture()
def single_thread():
    """One intra-op thread: these tensors are tiny, and on a shared 2-core CPU thread contention
    makes them 10-30x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def encoder_ckpt(tmp_path_factory):
    return str(save_random_encoder(tmp_path_factory.mktemp("ckpt") / "random.pt"))


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
    return EvalConfig(ckpt=encoder_ckpt, data=str(tiny_imagefolder), out=str(tmp_path / "eval"), protocol="fast", epochs=2,
                      image_size=16, batch_size=8, device="cpu", fast_max_iter=50)
