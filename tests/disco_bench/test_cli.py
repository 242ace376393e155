"""Command-line surface: subcommands, help, and one-line errors with exit code 2."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import disco_bench.embedded as embedded
from disco_bench.cli import main
from tests.pretrain.helpers import save_student


def test_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "disco_bench", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("run", "pretrain", "eval", "report", "data", "list"):
        assert cmd in out


@pytest.mark.parametrize("cmd", ["run", "pretrain", "eval", "report", "data", "list"])
def test_each_subcommand_has_help(cmd):
    proc = subprocess.run(
        [sys.executable, "-m", "disco_bench", cmd, "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "usage" in proc.stdout


def test_typo_in_set_names_the_key(tmp_path, capsys, tiny_imagefolder):
    code = main(
        [
            "pretrain",
            "--method",
            "moco",
            "--student",
            "resnet10t",
            "--data",
            str(tiny_imagefolder),
            "--out",
            str(tmp_path),
            "--quiet",
            "--set",
            "queue_sise=8",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "queue_sise" in err and "queue_size" in err


def test_data_make_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert (
            main(
                [
                    "data",
                    "make",
                    "--out",
                    str(out),
                    "--set",
                    "classes=3",
                    "train_per_class=2",
                    "val_per_class=1",
                ]
            )
            == 0
        )
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.png")) and len(files_a) == 9
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


def test_a_typo_in_a_scoped_suite_key_reads_as_the_key(tmp_path, capsys):
    """It once read '--set pretrain.unknown key 'epoch''."""
    argv = ["run", "--suite", "smoke", "--out", str(tmp_path / "r"), "--dry-run", "--set", "pretrain.epoch=2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: --set pretrain.epoch: unknown key (did you mean 'epochs'?); valid keys: amp, "
    )
    assert err.count("\n") == 1 and not (tmp_path / "r").exists()


# --- data make never deletes what it did not write ----------------------------------------------------

SMALL = ["classes=2", "train_per_class=2", "val_per_class=1"]


def make(out: Path, *sets: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["data", "make", "--out", str(out), "--quiet", "--set", *SMALL, *sets])
    return code, err.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p != folder)


def test_data_make_replaces_only_a_set_it_wrote_and_never_files_added_to_it(tmp_path):
    out = tmp_path / "set"
    assert make(out)[0] == 0
    first = snapshot(out)
    assert make(out, "seed=1")[0] == 0  # another generated set: swapped in whole
    second = snapshot(out)
    assert second.keys() == first.keys() and second != first and siblings(out) == []
    (out / "train" / "my-labels.csv").write_text("x")  # a file the user put into the generated set
    code, err = make(out, "seed=2")
    assert code == 2 and err.startswith(
        f"error: {out} holds files disco-bench did not write (train/my-labels.csv); "
    )
    assert snapshot(out) == second | {"train/my-labels.csv": b"x"} and siblings(out) == []


def test_data_make_with_a_bad_value_or_a_failed_build_leaves_the_old_set(tmp_path, monkeypatch):
    out = tmp_path / "set"
    assert make(out)[0] == 0
    before = snapshot(out)
    assert make(out, "image_size=0") == (2, "error: --set image_size=0: expected an integer >= 1\n")
    assert snapshot(out) == before and siblings(out) == []
    calls, real_draw = [], embedded.draw

    def fails_on_the_third_image(*args):
        calls.append(1)
        if len(calls) == 3:  # the disk fills up part-way through the new set
            raise OSError(28, "No space left on device")
        return real_draw(*args)

    monkeypatch.setattr(embedded, "draw", fails_on_the_third_image)
    code, err = make(out, "seed=5")
    assert (code, err) == (
        2,
        f"error: cannot write {out}: No space left on device; the previous set is unchanged\n",
    )
    assert len(calls) == 3 and snapshot(out) == before and siblings(out) == []  # the partial set is gone


def test_data_make_into_the_current_folder_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """``--out .`` (or ``a/..``) has no parent to build beside: it once failed with 'Device or
    resource busy' after building, leaving a ``..XXXX.old`` folder in the user's folder."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for spelled in (".", "../here/.."):
        code, err = make(Path(spelled))
        assert code == 2 and err == (
            f"error: --out {spelled}: expected a folder other than the current one or one above it "
            "(the set is built beside it and swapped in); run the command from outside it\n"
        )
    assert list(here.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["here"]
    assert make(Path("../set"))[0] == 0  # a relative path to a sibling is fine
    assert snapshot(tmp_path / "set") and siblings(tmp_path / "set") == ["here"]


def test_data_make_removes_the_partial_set_of_a_killed_build_but_not_one_being_built(tmp_path):
    """A SIGKILLed ``data make`` leaves ``.NAME.XXXX.disco-bench-partial``; it once stayed there
    forever. A user's folder of a similar name (no builder's marker inside) is never swept."""
    import fcntl
    import os

    from disco_bench.embedded import PARTIAL_MARKER

    abandoned, live = tmp_path / ".set.dead1.disco-bench-partial", tmp_path / ".set.live1.disco-bench-partial"
    users = [tmp_path / ".set.backup.partial", tmp_path / ".set.mine.disco-bench-partial"]
    for folder in (abandoned, live, *users):
        (folder / "train" / "a").mkdir(parents=True)
        (folder / "train" / "a" / "00000.png").write_bytes(b"half")
    for folder in (abandoned, live):
        (folder / PARTIAL_MARKER).write_text("building")
    holder = os.open(live, os.O_RDONLY)  # a build in progress holds its folder
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        assert make(tmp_path / "set")[0] == 0
    finally:
        os.close(holder)
    assert siblings(tmp_path / "set") == sorted([live.name, *(u.name for u in users)])
    assert all((u / "train" / "a" / "00000.png").read_bytes() == b"half" for u in users)


def test_two_data_makes_of_one_folder_are_one_writer(tmp_path):
    from infra.outlock import output_lock

    out = tmp_path / "set"
    with output_lock(tmp_path, ["disco-bench", "data", "make"], name=".set.disco-bench.lock"):
        code, err = make(out, "seed=7")
    assert code == 2 and err.startswith(f"error: dataset folder {out} is in use by pid "), err
    assert not out.exists()
    assert make(out, "seed=7")[0] == 0 and siblings(out) == []  # the lock file goes with its holder


def test_a_generated_set_gets_the_modes_mkdir_and_open_give(tmp_path):
    """Built in a mkdtemp folder (0700) with mkstemp files (0600): a set no teammate could read."""
    from infra.checkpoint import UMASK

    assert make(tmp_path / "set")[0] == 0
    assert (tmp_path / "set").stat().st_mode & 0o777 == 0o777 & ~UMASK
    assert (tmp_path / "set" / "dataset.json").stat().st_mode & 0o777 == 0o666 & ~UMASK


def test_a_path_under_a_file_or_an_unwritable_place_as_out_is_one_line(tmp_path, monkeypatch):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert make(target / "sub") == (
        2,
        f"error: --out {target / 'sub'}: expected a folder, but {target} is an existing file\n",
    )

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(
        tempfile, "TemporaryFile", read_only
    )  # what a read-only mount answers (root ignores modes)
    code, err = make(tmp_path / "new" / "set")
    assert (code, err) == (
        2,
        f"error: --out {tmp_path / 'new' / 'set'}: cannot write in {tmp_path} (Read-only file "
        "system); expected a writable folder\n",
    )
    assert target.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


# --- nothing silently ignored -----------------------------------------------------------------------


def test_eval_of_an_unfinished_checkpoint_needs_allow_unfinished_and_its_records_say_so(
    tiny_imagefolder, tmp_path
):
    ckpt = torch.load(save_student(tmp_path / "final.pt"), weights_only=True)
    torch.save(ckpt | {"done": False, "step": 3, "epoch": 0}, tmp_path / "last.pt")
    argv = [
        "eval",
        "knn",
        "--ckpt",
        str(tmp_path / "last.pt"),
        "--data",
        str(tiny_imagefolder),
        "--image-size",
        "16",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--set",
        "knn_k=[3]",
    ]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 2
        assert not (tmp_path / "out" / "results.jsonl").exists()
        assert main([*argv, "--allow-unfinished"]) == 0
    assert "is from an unfinished run (saved at step 3, epoch 0)" in err.getvalue()
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert records and all(
        r["protocol"]["pretrain"]["unfinished"] == {"step": 3, "epoch": 0} for r in records
    )


def test_ctrl_c_in_a_command_that_does_not_resume_does_not_promise_it(tmp_path, capsys, monkeypatch):
    """eval and data make start over when run again; the Ctrl-C line once said 'to resume' for every command."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "make_embedded", interrupted)
    assert main(["data", "make", "--out", str(tmp_path / "set"), "--quiet"]) == 130
    assert capsys.readouterr().err == "interrupted; run the same command again to start it over\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["pretrain", "--epochs", "1", "--set", "epochs=2"],
            "--set epochs=2 repeats --epochs 1: expected each setting once (give it as --epochs)",
        ),
        (  # the output lock held --out while the run wrote to the --set folder
            ["pretrain", "--set", "out=<tmp>/elsewhere"],
            "--set out=<tmp>/elsewhere repeats --out <tmp>/out: expected each setting once (give it as --out)",
        ),
        (  # eval's folder comes from --out: a --set out was dropped
            ["eval", "--set", "out=<tmp>/elsewhere"],
            "--set out=<tmp>/elsewhere repeats --out <tmp>/out: expected each setting once (give it as --out)",
        ),
        (
            ["eval", "--image-size", "16", "--set", "image_size=32"],
            "--set image_size=32 repeats --image-size 16: expected each setting once (give it as --image-size)",
        ),
        (  # a suite step's folder is the suite's: it was dropped
            ["run", "--set", "pretrain.out=<tmp>/elsewhere"],
            "--set pretrain.out: a suite step writes under the suite's --out (checkpoints/STEP, eval/STEP); "
            "expected --out to move the whole suite",
        ),
    ],
    ids=[
        "pretrain --epochs + epochs",
        "pretrain --out + out",
        "eval --out + out",
        "eval --image-size",
        "run",
    ],
)
def test_a_setting_given_by_its_flag_and_by_set_is_an_error(
    argv, expected, tmp_path, capsys, tiny_imagefolder
):
    """One of the two once silently won (pretrain: the --set; eval and suites: the flag)."""
    command, rest = argv[0], [a.replace("<tmp>", str(tmp_path)) for a in argv[1:]]
    common = {
        "pretrain": ["--method", "moco", "--student", "resnet10t", "--data", str(tiny_imagefolder)],
        "eval": ["knn", "--ckpt", str(tmp_path / "final.pt"), "--data", str(tiny_imagefolder)],
        "run": ["--suite", "smoke"],
    }[command]
    assert main([command, *common, "--out", str(tmp_path / "out"), "--quiet", *rest]) == 2
    assert capsys.readouterr().err == f"error: {expected.replace('<tmp>', str(tmp_path))}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "sets", "check"),
    [
        ("cifar", ["classes=2", "train_per_class=5", "test_per_class=1"], "cifar"),
        ("detection", ["classes=2", "train_images=2", "val_images=1", "image_size=32"], "voc+coco"),
    ],
)
def test_data_make_writes_every_embedded_kind_in_its_official_layout(tmp_path, kind, sets, check):
    from downstream.cifar import check_cifar
    from downstream.detection.data import check_coco, check_voc

    out = tmp_path / kind
    assert main(["data", "make", "--kind", kind, "--out", str(out), "--quiet", "--set", *sets]) == 0
    if check == "cifar":
        check_cifar(out)
    else:  # the scenes are written in both layouts, read back by the detection readers
        check_voc(out)
        check_coco(out)


def test_data_make_names_a_field_of_another_kind(tmp_path, capsys):
    code = main(
        ["data", "make", "--kind", "detection", "--out", str(tmp_path / "d"), "--set", "train_per_class=2"]
    )
    assert code == 2 and "train_per_class" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_help_shows_each_options_default():
    out = subprocess.run(
        [sys.executable, "-m", "disco_bench", "eval", "--help"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    assert "default paper: SGD on augmented images" in flat and "100 epochs at 224 px: hours on a CPU" in flat
    assert "classifier; default 100" in flat and "(default: results)" in flat
    assert "every task: input size of the evaluated images (default 224)" in flat
    run_help = " ".join(
        subprocess.run(
            [sys.executable, "-m", "disco_bench", "run", "--help"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "more times (default: 0)" in run_help and "(default: local)" in run_help
    assert (
        "--resume"
        not in subprocess.run(
            [sys.executable, "-m", "disco_bench", "pretrain", "--help"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )  # resuming is what a rerun does
