"""Shuffle-BN (pretrain.methods.base.shuffled_forward): every key comes back at its own image's row,
and each key's batch statistics cover the images the setting says, in one process
(``shuffle_bn_splits``) and across two gloo processes (MoCo's gather / permute / un-shuffle)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pretrain.methods.base import shuffled_forward


class BatchWitness(nn.Module):
    """Per row: [its input value, the mean of the batch it was encoded in, that batch's size]. A
    stand-in for BN whose output says which images shared the statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        return torch.stack([x[:, 0], x[:, 0].mean().expand(n), torch.full((n,), float(n))], dim=1)


def groups(out: torch.Tensor) -> list[list[float]]:
    """The input values of each encoding batch, found from the batch mean every row reports."""
    by_mean: dict[float, list[float]] = {}
    for value, mean, _ in out.tolist():
        by_mean.setdefault(round(mean, 5), []).append(value)
    return sorted(sorted(v) for v in by_mean.values())


# image i carries the value 2^i: every subset has its own sum, so no two chunks report the same mean
X = (2.0 ** torch.arange(8)).view(8, 1)


def test_keys_come_back_aligned_with_their_images_and_chunks_hold_the_stated_images():
    out = shuffled_forward(BatchWitness(), X, 2, torch.Generator().manual_seed(0))
    assert out[:, 0].tolist() == X[:, 0].tolist()  # row i is image i's key, after un-shuffling
    found = groups(out)
    assert len(found) == 2 and all(len(g) == 4 for g in found)  # two chunks of 4 images
    assert sorted(v for g in found for v in g) == X[:, 0].tolist()  # each image encoded exactly once
    for g in found:  # and each row reports its own chunk's statistics
        assert {round(m, 5) for v, m, _ in out.tolist() if v in g} == {round(sum(g) / 4, 5)}
    assert found != [[1.0, 2.0, 4.0, 8.0], [16.0, 32.0, 64.0, 128.0]]  # shuffled, not the batch order


def test_splits_count_the_chunks_and_one_turns_shuffle_bn_off():
    three = shuffled_forward(
        BatchWitness(), (2.0 ** torch.arange(9)).view(9, 1), 3, torch.Generator().manual_seed(1)
    )
    assert [len(g) for g in groups(three)] == [3, 3, 3]
    off = shuffled_forward(BatchWitness(), X, 1, torch.Generator().manual_seed(0))
    assert torch.equal(off, BatchWitness()(X))  # the whole batch, in order: plain BN
    small = shuffled_forward(BatchWitness(), X[:3], 2, torch.Generator().manual_seed(0))
    assert torch.equal(small, BatchWitness()(X[:3]))  # fewer than 2 images per chunk: not split


def test_the_permutation_comes_from_the_generator():
    a = shuffled_forward(BatchWitness(), X, 2, torch.Generator().manual_seed(5))
    b = shuffled_forward(BatchWitness(), X, 2, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(5)
    draws = [groups(shuffled_forward(BatchWitness(), X, 2, gen)) for _ in range(4)]
    assert len({str(d) for d in draws}) > 1  # a new split every step


def test_with_bn_keys_equal_a_per_chunk_forward():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3).train()
    x = torch.randn(8, 3)
    out = shuffled_forward(bn, x, 2, torch.Generator().manual_seed(3))
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    for chunk in perm.view(2, 4):  # the documented draw: one randperm of the batch, split in order
        ref = nn.functional.batch_norm(x[chunk], None, None, training=True)
        torch.testing.assert_close(out[chunk], ref)


def _ddp_worker(rank: int, world: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # shuffled_forward broadcasts rank 0's permutation
        local = (2.0 ** (torch.arange(4) + 4 * rank)).view(4, 1)  # rank 0: 1 2 4 8, rank 1: 16 32 64 128
        results[rank] = shuffled_forward(BatchWitness(), local, splits=2, generator=None).tolist()
    finally:
        dist.destroy_process_group()


def test_across_two_processes_keys_come_back_to_their_rank_and_row(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        # fork: the workers inherit the imported modules instead of importing torch again (seconds each)
        mp.start_processes(
            _ddp_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True, start_method="fork"
        )
        outs = [torch.tensor(results[r]) for r in range(2)]
    for rank, out in enumerate(outs):
        assert out[:, 0].tolist() == [2.0 ** (4 * rank + i) for i in range(4)]  # its own images, in its order
        assert out[:, 2].tolist() == [4.0] * 4  # each process encodes a share of the global batch's size
    found = groups(torch.cat(outs))
    assert [len(g) for g in found] == [4, 4] and sorted(v for g in found for v in g) == X[:, 0].tolist()
    assert found != [
        [1.0, 2.0, 4.0, 8.0],
        [16.0, 32.0, 64.0, 128.0],
    ]  # statistics mix the two processes' images


def test_gathering_channels_last_views_keeps_every_value_in_place(monkeypatch):
    """Views arrive channels_last on GPU runs. NCCL writes each rank's bytes into the buffers flat,
    whatever their strides: the gather must hand it buffers in the input's (contiguous) order.
    Two ranks simulated in one process, each buffer written as NCCL writes it."""
    import infra.distributed as distributed

    def flat_all_gather(parts, x):
        for r, buf in enumerate(parts):
            assert buf.shape == x.shape
            flat = torch.as_strided(buf, (buf.numel(),), (1,))  # the buffer's storage, as NCCL sees it
            flat.copy_((x + 1000 * r).reshape(-1))  # the input's values in its logical order

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "all_gather", flat_all_gather)
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    out = distributed.all_gather_cat(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(out, torch.cat([x, x + 1000]))
