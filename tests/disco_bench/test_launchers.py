"""Launchers: retries, the torchrun command, and the submitit path on submitit's local executor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fake_steps import FAKE_KINDS, parallel_launcher, run_in_parallel

from disco_bench.launchers import (
    StepRequest,
    make_launcher,
    step_process_context,
    torchrun_command,
    with_retries,
)
from disco_bench.results import read_records
from disco_bench.runner import run_suite
from disco_bench.suite import load_suite
from pretrain.errors import InputError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def test_with_retries_counts_attempts_and_never_retries_bad_input():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("transient")
        return ["ok"]

    lines: list[str] = []
    assert with_retries(flaky, 2, "s", lines.append) == ["ok"] and len(calls) == 3 and len(lines) == 2

    def bad():
        calls.append(1)
        raise InputError("no such file")

    calls.clear()
    with pytest.raises(InputError):
        with_retries(bad, 5, "s", lines.append)
    assert len(calls) == 1


def test_torchrun_command_runs_one_step_per_process_group(tmp_path):
    req = StepRequest(
        suite="suites/full.yaml",
        step="moco-resnet18",
        out=str(tmp_path),
        data_root="/data",
        overrides={"pretrain.epochs": 2, "pretrain.amp": "bf16"},
    )
    cmd = torchrun_command(req, 4, tmp_path / "r.json")
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--tee", "3", "--nproc_per_node=4"]
    text = " ".join(cmd)
    assert "-m disco_bench step --suite suites/full.yaml --step moco-resnet18" in text
    assert f"--records {tmp_path / 'r.json'}" in text and "--data-root /data" in text
    assert cmd[-2:] == ["pretrain.epochs=2", 'pretrain.amp="bf16"']


def test_local_launcher_refuses_several_processes(tmp_path):
    with pytest.raises(InputError, match="--nproc 2"):
        make_launcher("local", tmp_path, nproc=2)


def test_slurm_parameters_carry_dependencies(tmp_path):
    launcher = make_launcher("slurm", tmp_path, nproc=8, options={"cluster": "local"})
    launcher.is_slurm = True  # what the parameters would be on a SLURM cluster

    class Dep:
        id = "123"

    params = launcher._parameters(True, [Dep()])
    assert params["tasks_per_node"] == 8 and params["gpus_per_node"] == 8
    assert params["slurm_additional_parameters"] == {
        "dependency": "afterok:123",
        "kill_on_invalid_dep": "yes",
    }
    alone = launcher._parameters(False, [])
    assert alone["tasks_per_node"] == 1 and alone["slurm_additional_parameters"] == {}


@pytest.mark.slow
def test_submitit_local_executor_runs_each_step_as_a_job(tmp_path, monkeypatch):
    import submitit  # noqa: F401  (installed by .ci/setup through the slurm extra; never skipped)

    # the job processes unpickle the fake step functions by module name
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(HERE), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    )
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        yaml.safe_dump(
            {
                "name": "jobs",
                "steps": [
                    {"id": "a", "kind": "fake", "with": {}},
                    {
                        "id": "b",
                        "kind": "fake",
                        "with": {"ckpt": "@a", "fail_times": 1},
                    },  # fails once, retried inside its job
                    {"id": "d", "kind": "fake", "with": {"fail_times": 99}},
                    {"id": "e", "kind": "fake", "with": {"ckpt": "@d"}},
                ],
            }
        )
    )
    out = tmp_path / "out"
    lines: list[str] = []
    launcher = make_launcher(
        "slurm", out, retries=1, options={"cluster": "local", "timeout_min": 5}, echo=lines.append
    )
    code = run_suite(
        load_suite(str(suite_file)),
        out,
        None,
        {},
        progress=False,
        echo=lines.append,
        retries=1,
        launcher=launcher,
        kinds=FAKE_KINDS,
    )
    text = "\n".join(lines)
    assert code == 1, text
    assert {r["step"] for r in read_records(out / "results.jsonl")} == {"a", "b"}
    assert sum("submitted job" in line for line in lines) == 3  # e never submitted: d had failed
    assert "d: FAILED: StepFailed: job" in text and "d failed on purpose" in text
    assert "e: skipped (needs d, which did not finish)" in text
    assert (out / "order.txt").read_text().split().count("b") == 2


@pytest.mark.slow
def test_parallel_local_launcher_overlaps_steps_records_them_as_they_end_and_respects_dependencies(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        yaml.safe_dump(
            {
                "name": "jobs",
                "steps": [
                    {
                        "id": "a",
                        "kind": "fake",
                        "with": {"wait_for_record": "c"},
                    },  # ends only once c ran and was recorded
                    {"id": "b", "kind": "fake", "with": {"ckpt": "@a"}},
                    {"id": "c", "kind": "fake", "with": {}},
                    {"id": "d", "kind": "fake", "with": {"fail_times": 99}},
                    {"id": "e", "kind": "fake", "with": {"ckpt": "@d"}},
                ],
            }
        )
    )
    out = tmp_path / "out"
    lines: list[str] = []
    code = run_in_parallel(suite_file, out, lines.append)
    text = "\n".join(lines)
    assert code == 1, text
    assert {r["step"] for r in read_records(out / "results.jsonl")} == {"a", "b", "c"}
    order = (out / "order.txt").read_text().split()
    assert sorted(order) == ["a", "b", "c", "d"] and order.index("b") > order.index("a")  # e never started
    assert (
        "e: skipped (needs d, which did not finish)" in text
        and "d: FAILED: RuntimeError: d failed on purpose" in text
    )
    assert all((out / f"started-{s}").read_text() == "1" for s in "abcd")  # one torch thread per job
    # and one core's share for its default DataLoader workers (pretrain.data.default_workers)
    assert all((out / f"cores-{s}").read_text() == "1" for s in "abcd")
    assert "d failed on purpose" in (out / "logs" / "d.log").read_text()  # each step's output in its own log
    assert sum("started (job" in line for line in lines) == 4


@pytest.mark.slow
def test_a_step_process_has_the_runners_environment_of_when_the_step_started(tmp_path, monkeypatch):
    # the fork server the step processes come from is up before the variable is set
    starter = step_process_context().Process(target=int)
    starter.start()
    starter.join()
    monkeypatch.setenv("DISCO_BENCH_FAKE_MARK", "set after the fork server started")
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({"name": "env", "steps": [{"id": "a", "kind": "fake", "with": {}}]}))
    out = tmp_path / "out"
    assert run_in_parallel(suite_file, out) == 0
    assert (out / "env-a").read_text() == "set after the fork server started"
    assert (out / "started-a").read_text() == "1"


RUNNER = """\
import sys
from pathlib import Path

