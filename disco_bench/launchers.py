"""Where a suite's steps run: ``local`` (this process; with ``--jobs N``, up to N steps at once,
each in its own process), ``torchrun`` (N processes per step on this machine) or ``slurm`` (one
submitit job per step, dependencies as job dependencies).

Every launcher has one entry, ``submit(request, after) -> concurrent.futures.Future``: the
future's result is the step's records, its exception why the step failed. ``after`` are the
futures of the steps it needs; a step whose dependency failed does not start (its future fails
too, and the runner reports it as skipped). The future is done when ``submit`` returns for
``local`` and ``torchrun``, set by a worker thread for ``--jobs N``, and by a thread watching the
job for ``slurm`` (``JobFuture``, with the SLURM job id dependants need).

The runner is the only writer of ``results.jsonl``: every launcher hands a step's records back to
it (a returned list, a JSON file written by rank 0, or a submitit job's result), so concurrent
jobs never race on the records file.

Retries (``--retry N``) happen where the step runs: in this process for ``local``, around the
torchrun command for ``torchrun``, inside the job for ``slurm`` (so a retry needs no new
submission and the dependants' job dependencies stay valid). An InputError (bad config, missing
file) is never retried: it would fail the same way again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import multiprocessing
import multiprocessing.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from disco_bench.step_request import Plan, StepFailed, StepRequest, failure_text, plan_request, with_retries
from infra.environment import available_cores
from infra.errors import InputError

LAUNCHERS = ("local", "torchrun", "slurm")
# Eval tasks whose paper protocol shards its work over torchrun ranks (downstream/probe.py);
# the others would only repeat the same work in every process.
DISTRIBUTED_TASKS = {"linear", "semisup", "cifar"}
# Eval tasks that train with DDP over torchrun ranks whatever their probe protocol
# (downstream/detection/distributed.py: the global detection batch split over the processes).
DDP_TASKS = {"detection"}


def say(line: str) -> None:
    """Print one line in a single write, so lines from the runner and from step threads never mix."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def runs_distributed(step, cfg) -> bool:
    """Whether a step uses every process torchrun or a multi-task job gives it."""
    if step.kind == "pretrain":
        return True
    if step.kind == "eval" and step.task in DDP_TASKS:
        return True
    return step.kind == "eval" and step.task in DISTRIBUTED_TASKS and getattr(cfg, "protocol", "") == "paper"


def wait_for_dependencies(after: list[Future]) -> None:
    """Return once every dependency has ended; a failed one fails this step too, unstarted."""
    for dep in after:
        try:
            dep.result()
        except Exception as exc:
            raise StepFailed(f"dependency failed: {failure_text(exc)}") from exc


def ended(run: Callable[[], list[dict]]) -> Future:
    """A future already done: ``run()``'s records, or what it raised (one failed step must not
    stop the others, so the exception is handed over, not raised)."""
    future: Future = Future()
    try:
        future.set_result(run())
    except Exception as exc:
        future.set_exception(exc)
    return future


class LocalLauncher:
    """Each step in this process, one after another: its future is done when ``submit`` returns."""

    synchronous = True

    def __init__(self, retries: int = 0, echo: Callable[[str], None] = say):
        self.retries, self.echo = retries, echo
        # the suite planned once for the run, not once per step (a 300-step plan takes over a second)
        self._plans: dict[tuple, Plan] = {}

    def submit(self, request: StepRequest, after: list[Future]) -> Future:
        return ended(lambda: self._run(request, after))

    def _run(self, request: StepRequest, after: list[Future]) -> list[dict]:
        wait_for_dependencies(after)
        return self.run_here(request)

    def run_here(self, request: StepRequest) -> list[dict]:
        """The step in this process (its progress bars on this terminal), with the retries."""
        key = request.planning_inputs()
        if key not in self._plans:
            self._plans[key] = plan_request(request)
        return self._plans[key].run(dataclasses.replace(request, retries=self.retries), self.echo)


