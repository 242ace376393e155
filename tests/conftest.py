"""Shared fixtures: tiny datasets generated on disk in the real formats, once per session."""

from __future__ import annotations

import os

# Tests run tiny models, where thread start-up costs more than it saves; on a 2-core CI machine
# one thread per process (subprocesses included) is several times faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from disco_bench.embedded import EmbeddedConfig, make_embedded  # noqa: E402


def pytest_xdist_auto_num_workers(config):
    """``pytest -n auto``: one worker per core this process may run on (its affinity mask, a
    CPU-limited container's share), not the host's count."""
    from infra.environment import available_cores

    return available_cores()


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread in every test, restored afterwards (a test that sets its own count does not
    leak it): the tensors are tiny, and on a shared 2-core CPU two spinning OpenMP threads per process
    make small convolutions 10-30x slower. Results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_imagefolder(tmp_path_factory):
    """A 3-class ImageFolder (train/ 8 per class, val/ 4 per class) of 16 px embedded images."""
    root = tmp_path_factory.mktemp("data") / "embedded"
    return make_embedded(
        root, EmbeddedConfig(classes=3, train_per_class=8, val_per_class=4, image_size=16), progress=False
    )


@pytest.fixture()
def tiny_pretrain_cfg(tiny_imagefolder, tmp_path):
    """A PretrainConfig that runs a step in well under a second on a CPU."""
    from pretrain.config import PretrainConfig

    return PretrainConfig(
        method="moco",
        student="resnet10t",
        data=str(tiny_imagefolder),
        out=str(tmp_path / "run"),
        epochs=1,
        batch_size=8,
        image_size=16,
        queue_size=32,
        key_momentum=0.9,
        seed=0,
    )
