"""``disco-bench pretrain --teacher NAME --teacher-ckpt PATH`` with a teacher in every supported
format, the per-step CSV log, and the protocol a run records."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from disco_bench.cli import main
from infra.checkpoint import safe_load
from tests.pretrain.helpers import pretrain_args
from tests.pretrain.layouts import dino_checkpoint, moco_checkpoint, own_checkpoint, swav_state

ARCH = "resnet10t"  # timm deep stem: no torchvision layout to infer, so --teacher names it


def write_teacher(fmt: str, path) -> tuple[str, int]:
    """A resnet10t teacher in ``fmt``'s layout; returns (path, embedding width)."""
    if fmt == "moco":
        obj, _, _ = moco_checkpoint(ARCH, hidden=64, out_dim=128)
        obj.pop("arch")  # as in files converted by third parties: --teacher supplies it
        dim = 128
    elif fmt == "swav":
        obj, _, _ = swav_state(ARCH, hidden=64, out_dim=128)
        dim = 128
    elif fmt == "dino":
        obj, _, _ = dino_checkpoint(ARCH, hidden=64, bottleneck=32, use_bn=False, dino_arch=ARCH)
        dim = 32
    elif fmt == "disco-bench":
        obj, _ = own_checkpoint(ARCH, hidden=64, out_dim=128)
        dim = 128
    else:  # plain backbone
        obj = own_checkpoint(ARCH, hidden=64, out_dim=128)[0]["encoder"]["backbone"]
        dim = 128
    torch.save(obj, path)
    return str(path), dim


def disco_args(data, out, teacher: str, dim: int, *extra: str, epochs: int = 1) -> list[str]:
    return pretrain_args(
        data,
        out,
        *extra,
        method="disco",
        student=ARCH,
        teacher=ARCH,
        teacher_ckpt=teacher,
        epochs=epochs,
        batch_size=8,
        sets=("queue_size=16", f"dim={dim}"),
        save_every=None,
    )


@pytest.mark.parametrize("fmt", ["moco", "swav", "dino", "disco-bench"])
def test_pretrain_command_takes_a_teacher_in_every_format(fmt, tiny_imagefolder, tmp_path, capsys):
    teacher, dim = write_teacher(fmt, tmp_path / f"{fmt}.pth")
    code = main(disco_args(tiny_imagefolder, tmp_path / "run", teacher, dim, "max_steps=1"))
    assert code == 0, capsys.readouterr().err
    assert f"checkpoint: {tmp_path / 'run' / 'final.pt'}" in capsys.readouterr().out
    final = safe_load(tmp_path / "run" / "final.pt")
    assert final["teacher"]["format"] == fmt and final["teacher"]["arch"] == ARCH
    protocol = final["protocol"]
    assert protocol["teacher_ckpt"]["format"] == fmt and len(protocol["teacher_ckpt"]["sha256"]) == 64
    assert protocol["hidden"] == 2048 and protocol["dim"] == dim  # DisCo's default head, resolved


def test_pretrain_command_refuses_a_backbone_only_teacher(tiny_imagefolder, tmp_path, capsys):
    teacher, dim = write_teacher("plain", tmp_path / "backbone.pth")
    code = main(disco_args(tiny_imagefolder, tmp_path / "run", teacher, dim))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(
        f"error: teacher checkpoint {teacher} is a backbone-only (plain) resnet10t state dict"
    )
    assert "pass the self-supervised checkpoint that includes the head" in err and err.count("\n") == 1


def test_step_log_csv_has_every_step_and_its_loss_terms(tiny_imagefolder, tmp_path, capsys):
    teacher, dim = write_teacher("disco-bench", tmp_path / "own.pt")
    # 24 images / batch 8 = 3 steps per epoch, 2 epochs, cosine per epoch
    code = main(
        disco_args(
            tiny_imagefolder,
            tmp_path / "run",
            teacher,
            dim,
            "distill_reduction=mean",
            "distill_weight=2.0",
            epochs=2,  # as --epochs: a --set that repeats a flag is refused
        )
    )
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "run" / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "epoch", "lr", "loss", "loss_con", "loss_dis"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [int(r["epoch"]) for r in rows] == [0, 0, 0, 1, 1, 1]
    base = 0.03 * 8 / 256
    assert [float(r["lr"]) for r in rows] == [base] * 3 + [base * 0.5 * (1 + math.cos(math.pi / 2))] * 3
    for r in rows:
        loss, con, dis = float(r["loss"]), float(r["loss_con"]), float(r["loss_dis"])
        assert math.isfinite(loss) and loss == pytest.approx(con + 2.0 * dis, rel=1e-5)
    final = safe_load(tmp_path / "run" / "final.pt")
    means = final["epoch_means"]
    assert [m["epoch"] for m in means] == [0, 1]
    assert means[1]["loss"] == pytest.approx(sum(float(r["loss"]) for r in rows[3:]) / 3, rel=1e-6)
    assert final["protocol"]["distill_reduction"] == "mean" and final["protocol"]["distill_weight"] == 2.0
