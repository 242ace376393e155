"""Every method of the registry trains under ``torchrun --nproc_per_node 2`` (gloo, CPU), and for the
methods whose loss does not depend on how the batch is split over processes, one step on 2
processes gives the weights one step on 1 process gives with the same global batch.

One torchrun launch runs every config (tests/pretrain/ddp_worker.py), so the whole registry costs
one process start-up. The data set is one global batch (8 images): with one step per epoch both
runs draw the same 8 images in the same order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from disco_bench.embedded import EmbeddedConfig, make_embedded
from infra.checkpoint import safe_load
from pretrain.config import PretrainConfig
from pretrain.methods import METHODS
from pretrain.train import build_method, pretrain

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
TINY = dict(
    image_size=16,
    epochs=1,
    batch_size=8,
    max_steps=1,
    queue_size=16,
    hidden=32,
    swav_prototypes=8,
    dino_out_dim=16,
    key_momentum=0.9,
    device="cpu",
    seed=3,
    swav_warmup_epochs=0,  # the one step runs at the full rate, so a prototype that took it would move
    dino_warmup_epochs=0,
)

# Split-invariant with a student without BatchNorm (timm's test_vit: LayerNorm only), the DisCo MSE
# averaged (a summed MSE weighs each process's share by its own batch) and SGD (Adam's first step
# is about lr x sign(gradient): float-rounding noise in a gradient near 0 would flip it).
# Not here: swav (its projection head has BatchNorm, statistics per process), at (CNN stages with
# BatchNorm), rkd (distances and angles between the samples a process holds).
SPLIT_INVARIANT = ["moco", "disco", "disco*", "seed", "dino", "dino+disco"]
INVARIANT = dict(student="test_vit", distill_reduction="mean", dino_optimizer="sgd", base_lr=3.0)


def config(name: str, data: Path, out: Path, teacher_ckpt: str, **extra) -> dict:
    # timm's 0.4M-parameter test_resnet: every method builds, steps and saves it fastest
    fields = TINY | dict(method=name, student="test_resnet", data=str(data), out=str(out)) | extra
    if METHODS[name].needs_teacher:
        fields["teacher_ckpt"] = teacher_ckpt
    return fields


@pytest.fixture(scope="module")
def one_batch_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp-data") / "embedded"
    return make_embedded(
        root, EmbeddedConfig(classes=2, train_per_class=4, val_per_class=1, image_size=16), progress=False
    )


@pytest.fixture(scope="module")
def ddp_runs(one_batch_data, teacher_ckpt, tmp_path_factory) -> tuple[dict, Path, dict]:
    """One torchrun launch, 2 processes: every registered method, then the split-invariant ones on test_vit."""
    out = tmp_path_factory.mktemp("ddp-runs")
    spec = {name: config(name, one_batch_data, out / "registry" / name, teacher_ckpt) for name in METHODS}
    spec |= {
        f"split:{name}": config(name, one_batch_data, out / "split" / name, teacher_ckpt, **INVARIANT)
        for name in SPLIT_INVARIANT
    }
    (out / "spec.json").write_text(json.dumps(spec))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(out / "spec.json"),
        str(out / "results.json"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    results["_log"] = proc.stderr[-3000:]
    return results, out, spec


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_under_torchrun_with_two_processes(name, ddp_runs):
    results, out, spec = ddp_runs
    assert results.get(name) == "ok", results.get(name) or f"not run; worker log:\n{results['_log']}"
    final = safe_load(out / "registry" / name / "final.pt")
    assert final["step"] == 1 and final["done"]
    assert all(
        torch.isfinite(v).all() for v in final["encoder"]["backbone"].values() if v.is_floating_point()
    )
    if name.startswith(("swav", "dino")):
        # the step fell in the first epoch: the prototypes took part in the graph (DDP reduced their
        # gradient) and the gradient was then cancelled, so they did not move (SwAV re-normalises them)
        initial = build_method(PretrainConfig(**spec[name]))[0].prototypes.weight.detach()
        if name.startswith("swav"):
            initial = torch.nn.functional.normalize(initial, dim=1)
        saved = safe_load(out / "registry" / name / "last.pt")["method_state"]["prototypes.weight"]
        assert torch.equal(saved, initial)


@pytest.mark.slow
@pytest.mark.parametrize("name", SPLIT_INVARIANT)
def test_one_step_on_two_processes_equals_one_step_on_one(
    name, ddp_runs, one_batch_data, teacher_ckpt, tmp_path
):
    results, out, _ = ddp_runs
    assert results.get(f"split:{name}") == "ok", results.get(f"split:{name}") or results["_log"]
    cfg = PretrainConfig(**config(name, one_batch_data, tmp_path / "one", teacher_ckpt, **INVARIANT))
    pretrain(cfg, progress=False)
    two, one = (
        safe_load(out / "split" / name / "final.pt")["encoder"],
        safe_load(tmp_path / "one" / "final.pt")["encoder"],
    )
    start = build_method(cfg)[0].student
    initial = {"backbone": start.backbone.state_dict(), "head": start.head.state_dict()}
    moved, apart = 0.0, 0.0
    for part in ("backbone", "head"):
        assert two[part].keys() == one[part].keys()
        for key, value in one[part].items():
            if value.is_floating_point():
                moved = max(moved, (value - initial[part][key]).abs().max().item())
                apart = max(apart, (value - two[part][key]).abs().max().item())
                assert torch.allclose(two[part][key], value, rtol=1e-4, atol=1e-6), f"{part}.{key}"
    assert moved > 1000 * apart  # the step itself is far larger than the difference
