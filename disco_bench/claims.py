"""The paper's findings, checked on whatever records a run produced: one verdict per claim, student
and dataset, computed from the records by the arithmetic below (tested in tests/disco_bench/test_claims.py).

A claim compares two *arms* (e.g. DisCo with hidden 2048 against MoCo-v2 alone) on one task and
metric. An arm's runs pool into mean ± std only when every setting but the seed is equal (the
leaderboard's ``setting_id``); a variant is its own group and gets its own row. Two arms are set
side by side only in one *context*: the same dataset, the same evaluation settings, the same
pre-training data (joined through the checkpoint's sha256 to its pre-training record), and, unless
the claim says otherwise, the same student and pre-training budget; distillers also need the same
teacher checkpoint. Multi-checkpoint tasks (t-SNE, information plane) name each checkpoint in the
record's ``extra``; its method and settings come from that checkpoint's pre-training record.

Verdicts, with gap = mean(left) − mean(right) and bar = twice the larger of the two stds:

- ``greater`` (left > right): holds if gap > bar (and > the claim's margin); does not hold if
  gap < −bar (or gap + bar < margin); inconclusive in between;
- ``at_least`` (left ≥ right): holds if gap ≥ 0; does not hold if gap < −bar; inconclusive in between;
- ``less``: ``greater`` with the sides swapped;
- ``similar`` (|gap| small): holds if |gap| ≤ bar; does not hold otherwise.

An arm with fewer seeds than it needs (3 for a method; 1 for a single teacher) makes the row
inconclusive, never a verdict. A row is shown whatever its verdict; nothing is dropped.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass

from disco_bench.leaderboard.matching import is_environment, per_checkpoint, setting_id, settings_of

MIN_SEEDS = 3  # seeds per arm before methods are compared (issue 19)
DETECTION_SIGNAL = 1.0  # AP50 (%): below it on both sides a detector found (next to) nothing
# Pre-training fields two arms must share to be compared (their "budget"); everything else (method,
# head width, lambda, ...) is what a claim compares. A run's seed is never part of it.
BUDGET = (
    "epochs",
    "batch_size",
    "image_size",
    "base_lr",
    "schedule",
    "weight_decay",
    "sgd_momentum",
    "queue_size",
    "key_momentum",
    "temperature",
    "amp",
    "aug_impl",
    "channels_last",
    "dim",
)
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


@dataclass(frozen=True)
class Arm:
    """One side of a claim: runs of ``methods`` whose pre-training protocol has the ``where`` values;
    ``teacher=True`` instead selects the teachers the context's distillers learned from."""

    name: str
    methods: tuple[str, ...] = ()
    where: tuple[tuple[str, object], ...] = ()
    teacher: bool = False
    min_seeds: int = MIN_SEEDS

    def selects(self, obs: Obs, teacher_shas: set[str]) -> bool:
        if self.teacher:
            return obs.sha in teacher_shas
        if obs.sha in teacher_shas:  # a teacher is the teacher arm, not one of its method's runs
            return False
        return obs.method in self.methods and all(obs.pretrain.get(k) == v for k, v in self.where)


@dataclass(frozen=True)
class Claim:
    key: str
    table: str  # where the paper makes it: "Table 1", "Ablation", ...
    text: str  # the claim in words, left arm first
    task: str
    metric: str
    left: Arm
    right: Arm
    rule: str  # greater | at_least | less | similar
    same_student: bool = True
    same_budget: bool = True
    dataset_suffix: str = ""  # semisup records name their subset: DATASET@1%
    margin: float = 0.0  # greater: the gap must also exceed this (e.g. "well below": 10 points)
    last_epoch: bool = False  # information plane: one value per checkpoint, at its last epoch
    # Below this on both sides the task measured nothing (a detector that finds no box): inconclusive,
    # however the arithmetic comes out (0 >= 0 is no evidence that DisCo transfers as well).
    min_signal: float | None = None

    def budget(self) -> tuple[str, ...]:
        """The BUDGET fields both arms' methods read (SEED has no key encoder, so DisCo and SEED
        share no key momentum); a run records only the fields its method reads."""
        from pretrain.config import method_reads
        from pretrain.methods import METHODS

        methods = [m for m in (*self.left.methods, *self.right.methods) if m in METHODS]
        return tuple(k for k in BUDGET if all(method_reads(m, k) for m in methods))


