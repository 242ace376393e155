"""Resuming is the default: ``pretrain`` run again finds OUT/last.pt of the same run and continues,
whatever the spelling of its paths; a checkpoint of another run is one error naming the fields
that differ; ``--restart`` discards it; the Ctrl-C advice is what actually resumes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

import pretrain.train as train
from disco_bench.cli import main
from infra.checkpoint import safe_load
from tests.pretrain.helpers import pretrain_args


@pytest.fixture()
def steps_taken(monkeypatch) -> list[int]:
    """The step (counted from 0) of every optimisation step the loop takes; setting the list's
    ``interrupt_at`` stops the run once at that step with KeyboardInterrupt, as Ctrl-C does."""
    taken = StepSpy()
    real = train.step_once

    def spy(setup, model, loop, views, autocast):
        if loop.step == taken.interrupt_at:
            taken.interrupt_at = None
            raise KeyboardInterrupt
        taken.append(loop.step)
        return real(setup, model, loop, views, autocast)

    monkeypatch.setattr(train, "step_once", spy)
    return taken


class StepSpy(list):
    interrupt_at: int | None = None


def interrupted_run(data, out, steps_taken, capsys, at: int = 3, *extra: str) -> str:
    steps_taken.interrupt_at = at
    assert main(pretrain_args(data, out, *extra)) == 130
    assert safe_load(out / "last.pt")["step"] == at
    steps_taken.clear()
    return capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["trailing slash", "relative path", "symlink"])
def test_the_same_run_spelled_differently_continues(
    spelling, tiny_imagefolder, tmp_path, steps_taken, capsys, monkeypatch
):
    out = tmp_path / "run"
    interrupted_run(tiny_imagefolder, out, steps_taken, capsys)
    monkeypatch.chdir(tmp_path)
    if spelling == "trailing slash":
        data, out_again = f"{tiny_imagefolder}/", f"{out}/"
    elif spelling == "relative path":
        data, out_again = os.path.relpath(tiny_imagefolder, tmp_path), "run"
    else:
        (tmp_path / "link").symlink_to(tiny_imagefolder, target_is_directory=True)
        data, out_again = tmp_path / "link", out
    assert main(pretrain_args(data, out_again)) == 0, capsys.readouterr().err
    assert steps_taken == list(range(3, 12))  # from the checkpoint on, not from 0
    assert safe_load(out / "final.pt")["step"] == 12


def test_ctrl_c_advice_resumes(tiny_imagefolder, tmp_path, steps_taken, capsys):
    out = tmp_path / "run"
    err = interrupted_run(tiny_imagefolder, out, steps_taken, capsys, 3)
    assert err == "interrupted; run the same command again to resume\n"
    assert main(pretrain_args(tiny_imagefolder, out)) == 0  # exactly what it says: the same command
    assert steps_taken == list(range(3, 12))
    steps_taken.clear()
    assert main(pretrain_args(tiny_imagefolder, out)) == 0  # a finished run: nothing to do again
    assert steps_taken == [] and safe_load(out / "final.pt")["step"] == 12


def test_ctrl_c_advice_after_restart_drops_the_flag(tiny_imagefolder, tmp_path, steps_taken, capsys):
    out = tmp_path / "run"
    err = interrupted_run(tiny_imagefolder, out, steps_taken, capsys, 2, "--restart")
    assert err == "interrupted; run the same command without --restart to resume\n"
    assert main(pretrain_args(tiny_imagefolder, out)) == 0
    assert steps_taken == list(range(2, 12))


def test_a_checkpoint_of_another_run_is_refused_then_restart_discards_it(
    tiny_imagefolder, tmp_path, steps_taken, capsys
):
    out = tmp_path / "run"
    interrupted_run(tiny_imagefolder, out, steps_taken, capsys, 3)
    before = (out / "last.pt").read_bytes()
    changed = ["--epochs", "3", "--set", "base_lr=0.06"]  # the later --epochs wins over pretrain_args' one
    assert main([*pretrain_args(tiny_imagefolder, out), *changed]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {out / 'last.pt'} belongs to a different run: base_lr (checkpoint 0.03, now 0.06); "
        "epochs (checkpoint 2, now 3); pass --restart to discard it and start over (in a suite: delete it), "
        "or choose another --out\n"
    )
    assert (out / "last.pt").read_bytes() == before and steps_taken == []

    assert main([*pretrain_args(tiny_imagefolder, out), *changed, "--restart"]) == 0, capsys.readouterr().err
    assert steps_taken == list(range(18))  # from step 0
    final = safe_load(out / "final.pt")
    assert final["step"] == 18 and final["config"]["base_lr"] == 0.06
    assert [int(r.split(",")[0]) for r in (out / "log.csv").read_text().splitlines()[1:]] == list(
        range(1, 19)
    )


def test_settings_that_change_no_number_do_not_make_another_run(
    tiny_imagefolder, tmp_path, steps_taken, capsys
):
    out = tmp_path / "run"
    interrupted_run(tiny_imagefolder, out, steps_taken, capsys, 3)
    assert (
        main(pretrain_args(tiny_imagefolder, out, "log_every=1", "device=cpu", "workers=1", save_every=4))
        == 0
    )
    assert steps_taken == list(range(3, 12))


def test_identity_is_canonical_and_names_every_number_changing_field(tiny_pretrain_cfg, monkeypatch):
    cfg = tiny_pretrain_cfg
    method, _ = train.build_method(cfg)
    ident = train.training_identity(cfg, None, method)
    assert ident["data"] == str(Path(cfg.data).resolve()) and "out" not in ident and "workers" not in ident
    monkeypatch.chdir(Path(cfg.data).parent)
    respelled = dataclasses.replace(
        cfg,
        data=Path(cfg.data).name + "/",
        out="elsewhere",
        workers=2,
        hidden=method.student.head.hidden,  # the default, spelled out
        swav_temperature=0.5,  # a field MoCo never reads
    )
    assert train.training_identity(respelled, None, method) == ident
    assert train.training_identity(dataclasses.replace(cfg, seed=1), None, method) != ident
    with_teacher = train.training_identity(cfg, {"arch": "resnet10t", "sha256": "ab"})
    assert with_teacher["teacher_ckpt"] == "sha256:ab" and with_teacher["teacher"] == "resnet10t"
    other = dict(ident, epochs=3)
    other.pop("seed")
    assert train.identity_differences(ident, ident) == []
    assert train.identity_differences(ident, other) == [
        "epochs (checkpoint 1, now 3)",
        "seed (checkpoint 0, now '<not set>')",
    ]


def test_a_suite_step_continues_its_last_checkpoint(tmp_path, steps_taken, capsys):
    (tmp_path / "suite.yaml").write_text(
        "name: tiny\n"
        "datasets:\n"
        "  d: {kind: imagefolder, path: d, generate: {classes: 3, train_per_class: 8, val_per_class: 4, image_size: 16}}\n"
        "steps:\n"
        "  - {id: s, kind: pretrain, with: {method: moco, student: test_resnet, data: d, epochs: 2, batch_size: 4,\n"
        "                                   image_size: 16, queue_size: 16, key_momentum: 0.9, save_every_steps: 1}}\n"
    )
    argv = ["run", "--suite", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "out"), "--quiet"]
    steps_taken.interrupt_at = 3
    assert main(argv) == 130
    assert capsys.readouterr().err.endswith("interrupted; run the same command again to resume\n")
    assert safe_load(tmp_path / "out" / "checkpoints" / "s" / "last.pt")["step"] == 3
    steps_taken.clear()
    assert main(argv) == 0, capsys.readouterr().err
    assert steps_taken == list(range(3, 12))


def test_a_resumed_run_removes_the_temp_files_a_killed_save_left(
    tiny_imagefolder, tmp_path, steps_taken, capsys
):
    out = tmp_path / "run"
    interrupted_run(tiny_imagefolder, out, steps_taken, capsys, 3)
    for name in (".last.pt.k2j4.tmp", ".final.pt.x9.tmp", ".log.csv.a1.tmp"):  # as atomic_write names them
        (out / name).write_bytes(b"half a file")
    (out / "notes.tmp").write_text("the user's")  # not ours: kept
    assert main(pretrain_args(tiny_imagefolder, out)) == 0
    assert sorted(p.name for p in out.iterdir() if p.name != "tb") == [
        "final.pt",
        "last.pt",
        "log.csv",
        "notes.tmp",
    ]


@pytest.mark.parametrize("name", ["final.pt", "last.pt"])
def test_a_teacher_inside_the_output_folder_is_refused_before_anything_is_touched(
    name, tiny_imagefolder, tmp_path, capsys
):
    """It once ran: ``--restart`` deleted the teacher (OUT/final.pt), the new final.pt replaced it,
    and every later run of the same command was 'a different run' (another teacher sha256)."""
    out = tmp_path / "run"
    assert main(pretrain_args(tiny_imagefolder, out, "--epochs", "1")) == 0
    teacher = out / name
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    argv = pretrain_args(tiny_imagefolder, f"{out}/", "--method", "disco", "--teacher-ckpt", str(teacher))
    assert main([*argv, "--restart"]) == 2
    assert capsys.readouterr().err == (
        f"error: --teacher-ckpt {teacher} is inside --out {out}/, where this run writes its own {name}; "
        "expected a teacher outside the output folder (copy it, or choose another --out)\n"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def _final_copied_to_last(out: Path) -> None:
    import shutil

    shutil.copy(out / "final.pt", out / "last.pt")


def _saved_list(out: Path) -> None:
    import torch

    torch.save([1, 2], out / "last.pt")


@pytest.mark.parametrize(
    "spoil, says",
    [
        (
            _final_copied_to_last,
            "holds no training state (method_state, optimizer, scaler, rng, running missing",
        ),
        (_saved_list, "is not a pre-training checkpoint of disco-bench"),
        (lambda out: (out / "last.pt").write_text("garbage"), "is not a torch checkpoint"),
    ],
    ids=["final.pt copied to last.pt", "a list", "a text file"],
)
def test_a_last_pt_that_is_no_resume_checkpoint_is_one_line_saying_how_to_get_past_it(
    spoil, says, tiny_imagefolder, tmp_path, capsys
):
    """A final.pt copied to last.pt once ended in KeyError: 'method_state', a list in AttributeError;
    an unreadable one did not say that --restart gets past it."""
    out = tmp_path / "run"
    argv = pretrain_args(tiny_imagefolder, out, "--epochs", "1")
    assert main(argv) == 0
    spoil(out)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: resume checkpoint {out / 'last.pt'} {says}") and err.count("\n") == 1
    assert err.endswith("; pass --restart to discard it and start over (in a suite: delete it)\n")
    assert main([*argv, "--restart"]) == 0 and safe_load(out / "final.pt")["done"]


def test_the_same_command_after_the_run_finished_leaves_final_pt_byte_for_byte(
    tiny_imagefolder, tmp_path, steps_taken, monkeypatch
):
    """It once wrote final.pt again, with the threads of the new process in its protocol: another
    sha256, so a student distilling it could no longer resume ('a different run: teacher_ckpt')."""
    out = tmp_path / "run"
    argv = pretrain_args(tiny_imagefolder, out, "--epochs", "1")
    assert main(argv) == 0
    before = (out / "final.pt").read_bytes()
    steps_taken.clear()
    monkeypatch.setattr(train, "process_environment", lambda *a: {"threads": 99})  # another process
    assert main(argv) == 0
    assert steps_taken == [] and (out / "final.pt").read_bytes() == before


@pytest.mark.parametrize("change", ["class deleted", "image added"])
def test_a_resume_on_changed_data_is_refused_naming_it(
    tiny_imagefolder, tmp_path, steps_taken, capsys, change
):
    import shutil

    data = Path(shutil.copytree(tiny_imagefolder, tmp_path / "data"))
    out = tmp_path / "run"
    interrupted_run(data, out, steps_taken, capsys, 3)
    before = (out / "last.pt").read_bytes()
    classes = sorted((data / "train").iterdir())
    if change == "class deleted":
        shutil.rmtree(classes[-1])
    else:
        shutil.copy(sorted(classes[0].iterdir())[0], classes[0] / "zz-new.png")
    assert main(pretrain_args(data, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {out / 'last.pt'} was trained on other data: the images under {data}/train"
    )
    assert err.count("\n") == 1 and "--restart" in err
    assert (out / "last.pt").read_bytes() == before and steps_taken == []
    assert main(pretrain_args(data, out, "--restart")) == 0
