"""Crash safety: pre-training and the paper-protocol linear probe, each SIGKILLed at two points
and restarted with the same command (plus --resume for pre-training), end exactly where an
uninterrupted run ends; after every kill, each file a reader would take for complete loads."""

from __future__ import annotations

import json

import pytest
import torch

from disco_bench.cli import main
from disco_bench.embedded import EmbeddedConfig, make_embedded
from pretrain.checkpoint import safe_load
from tests.crash_helpers import finish, kill_after_writes, start, stray_files
from tests.downstream.conftest import save_random_encoder

pytestmark = pytest.mark.slow


def pretrain_args(data, out) -> list[str]:
    # timm's 0.4M-parameter test_resnet: 24 images / batch 4 = 6 steps per epoch, 2 epochs, a checkpoint every step
    return ["pretrain", "--method", "moco", "--student", "test_resnet", "--data", str(data), "--epochs", "2",
            "--batch-size", "4", "--image-size", "16", "--out", str(out), "--quiet",
            "--set", "queue_size=16", "key_momentum=0.9", "save_every_steps=1"]


def check_after_kill(out) -> int:
    """No final.pt, nothing but last.pt, the log and temp siblings; last.pt loads. Returns its step."""
    assert not (out / "final.pt").exists()
    assert [f for f in stray_files(out, {"last.pt", "log.csv"}) if not f.startswith("tb/")] == []
    for pt in out.glob("*.pt"):
        safe_load(pt)  # raises if truncated
    return safe_load(out / "last.pt")["step"]


def test_pretrain_killed_twice_resumes_to_the_uninterrupted_weights(tiny_imagefolder, tmp_path, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    kill_after_writes(start(pretrain_args(tiny_imagefolder, cut)), cut / "last.pt", writes=1)  # after the 1st checkpoint
    steps = [check_after_kill(cut)]
    # the resumed run, killed after its 3rd checkpoint
    kill_after_writes(start([*pretrain_args(tiny_imagefolder, cut), "--resume"]), cut / "last.pt", writes=3)
    steps.append(check_after_kill(cut))
    assert steps[0] >= 1 and steps[1] >= steps[0] + 3 and steps[1] < 12, steps
    finisher = start([*pretrain_args(tiny_imagefolder, cut), "--resume"])
    assert main(pretrain_args(tiny_imagefolder, whole)) == 0, capsys.readouterr().err  # the reference, meanwhile
    finish(finisher)

    a, b = safe_load(whole / "final.pt"), safe_load(cut / "final.pt")
    assert a["step"] == b["step"] == 12
    for part in ("backbone", "head"):
        assert a["encoder"][part].keys() == b["encoder"][part].keys()
        for key, value in a["encoder"][part].items():
            assert torch.equal(value, b["encoder"][part][key]), f"{part}.{key} differs after kills at steps {steps}"
    assert a["epoch_means"] == b["epoch_means"]
    assert (whole / "log.csv").read_text() == (cut / "log.csv").read_text()


@pytest.fixture(scope="module")
def probe_data(tmp_path_factory):
    # 96 training images / batch 8: 12 steps an epoch, long enough to be killed between two epochs
    cfg = EmbeddedConfig(classes=3, train_per_class=32, val_per_class=4, image_size=16)
    return make_embedded(tmp_path_factory.mktemp("probe") / "embedded", cfg, progress=False)


def probe_args(ckpt, data, out) -> list[str]:
    return ["eval", "linear", "--ckpt", str(ckpt), "--data", str(data), "--protocol", "paper", "--epochs", "3",
            "--image-size", "16", "--out", str(out), "--quiet", "--set", "batch_size=8", "device=cpu", "lr=0.5"]


def probe_outcome(out) -> tuple[dict, dict]:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    values = {r["metric"]: r["value"] for r in records}
    return values, safe_load(out / "eval" / "linear" / "probe_last.pt")


def test_linear_probe_killed_twice_gives_the_uninterrupted_metrics(probe_data, tmp_path, capsys):
    ckpt = save_random_encoder(tmp_path / "student.pt")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    state = cut / "eval" / "linear" / "probe_last.pt"

    epochs = []
    for writes in (1, 1):  # after epoch 1's state, then after the resumed run's first (epoch 2)
        kill_after_writes(start(probe_args(ckpt, probe_data, cut)), state, writes=writes)
        assert not (cut / "results.jsonl").exists()  # no record before the probe has finished
        assert stray_files(cut / "eval" / "linear", {"probe_last.pt"}) == []
        epochs.append(safe_load(state)["epoch"])
    assert epochs == [1, 2]
    finisher = start(probe_args(ckpt, probe_data, cut))
    assert main(probe_args(ckpt, probe_data, whole)) == 0, capsys.readouterr().err  # the reference, meanwhile
    finish(finisher)

    (values_whole, state_whole), (values_cut, state_cut) = probe_outcome(whole), probe_outcome(cut)
    assert values_cut == values_whole and set(values_cut) == {"top1", "top5"}
    assert state_cut["epoch"] == state_whole["epoch"] == 3
    for key, value in state_whole["head"].items():
        assert torch.equal(value, state_cut["head"][key]), key