def _arm(name: str, *methods: str, teacher: bool = False, min_seeds: int = MIN_SEEDS, **where) -> Arm:
    return Arm(name, methods, tuple(sorted(where.items())), teacher, min_seeds)


DISCO = _arm("DisCo (hidden 2048)", "disco", hidden=2048)
MOCO = _arm("MoCo-v2 alone", "moco")
SEED = _arm("SEED", "seed")
TEACHER = _arm("teacher", teacher=True, min_seeds=1)
RANDOM = _arm("random init", "random-init")


def _pair_claims(table: str, task: str, metric: str, suffix: str = "") -> list[Claim]:
    """DisCo against MoCo-v2 alone (greater) and SEED (at least) on one task."""
    where = f"{task}{suffix}"
    return [
        Claim(f"{where}-moco", table, "DisCo > MoCo-v2 alone", task, metric, DISCO, MOCO, "greater",
              dataset_suffix=suffix),
        Claim(f"{where}-seed", table, "DisCo ≥ SEED", task, metric, DISCO, SEED, "at_least", dataset_suffix=suffix),
    ]  # fmt: skip


def _detection_claims(metric: str, layout: str) -> list[Claim]:
    """Table 2 on either layout (VOC: Faster R-CNN AP50; COCO: Mask R-CNN box AP50), and the check
    that detection at this scale has signal at all: the teacher against its random-init backbone."""
    return [
        Claim(f"det-moco-{layout}", "Table 2", f"DisCo ≥ MoCo-v2 alone ({layout} {metric})", "detection", metric,
              DISCO, MOCO, "at_least", min_signal=DETECTION_SIGNAL),
        Claim(f"det-teacher-{layout}", "Detection signal", f"teacher > its random-init backbone ({layout} {metric})",
              "detection", metric, TEACHER, _arm("random init", "random-init", min_seeds=1), "greater",
              same_budget=False, min_signal=DETECTION_SIGNAL),
    ]  # fmt: skip


def _width(hidden: int) -> Arm:
    name = "no hidden layer" if hidden == 0 else f"hidden {hidden}"
    return _arm(name, "disco", "disco*", hidden=hidden)