class ParallelLocalLauncher:
    """Up to ``jobs`` steps at once on this machine, each in a fresh process (``step_process_context``).

    A step starts once every step it needs has finished; among the ready ones the earliest in
    the suite goes first, so a long teacher and the independent baselines overlap. Each process
    gets ``threads`` torch threads (the machine's cores split between the jobs: small CPU steps
    scale poorly past one thread, so two one-thread jobs beat one two-thread job) and, when there
    are at least ``jobs`` GPUs, a GPU of its own. Its output goes to OUT/logs/ID.log; this process
    prints a line when a step starts and ends. Retries happen inside the step's process.
    """

    synchronous = False

    def __init__(
        self, jobs: int, retries: int = 0, echo: Callable[[str], None] = say, threads: int | None = None
    ):
        if jobs < 2:
            raise InputError(f"--jobs {jobs}: a parallel launcher needs at least 2 jobs")
        self.jobs, self.retries, self.echo = jobs, retries, echo
        self.threads = threads or max(1, available_cores() // jobs)  # the affinity mask, not the host's
        self._lock = threading.Condition()
        self._free_slots = list(range(jobs))
        self._waiting: list[int] = []  # heap of the ready steps' submission numbers
        self._submitted = 0
        self._procs: set = set()  # the step processes now running
        self._stopped = False
        self._gpus = _gpu_count()

    def submit(self, request: StepRequest, after: list[Future]) -> Future:
        order, self._submitted = self._submitted, self._submitted + 1
        future: Future = Future()
        # running from the start: the runner's cancel() of a step whose dependency failed is then a
        # no-op, and this step's thread ends it (it waits for its dependencies first)
        future.set_running_or_notify_cancel()
        request = dataclasses.replace(request, progress=False, retries=self.retries)  # bars would interleave
        thread = threading.Thread(
            target=self._run,
            args=(future, order, request, list(after)),
            daemon=True,
            name=f"step-{request.step}",
        )
        thread.start()
        return future

    def _take_slot(self, order: int) -> int:
        with self._lock:
            heapq.heappush(self._waiting, order)
            while not (self._free_slots and self._waiting[0] == order):
                self._lock.wait()
            heapq.heappop(self._waiting)
            self._lock.notify_all()
            return self._free_slots.pop(0)

    def _give_slot(self, slot: int) -> None:
        with self._lock:
            self._free_slots.append(slot)
            self._free_slots.sort()
            self._lock.notify_all()

    def _run(self, future: Future, order: int, request: StepRequest, after: list[Future]) -> None:
        try:
            wait_for_dependencies(after)
            slot = self._take_slot(order)
            try:
                future.set_result(self._run_in_process(request, slot))
            finally:
                self._give_slot(slot)
        except BaseException as exc:  # handed to the runner, which reports it on one line
            future.set_exception(exc)

    def _run_in_process(self, request: StepRequest, slot: int) -> list[dict]:
        log = Path(request.out) / "logs" / f"{request.step}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        gpu = slot if self._gpus >= self.jobs else None
        self.echo(
            f"{request.step}: started (job {slot + 1}/{self.jobs}, {self.threads} threads"
            f"{f', GPU {gpu}' if gpu is not None else ''}; log {log})"
        )
        start = time.monotonic()
        ctx = step_process_context()
        with self._lock:
            if self._stopped:
                raise StepFailed("the run was stopped before this step started")
            receive, send = ctx.Pipe(duplex=False)
            runner_alive, runner_alive_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_job_main,
                args=(request, send, str(log), self.threads, gpu, dict(os.environ), runner_alive),
                name=request.step,
            )
            proc.start()
            self._procs.add(proc)
        send.close()  # the child holds the only sending end: its death ends recv() with EOFError
        runner_alive.close()  # ...and the only reading end of the pipe whose EOF tells it this process died
        try:
            try:
                status, payload = receive.recv()
            except EOFError:
                status, payload = "died", None
            proc.join()  # this thread is the only one that reaps it (stop() only signals)
        finally:
            receive.close()
            runner_alive_end.close()
            with self._lock:
                self._procs.discard(proc)
                self._lock.notify_all()
        if status == "died":
            raise StepFailed(f"its process ended with exit code {proc.exitcode} and no result (log: {log})")
        if status == "error":
            raise payload
        self.echo(f"{request.step}: ended after {time.monotonic() - start:.0f} s")
        return payload

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the steps still running (the run was interrupted; they resume on the next run)
        and wait until their threads have reaped them."""
        with self._lock:
            self._stopped = True
            for proc in self._procs:
                proc.terminate()
            self._lock.wait_for(lambda: not self._procs, timeout=timeout_s)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no usable CUDA: CPU jobs
        return 0


# What every step process imports before its step: torch, torchvision, timm and the task registry
# take ~4 s to import, paid once by the fork server instead of once per step (a suite has hundreds).
def _step_preload() -> list[str]:
    from downstream.registry import TASKS  # its modules import on lookup: a step looks one up
    from pretrain.methods import METHODS

    return ["disco_bench.steps", "disco_bench.step_request", *TASKS.modules(), *METHODS.modules()]


STEP_PRELOAD = _step_preload()


def step_process_context() -> multiprocessing.context.BaseContext:
    """Where a step's process comes from: forked from a server process that has imported
    STEP_PRELOAD and done nothing else (no thread pool started, no CUDA, no state of this process:
    each step is as fresh as a new interpreter, only without the imports); a spawned interpreter
    where the platform has no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(STEP_PRELOAD)  # read when the server starts (the first step)
    return ctx


