"""Small helpers the tests share: a tiny frozen teacher and config, one SGD step, random views,
before/after snapshots of a module's state, a random-init student checkpoint, and a pickle that
runs code when loaded."""

from __future__ import annotations

import contextlib
import io
import pathlib
from pathlib import Path

import torch

from pretrain.config import PretrainConfig
from pretrain.methods.base import FrozenTeacher
from pretrain.models import Encoder, ProjectionHead, build_backbone, feature_dim
from pretrain.train import save_random_encoder

TEACHER_QUEUE_VALUE = 0.25  # what the teacher_ckpt fixture's MoCo queue holds: must never reach a student


def tiny_teacher(
    arch: str = "resnet10t", dim: int = 16, seed: int = 1, layers: int = 2, **backbone_kwargs
) -> FrozenTeacher:
    torch.manual_seed(seed)
    backbone = build_backbone(arch, **backbone_kwargs)
    activation = "gelu" if layers == 3 else "relu"
    return FrozenTeacher(
        Encoder(
            backbone, ProjectionHead(feature_dim(backbone), 32, dim, layers=layers, activation=activation)
        )
    )


def tiny_cfg(method: str, **overrides) -> PretrainConfig:
    base = dict(
        method=method,
        student="resnet10t",
        image_size=32,
        batch_size=4,
        queue_size=16,
        dim=16,
        hidden=32,
        key_momentum=0.9,
        swav_prototypes=8,
        dino_out_dim=12,
    )
    return PretrainConfig(**(base | overrides))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module, prefix: str = "") -> list[str]:
    """Names (under ``prefix``) of state tensors that differ from ``before``."""
    return [
        k for k, v in module.state_dict().items() if k.startswith(prefix) and not torch.equal(v, before[k])
    ]


def sgd_step(method: torch.nn.Module, views: list[torch.Tensor], lr: float = 0.1) -> dict[str, torch.Tensor]:
    """One training step as pretrain.train runs it: forward, backward, SGD on the trainable parameters."""
    method.train()
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    terms = method(views)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    if hasattr(method, "after_backward"):  # frozen layers drop their gradients, queues take the new keys
        method.after_backward()
    opt.step()
    return terms


def random_views(
    n: int, batch: int = 4, size: int = 32, small: int = 16, large: int = 2, seed: int = 0
) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, 3, size if i < large else small, size if i < large else small, generator=gen)
        for i in range(n)
    ]


def assert_teacher_untouched(method, before: dict[str, torch.Tensor]) -> None:
    assert changed(before, method, "teacher.") == []
    assert all(not p.requires_grad for p in method.teacher.parameters())


def views_for(method, batch: int = 8, size: int = 16) -> list[torch.Tensor]:
    """``method.num_views`` random (batch, 3, size, size) views, the same on every call."""
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 3, size, size, generator=gen) for _ in range(method.num_views)]


def save_student(path, arch: str = "resnet10t", seed: int = 0) -> str:
    """A random-init encoder (head hidden 32, 16-d) exported exactly as pre-training exports its student."""
    return save_random_encoder(path, arch, 32, 16, seed)


class PlantsMarker:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for any code a stranger's file could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def hand_topk_accuracy(logits: torch.Tensor, labels, k: int) -> float:
    """Percentage of rows whose label is among the k highest scores, counted the long way: a row is a
    hit when fewer than k classes score strictly higher than its label."""
    hits = sum(1 for row, y in zip(logits.tolist(), labels) if sum(v > row[int(y)] for v in row) < k)
    return 100.0 * hits / len(labels)


def pretrain_args(
    data,
    out,
    *extra: str,
    method: str = "moco",
    student: str = "test_resnet",
    teacher: str | None = None,
    teacher_ckpt: str | None = None,
    epochs: int | None = 2,
    batch_size: int | None = 4,
    image_size: int | None = 16,
    sets: tuple[str, ...] = ("queue_size=16", "key_momentum=0.9"),
    save_every: int | None = 1,
) -> list[str]:
    """A tiny ``pretrain`` command line: by default moco on timm's 0.4M-parameter test_resnet, 2 epochs
    of batch 4 at 16 px (24 images: 6 steps per epoch), a checkpoint every step. An option given None
    (or no ``sets`` and no ``save_every``) is left out; ``extra`` goes last, as it is (more ``--set``
    values right after ``save_every``/``sets``, or further options)."""
    args = ["pretrain", "--method", method, "--student", student]
    if teacher is not None:
        args += ["--teacher", teacher]
    if teacher_ckpt is not None:
        args += ["--teacher-ckpt", teacher_ckpt]
    args += ["--data", str(data)]
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size), ("--image-size", image_size)):
        if value is not None:
            args += [flag, str(value)]
    args += ["--out", str(out), "--quiet"]
    settings = [*sets, *([f"save_every_steps={save_every}"] if save_every is not None else [])]
    if settings:
        args += ["--set", *settings]
    return [*args, *extra]


def bomb_png(path: Path) -> Path:
    """A PNG whose header says 20000 x 9000 pixels (over PIL's decompression-bomb limit); no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 20000, 9000, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def run_main(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of ``python -m disco_bench ARGV`` run in this process (stdout discarded)."""
    from disco_bench.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()