# The registry: every claim the leaderboard checks. A new claim is one entry here.
CLAIMS: tuple[Claim, ...] = (
    *_pair_claims("Table 1", "linear", "top1"),
    Claim("headroom-moco", "Setup", "teacher well above MoCo-v2 alone (≥ 10 points)", "linear", "top1",
          TEACHER, MOCO, "greater", same_student=False, same_budget=False, margin=10.0),
    Claim("headroom-random", "Setup", "teacher well above a random-init student (≥ 10 points)", "linear", "top1",
          TEACHER, RANDOM, "greater", same_student=False, same_budget=False,
          margin=10.0),
    # Sanity: pre-training must beat the random-init floor, or no ordering of methods means anything.
    Claim("floor-moco", "Setup", "MoCo-v2 alone > a random-init student", "linear", "top1", MOCO, RANDOM,
          "greater", same_budget=False),
    Claim("floor-disco", "Setup", "DisCo > a random-init student", "linear", "top1", DISCO, RANDOM, "greater",
          same_budget=False),
    Claim("t3-bottleneck", "Table 3", "DisCo (hidden 2048) > DisCo* (hidden = feature width)", "linear", "top1",
          DISCO, _arm("DisCo*", "disco*"), "greater"),
    Claim("t4-widest", "Table 4", "hidden 2048 > no hidden layer", "linear", "top1", DISCO, _width(0), "greater"),
    Claim("t4-512", "Table 4", "hidden 512 ≥ no hidden layer", "linear", "top1", _width(512), _width(0), "at_least"),
    Claim("t4-1024", "Table 4", "hidden 1024 ≥ hidden 512", "linear", "top1", _width(1024), _width(512), "at_least"),
    Claim("t4-2048", "Table 4", "hidden 2048 ≥ hidden 1024", "linear", "top1", DISCO, _width(1024), "at_least"),
    Claim("t5-at", "Table 5", "DisCo > AT", "linear", "top1", DISCO, _arm("AT", "at"), "greater"),
    Claim("t5-rkd", "Table 5", "DisCo > RKD", "linear", "top1", DISCO, _arm("RKD", "rkd"), "greater"),
    Claim("t5-at-disco", "Table 5", "AT + DisCo ≈ DisCo", "linear", "top1", _arm("AT + DisCo", "at+disco"),
          DISCO, "similar"),
    Claim("t5-rkd-disco", "Table 5", "RKD + DisCo ≈ DisCo", "linear", "top1", _arm("RKD + DisCo", "rkd+disco"),
          DISCO, "similar"),
    Claim("ablation-moco", "Ablation", "MSE only > MoCo-v2 alone", "linear", "top1",
          _arm("MSE only", "distill-only"), MOCO, "greater"),
    Claim("ablation-disco", "Ablation", "DisCo > MSE only", "linear", "top1", DISCO,
          _arm("MSE only", "distill-only"), "greater"),
    *_pair_claims("Semi-supervised 1%", "semisup", "top1", "@1%"),
    *_pair_claims("Semi-supervised 10%", "semisup", "top1", "@10%"),
    *_pair_claims("CIFAR transfer", "cifar", "top1"),
    *_detection_claims("AP50", "VOC"),
    *_detection_claims("box_AP50", "COCO"),
    Claim("tsne-silhouette", "t-SNE", "DisCo separates classes better than MoCo-v2 alone (silhouette)", "tsne",
          "silhouette", DISCO, MOCO, "greater"),
    Claim("tsne-knn", "t-SNE", "DisCo separates classes better than MoCo-v2 alone (5-NN %)", "tsne",
          "knn5_top1", DISCO, MOCO, "greater"),
    Claim("mi-xt", "Information plane", "hidden 2048 has a smaller I(X;T) than hidden 512", "mi", "mi_xt_bits",
          DISCO, _width(512), "less", last_epoch=True),
    Claim("mi-ty", "Information plane", "hidden 2048 has a similar I(T;Y) to hidden 512", "mi", "mi_ty_bits",
          DISCO, _width(512), "similar", last_epoch=True),
)  # fmt: skip


# --- the records as observations -------------------------------------------------------------------


@dataclass(frozen=True)
class Obs:
    """One measured value of one checkpoint, with what it was measured on and trained by."""

    record: dict
    value: float
    sha: str | None
    method: str | None
    student: str | None
    pretrain: dict
    pretrained_on: str | None
    pool: str  # runs with equal pools differ only by their seed
    setting: str | None  # the leaderboard's setting id (its link), for single-checkpoint records
    eval_context: str

    @property
    def teacher_sha(self) -> str | None:
        teacher = self.pretrain.get("teacher_ckpt")
        return teacher.get("sha256") if isinstance(teacher, dict) else None


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:8]


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


def _eval_context(record: dict) -> str:
    """The evaluation settings (which checkpoints a step read and where it ran aside)."""
    fields = {
        k: v
        for k, v in settings_of(record).items()
        if k.startswith("eval.") and "ckpt" not in k and not is_environment(k)
    }
    return _digest(fields)


