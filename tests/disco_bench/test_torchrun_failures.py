"""A torchrun step that fails is reported on one line naming the rank that failed first, how its
process ended and its own last error line, read from real torchrun output (2 gloo processes)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from disco_bench.launchers import torchrun_failure, torchrun_prefix

WORKER = """\
import os, signal, sys
import torch.distributed as dist
mode = sys.argv[1]
dist.init_process_group("gloo")
if os.environ["RANK"] == "1":
    if mode == "error-line":
        print("error: data/train/cat/3.jpg: not an image", file=sys.stderr)
        sys.exit(2)
    if mode == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "exception":
        raise ValueError("shapes (4, 128) and (4, 256) differ")
dist.barrier()
"""


def failed_torchrun(tmp_path: Path, mode: str, **env) -> tuple[str, int]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.run(
        [*torchrun_prefix(2), str(script), mode],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )
    assert proc.returncode != 0
    return proc.stdout + proc.stderr, proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "env", "expected"),
    [
        ("error-line", {}, "rank 1 failed (exit code 2): error: data/train/cat/3.jpg: not an image"),
        (
            "killed",
            {},
            "rank 1 failed (killed by SIGKILL): no error message: killed from outside (out of memory?)",
        ),
        ("exception", {}, "rank 1 failed (exit code 1): ValueError: shapes (4, 128) and (4, 256) differ"),
    ],
)
def test_the_failing_rank_and_its_error_on_one_line(tmp_path, mode, env, expected):
    log, code = failed_torchrun(tmp_path, mode, **env)
    assert torchrun_failure(log, code) == expected


@pytest.mark.slow
def test_gloo_that_cannot_start_names_the_rank_and_the_cause(tmp_path):
    log, code = failed_torchrun(tmp_path, "none", GLOO_SOCKET_IFNAME="no-such-nic0")
    line = torchrun_failure(log, code)
    assert "\n" not in line
    assert line.startswith(("rank 0 failed (exit code 1): ", "rank 1 failed (exit code 1): ")), line
    assert "no-such-nic0" in line


@pytest.mark.slow
def test_a_port_already_taken_stops_torchrun_before_any_rank(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        cmd = [*torchrun_prefix(2), str(tmp_path / "worker.py"), "none"]
        # the runner's own torchrun picks a free port (--standalone); a user's may name a taken one
        cmd.remove("--standalone")
        cmd[3:3] = ["--master_addr", "127.0.0.1", "--master_port", str(taken.getsockname()[1])]
        proc = subprocess.run(
            cmd,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    line = torchrun_failure(proc.stdout + proc.stderr, proc.returncode)
    assert (
        line.startswith(f"torchrun exited with {proc.returncode} before any rank finished: ")
        and proc.returncode != 0
    )
    assert "EADDRINUSE" in line and "\n" not in line
