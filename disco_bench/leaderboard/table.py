"""The one tidy table behind every view of the report: a row per measurement, read from the records
once. Every view (the paper's cells, the claims, the per-task tables, the plots and ``results.csv``,
which is this table) is a function of it; none re-reads a record's protocol to find its setting or
the checkpoint it measured.

Columns, computed here and nowhere else:

- the record's identity as measured: ``task, metric, value, dataset, split, seed``; for a step that
  compares several checkpoints (t-SNE, information plane) ``student, method, teacher, label`` and
  ``checkpoint_sha256`` name the checkpoint that row measured (``matching.per_checkpoint``);
- the checkpoint's lineage: ``pretrained_on`` (the pre-training data's name), ``pretrain_data`` (its
  content fingerprint where the run recorded one), ``pretrain_epochs``, ``pretrain_seed``,
  ``teacher_sha256``, ``random_init``;
- ``degenerate``: the reasons a number came from a degenerate state (a classifier at chance, a
  probe tuned on too few images, a run cut short), joined; None when it did not;
- ``setting`` (``matching.setting_id``, told apart by the pre-training data where the record does not
  name it: runs with equal settings differ only by their seed), ``pool``
  (the setting, split further by a record's own extra fields: what the claims pool over seeds),
  ``eval_context`` (the evaluation's settings alone, for the claims), ``kd_probe``;
- one column per setting that can change a number (``pretrain.hidden``, ``eval.protocol``,
  ``run.threads``, ...), and ``protocol``, ``extra``, ``run`` as JSON text;
- ``record`` (the record as the views quote it; not exported), ``settings`` (path -> value) and
  ``pretrain`` (the measured checkpoint's pre-training protocol), neither exported either.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

from disco_bench.leaderboard.matching import is_environment, per_checkpoint, setting_id, settings_of

# Columns a user groups by first, in this order; the setting columns follow, then JSON ones.
LEADING = (
    "id",
    "task",
    "metric",
    "value",
    "student",
    "method",
    "teacher",
    "dataset",
    "split",
    "seed",
    "label",
    "step",
    "setting",
    "pool",
    "pretrained_on",
    "pretrain_data",
    "pretrain_epochs",
    "pretrain_seed",
    "teacher_sha256",
    "random_init",
    "kd_probe",
    "degenerate",
    "eval_context",
    "checkpoint_sha256",
    "config_hash",
    "code_version",
    "hardware",
    "started_at",
    "finished_at",
)
JSON_COLUMNS = ("protocol", "extra", "run", "artifacts")
INTERNAL = ("record", "settings", "pretrain")


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _pretrain_protocol(record: dict) -> dict:
    protocol = record.get("protocol") or {}
    pre = protocol if record.get("task") == "pretrain" else protocol.get("pretrain")
    return pre if isinstance(pre, dict) else {}


def checkpoints(records: list[dict]) -> dict[str, dict]:
    """sha256 -> what made a checkpoint: the pre-training record's method, student, protocol and
    dataset, or a random initialisation (``init`` steps)."""
    found: dict[str, dict] = {}
    for r in records:
        sha = r.get("checkpoint_sha256")
        if not sha or sha in found:
            continue
        if r.get("task") == "pretrain":
            found[sha] = {
                "method": r.get("method"),
                "student": r.get("student"),
                "protocol": r.get("protocol") or {},
                "dataset": r.get("dataset"),
            }
        elif r.get("task") == "checkpoint" and r.get("method") == "random-init":
            found[sha] = {
                "method": "random-init",
                "student": r.get("student"),
                "protocol": {},
                "dataset": None,
            }
    return found


def _data_name(pre: dict, made: dict | None) -> tuple[str | None, str | None]:
    """(name, fingerprint) of the data a checkpoint was pre-trained on: the protocol's ``data`` where
    the run recorded it, else the dataset of the checkpoint's pre-training record."""
    data = pre.get("data")
    if isinstance(data, dict) and (data.get("name") or data.get("fingerprint")):
        return data.get("name"), data.get("fingerprint")
    return (made or {}).get("dataset"), None


def _eval_context(settings: dict) -> str:
    """The evaluation's settings, less which checkpoints it read, where it ran and its KD teacher
    (a KD probe is an arm of its own, chosen by ``kd_probe``)."""
    fields = {
        k: v
        for k, v in settings.items()
        if k.startswith("eval.")
        and "ckpt" not in k
        and not k.startswith("eval.kd_")
        and not is_environment(k)
    }
    return digest(fields)