sys.path[:0] = [{here!r}, {root!r}]
from fake_steps import run_in_parallel

if __name__ == "__main__":
    run_in_parallel(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_runners_step_has_its_thread_count_in_every_pool_and_dies_with_the_runner(tmp_path):
    (tmp_path / "runner.py").write_text(RUNNER.format(here=str(HERE), root=str(ROOT)))
    (tmp_path / "suite.yaml").write_text(
        yaml.safe_dump(
            {"name": "orphans", "steps": [{"id": "a", "kind": "fake", "with": {"wait_for_record": "never"}}]}
        )
    )
    out = tmp_path / "out"
    runner = subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "suite.yaml"), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # the fork server loads OpenMP and BLAS with 3 threads; the step asks for 1
        env={**os.environ, "OMP_NUM_THREADS": "3"},
    )
    deadline = time.monotonic() + 60
    while not (out / "pid-a").exists():  # the step runs (and would wait 60 s for a record)
        assert runner.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    pools = (out / "pools-a").read_text().split()
    assert (out / "started-a").read_text() == "1" and pools and all(p.endswith("=1") for p in pools), pools
    step = int((out / "pid-a").read_text())
    runner.kill()
    runner.wait()
    deadline = time.monotonic() + 10
    while running(step) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(step), "the step's process outlived the runner by 10 s"


def test_jobs_belong_to_the_local_launcher(tmp_path):
    with pytest.raises(InputError, match="--jobs 2 needs --launcher local"):
        make_launcher("torchrun", tmp_path, nproc=2, jobs=2)
    with pytest.raises(InputError, match="--jobs 0"):
        make_launcher("local", tmp_path, jobs=0)


@pytest.mark.slow
def test_stopping_the_parallel_launcher_terminates_the_running_steps(tmp_path):
    import threading
    import time

    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        yaml.safe_dump(
            {
                "name": "jobs",
                "steps": [
                    {"id": "a", "kind": "fake", "with": {"wait_for_record": "never"}},  # would wait 60 s
                ],
            }
        )
    )
    out = tmp_path / "out"
    lines: list[str] = []
    launcher = parallel_launcher(out, lines.append)
    codes = []
    runner = threading.Thread(
        target=lambda: codes.append(run_in_parallel(suite_file, out, lines.append, launcher))
    )
    runner.start()
    deadline = time.monotonic() + 60
    while not (out / "started-a").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped_at = time.monotonic()
    launcher.stop()  # what the runner does when Ctrl-C reaches it
    runner.join(timeout=30)
    assert not runner.is_alive() and time.monotonic() - stopped_at < 20
    text = "\n".join(lines)
    assert codes == [1] and "a: FAILED: StepFailed: its process ended with exit code -15" in text, text


def test_parallel_jobs_share_the_cores_this_process_may_use_not_the_hosts(monkeypatch):
    from disco_bench.launchers import ParallelLocalLauncher

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the host's count in a CPU-limited container
    assert ParallelLocalLauncher(2).threads == 2
    assert ParallelLocalLauncher(8).threads == 1
