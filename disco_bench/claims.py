"""The paper's central claims, checked on whatever linear-probe records a run produced.

For every student that has DisCo linear top-1 records, the DisCo mean is set against the same
student pre-trained by MoCo-v2 alone, by SEED and by DisCo* (hidden = feature width), and against
the teacher's own linear top-1. Runs are compared only when they share the dataset, the probe
(eval protocol and image size) and the pre-training budget (epochs, batch, image size); the
distillers also need the same teacher checkpoint (by sha256). Only the seeds of one setting are
pooled into mean ± std (every setting of pre-training and evaluation equal apart from the seed,
``leaderboard.matching.setting_id``): a variant (head width, lambda, reduction, teacher BN, per-GPU
batch, ...) is its own group and gets its own rows.

"By more than two standard deviations" is read conservatively: the gap must exceed twice the
larger of the two groups' standard deviations, and needs at least two seeds on each side.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from disco_bench.leaderboard.matching import setting_id


@dataclass(frozen=True)
class Group:
    values: tuple[float, ...]
    setting: str | None = None  # the one setting its runs share (leaderboard.matching.setting_id)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def text(self) -> str:
        link = f" [setting {self.setting}](#setting-{self.setting})" if self.setting else ""
        if self.std is None:
            return f"{self.mean:.2f} (n=1){link}"
        return f"{self.mean:.2f} ± {self.std:.2f} (n={len(self.values)}){link}"


def _budget(record: dict) -> tuple:
    """What two linear records must share to be compared (dataset, probe, pre-training budget)."""
    protocol = record.get("protocol") or {}
    pre, ev = protocol.get("pretrain") or {}, protocol.get("eval") or {}
    return (
        record.get("dataset"),
        record.get("student"),
        ev.get("protocol"),
        ev.get("image_size"),
        pre.get("epochs"),
        pre.get("batch_size"),
        pre.get("image_size"),
    )


def _teacher_sha(record: dict) -> str | None:
    teacher = ((record.get("protocol") or {}).get("pretrain") or {}).get("teacher_ckpt")
    return teacher.get("sha256") if isinstance(teacher, dict) else None


def _top1(records: list[dict]) -> list[dict]:
    return [
        r
        for r in records
        if r.get("task") == "linear" and r.get("metric") == "top1" and not (r.get("extra") or {}).get("arch")
    ]


def _pools(records: list[dict], method: str, budget: tuple, teacher: str | None) -> list[list[dict]]:
    """The records of ``method`` at ``budget`` (and teacher), one list per setting, largest first."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        if (
            r.get("method") == method
            and _budget(r) == budget
            and (teacher is None or _teacher_sha(r) == teacher)
        ):
            groups.setdefault(setting_id(r), []).append(r)
    return sorted(groups.values(), key=len, reverse=True)


def _group(pool: list[dict]) -> Group:
    return Group(tuple(r["value"] for r in pool), setting_id(pool[0]))


def _hidden(pool: list[dict]) -> int | None:
    return ((pool[0].get("protocol") or {}).get("pretrain") or {}).get("hidden")


def _comparison(
    student: str, dataset: str, claim: str, disco: Group, other: Group | None, other_name: str, rule: str
) -> dict | None:
    """``rule``: ``2std`` (gap above twice the larger std), ``greater`` (gap > 0) or ``at_least`` (gap >= 0)."""
    if other is None:
        return None
    gap = disco.mean - other.mean
    sigmas = [s for s in (disco.std, other.std) if s is not None]
    bar = 2 * max(sigmas) if rule == "2std" and len(sigmas) == 2 else None
    if rule == "2std":
        holds = None if bar is None else gap > bar
    else:
        holds = gap > 0 if rule == "greater" else gap >= 0
    return {
        "student": student,
        "dataset": dataset,
        "claim": claim,
        "disco": disco,
        "other": other,
        "other_name": other_name,
        "gap": gap,
        "bar": bar,
        "holds": holds,
    }


def claim_rows(records: list[dict]) -> list[dict]:
    """One row per (DisCo setting, claim, compared setting): the two sides, the gap, the bar, the verdict."""
    top1 = _top1(records)
    by_sha = {r.get("checkpoint_sha256"): r for r in top1}
    rows = []
    disco_pools = {setting_id(r): None for r in top1 if r.get("method") == "disco"}
    for sid in disco_pools:
        pool = [r for r in top1 if r.get("method") == "disco" and setting_id(r) == sid]
        budget, teacher = _budget(pool[0]), _teacher_sha(pool[0])
        dataset, student = budget[0], budget[1]
        disco = _group(pool)
        others = {
            m: _pools(top1, m, budget, None if m == "moco" else teacher) for m in ("moco", "seed", "disco*")
        }
        rows += [
            _comparison(
                student,
                dataset,
                "DisCo > MoCo-v2 alone, by more than 2 std",
                disco,
                _group(o),
                "MoCo-v2",
                "2std",
            )
            for o in others["moco"]
        ]
        rows += [
            _comparison(student, dataset, "DisCo ≥ SEED", disco, _group(o), "SEED", "at_least")
            for o in others["seed"]
        ]
        rows += [
            _comparison(
                student,
                dataset,
                f"DisCo (hidden {_hidden(pool)}) > DisCo* (hidden {_hidden(o)}): the Distilling Bottleneck",
                disco,
                _group(o),
                "DisCo*",
                "greater",
            )
            for o in others["disco*"]
        ]
        teacher_record = by_sha.get(teacher)
        if teacher_record is not None and teacher_record.get("dataset") == dataset:
            t = Group((teacher_record["value"],))
            runs = [disco] + [_group(o) for pools in others.values() for o in pools]
            rows.append(
                {
                    "student": student,
                    "dataset": dataset,
                    "claim": f"teacher ({teacher_record.get('student')}) above every {student} run",
                    "disco": disco,
                    "other": t,
                    "other_name": "teacher",
                    "gap": disco.mean - t.mean,
                    "bar": None,
                    "holds": t.mean > max(g.mean for g in runs),
                }
            )
    return [r for r in rows if r is not None]


def claims_section(records: list[dict]) -> list[str]:
    """Markdown lines of the claims table, or nothing when no DisCo linear record is there."""
    rows = claim_rows(records)
    if not rows:
        return []
    verdict = {True: "holds", False: "**does not hold**", None: "needs ≥ 2 seeds each"}
    lines = [
        "## The paper's claims, checked on these records",
        "",
        "Linear top-1 (%), mean ± std over the seeds of one setting; runs compared only with the same dataset, "
        "probe, pre-training budget and teacher checkpoint (`disco_bench/claims.py`). "
        '"2 std" = twice the larger of the two standard deviations.',
        "",
        "| student | dataset | claim | DisCo | other | DisCo − other | bar | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bar = f"> {r['bar']:.2f}" if r["bar"] is not None else "—"
        lines.append(
            f"| {r['student']} | {r['dataset']} | {r['claim']} | {r['disco'].text()} | "
            f"{r['other_name']} {r['other'].text()} | {r['gap']:+.2f} | {bar} | {verdict[r['holds']]} |"
        )
    return lines + [""]