def _end_with_the_runner(runner_alive) -> None:
    """Terminate this step's process when the runner's end of ``runner_alive`` closes: the runner
    died (SIGKILL, out of memory) and nobody will take this step's records. A forked step's parent
    is the fork server, not the runner, so the kernel's parent-death signal cannot say this; and an
    orphan would go on writing the step's folder while a rerun writes it too."""

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            runner_alive.recv()  # nothing is ever sent: this returns only by EOF
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="runner-alive").start()


def _stop_cleanly_on_signal() -> None:
    """A step the runner terminates (Ctrl-C reached the run, or the runner died) releases what
    multiprocessing registered for it before it dies of the SIGTERM: killed outright, it left its
    semaphores to the resource tracker, which warned of "leaked semaphore objects" after the run's
    own last line. It still dies of the signal (exit code -15), as the runner reports."""

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        multiprocessing.util._run_finalizers(0)  # unlinks and unregisters semaphores, as a normal exit does
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, terminated)


def _job_main(
    request: StepRequest, send, log: str, threads: int, gpu: int | None, environ: dict, runner_alive
) -> None:
    """A step's process: its own log file, thread count and GPU; the records (or the exception)
    go back through ``send``. It ends with the runner (``_end_with_the_runner``).
    ``environ`` is the runner's environment when the step started (a forked child would otherwise
    have the fork server's, from when the first step started)."""
    _stop_cleanly_on_signal()
    _end_with_the_runner(runner_alive)
    os.environ.clear()
    os.environ.update(environ)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # its share of the cores is also what its DataLoader workers default to (pretrain.data.default_workers),
    # not the whole machine's once per job
    os.environ["DISCO_BENCH_STEP_CORES"] = str(threads)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    # The fork server loaded OpenMP and BLAS before this step's thread count was known, so the
    # variable above reaches none of them: torch's pool is set below, numpy's, scipy's and
    # scikit-learn's through threadpoolctl (the limit stays for the life of the process).
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        send.send(("ok", request()))
    except BaseException as exc:  # noqa: BLE001 -- every failure, Ctrl-C included, is reported to the runner
        traceback.print_exc()
        try:
            send.send(("error", exc))
        except Exception:  # an exception that does not pickle: its one-line text instead
            send.send(("error", StepFailed(failure_text(exc))))
    finally:
        send.close()


def step_command(request: StepRequest, records_file: Path) -> list[str]:
    """``python -m disco_bench step ...``: one step of a suite, its records written to a file."""
    cmd = [
        "-m",
        "disco_bench",
        "step",
        "--suite",
        request.suite,
        "--step",
        request.step,
        "--out",
        request.out,
        "--records",
        str(records_file),
    ]
    if request.data_root:
        cmd += ["--data-root", request.data_root]
    for key, folder in request.datasets.items():
        cmd += ["--dataset", f"{key}={folder}"]
    if not request.progress:
        cmd += ["--quiet"]
    if request.overrides:
        cmd += ["--set", *(f"{k}={json.dumps(v)}" for k, v in request.overrides.items())]
    return cmd