def observe(record: dict, ckpts: dict[str, dict]) -> Obs | None:
    extra = record.get("extra") or {}
    several = "sha256" in extra and "ckpt" in extra  # t-SNE / information plane: one checkpoint of several
    sha = extra.get("sha256") if several else record.get("checkpoint_sha256")
    made = ckpts.get(sha or "")
    if several:
        pretrain = (made or {}).get("protocol") or {}
        stand_in = per_checkpoint(record, {sha: pretrain})  # the measured checkpoint's identity and settings
        method, student = stand_in["method"], stand_in["student"]
        pool, setting = setting_id(stand_in), None
    else:
        method, student = record.get("method"), record.get("student")
        pretrain = (record.get("protocol") or {}).get("pretrain") or {}
        pool = setting = setting_id(record)
        pool += _digest(extra)  # e.g. a KD probe's or an architecture's extra fields
    if made is not None and made["method"] == "random-init":
        method = "random-init"
    return Obs(
        record=record,
        value=float(record["value"]),
        sha=sha,
        method=method,
        student=student,
        pretrain=pretrain,
        pretrained_on=(made or {}).get("dataset"),
        pool=pool,
        setting=setting,
        eval_context=_eval_context(record),
    )


def _at_last_epoch(obs: list[Obs]) -> list[Obs]:
    """One value per checkpoint and eval step: the one at its last recorded epoch."""
    last: dict[tuple, Obs] = {}
    for o in obs:
        key = (o.sha, o.record.get("step"), o.record.get("config_hash"))
        epoch = (o.record.get("extra") or {}).get("epoch", 0)
        if key not in last or epoch > (last[key].record.get("extra") or {}).get("epoch", 0):
            last[key] = o
    return list(last.values())


# --- groups and verdicts ---------------------------------------------------------------------------


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
            return f"{self.mean:.4g} (n=1){link}"
        return f"{self.mean:.4g} ± {self.std:.3g} (n={len(self.values)}){link}"


def verdict(rule: str, left: Group, right: Group, margin: float = 0.0) -> tuple[float, float, str]:
    """(gap, bar, verdict) by the rules in this module's docstring (both arms with enough seeds)."""
    gap = left.mean - right.mean
    bar = 2 * max((s for s in (left.std, right.std) if s is not None), default=0.0)
    if rule == "less":
        gap_, bar_, v = verdict("greater", right, left, margin)
        return -gap_, bar_, v
    if rule == "greater":
        if gap > max(bar, margin):
            return gap, bar, HOLDS
        # clearly reversed, or clearly short of the margin the claim asks for
        return gap, bar, FAILS if gap < -bar or (margin and gap + bar < margin) else INCONCLUSIVE
    if rule == "at_least":
        return gap, bar, HOLDS if gap >= 0 else FAILS if gap < -bar else INCONCLUSIVE
    if rule == "similar":
        return gap, bar, HOLDS if abs(gap) <= bar else FAILS
    raise ValueError(f"unknown rule {rule!r}")


@dataclass
class Row:
    claim: Claim
    student: str | None
    dataset: str
    left: Group
    right: Group
    gap: float
    bar: float
    verdict: str
    note: str = ""
    right_student: str | None = None  # the other arm's student, when the claim compares across students
    pretrained_on: str | None = None  # the data both arms were pre-trained on (a random init: none)
    seeded: bool = True  # both arms have the seeds they need (else the row is no evidence either way)


def _context_key(o: Obs, claim: Claim, with_student: bool) -> tuple:
    """What two arms must share (pre-training data aside: see _rows_for)."""
    budget = tuple(o.pretrain.get(k) for k in claim.budget()) if claim.same_budget else ()
    return (o.record.get("dataset"), o.eval_context, o.student if with_student else None, budget)


def _pools(obs: list[Obs]) -> list[tuple[Group, list[Obs]]]:
    by: dict[str, list[Obs]] = {}
    for o in obs:
        by.setdefault(o.pool, []).append(o)
    pools = sorted(by.values(), key=lambda p: (-len(p), p[0].pool))
    return [(Group(tuple(o.value for o in p), p[0].setting), p) for p in pools]


