"""Crash safety: every pre-training method, and the paper-protocol linear probe, SIGKILLed
mid-run and started again with the same command, end exactly where an uninterrupted run ends;
after every kill, each file a reader would take for complete loads. A run is stopped right after a
chosen checkpoint write (tests/paused.py), so where it is killed does not depend on its speed."""

from __future__ import annotations

import json

import pytest
import torch

from disco_bench.cli import main
from infra.checkpoint import safe_load
from pretrain.config import method_reads
from pretrain.methods import METHODS
from tests.crash_helpers import finish, leftovers, sigkill, start, stray_files
from tests.paused import interrupt, start_paused, wait_paused
from tests.pretrain.helpers import pretrain_args, save_student

pytestmark = pytest.mark.slow


TINY_SETTINGS = (
    "save_every_steps=2",
    "queue_size=16",
    "key_momentum=0.9",
    "dim=16",
    "hidden=32",
    "swav_prototypes=8",
    "swav_freeze_prototypes_epochs=1",
    "dino_out_dim=12",
    "dino_freeze_last_layer_epochs=1",
    "dino_warmup_teacher_temp_epochs=1",
)


def method_args(method: str, data, out, teacher: str | None) -> list[str]:
    """A 6-step run of ``method`` (24 images / batch 8 = 3 steps per epoch, 2 epochs, a checkpoint
    every 2 steps) small enough for every method: resnet10t at 16 px, 16-d embeddings. The method
    schedules (SwAV's frozen prototypes, DINO's frozen last layer and temperature warm-up, both one epoch) change
    inside the run, so a resume has to get them right too."""
    return pretrain_args(
        data,
        out,
        method=method,
        student="resnet10t",
        teacher_ckpt=teacher,
        batch_size=8,
        # every method's tiny sizes, each given only to the methods that read it (the others refuse it)
        sets=tuple(s for s in TINY_SETTINGS if method_reads(method, s.split("=")[0])),
        save_every=None,
    )


@pytest.fixture(scope="module")
def tiny_teacher_file(tmp_path_factory) -> str:
    """A resnet10t teacher (16-d head) in this project's own checkpoint format."""
    return save_student(tmp_path_factory.mktemp("teacher") / "teacher.pt", "resnet10t", seed=1)


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key, value in a.items():
        if isinstance(value, dict):
            assert_same_tensors(value, b[key], f"{what}.{key}")
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), f"{what}.{key} differs"
        else:
            assert value == b[key], f"{what}.{key} differs"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_killed_mid_run_resumes_to_the_uninterrupted_weights(
    method, tiny_imagefolder, tiny_teacher_file, tmp_path, capsys
):
    teacher = tiny_teacher_file if METHODS[method].needs_teacher else None
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    kill_after_saves(method_args(method, tiny_imagefolder, cut, teacher), saves=1)
    killed_at = check_after_kill(cut)
    assert killed_at == 2  # its first checkpoint (every 2 steps), mid-epoch
    # the same command again, no flag: it finds last.pt of the same run and continues
    assert main(method_args(method, tiny_imagefolder, cut, teacher)) == 0, capsys.readouterr().err
    assert main(method_args(method, tiny_imagefolder, whole, teacher)) == 0, capsys.readouterr().err

    a, b = safe_load(whole / "final.pt"), safe_load(cut / "final.pt")
    assert a["step"] == b["step"] == 6
    assert_same_tensors(a["encoder"], b["encoder"], f"encoder after a kill at step {killed_at}")
    assert a["epoch_means"] == b["epoch_means"]
    # everything else that trained (momentum encoders, queues, prototypes, centres) and the optimiser too
    last_a, last_b = safe_load(whole / "last.pt"), safe_load(cut / "last.pt")
    assert_same_tensors(last_a["method_state"], last_b["method_state"], "method_state")
    assert_same_tensors(last_a["optimizer"]["state"], last_b["optimizer"]["state"], "optimizer")
    assert not any(k.startswith("teacher.") for k in last_b["method_state"])  # reloaded from its own file
    assert (whole / "log.csv").read_text() == (cut / "log.csv").read_text()
    assert leftovers(cut) == []  # the killed run's temp file and lock are gone


SAVE = "pretrain.train.save_checkpoint"


