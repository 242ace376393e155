"""One writer per output folder (infra.outlock): a second pretrain/eval/run on a folder in use
exits 2 with one line naming the process that holds it; a lock left by a killed process is taken
over; a command refused before writing anything leaves nothing behind."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket

import pytest

from disco_bench.cli import main
from infra.errors import InputError
from infra.outlock import LOCK_NAME, output_lock
from tests.crash_helpers import leftovers, sigkill, start
from tests.paused import start_paused, wait_paused
from tests.pretrain.helpers import pretrain_args


def long_run_args(data, out, *extra: str) -> list[str]:
    return pretrain_args(data, out, *extra, epochs=200, save_every=None)


def holder(out) -> dict:
    try:
        return json.loads((out / LOCK_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return {}


FIRST_RUNS_FILES = {LOCK_NAME, "log.csv", "last.pt", "tb"}


def written_by_others(names) -> list[str]:
    """Names in the folder that the first run did not write: its files, and the temp sibling of one
    of them that an atomic write leaves while it is under way (the listing may catch one)."""
    return [
        name
        for name in names
        if name not in FIRST_RUNS_FILES
        and not any(re.fullmatch(rf"\.{re.escape(own)}\.\w+\.tmp", name) for own in FIRST_RUNS_FILES)
    ]


def second_commands(data, out) -> dict[str, list[str]]:
    return {
        "pretrain": long_run_args(data, out, "max_steps=1"),
        "eval": [
            "eval",
            "knn",
            "--ckpt",
            str(out / "final.pt"),
            "--data",
            str(data),
            "--out",
            str(out),
            "--quiet",
        ],
        "run": ["run", "--suite", "smoke", "--out", str(out), "--quiet"],
    }


@pytest.mark.slow
def test_a_folder_in_use_is_refused_and_a_dead_holders_lock_taken_over(tiny_imagefolder, tmp_path, capsys):
    out = tmp_path / "run"
    # stopped after its first training step, holding the folder for as long as this test needs
    first = start_paused(long_run_args(tiny_imagefolder, out), "pretrain.train.step_once")
    assert wait_paused(first) == 1
    assert holder(out).get("pid") == first.pid
    before = sorted(p.name for p in out.iterdir())

    # a second real process with the very same command
    second = start(long_run_args(tiny_imagefolder, out))
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2
    assert err.startswith(
        f"error: output folder {out} is in use by pid {first.pid} on host {socket.gethostname()} "
        f"(disco-bench pretrain --method moco "
    )
    assert err.count("\n") == 1 and "one writer per folder" in err
    # the other commands that write to a folder, from this process
    for name, argv in second_commands(tiny_imagefolder, out).items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert (
            err.startswith(f"error: output folder {out} is in use by pid {first.pid}")
            and err.count("\n") == 1
        ), name
    assert first.poll() is None  # the first run never noticed
    assert not written_by_others(before)
    assert not written_by_others(p.name for p in out.iterdir())  # the refused ones wrote nothing

    sigkill(first)
    assert holder(out)["pid"] == first.pid  # the killed run's lock file is still there...
    # ...and taken over: a new run (another config, so --restart) trains and releases the folder
    assert main([*long_run_args(tiny_imagefolder, out, "max_steps=2"), "--restart"]) == 0
    assert capsys.readouterr().err == ""
    assert leftovers(out) == []


def test_the_lock_is_released_and_a_folder_it_created_removed(tmp_path):
    out = tmp_path / "new" / "out"
    with output_lock(out) as lock:
        info = json.loads(lock.read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with (
            pytest.raises(InputError, match=f"output folder {out} is in use by pid {os.getpid()}"),
            output_lock(out),
        ):
            pass  # a second holder, even in the same process
    assert not (tmp_path / "new").exists()  # nothing was written there: no trace left

    (tmp_path / "kept").mkdir()
    with output_lock(tmp_path / "kept"):
        (tmp_path / "kept" / "result.txt").write_text("x")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["result.txt"]


def test_a_refused_command_leaves_no_output_folder(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(long_run_args(tmp_path / "no-data", out)) == 2  # bad input, found before any step
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{tmp_path / 'no-data'}" in err and err.count("\n") == 1
    assert not out.exists()


def test_an_unusable_output_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    expected = f"cannot use {tmp_path / 'file' / 'out'} as the output folder: Not a directory"
    with pytest.raises(InputError, match=expected), output_lock(tmp_path / "file" / "out"):
        pass


RANK = """
import json, sys
from infra.outlock import output_lock
# holds each folder named on the command line in turn until a line arrives on stdin
for folder in sys.argv[1:]:
    with output_lock(folder) as path:
        print(json.dumps({"folder": folder, "holder": path.read_text() if path.exists() else None}), flush=True)
        sys.stdin.readline()