def _on_subset(record: dict, claim: Claim) -> bool:
    """Semi-supervised records name their labelled subset (DATASET@1%); the others have none."""
    dataset = str(record.get("dataset"))
    return dataset.endswith(claim.dataset_suffix) if claim.dataset_suffix else "@" not in dataset


def claim_rows(records: list[dict], claims: tuple[Claim, ...] = CLAIMS) -> list[Row]:
    """Every (claim, context, left setting, right setting) the records allow, with its verdict."""
    ckpts = checkpoints(records)
    teacher_shas = {
        (p.get("teacher_ckpt") or {}).get("sha256")
        for c in ckpts.values()
        if isinstance(p := c["protocol"], dict) and isinstance(p.get("teacher_ckpt"), dict)
    } - {None}
    rows: list[Row] = []
    for claim in claims:
        obs = [
            o
            for r in records
            if r.get("task") == claim.task and r.get("metric") == claim.metric and _on_subset(r, claim)
            if (o := observe(r, ckpts)) is not None
        ]
        if claim.last_epoch:
            obs = _at_last_epoch(obs)
        left = [o for o in obs if claim.left.selects(o, teacher_shas)]
        right = [o for o in obs if claim.right.selects(o, teacher_shas)]
        rows += _rows_for(claim, left, right)
    return rows


def _rows_for(claim: Claim, left: list[Obs], right: list[Obs]) -> list[Row]:
    teacher_side = claim.left.teacher or claim.right.teacher
    with_student = claim.same_student and not teacher_side
    rows = []
    contexts: dict[tuple, tuple[list[Obs], list[Obs]]] = {}
    untrained: list[tuple[int, Obs]] = []  # random inits: pre-trained on nothing, they join every context
    for side, obs in ((0, left), (1, right)):
        for o in obs:
            if o.pretrained_on is None and o.method == "random-init":
                untrained.append((side, o))
                continue
            contexts.setdefault(_context_key(o, claim, with_student) + (o.pretrained_on,), ([], []))[
                side
            ].append(o)
    for side, o in untrained:
        partial = _context_key(o, claim, with_student)
        for key, sides in contexts.items():
            if key[:-1] == partial:
                sides[side].append(o)
    for (dataset, *_), (lefts, rights) in contexts.items():
        for lg, lp in _pools(lefts):
            for rg, rp in _pools(rights):
                if not _same_teacher(claim, lp, rp):
                    continue
                rows.append(_row(claim, dataset, lg, lp, rg, rp))
    return rows


def _same_teacher(claim: Claim, lp: list[Obs], rp: list[Obs]) -> bool:
    """Distillers compare only from one teacher; a teacher arm only against its own students (or,
    for a random init, the same architecture); MoCo-v2 alone has no teacher and meets any."""
    if claim.left.teacher or claim.right.teacher:
        teacher, other = (lp, rp) if claim.left.teacher else (rp, lp)
        shas = {o.teacher_sha for o in other} - {None}
        if shas:
            return {o.sha for o in teacher} <= shas
        if all(o.method == "random-init" for o in other):
            return {o.student for o in other} == {o.student for o in teacher} or not claim.same_student
        return True
    a, b = {o.teacher_sha for o in lp}, {o.teacher_sha for o in rp}
    return None in a or None in b or a == b


def _row(claim: Claim, dataset: str, lg: Group, lp: list[Obs], rg: Group, rp: list[Obs]) -> Row:
    short = [arm.name for arm, g in ((claim.left, lg), (claim.right, rg)) if len(g.values) < arm.min_seeds]
    if short:
        gap, bar, _ = verdict(claim.rule, lg, rg, claim.margin)
        need = ", ".join(short)
        v, note = (
            INCONCLUSIVE,
            f"needs ≥ {claim.left.min_seeds if short[0] == claim.left.name else claim.right.min_seeds} seeds: {need}",
        )
    elif claim.min_signal is not None and max(lg.mean, rg.mean) < claim.min_signal:
        gap, bar, _ = verdict(claim.rule, lg, rg, claim.margin)
        v, note = INCONCLUSIVE, f"no signal: both below {claim.min_signal:g}"
    else:
        gap, bar, v = verdict(claim.rule, lg, rg, claim.margin)
        note = f"margin {claim.margin:g}" if claim.margin else ""
    trained = next((o.pretrained_on for o in lp + rp if o.pretrained_on is not None), None)
    return Row(claim, lp[0].student, dataset, lg, rg, gap, bar, v, note, rp[0].student, trained, not short)


