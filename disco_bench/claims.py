"""The paper's central claims, checked on whatever linear-probe records a run produced.

For every student that has DisCo linear top-1 records, the DisCo mean is set against the same
student pre-trained by MoCo-v2 alone, by SEED and by DisCo* (hidden = feature width), and against
the teacher's own linear top-1. Runs are compared only when they share the dataset, the probe
(eval protocol and image size) and the pre-training budget (epochs, batch, image size); the
distillers also need the same teacher checkpoint (by sha256). Seeds of one setting are pooled
into mean ± std.

"By more than two standard deviations" is read conservatively: the gap must exceed twice the
larger of the two groups' standard deviations, and needs at least two seeds on each side.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def text(self) -> str:
        if self.std is None:
            return f"{self.mean:.2f} (n=1)"
        return f"{self.mean:.2f} ± {self.std:.2f} (n={len(self.values)})"


def _budget(record: dict) -> tuple:
    """What two linear records must share to be compared (dataset, probe, pre-training budget)."""
    protocol = record.get("protocol") or {}
    pre, ev = protocol.get("pretrain") or {}, protocol.get("eval") or {}
    return (record.get("dataset"), record.get("student"), ev.get("protocol"), ev.get("image_size"),
            pre.get("epochs"), pre.get("batch_size"), pre.get("image_size"))


def _teacher_sha(record: dict) -> str | None:
    teacher = ((record.get("protocol") or {}).get("pretrain") or {}).get("teacher_ckpt")
    return teacher.get("sha256") if isinstance(teacher, dict) else None


def _top1(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("task") == "linear" and r.get("metric") == "top1"
            and not (r.get("extra") or {}).get("arch")]


def _group(records: list[dict], method: str, budget: tuple, teacher: str | None) -> Group | None:
    values = tuple(r["value"] for r in records if r.get("method") == method and _budget(r) == budget
                   and (teacher is None or _teacher_sha(r) == teacher))
    return Group(values) if values else None


def _hidden(records: list[dict], method: str, budget: tuple) -> int | None:
    for r in records:
        if r.get("method") == method and _budget(r) == budget:
            return ((r.get("protocol") or {}).get("pretrain") or {}).get("hidden")
    return None


def _comparison(student: str, dataset: str, claim: str, disco: Group, other: Group | None, other_name: str,
                rule: str) -> dict | None:
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
    return {"student": student, "dataset": dataset, "claim": claim, "disco": disco, "other": other,
            "other_name": other_name, "gap": gap, "bar": bar, "holds": holds}


def claim_rows(records: list[dict]) -> list[dict]:
    """One row per (student setting, claim): the two sides, the gap, the bar it must clear, the verdict."""
    top1 = _top1(records)
    by_sha = {r.get("checkpoint_sha256"): r for r in top1}
    rows = []
    settings = dict.fromkeys((_budget(r), _teacher_sha(r)) for r in top1 if r.get("method") == "disco")
    for budget, teacher in settings:
        dataset, student = budget[0], budget[1]
        disco = _group(top1, "disco", budget, teacher)
        wide, narrow = _hidden(top1, "disco", budget), _hidden(top1, "disco*", budget)
        rows += [
            _comparison(student, dataset, "DisCo > MoCo-v2 alone, by more than 2 std", disco,
                        _group(top1, "moco", budget, None), "MoCo-v2", "2std"),
            _comparison(student, dataset, "DisCo ≥ SEED", disco, _group(top1, "seed", budget, teacher), "SEED",
                        "at_least"),
            _comparison(student, dataset, f"DisCo (hidden {wide}) > DisCo* (hidden {narrow}): the Distilling Bottleneck",
                        disco, _group(top1, "disco*", budget, teacher), "DisCo*", "greater"),
        ]
        teacher_record = by_sha.get(teacher)
        if teacher_record is not None and teacher_record.get("dataset") == dataset:
            t = Group((teacher_record["value"],))
            runs = [_group(top1, m, budget, None if m == "moco" else teacher) for m in ("moco", "seed", "disco", "disco*")]
            rows.append({"student": student, "dataset": dataset,
                         "claim": f"teacher ({teacher_record.get('student')}) above every {student} run",
                         "disco": disco, "other": t, "other_name": "teacher", "gap": disco.mean - t.mean, "bar": None,
                         "holds": t.mean > max(g.mean for g in runs if g is not None)})
    return [r for r in rows if r is not None]


def claims_section(records: list[dict]) -> list[str]:
    """Markdown lines of the claims table, or nothing when no DisCo linear record is there."""
    rows = claim_rows(records)
    if not rows:
        return []
    verdict = {True: "holds", False: "**does not hold**", None: "needs ≥ 2 seeds each"}
    lines = ["## The paper's claims, checked on these records", "",
             "Linear top-1 (%), mean ± std over seeds; runs compared only with the same dataset, probe, "
             "pre-training budget and teacher checkpoint (`disco_bench/claims.py`). "
             "\"2 std\" = twice the larger of the two standard deviations.", "",
             "| student | dataset | claim | DisCo | other | DisCo − other | bar | verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bar = f"> {r['bar']:.2f}" if r["bar"] is not None else "—"
        lines.append(f"| {r['student']} | {r['dataset']} | {r['claim']} | {r['disco'].text()} | "
                     f"{r['other_name']} {r['other'].text()} | {r['gap']:+.2f} | {bar} | {verdict[r['holds']]} |")
    return lines + [""]
