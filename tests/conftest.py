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
from tests.module_order import MODULE_DURATIONS, longest_first, module_of, store  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--store-module-durations",
        action="store_true",
        help=f"write each test module's total seconds to {MODULE_DURATIONS.name}, which orders the modules",
    )


def pytest_configure(config):
    """Under ``--dist loadscope`` xdist hands out whole modules, by default most tests first. That sends the
    slowest modules (one or two end-to-end tests each: torchrun, detection, Ctrl-C) out last, and one
    worker ran on alone for ~30 s at the end. Hand them out in collection order, which
    ``pytest_collection_modifyitems`` makes longest first (``tests/module_order.py``)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    longest_first(items)


_module_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Sum each module's phases; the xdist controller sees every worker's reports."""
    module = module_of(report.nodeid)
    _module_seconds[module] = _module_seconds.get(module, 0.0) + report.duration


def pytest_sessionfinish(session):
    config = session.config
    if config.getoption("store_module_durations") and not hasattr(config, "workerinput"):
        store(_module_seconds)


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
