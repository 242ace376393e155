"""Launchers: retries, the torchrun command, the parallel launcher's step processes, and the submitit
path on submitit's local executor. Every wait is on an event (a step's file appearing, a process
ending); fake_steps.SAFETY_S only ends a test that would otherwise hang."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
import yaml
from fake_steps import SAFETY_S, parallel_launcher, run_in_parallel, wait_until

from disco_bench.launchers import (
    StepRequest,
    make_launcher,
    step_process_context,
    torchrun_command,
    with_retries,
)
from disco_bench.results import read_records
from disco_bench.runner import run_suite
from disco_bench.step_request import StepFailed
from disco_bench.suite import load_suite
from infra.errors import InputError


def write_suite(path: Path, steps: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"name": "jobs", "steps": steps}))
    return path


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
        job_id = "123"

    params = launcher._parameters(True, [Dep()])
    assert params["tasks_per_node"] == 8 and params["gpus_per_node"] == 8
    assert params["slurm_additional_parameters"] == {
        "dependency": "afterok:123",
        "kill_on_invalid_dep": "yes",
    }
    alone = launcher._parameters(False, [])
    assert alone["tasks_per_node"] == 1 and alone["slurm_additional_parameters"] == {}


def test_the_local_launcher_hands_back_a_done_future_and_a_failed_dependency_fails_it(tmp_path, fake_kind):
    suite_file = write_suite(tmp_path / "suite.yaml", [{"id": "a", "kind": "fake", "with": {}}])
    launcher = make_launcher("local", tmp_path / "out", echo=lambda line: None)
    request = StepRequest(suite=str(suite_file), step="a", out=str(tmp_path / "out"))
    ran = launcher.submit(request, [])
    assert ran.done() and [r["step"] for r in ran.result()] == ["a"]
    failed: Future = Future()
    failed.set_exception(RuntimeError("it broke"))
    unstarted = launcher.submit(request, [ran, failed])
    with pytest.raises(StepFailed, match="dependency failed: RuntimeError: it broke"):
        unstarted.result()
    assert (tmp_path / "out" / "order.txt").read_text().split() == ["a"]  # the second never started


class FakeJob:
    """What JobFuture uses of a submitit job; it ends when ``end()`` or ``cancel()`` is called."""

    job_id = 42

    def __init__(self):
        self.ended, self.cancelled, self.records = threading.Event(), False, None

    def end(self, records: list[dict]) -> None:
        self.records = records
        self.ended.set()

    def done(self) -> bool:
        return self.ended.is_set()

    def cancel(self, check: bool) -> None:
        self.cancelled = True
        self.ended.set()

    def results(self) -> list:
        if self.records is None:
            raise RuntimeError("Job 42 failed\nTraceback ...\nUncompletedJobError: cancelled")
        return [self.records]


def test_a_job_future_ends_with_its_job_and_cancelling_it_cancels_the_job():
    from disco_bench.launchers import JobFuture

    job = FakeJob()
    future = JobFuture(job)
    assert future.job_id == "42" and not future.done()  # the id dependants' afterok names
    job.end([{"step": "a"}])
    assert future.result(timeout=SAFETY_S) == [{"step": "a"}]

    job = FakeJob()
    future = JobFuture(job)
    future.cancel()  # what the runner does when a step the job needs failed
    assert job.cancelled
    with pytest.raises(StepFailed, match="job 42 failed: UncompletedJobError: cancelled"):
        future.result(timeout=SAFETY_S)


@pytest.mark.slow
def test_submitit_local_executor_runs_each_step_as_a_job(tmp_path, fake_kind):
    import submitit  # noqa: F401  (installed by .ci/setup through the slurm extra; never skipped)

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
    )
    text = "\n".join(lines)
    assert code == 1, text
    assert {r["step"] for r in read_records(out / "results.jsonl")} == {"a", "b"}
    assert sum("submitted job" in line for line in lines) == 3  # e never submitted: d had failed
    assert "d: FAILED: StepFailed: job" in text and "d failed on purpose" in text
    assert "e: skipped (needs d, which did not finish)" in text
    assert (out / "order.txt").read_text().split().count("b") == 2


@pytest.mark.slow
def test_parallel_local_launcher_overlaps_steps_records_them_as_they_end_and_respects_dependencies(
    tmp_path, fake_kind
):
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
def test_a_step_process_has_the_runners_environment_of_when_the_step_started(
    tmp_path, monkeypatch, fake_kind
):
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

from fake_steps import run_in_parallel

if __name__ == "__main__":
    run_in_parallel(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def ends_within(pid: int, timeout_s: float) -> bool:
    """Whether process ``pid`` (not a child of this one) ends within ``timeout_s``: its pidfd
    becomes readable the moment it does."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout_s)[0])
    finally:
        os.close(fd)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="waits for a process that is not its child (Linux)")
def test_a_runners_step_has_its_thread_count_in_every_pool_and_dies_with_the_runner(tmp_path, fake_kind):
    (tmp_path / "runner.py").write_text(RUNNER)
    suite_file = write_suite(
        tmp_path / "suite.yaml", [{"id": "a", "kind": "fake", "with": {"wait_for_record": "never"}}]
    )
    out = tmp_path / "out"
    runner = subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py"), str(suite_file), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # the fork server loads OpenMP and BLAS with 3 threads; the step asks for 1
        env={**os.environ, "OMP_NUM_THREADS": "3"},
    )
    try:
        # the step runs (and holds until its process is ended)
        wait_until(lambda: (out / "pid-a").exists() or runner.poll() is not None, "step a running")
        assert runner.poll() is None
        pools = (out / "pools-a").read_text().split()
        assert (out / "started-a").read_text() == "1" and pools and all(p.endswith("=1") for p in pools), (
            pools
        )
        step = int((out / "pid-a").read_text())
    finally:
        runner.kill()
        runner.wait()
    assert ends_within(step, SAFETY_S), "the step's process outlived the runner"


def test_jobs_belong_to_the_local_launcher(tmp_path):
    with pytest.raises(InputError, match="--jobs 2 needs --launcher local"):
        make_launcher("torchrun", tmp_path, nproc=2, jobs=2)
    with pytest.raises(InputError, match="--jobs 0"):
        make_launcher("local", tmp_path, jobs=0)


@pytest.mark.slow
def test_stopping_the_parallel_launcher_terminates_the_running_steps(tmp_path, fake_kind):
    # a holds until its process is ended: only stop() can end it
    suite_file = write_suite(
        tmp_path / "suite.yaml", [{"id": "a", "kind": "fake", "with": {"wait_for_record": "never"}}]
    )
    out = tmp_path / "out"
    lines: list[str] = []
    launcher = parallel_launcher(out, lines.append)
    codes = []
    runner = threading.Thread(
        target=lambda: codes.append(run_in_parallel(suite_file, out, lines.append, launcher))
    )
    runner.start()
    wait_until(lambda: (out / "pid-a").exists() or not runner.is_alive(), "step a running")
    launcher.stop()  # what the runner does when Ctrl-C reaches it
    runner.join(timeout=SAFETY_S)
    text = "\n".join(lines)
    assert not runner.is_alive(), text
    assert codes == [1] and "a: FAILED: StepFailed: its process ended with exit code -15" in text, text


def test_parallel_jobs_share_the_cores_this_process_may_use_not_the_hosts(monkeypatch):
    from disco_bench.launchers import ParallelLocalLauncher

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the host's count in a CPU-limited container
    assert ParallelLocalLauncher(2).threads == 2
    assert ParallelLocalLauncher(8).threads == 1