def torchrun_prefix(nproc: int) -> list[str]:
    """torchrun on this machine (a free port of its own: ``--standalone``), every worker line
    prefixed ``[default<local rank>]:`` (``--tee 3``) so a failure can be pinned on its rank."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--tee",
        "3",
        f"--nproc_per_node={nproc}",
    ]


def torchrun_command(request: StepRequest, nproc: int, records_file: Path) -> list[str]:
    return [*torchrun_prefix(nproc), *step_command(request, records_file)]


_ROOT_CAUSE = re.compile(r"Root Cause.*?local_rank:\s*(\d+)\).*?exitcode\s*:\s*(-?\d+)", re.S)
_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Interrupt|Exit)\b.*")


def _last_error(lines: list[str]) -> str | None:
    """The last ``error: ...`` line (the project's own one-line errors), else the last exception line."""
    for pattern in (re.compile(r"^error: .*"), _EXCEPTION):
        found = [ln for ln in lines if pattern.match(ln)]
        if found:
            return found[-1].strip()
    return None


def torchrun_failure(log_text: str, returncode: int) -> str:
    """One line for a torchrun that failed: the rank that failed first (torchrun's "root cause"),
    how its process ended, and that rank's own last error line; or, when no worker ran (the
    rendezvous or the process group could not start), torchrun's own last error."""
    lines = log_text.splitlines()
    root = _ROOT_CAUSE.search(log_text)
    if root is None:
        why = _last_error([ln for ln in lines if not ln.startswith("[default")]) or _last_error(lines)
        return f"torchrun exited with {returncode} before any rank finished: {why or 'no output'}"
    rank, code = int(root[1]), int(root[2])
    ended = (
        f"killed by {signal.Signals(-code).name}"
        if code < 0 and -code in signal.valid_signals()
        else f"exit code {code}"
    )
    prefix = f"[default{rank}]:"
    own = [re.sub(r"^\[rank\d+\]: ?", "", ln[len(prefix) :]) for ln in lines if ln.startswith(prefix)]
    why = _last_error(own) or (
        "no error message: killed from outside (out of memory?)" if code < 0 else "no error message"
    )
    return f"rank {rank} failed ({ended}): {why}"


class TorchrunLauncher(LocalLauncher):
    """Distributed steps as ``torchrun --nproc_per_node N``; the rest in this process."""

    def __init__(self, nproc: int, retries: int = 0, echo: Callable[[str], None] = say):
        super().__init__(retries, echo)
        if nproc < 1:
            raise InputError(f"--nproc {nproc}: expected at least 1 process per step")
        self.nproc = nproc

    def run_torchrun(self, request: StepRequest) -> list[dict]:
        logs = Path(request.out) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        records_file, log = logs / f"{request.step}.records.json", logs / f"{request.step}.torchrun.log"
        records_file.unlink(missing_ok=True)  # a stale file must never pass for this run's records
        with open(log, "w") as handle:
            proc = subprocess.run(
                torchrun_command(request, self.nproc, records_file),
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        if proc.returncode != 0 or not records_file.exists():
            raise StepFailed(
                f"{torchrun_failure(log.read_text(errors='replace'), proc.returncode)} (log: {log})"
            )
        return json.loads(records_file.read_text())

    def run_here(self, request: StepRequest) -> list[dict]:
        if not request.distributed or self.nproc == 1:
            return super().run_here(request)
        return with_retries(lambda: self.run_torchrun(request), self.retries, request.step, self.echo)


JOB_POLL_S = 0.2


class JobFuture(Future):
    """A submitit job as a future (submitit's Job is not one): a thread waits for the job and sets
    it. ``job_id`` names the job in its dependants' ``afterok`` dependencies; ``cancel()`` cancels
    the job (a dependency failed), and the future then ends as the job does."""

    def __init__(self, job):
        super().__init__()
        self.job, self.job_id = job, str(job.job_id)
        self.set_running_or_notify_cancel()
        threading.Thread(target=self._wait_for_the_job, daemon=True, name=f"job-{self.job_id}").start()

    def _wait_for_the_job(self) -> None:
        # a job's end is seen only by asking (a result file, SLURM's accounting); submitit's own
        # wait asks once a second, which a chain of short steps pays at every link
        while not self.job.done():
            time.sleep(JOB_POLL_S)
        try:
            records = self.job.results()[0]
        except Exception as exc:
            self.set_exception(_job_failure(self.job_id, exc))
        else:
            self.set_result(records)

    def cancel(self) -> bool:
        if not self.job.done():
            self.job.cancel(check=False)
        return False  # still running until the watcher sees the job end


def _job_failure(job_id: str, exc: Exception) -> StepFailed:
    """submitit wraps the job's traceback in its exception; the step's failure keeps its last error line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    why = next((ln for ln in reversed(lines) if "Error" in ln.split(":")[0]), lines[-1] if lines else "")
    failure = StepFailed(f"job {job_id} failed: {why}")
    failure.__cause__ = exc  # the whole job traceback in OUT/logs/ID.err
    return failure


class SlurmLauncher:
    """One submitit job per step. On SLURM, dependants are submitted at once with ``afterok``
    dependencies (and ``kill-on-invalid-dep`` so a failure cancels them); on submitit's local
    executor, which has no dependencies, a step is submitted once its dependencies have finished."""

    synchronous = False

    def __init__(
        self,
        out: Path,
        nproc: int = 1,
        options: dict | None = None,
        cluster: str | None = None,
        echo: Callable[[str], None] = say,
    ):
        try:
            import submitit
        except ImportError as exc:
            raise InputError("--launcher slurm needs submitit: pip install 'disco-bench[slurm]'") from exc
        self.executor = submitit.AutoExecutor(folder=Path(out) / "slurm" / "%j", cluster=cluster)
        self.is_slurm = self.executor.cluster == "slurm"
        self.nproc, self.echo = nproc, echo
        self.params = {"timeout_min": 60 * 24, "name": "disco-bench"} | dict(options or {})

    def _parameters(self, distributed: bool, after: list[JobFuture]) -> dict:
        """This step's job parameters, all set every time: the executor keeps the previous step's."""
        params = dict(self.params)
        tasks = self.nproc if distributed else 1
        params.setdefault("tasks_per_node", tasks)
        if self.is_slurm:
            params.setdefault("gpus_per_node", tasks)
            extra = dict(params.pop("slurm_additional_parameters", {}))
            if after:
                extra |= {
                    "dependency": "afterok:" + ":".join(dep.job_id for dep in after),
                    "kill_on_invalid_dep": "yes",
                }
            params["slurm_additional_parameters"] = extra
        return params

    def submit(self, request: StepRequest, after: list[Future]) -> Future:
        if not self.is_slurm:  # no job dependencies here: wait, and do not start after a failure
            try:
                wait_for_dependencies(after)
            except StepFailed as exc:
                unstarted: Future = Future()
                unstarted.set_exception(exc)
                return unstarted
        self.executor.update_parameters(**self._parameters(request.distributed, after))
        future = JobFuture(self.executor.submit(request))
        self.echo(f"{request.step}: submitted job {future.job_id}")
        return future


def make_launcher(
    name: str,
    out: Path,
    nproc: int = 1,
    retries: int = 0,
    options: dict | None = None,
    echo: Callable[[str], None] = say,
    jobs: int = 1,
):
    if jobs < 1:
        raise InputError(f"--jobs {jobs}: expected 1 or more steps at a time")
    if jobs > 1 and name != "local":
        raise InputError(f"--jobs {jobs} needs --launcher local (torchrun and slurm place steps themselves)")
    if name == "local":
        if nproc != 1:
            raise InputError(f"--nproc {nproc} needs --launcher torchrun or slurm; local runs one process")
        return ParallelLocalLauncher(jobs, retries, echo) if jobs > 1 else LocalLauncher(retries, echo)
    if name == "torchrun":
        return TorchrunLauncher(nproc, retries, echo)
    if name == "slurm":
        options = dict(options or {})
        cluster = options.pop("cluster", None)  # 'local' or 'debug' run submitit's executors without SLURM
        return SlurmLauncher(out, nproc, options, cluster, echo)
    raise InputError(f"--launcher {name!r}: choose from {', '.join(LAUNCHERS)}")