# --- what the leaderboard shows --------------------------------------------------------------------


def reproduced(rows: list[Row]) -> list[dict]:
    """Per claim and student: the verdict on each pre-training dataset (a transfer task's rows count
    for the data its checkpoints were pre-trained on), and whether it holds on two or more datasets
    and on every one it was checked on (a claim counts as reproduced only then)."""
    by: dict[tuple, dict[str, list[str]]] = {}
    decided = {(r.claim.key, r.student, r.pretrained_on or r.dataset) for r in rows if r.seeded}
    for r in rows:
        base = r.pretrained_on or r.dataset.split("@")[0]
        if not r.seeded and (r.claim.key, r.student, r.pretrained_on or r.dataset) in decided:
            continue  # a one-seed variant (e.g. the paper probe of seed 0) does not overrule a seeded row
        student = r.right_student if r.claim.left.teacher else r.student  # the student a teacher row is about
        by.setdefault((r.claim.key, student), {}).setdefault(base, []).append(r.verdict)
    out = []
    for claim in CLAIMS:
        for (key, student), per in by.items():
            if key != claim.key:
                continue
            # a dataset with several seeded rows (variants) counts as holding only if every one holds
            each = {d: HOLDS if all(v == HOLDS for v in vs) else _worst(vs) for d, vs in per.items()}
            out.append(
                {
                    "claim": claim,
                    "student": student,
                    "verdicts": each,
                    "reproduced": len(each) >= 2 and all(v == HOLDS for v in each.values()),
                }
            )
    return out


def _worst(verdicts: list[str]) -> str:
    return FAILS if FAILS in verdicts else INCONCLUSIVE