def kill_after_saves(args: list[str], saves: int) -> None:
    """SIGKILL ``pretrain ARGS`` right after its ``saves``-th checkpoint."""
    proc = start_paused(args, SAVE, after=saves)
    assert wait_paused(proc) == saves
    sigkill(proc)


def check_after_kill(out) -> int:
    """No final.pt, nothing but last.pt, the log and temp siblings; last.pt loads. Returns its step."""
    assert not (out / "final.pt").exists()
    assert [f for f in stray_files(out, {"last.pt", "log.csv"}) if not f.startswith("tb/")] == []
    for pt in out.glob("*.pt"):
        safe_load(pt)  # raises if truncated
    return safe_load(out / "last.pt")["step"]


def test_pretrain_killed_twice_resumes_to_the_uninterrupted_weights(tiny_imagefolder, tmp_path, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    kill_after_saves(pretrain_args(tiny_imagefolder, cut), saves=1)  # after the 1st checkpoint
    steps = [check_after_kill(cut)]
    # the resumed run, killed after its 3rd checkpoint
    kill_after_saves([*pretrain_args(tiny_imagefolder, cut), "--resume"], saves=3)
    steps.append(check_after_kill(cut))
    assert steps == [1, 4]  # a checkpoint every step
    finisher = start([*pretrain_args(tiny_imagefolder, cut), "--resume"])
    assert main(pretrain_args(tiny_imagefolder, whole)) == 0, (
        capsys.readouterr().err
    )  # the reference, meanwhile
    finish(finisher)

    a, b = safe_load(whole / "final.pt"), safe_load(cut / "final.pt")
    assert a["step"] == b["step"] == 12
    for part in ("backbone", "head"):
        assert a["encoder"][part].keys() == b["encoder"][part].keys()
        for key, value in a["encoder"][part].items():
            assert torch.equal(value, b["encoder"][part][key]), (
                f"{part}.{key} differs after kills at steps {steps}"
            )
    assert a["epoch_means"] == b["epoch_means"]
    assert (whole / "log.csv").read_text() == (cut / "log.csv").read_text()


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tiny_imagefolder, tmp_path, capsys):
    out = tmp_path / "run"
    proc = start_paused(pretrain_args(tiny_imagefolder, out), SAVE, after=3)
    assert wait_paused(proc) == 3  # mid-run, right after its 3rd checkpoint
    err = interrupt(proc)
    assert proc.returncode == 130 and err.endswith("interrupted; run the same command again to resume\n"), err
    assert leftovers(out) == []  # no temp file, the folder's lock released
    assert safe_load(out / "last.pt")["step"] == 3
    assert main(pretrain_args(tiny_imagefolder, out)) == 0, capsys.readouterr().err
    assert safe_load(out / "final.pt")["step"] == 12
    assert [int(r.split(",")[0]) for r in (out / "log.csv").read_text().splitlines()[1:]] == list(
        range(1, 13)
    )


def probe_args(ckpt, data, out) -> list[str]:
    return [
        "eval",
        "linear",
        "--ckpt",
        str(ckpt),
        "--data",
        str(data),
        "--protocol",
        "paper",
        "--epochs",
        "3",
        "--image-size",
        "16",
        "--out",
        str(out),
        "--quiet",
        "--set",
        "batch_size=8",
        "device=cpu",
        "lr=0.5",
    ]


def probe_outcome(out) -> tuple[dict, dict]:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    values = {r["metric"]: r["value"] for r in records}
    return values, safe_load(out / "eval" / "linear" / "probe_last.pt")


def test_linear_probe_killed_twice_gives_the_uninterrupted_metrics(tiny_imagefolder, tmp_path, capsys):
    ckpt = save_student(tmp_path / "student.pt")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    state = cut / "eval" / "linear" / "probe_last.pt"
    probe_data = tiny_imagefolder  # 24 training images / batch 8: 3 steps an epoch

    epochs = []
    for _ in range(2):  # after epoch 1's state, then after the resumed run's first (epoch 2)
        proc = start_paused(probe_args(ckpt, probe_data, cut), "downstream.probe.atomic_torch_save")
        assert wait_paused(proc) == 1
        sigkill(proc)
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