def _setting(measured: dict, settings: dict, data_name: str | None) -> str:
    """``matching.setting_id``, told apart by the pre-training data where the record's settings do not
    name it and its own dataset does not imply it (a transfer task reading checkpoints pre-trained on
    another set): two runs with equal protocols pre-trained on different data are two settings."""
    setting = setting_id(measured)
    recorded = any(k.startswith("pretrain.data.") for k in settings)
    if recorded or data_name is None or data_name == str(measured.get("dataset")).split("@")[0]:
        return setting
    return digest([setting, data_name])


def _row(record: dict, made_by: dict[str, dict], pretrain_by_sha: dict[str, dict]) -> dict:
    measured = per_checkpoint(record, pretrain_by_sha)
    sha = measured.get("checkpoint_sha256")
    made = made_by.get(sha or "")
    pre = _pretrain_protocol(measured)
    settings = settings_of(measured)
    name, fingerprint = _data_name(pre, made)
    setting = _setting(measured, settings, name)
    random_init = made is not None and made["method"] == "random-init"
    teacher = pre.get("teacher_ckpt")
    eval_protocol = (measured.get("protocol") or {}).get("eval") or {}
    row = {k: measured.get(k) for k in LEADING if k in measured}
    row |= {
        "method": "random-init" if random_init else measured.get("method"),
        "setting": setting,
        # runs that differ only by their seed; a single-checkpoint record's extra fields (an
        # architecture's details) split it too, a several-checkpoint record's name the checkpoint
        "pool": setting + (digest(record["extra"]) if measured is record and record.get("extra") else ""),
        "pretrained_on": None if random_init else name,
        "pretrain_data": fingerprint,
        "pretrain_epochs": pre.get("epochs"),
        "pretrain_seed": pre.get("seed", measured.get("seed")),
        "teacher_sha256": teacher.get("sha256") if isinstance(teacher, dict) else None,
        "random_init": random_init,
        "kd_probe": eval_protocol.get("kd_alpha") is not None,
        # why the number came from a degenerate state (downstream.result.DEGENERATE), if it did
        "degenerate": "; ".join((measured.get("extra") or {}).get("degenerate") or []) or None,
        "eval_context": _eval_context(settings),
        "record": measured,
        "pretrain": pre,  # the measured checkpoint's pre-training protocol ({} for a file or random init)
        "settings": settings,
    }
    for key in JSON_COLUMNS:
        value = measured.get(key)
        row[key] = None if value is None else json.dumps(value, sort_keys=True, default=str)
    for path, value in settings.items():
        row[path] = json.dumps(list(value)) if isinstance(value, tuple) else value
    return row


def pretrain_protocols(records: list[dict]) -> dict[str, dict]:
    """checkpoint sha256 -> the pre-training protocol that produced it, from the records that carry it."""
    found: dict[str, dict] = {}
    for r in records:
        sha, extra = r.get("checkpoint_sha256"), r.get("extra") or {}
        pre = _pretrain_protocol(r)
        if sha and pre and "arch" not in extra:
            found.setdefault(sha, pre)
    return found


def rows_of(df: pd.DataFrame, *columns: str):
    """The rows of ``df`` as namedtuples of ``columns`` only. The table has a column per setting
    (hundreds), and ``itertuples`` over all of them costs far more than reading the rows (seconds
    per report); the columns read here are among the ones ``tidy`` always makes."""
    return df[list(columns)].itertuples(index=False)


def tidy(records: list[dict]) -> pd.DataFrame:
    """The table (empty, with the leading columns, when there are no records)."""
    made_by, by_sha = checkpoints(records), pretrain_protocols(records)
    rows = [_row(r, made_by, by_sha) for r in records]
    # object columns throughout: a missing value stays None (pandas would read it as NaN in a string
    # column), so "no teacher" and "no fingerprint" read the same in every view
    df = pd.DataFrame(rows, dtype=object)
    for col in (*LEADING, *JSON_COLUMNS, *INTERNAL):
        if col not in df:
            df[col] = pd.Series([None] * len(df), dtype=object)
    df["value"] = df["value"].astype(float)
    settings_cols = sorted(c for c in df.columns if c not in (*LEADING, *JSON_COLUMNS, *INTERNAL))
    return df[[*LEADING, *settings_cols, *JSON_COLUMNS, *INTERNAL]]


def export_csv(df: pd.DataFrame) -> str:
    """``results.csv``: the table without its internal columns (JSON columns are JSON text)."""
    return df.drop(columns=list(INTERNAL)).to_csv(index=False)
