"""The GPU data path and loader defaults, run on the CPU: aug_impl='gpu' end to end, persistent
workers that follow the sampler's epoch, the worker count a CUDA run gets, and exact resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader

import pretrain.train as train
from disco_bench.cli import main
from infra.checkpoint import safe_load
from pretrain.augment import aug_plus_for
from pretrain.data import EpochBatchSampler, MultiViewDataset, default_workers, image_folder
from tests.pretrain.helpers import pretrain_args


def epochs_of_batches(loader: DataLoader, sampler: EpochBatchSampler, epochs: int) -> list[list]:
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append([views for views, _ in loader])
    return out


def test_persistent_workers_augment_the_samplers_epoch(tiny_imagefolder):
    """Workers kept across epochs never see set_epoch on the main process's dataset: the (epoch,
    index) pairs of the sampler carry it, so each epoch's views equal those of a loader without
    workers, and differ from the previous epoch's."""
    dataset = MultiViewDataset(image_folder(tiny_imagefolder / "train"), aug_plus_for(16, "gpu"), 2, seed=3)
    runs = []
    for workers in (0, 2):
        sampler = EpochBatchSampler(len(dataset), 8, seed=3, tag_epoch=True)
        loader = DataLoader(
            dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0
        )
        runs.append(epochs_of_batches(loader, sampler, 2))
    plain, persistent = runs
    for a, b in zip(plain, persistent, strict=True):
        for views_a, views_b in zip(a, b, strict=True):
            for (pix_a, par_a), (pix_b, par_b) in zip(views_a, views_b, strict=True):
                assert pix_a.dtype == torch.uint8 and torch.equal(pix_a, pix_b) and torch.equal(par_a, par_b)
    assert not torch.equal(plain[0][0][0][1], plain[1][0][0][1])  # epoch 1 drew other parameters


def test_default_workers_share_this_processs_cores_among_local_ranks(monkeypatch):
    monkeypatch.delenv("DISCO_BENCH_STEP_CORES", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(48)), raising=False)
    assert default_workers("cuda", 8) == 5  # 6 cores per rank, one left to the training process
    assert default_workers("cuda", 1) == 47
    assert default_workers("cuda", 64) == 1
    assert default_workers("cpu", 1) == 0  # CPU runs keep decoding in the training process
    monkeypatch.setenv("DISCO_BENCH_STEP_CORES", "12")  # one of `run --jobs 4` on this machine
    assert default_workers("cuda", 1) == 11


def test_a_cuda_run_without_workers_is_warned_once(tiny_pretrain_cfg, capsys):
    cuda = torch.device("cuda", 0)  # only its type is read: no GPU needed
    assert train.resolve_workers(dataclasses.replace(tiny_pretrain_cfg, workers=0), cuda).workers == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: workers=0 on CUDA")
    assert train.resolve_workers(tiny_pretrain_cfg, torch.device("cpu")).workers == 0
    assert train.resolve_workers(dataclasses.replace(tiny_pretrain_cfg, workers=3), cuda).workers == 3
    assert (
        train.resolve_workers(dataclasses.replace(tiny_pretrain_cfg, workers=0), cuda, warn=False).workers
        == 0
    )
    assert capsys.readouterr().err == ""  # ranks other than 0 stay silent


@pytest.fixture()
def interrupt_at(monkeypatch):
    """``interrupt_at[0] = N`` stops the run once at step N with KeyboardInterrupt (Ctrl-C)."""
    at = [None]
    real = train.step_once

    def spy(setup, model, loop, views, autocast):
        if loop.step == at[0]:
            at[0] = None
            raise KeyboardInterrupt
        return real(setup, model, loop, views, autocast)

    monkeypatch.setattr(train, "step_once", spy)
    return at


def test_a_gpu_path_run_with_workers_resumed_ends_where_one_without_them_ends(
    tiny_imagefolder, tmp_path, interrupt_at, capsys
):
    """aug_impl='gpu' on the CPU, 2 epochs: persistent workers, killed in epoch 0 and resumed,
    end with the weights of an uninterrupted run without workers; the protocol records the path."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(pretrain_args(tiny_imagefolder, whole, "aug_impl=gpu", "workers=0")) == 0
    interrupt_at[0] = 3
    assert main(pretrain_args(tiny_imagefolder, resumed, "aug_impl=gpu", "workers=2")) == 130
    assert main(pretrain_args(tiny_imagefolder, resumed, "aug_impl=gpu", "workers=2")) == 0, (
        capsys.readouterr()
    )
    a, b = safe_load(whole / "final.pt"), safe_load(resumed / "final.pt")
    assert a["protocol"]["aug_impl"] == "gpu" and a["step"] == b["step"] == 12
    for key, value in a["encoder"]["backbone"].items():
        assert torch.equal(value, b["encoder"]["backbone"][key]), key


def test_a_truncated_jpeg_is_one_error_naming_it_on_the_gpu_path_too(tmp_path):
    from PIL import Image

    from infra.errors import InputError

    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 48), (120, 30, 200)).save(folder / "good.jpg", quality=90)
    whole = (folder / "good.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    dataset = MultiViewDataset(image_folder(tmp_path / "train"), aug_plus_for(16, "gpu"), 2, seed=0)
    index = [p for p, _ in dataset.base.samples].index(str(folder / "cut.jpg"))
    with pytest.raises(InputError, match=rf"^corrupt or truncated image {folder / 'cut.jpg'} "):
        dataset[(0, index)]
    assert len(dataset[(0, 1 - index)][0]) == 2