"""


def torchrun_rank(rank: int, *folders):
    """A process with the environment torchrun gives rank ``rank`` of a 2-process job."""
    import subprocess

    from tests.crash_helpers import ENV, python

    env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "test"}
    return python(["-c", RANK, *map(str, folders)], env=env, stdin=subprocess.PIPE)


def test_only_rank_0_of_a_torchrun_job_holds_the_folder(tmp_path):
    held, free = tmp_path / "held", tmp_path / "free"
    rank0 = torchrun_rank(0, held)
    rank1 = None
    try:
        inside = json.loads(rank0.stdout.readline() or "{}")  # rank 0 holds the folder now
        assert inside and json.loads(inside["holder"])["pid"] == rank0.pid, rank0.stderr.read()
        lock = (held / LOCK_NAME).read_text()
        # another rank-0 process (this one) is refused
        with pytest.raises(InputError, match=f"in use by pid {rank0.pid}"), output_lock(held):
            pass
        # rank 1 of the same job goes on in the folder rank 0 holds, taking nothing of its own, and
        # takes nothing where nobody holds the folder either
        rank1 = torchrun_rank(1, held, free)
        seen = json.loads(rank1.stdout.readline() or "{}")
        assert seen == {"folder": str(held), "holder": lock}, rank1.stderr.read()
        rank1.stdin.write("\n")
        rank1.stdin.flush()
        seen = json.loads(rank1.stdout.readline() or "{}")
        assert seen == {"folder": str(free), "holder": None} and not free.exists(), rank1.stderr.read()
        rank1.stdin.write("\n")
        rank1.stdin.flush()
        assert rank1.wait(timeout=60) == 0, rank1.stderr.read()
        assert (held / LOCK_NAME).read_text() == lock  # rank 0's lock untouched, and still held:
        with pytest.raises(InputError, match=f"in use by pid {rank0.pid}"), output_lock(held):
            pass
        rank0.stdin.write("\n")
        rank0.stdin.flush()
        assert rank0.wait(timeout=60) == 0, rank0.stderr.read()
        assert not held.exists()  # released, and the folder it created (empty) removed
    finally:
        for proc in (rank0, rank1):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_file_system_without_locks_runs_unprotected_with_a_warning(tmp_path, monkeypatch, capsys):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with output_lock(tmp_path / "out"):
        (tmp_path / "out" / "result.txt").write_text("x")
    assert capsys.readouterr().err == (
        f"warning: cannot lock {tmp_path / 'out' / LOCK_NAME} ({os.strerror(errno.ENOLCK)}); a second command on "
        "this folder would not be stopped\n"
    )
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["result.txt"]


HOLD = """
import subprocess, sys, time
from infra.outlock import output_lock
with output_lock(sys.argv[1]):
    # a process this holder starts (a suite's step process) goes on under its lock
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from infra.outlock import held_by_parent, lock_path; "
         "print(held_by_parent(lock_path(sys.argv[1])))", sys.argv[1]],
        capture_output=True, text=True,
    )
    print("held", child.stdout.strip(), flush=True)
    time.sleep(120)
"""


def test_step_holds_its_folder_and_a_holders_own_step_process_goes_on(tmp_path, capsys):
    import subprocess
    import sys

    from tests.crash_helpers import ENV, ROOT

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().split() == ["held", "True"]
        # a step of a suite on a folder its run holds, started by someone else: refused
        assert main(["step", "--suite", "smoke", "--step", "teacher", "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert (
            err.startswith(f"error: output folder {out} is in use by pid {proc.pid}") and err.count("\n") == 1
        )
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        proc.kill()
        proc.wait()
