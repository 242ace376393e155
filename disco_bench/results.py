"""Result records: one JSON object per measured number in ``results.jsonl``.

Besides ``REQUIRED_FIELDS`` a record carries ``run``, its environment: the process count, per-process batch,
accelerator, torch threads and library versions of the process that measured it
(``infra.environment``); an eval record's pre-training ``run`` is in ``protocol.pretrain.run``.
Records written before these existed lack them; they read as unknown.

Appends rewrite the file atomically (temp file + rename), so a crash never leaves a partial line,
and a record whose id is already present replaces the old one, so a redone step never duplicates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

from disco_bench import __version__
from disco_bench.record_rules import check_record
from downstream.result import TaskResult, with_degenerate
from infra.checkpoint import atomic_write_text
from infra.environment import process_environment
from infra.errors import InputError

# torch is imported by the functions that describe the process measuring a number: reading and
# writing records (report) needs none

REQUIRED_FIELDS = (
    "task",
    "metric",
    "value",
    "student",
    "teacher",
    "method",
    "dataset",
    "split",
    "seed",
    "protocol",
    "config_hash",
    "checkpoint_sha256",
    "code_version",
    "started_at",
    "finished_at",
    "hardware",
)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def code_version() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


@lru_cache(maxsize=1)
def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        gpus = f"{torch.cuda.device_count()}x {'/'.join(sorted(names))}"
    else:
        gpus = "no GPU"
    return f"{platform.machine()} {os.cpu_count()} CPUs, {gpus}, torch {torch.__version__}"


def record_id(rec: dict) -> str:
    key = {
        k: rec.get(k) for k in ("step", "config_hash", "task", "metric", "dataset", "split", "seed", "extra")
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def this_process(per_process_batch: int | None = None, device: str = "auto") -> dict:
    """The environment (the record's ``run`` field) of a number measured in this process (under
    torchrun: one of WORLD_SIZE)."""
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return process_environment(int(os.environ.get("WORLD_SIZE", "1")), per_process_batch, device)


def make_records(
    result: TaskResult,
    *,
    student: str,
    teacher: str | None,
    method: str | None,
    seed: int,
    protocol: dict,
    config_hash: str,
    checkpoint_sha256: str | None,
    started_at: str,
    finished_at: str,
    step: str | None = None,
    label: str | None = None,
    run: dict | None = None,
) -> list[dict]:
    """One record per measurement; ``run`` is the environment the records store under that key
    (default: this process's, with no per-process batch)."""
    environment = run if run is not None else this_process()
    records = []
    for m in result.measurements:
        rec = {
            "task": result.task,
            "metric": m.metric,
            "value": float(m.value),
            "student": student,
            "teacher": teacher,
            "method": method,
            "dataset": m.dataset,
            "split": m.split,
            "seed": seed,
            "protocol": protocol,
            "config_hash": config_hash,
            "checkpoint_sha256": checkpoint_sha256,
            "code_version": code_version(),
            "started_at": started_at,
            "finished_at": finished_at,
            "hardware": hardware(),
            "step": step,
            "label": label,
            "extra": with_degenerate(m.extra, result.degenerate) or None,
            "artifacts": result.artifacts or None,
            "run": environment,
        }
        rec["id"] = record_id(rec)
        records.append(rec)
    return records


def _lines(path: Path) -> list[str]:
    """The text lines of a records file; a folder or a binary file in its place is one error."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except IsADirectoryError:
        raise InputError(f"{path} is a folder; expected a records file (one JSON record per line)") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path} is not a text file (byte {exc.start} is not UTF-8); expected one JSON record per line"
        ) from None
    except OSError as exc:
        raise InputError(
            f"cannot read {path} ({exc.strerror or exc}); expected a readable records file"
        ) from None


def read_records(path: str | Path) -> list[dict]:
    """The records of ``path`` (none if it does not exist), each checked by ``record_rules``.

    One count per record id: a line repeated exactly (a file concatenated with a copy of itself)
    counts once; two different records with one id are an error, since which one holds is unknown.
    """
    path = Path(path)
    if not path.exists():
        return []
    records: list[dict] = []
    seen: dict[str, tuple[int, dict]] = {}  # id -> (line, record)
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise InputError(
                f"{path}:{n} is not valid JSON ({reason}); expected one record per line"
            ) from None
        check_record(rec, f"{path}:{n}", REQUIRED_FIELDS)
        rid = rec.get("id") or record_id(rec)
        if rid in seen:
            first, earlier = seen[rid]
            if earlier == rec:
                continue  # the same line again: one measurement, counted once
            raise InputError(
                f"{path}:{n} record {rid}: its id is already taken by line {first}, which holds "
                "different values; expected one record per id (delete the one that does not hold)"
            )
        seen[rid] = (n, rec)
        records.append(rec)
    return records


def append_records(path: str | Path, new: list[dict]) -> None:
    """Add ``new`` to ``path`` atomically; a record with an id already present replaces it."""
    existing = read_records(path)
    for rec in new:  # a record the report would refuse is never written
        check_record(rec, f"new record for {path}", REQUIRED_FIELDS)
    ids = {r["id"] for r in new}
    kept = [r for r in existing if r.get("id") not in ids]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept + new))