def probe_agreement(records: list[dict]) -> list[dict]:
    """Per dataset and pre-training seed: whether the fast probe and the paper probe order the same
    checkpoints (one per method and setting) the same way, counted in swapped pairs (Kendall)."""
    ckpts = checkpoints(records)
    by: dict[tuple, dict[str, dict[str, tuple[float, str]]]] = {}
    for r in records:
        if r.get("task") != "linear" or r.get("metric") != "top1" or (r.get("extra") or {}).get("arch"):
            continue
        probe = ((r.get("protocol") or {}).get("eval") or {}).get("protocol")
        o = observe(r, ckpts)
        if probe not in ("fast", "paper") or o is None or o.sha is None:
            continue
        key = (r.get("dataset"), o.pretrain.get("seed"))
        name = r.get("label") or f"{o.method} {o.student}"
        by.setdefault(key, {}).setdefault(o.sha, {})[probe] = (o.value, name)
    out = []
    for (dataset, seed), per in sorted(by.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        both = {sha: v for sha, v in per.items() if "fast" in v and "paper" in v}
        if len(both) < 2:
            continue
        items = sorted(both.values(), key=lambda v: -v["paper"][0])
        pairs = [(a, b) for i, a in enumerate(items) for b in items[i + 1 :]]
        swapped = sum(
            1 for a, b in pairs if (a["fast"][0] - b["fast"][0]) * (a["paper"][0] - b["paper"][0]) < 0
        )
        out.append(
            {
                "dataset": dataset,
                "seed": seed,
                "paper_order": [(v["paper"][1], v["paper"][0]) for v in items],
                "fast_order": [
                    (v["fast"][1], v["fast"][0]) for v in sorted(both.values(), key=lambda v: -v["fast"][0])
                ],
                "pairs": len(pairs),
                "swapped": swapped,
                "tau": 1 - 2 * swapped / len(pairs),
            }
        )
    return out


VERDICT_TEXT = {HOLDS: "holds", FAILS: "**does not hold**", INCONCLUSIVE: "inconclusive"}
RULE_TEXT = {"greater": ">", "at_least": "≥", "less": "<", "similar": "≈"}


def claims_section(records: list[dict]) -> list[str]:
    """Markdown lines of the claims tables, or nothing when no claim has both arms in the records."""
    rows = claim_rows(records)
    agreement = probe_agreement(records)
    if not rows and not agreement:
        return []
    lines = [
        "## The paper's claims, checked on these records",
        "",
        "Mean ± std over the seeds of one setting; two arms are compared only with the same dataset, "
        "evaluation settings, pre-training data and (unless the claim spans students) student and "
        "pre-training budget, distillers only from one teacher checkpoint (`disco_bench/claims.py`). "
        "bar = twice the larger std. `>`: holds if the gap exceeds the bar, does not hold if it is below "
        "−bar, else inconclusive; `≥`: holds if the gap is ≥ 0, does not hold below −bar; `≈`: holds if "
        f"|gap| ≤ bar; `<`: `>` reversed. Each arm needs {MIN_SEEDS} seeds (a teacher or a random init: 1).",
        "",
    ]
    if rows:
        lines += [
            "| where | claim | student | dataset (← pre-trained on) | left | right | gap | bar | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            student = r.student if r.right_student == r.student else f"{r.student} vs {r.right_student}"
            note = f" ({r.note})" if r.note else ""
            trained = f" ← {r.pretrained_on}" if r.pretrained_on and r.pretrained_on not in r.dataset else ""
            lines.append(
                f"| {r.claim.table} | {r.claim.text} | {student} | {r.dataset}{trained} | "
                f"{r.claim.left.name} {r.left.text()} | {r.claim.right.name} {r.right.text()} | "
                f"{r.gap:+.4g} | {RULE_TEXT[r.claim.rule]} {r.bar:.3g} | {VERDICT_TEXT[r.verdict]}{note} |"
            )
        lines.append("")
    summary = reproduced(rows)
    if summary:
        datasets = sorted({d for s in summary for d in s["verdicts"]})
        lines += [
            "### Reproduced on every dataset",
            "",
            "Columns: the data the checkpoints were pre-trained on (a transfer task counts for it). A claim "
            "counts as reproduced only where it holds on two or more datasets and on each of them.",
            "",
            "| where | claim | student | " + " | ".join(datasets) + " | reproduced |",
            "|---|---|---|" + "---|" * len(datasets) + "---|",
        ]
        for s in summary:
            cells = " | ".join(
                VERDICT_TEXT[s["verdicts"][d]] if d in s["verdicts"] else "—" for d in datasets
            )
            lines.append(
                f"| {s['claim'].table} | {s['claim'].text} | {s['student']} | {cells} | "
                f"{'**yes**' if s['reproduced'] else 'no'} |"
            )
        lines.append("")
    if agreement:
        lines += [
            "### Fast probe against the paper probe",
            "",
            "The same checkpoints probed both ways; the fast probe earns its place where it orders "
            "them as the paper protocol does (swapped pairs = pairs the two probes order differently).",
            "",
            "| dataset | seed | paper probe, best first | fast probe, best first | swapped pairs | Kendall τ | same order |",
            "|---|---|---|---|---|---|---|",
        ]
        for a in agreement:
            paper = "; ".join(f"{n} {v:.1f}" for n, v in a["paper_order"])
            fast = "; ".join(f"{n} {v:.1f}" for n, v in a["fast_order"])
            same = "yes" if a["swapped"] == 0 else "**no**"
            lines.append(
                f"| {a['dataset']} | {a['seed']} | {paper} | {fast} | {a['swapped']} of {a['pairs']} | "
                f"{a['tau']:+.2f} | {same} |"
            )
        lines.append("")
    return lines
