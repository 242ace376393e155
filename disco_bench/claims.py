"""The paper's claims, checked on whatever records a run produced: one verdict per claim, student and
dataset, each from a confidence interval (``disco_bench.stats``), corrected for the number of claims
on the board.

A claim is the paper's statement: two *arms* (e.g. DisCo with hidden 2048 against SEED) on one task
and metric, a direction (``greater``, ``less``, ``non_inferior``, ``equivalent``), the margin the
paper's words declare (in the metric's units; "a large margin" is a size, "improves" is not), its
source with a short quote, and, where the paper's own numbers contradict its sentence, a caveat
shown beside the verdict. All of it is declared here, before any record is read.

Two arms are set side by side only in one *context*: the same evaluation dataset, split and settings, the
same pre-training data (name and fingerprint), and, unless the claim says otherwise, the same
student, pre-training budget and teacher checkpoint. Within a context each arm's checkpoints pool over
seeds only when every other setting is equal (the table's ``pool``); a variant is its own row.

Per row: the difference mean(left) − mean(right) with its 95 % interval, paired by seed when both
arms have the same seeds (each seed's initialisation, data order and augmentation draws are shared),
Welch otherwise, or a one-sample interval against a single fixed checkpoint (a teacher). The claim's
one-sided test against its margin gives p(holds), the opposite test p(does not hold); both are
Holm-adjusted over every tested row of the board, and a row *holds* or *does not hold* when its
adjusted p is below 0.025 (without correction: the interval's bound beyond the margin), else it is
*inconclusive* and says how many seeds the observed spread would need. A claim is *reproduced* when
it holds on each of two or more pre-training datasets (``docs/method.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from disco_bench.leaderboard.table import rows_of
from disco_bench.stats import (
    ALPHA,
    MAX_SEEDS,
    PAIRED,
    RULE_SYMBOL,
    Difference,
    difference,
    holm,
    rule_test,
    seeds_needed,
)

MIN_SEEDS = 2  # values per arm before an interval exists (a fixed checkpoint: 1)
DETECTION_SIGNAL = 1.0  # AP50 (%): below it on both sides a detector found (next to) nothing
# Declared sizes of the paper's words, in points of the metric (top-1 %, AP): a "large margin" and an
# "obvious improvement" must exceed these; "improves" and "significant" only need the direction.
LARGE_MARGIN = 2.0
OBVIOUS = 1.0
# Equivalence bands: "brings no further gain" within ±1 point; "similar I(T;Y)" within ±0.1 bits.
SAME_TOP1 = 1.0
SAME_BITS = 0.1
# Pre-training fields two arms must share to be compared (their "budget"); everything else (method,
# head width, lambda, ...) is what a claim compares. The random seed is never part of it.
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
SAME = 1e-9  # a spread below this share of the values' size is rounding: the seeds agree exactly


@dataclass(frozen=True)
class Arm:
    """One side of a claim: checkpoints of ``methods`` whose pre-training protocol has the ``where`` values
    (probed with or without KD at the probe stage); ``teacher=True`` instead selects the teachers the
    context's distillers learned from. ``min_seeds`` 1 marks a single fixed checkpoint."""

    name: str
    methods: tuple[str, ...] = ()
    where: tuple[tuple[str, object], ...] = ()
    teacher: bool = False
    min_seeds: int = MIN_SEEDS
    kd: bool = False

    def selects(self, obs: Obs, teacher_shas: set[str]) -> bool:
        if self.teacher:
            return obs.sha in teacher_shas
        if obs.sha in teacher_shas or obs.kd != self.kd:  # a teacher belongs to the teacher arm only
            return False
        return obs.method in self.methods and all(obs.pretrain.get(k) == v for k, v in self.where)


@dataclass(frozen=True)
class Claim:
    key: str
    source: str  # where the paper makes it: "Table 1", "Section 4.2", ...
    quote: str  # the paper's words (or numbers) the claim encodes
    text: str  # the claim in words, left arm first
    task: str
    metric: str
    left: Arm
    right: Arm
    rule: str  # greater | less | non_inferior | equivalent
    margin: float = 0.0  # declared before any record is read (see LARGE_MARGIN, SAME_TOP1, ...)
    caveat: str = ""  # where the paper's own numbers contradict its sentence
    same_student: bool = True
    same_budget: bool = True
    same_teacher: bool = True  # distillers only from one teacher checkpoint
    same_head: bool = False  # both arms with one student head width (the ablation's)
    dataset_suffix: str = ""  # semisup records name their subset: DATASET@1%
    last_epoch: bool = False  # information plane: one value per checkpoint, at its last epoch
    # Below this on both sides the task measured nothing (a detector that finds no box): inconclusive,
    # however the arithmetic comes out.
    min_signal: float | None = None
    setup: bool = False  # a check of the benchmark's setup (head-room, the floor), not the paper's finding

    def budget(self) -> tuple[str, ...]:
        """The BUDGET fields both arms' methods read (SEED has no key encoder, so DisCo and SEED
        share no key momentum); a pre-training records only the fields its method reads."""
        from pretrain.config import method_reads
        from pretrain.methods import METHODS

        methods = [m for m in (*self.left.methods, *self.right.methods) if m in METHODS]
        return tuple(k for k in BUDGET if all(method_reads(m, k) for m in methods))


def _arm(name: str, *methods: str, teacher: bool = False, min_seeds: int = MIN_SEEDS, kd: bool = False,
         **where) -> Arm:  # fmt: skip
    return Arm(name, methods, tuple(sorted(where.items())), teacher, min_seeds, kd)


# The arms the claims compare. SEED is the distillation method of Fang et al. (``method="seed"``), not a
# random seed (an observation's ``seed``).
DISCO = _arm("DisCo (hidden 2048)", "disco", hidden=2048)
DISCO_STAR = _arm("DisCo* (hidden = feature width)", "disco*")
DISCO_ANY_HEAD = _arm("DisCo", "disco", "disco*")
MOCO = _arm("MoCo-v2 alone", "moco")
SEED = _arm("SEED", "seed")
TEACHER = _arm("teacher", teacher=True, min_seeds=1)
RANDOM = _arm("random init", "random-init")
MSE_ONLY = _arm("MSE only", "distill-only")

T1 = "Table 1: DisCo R-50 66.5 / 66.6 / 64.4 / 60.6 / 62.5 against MoCo-v2 46.8 / 48.4 / 36.2 / 52.2 / 56.8"
LARGE = 'Section 4.2: DisCo surpasses SEED "with a large margin on all lightweight models"'
T5_KD = "Table 5: KD 46.5 / 48.5 / 37.3 / 51.5 against MoCo-v2 alone 46.8 / 48.4 / 36.2 / 52.2 (Table 1)"


def _pair_claims(source: str, task: str, metric: str, quotes: tuple[str, str], suffix: str = "",
                 seed_margin: float = 0.0) -> list[Claim]:  # fmt: skip
    """DisCo against MoCo-v2 alone and against SEED on one task (``quotes``: the paper's words on each)."""
    where = f"{task}{suffix}"
    size = f" by > {seed_margin:g}" if seed_margin else ""
    return [
        Claim(f"{where}-moco", source, quotes[0], "DisCo > MoCo-v2 alone", task, metric, DISCO, MOCO, "greater",
              dataset_suffix=suffix),
        Claim(f"{where}-seed", source, quotes[1], f"DisCo > SEED{size}", task, metric, DISCO, SEED, "greater",
              seed_margin, dataset_suffix=suffix),
    ]  # fmt: skip


ABSTRACT = 'abstract: Eff-B0 "improved by 22.1% and 19.7%" with R-101 / R-50 teachers; ' + T1
FIG5 = "Figure 5: DisCo's students above MoCo-v2's and SEED's with 1 % and 10 % of the labels"
FIG6 = "Figure 6: DisCo's students above MoCo-v2's and SEED's in CIFAR-10/100 linear transfer"


def _detection_claims(metric: str, layout: str) -> list[Claim]:
    """Table 2 on either layout (VOC: Faster R-CNN AP50; COCO: Mask R-CNN box AP50), and the check
    that detection at this scale has signal at all: the teacher against its random-init backbone."""
    quote = '"obvious improvement" over MoCo-v2 alone in detection and segmentation'
    return [
        Claim(f"det-moco-{layout}", "Table 2", quote, f"DisCo > MoCo-v2 alone by > {OBVIOUS:g} ({layout} {metric})",
              "detection", metric, DISCO, MOCO, "greater", OBVIOUS, min_signal=DETECTION_SIGNAL),
        Claim(f"det-teacher-{layout}", "Setup", "detection at this scale must tell trained weights from none",
              f"teacher > its random-init backbone ({layout} {metric})", "detection", metric, TEACHER,
              _arm("random init", "random-init", min_seeds=1), "greater", same_budget=False,
              min_signal=DETECTION_SIGNAL, setup=True),
    ]  # fmt: skip


def _width(hidden: int) -> Arm:
    name = "no hidden layer" if hidden == 0 else f"hidden {hidden}"
    return _arm(name, "disco", "disco*", hidden=hidden)


def _teacher_arm(arch: str) -> Arm:
    """DisCo students of one teacher architecture (the pre-training protocol's ``teacher``)."""
    return Arm(f"DisCo from {arch}", ("disco",), (("hidden", 2048), ("teacher", arch)))


T4 = "Table 4: none 52.5 / 60.3 / 52.5, 512: 62.5 / 62.8 / 57.1, 1024: 65.0 / 63.8 / 59.2, 2048: 66.5 / 64.4 / 60.6"

# The registry: every claim the leaderboard checks. A new claim is one entry here.
CLAIMS: tuple[Claim, ...] = (
    *_pair_claims("Table 1, Section 4.2", "linear", "top1", (ABSTRACT, LARGE), seed_margin=LARGE_MARGIN),
    Claim("linear-seed-star", "Table 3", "Table 3: DisCo* 65.6 / 63.8 / 57.1 / 58.9 against SEED 61.3 / 55.2 / 57.6 / 58.5",
          "DisCo* (SEED's head width) > SEED", "linear", "top1", DISCO_STAR, SEED, "greater"),
    Claim("larger-teacher-r101", "Table 1, Section 4.2", '"students benefit from larger teachers"; Eff-B0 68.9 with R-101, 66.5 with R-50',
          "DisCo from R-101 > DisCo from R-50", "linear", "top1", _teacher_arm("resnet101"), _teacher_arm("resnet50"),
          "greater", same_teacher=False),
    Claim("larger-teacher-r152", "Table 1, Section 4.2", '"students benefit from larger teachers"; R-34 68.1 with R-152, 62.5 with R-50',
          "DisCo from R-152 > DisCo from R-50", "linear", "top1", _teacher_arm("resnet152"), _teacher_arm("resnet50"),
          "greater", same_teacher=False),
    Claim("headroom-moco", "Setup", "a teacher must leave room to distil", "teacher well above MoCo-v2 alone (by > 10)",
          "linear", "top1", TEACHER, MOCO, "greater", 10.0, same_student=False, same_budget=False, setup=True),
    Claim("headroom-random", "Setup", "a teacher must leave room to distil", "teacher well above a random-init student (by > 10)",
          "linear", "top1", TEACHER, RANDOM, "greater", 10.0, same_student=False, same_budget=False, setup=True),
    # Sanity: pre-training must beat the random-init floor, or no ordering of methods means anything.
    Claim("floor-moco", "Setup", "pre-training must beat no pre-training", "MoCo-v2 alone > a random-init student",
          "linear", "top1", MOCO, RANDOM, "greater", same_budget=False, setup=True),
    Claim("floor-disco", "Setup", "pre-training must beat no pre-training", "DisCo > a random-init student",
          "linear", "top1", DISCO, RANDOM, "greater", same_budget=False, setup=True),
    Claim("t3-bottleneck", "Table 3", "Table 3: DisCo* 65.6 / 63.8 / 57.1 / 58.9, DisCo 66.5 / 64.4 / 60.6 / 62.5",
          "DisCo (hidden 2048) > DisCo* (hidden = feature width)", "linear", "top1", DISCO, DISCO_STAR, "greater"),
    Claim("t4-512", "Table 4", T4, "hidden 512 > no hidden layer", "linear", "top1", _width(512), _width(0), "greater"),
    Claim("t4-1024", "Table 4", T4, "hidden 1024 > hidden 512", "linear", "top1", _width(1024), _width(512), "greater"),
    Claim("t4-2048", "Table 4", T4, "hidden 2048 > hidden 1024", "linear", "top1", DISCO, _width(1024), "greater"),
    Claim("t5-at", "Table 5", "Table 5: AT 57.1 / 58.2 / 51.0 / 56.2, DisCo 66.5 / 66.6 / 64.4 / 60.6",
          "DisCo > AT", "linear", "top1", DISCO, _arm("AT", "at"), "greater"),
    Claim("t5-rkd", "Table 5", "Table 5: RKD 48.3 / 50.3 / 36.9 / 56.4, DisCo 66.5 / 66.6 / 64.4 / 60.6",
          "DisCo > RKD", "linear", "top1", DISCO, _arm("RKD", "rkd"), "greater"),
    Claim("t5-kd", "Table 5", "Table 5: KD 46.5 / 48.5 / 37.3 / 51.5, DisCo 66.5 / 66.6 / 64.4 / 60.6",
          "DisCo > KD (MoCo-v2 student, KD at the probe)", "linear", "top1", DISCO, _arm("KD", "moco", kd=True),
          "greater", same_teacher=False),
    Claim("t5-improve-at", "Table 5", '"all distillation approaches bring improvement"', "AT > MoCo-v2 alone",
          "linear", "top1", _arm("AT", "at"), MOCO, "greater"),
    Claim("t5-improve-rkd", "Table 5", '"all distillation approaches bring improvement"', "RKD > MoCo-v2 alone",
          "linear", "top1", _arm("RKD", "rkd"), MOCO, "greater"),
    Claim("t5-improve-kd", "Table 5", '"all distillation approaches bring improvement"',
          "KD > MoCo-v2 alone (KD at the probe)", "linear", "top1", _arm("KD", "moco", kd=True), MOCO, "greater",
          caveat=f"the paper's own numbers disagree: {T5_KD}", same_teacher=False),
    Claim("t5-at-disco", "Table 5", "Table 5: AT + DisCo 66.7 / 66.3 / 64.1 / 60.0, DisCo 66.5 / 66.6 / 64.4 / 60.6",
          f"AT + DisCo ≈ DisCo (±{SAME_TOP1:g})", "linear", "top1", _arm("AT + DisCo", "at+disco"), DISCO,
          "equivalent", SAME_TOP1),
    Claim("t5-rkd-disco", "Table 5", "Table 5: RKD + DisCo 66.8 / 66.5 / 64.4 / 60.6, DisCo 66.5 / 66.6 / 64.4 / 60.6",
          f"RKD + DisCo ≈ DisCo (±{SAME_TOP1:g})", "linear", "top1", _arm("RKD + DisCo", "rkd+disco"), DISCO,
          "equivalent", SAME_TOP1),
    Claim("t5-kd-disco", "Table 5", "Table 5: KD + DisCo 65.8 / 65.9 / 65.2 / 60.6, DisCo 66.5 / 66.6 / 64.4 / 60.6",
          f"KD + DisCo ≈ DisCo (±{SAME_TOP1:g})", "linear", "top1", _arm("KD + DisCo", "disco", hidden=2048, kd=True),
          DISCO, "equivalent", SAME_TOP1),
    Claim("ablation-moco", "Ablation", "ablation (head = feature width): MSE only 65.6 / 58.9 / 54.5, MoCo-v2 46.8 / 36.2 / 52.2",
          "MSE only > MoCo-v2 alone", "linear", "top1", MSE_ONLY, MOCO, "greater"),
    Claim("ablation-disco", "Ablation", "ablation (head = feature width): DisCo 65.6 / 63.7 / 57.1, MSE only 65.6 / 58.9 / 54.5",
          "DisCo > MSE only (same head)", "linear", "top1", DISCO_ANY_HEAD, MSE_ONLY, "greater", same_head=True,
          caveat="the paper's own numbers tie on EfficientNet-B0 (65.6 both)"),
    *_pair_claims("Figure 5, 1 % labels", "semisup", "top1", (FIG5, FIG5), "@1%"),
    *_pair_claims("Figure 5, 10 % labels", "semisup", "top1", (FIG5, FIG5), "@10%"),
    *_pair_claims("Figure 6, CIFAR transfer", "cifar", "top1", (FIG6, FIG6)),
    *_detection_claims("AP50", "VOC"),
    *_detection_claims("box_AP50", "COCO"),
    Claim("testbed-swav", "SwAV testbed", '"significant improvement"; Eff-B0 46.8 -> 62.4, Mob-v3 19.4 -> 55.7',
          "SwAV + DisCo > SwAV alone", "linear", "top1", _arm("SwAV + DisCo", "swav+disco"), _arm("SwAV", "swav"),
          "greater", same_teacher=False),
    Claim("testbed-dino", "DINO testbed", '"significant improvement"; ViT-Tiny 63.2 -> 68.4, XCiT-Tiny 67.0 -> 71.1',
          "DINO + DisCo > DINO alone", "linear", "top1", _arm("DINO + DisCo", "dino+disco"), _arm("DINO", "dino"),
          "greater", same_teacher=False),
    Claim("tsne-silhouette", "t-SNE", "DisCo's classes are better separated than MoCo-v2's (figure)",
          "DisCo separates classes better than MoCo-v2 alone (silhouette)", "tsne", "silhouette", DISCO, MOCO,
          "greater"),
    Claim("tsne-knn", "t-SNE", "DisCo's classes are better separated than MoCo-v2's (figure)",
          "DisCo separates classes better than MoCo-v2 alone (5-NN %)", "tsne", "knn5_top1", DISCO, MOCO, "greater"),
    Claim("mi-xt", "Information plane", "the wider head compresses more: smaller I(X;T) (figure)",
          "hidden 2048 has a smaller I(X;T) than hidden 512", "mi", "mi_xt_bits", DISCO, _width(512), "less",
          last_epoch=True),
    Claim("mi-ty", "Information plane", "both heads keep the label information: similar I(T;Y) (figure)",
          f"hidden 2048 has a similar I(T;Y) to hidden 512 (±{SAME_BITS:g} bits)", "mi", "mi_ty_bits", DISCO,
          _width(512), "equivalent", SAME_BITS, last_epoch=True),
)  # fmt: skip


# --- the table's rows as observations --------------------------------------------------------------


@dataclass(frozen=True)
class Obs:
    """One measured value of one checkpoint: a row of the tidy table, in the claims' terms."""

    value: float
    sha: str | None
    method: str | None
    student: str | None
    seed: object
    pretrain: dict
    data_key: str | None  # the pre-training data: its fingerprint, else its name (None: a random init)
    data_name: str | None
    pool: str  # checkpoints with equal pools differ only by their random seed
    setting: str | None  # the leaderboard's setting id (its link)
    eval_context: str
    dataset: str
    split: str | None
    kd: bool
    teacher_sha: str | None
    step: str | None
    config_hash: str | None
    epoch: object
    degenerate: str | None
    probe: str | None = None  # a linear probe's protocol: fast or paper


# the table's columns an observation reads
OBSERVED = (
    "record", "value", "checkpoint_sha256", "method", "student", "pretrain_seed", "pretrain", "pretrain_data",
    "pretrained_on", "pool", "setting", "eval_context", "dataset", "split", "kd_probe", "teacher_sha256",
    "step", "config_hash", "degenerate", "settings", "task",
)  # fmt: skip


def observations(df: pd.DataFrame) -> list[Obs]:
    out = []
    for row in rows_of(df, *OBSERVED):
        record = row.record
        extra = record.get("extra") or {}
        several = "arch" in extra
        out.append(
            Obs(
                value=float(row.value),
                sha=row.checkpoint_sha256,
                method=row.method,
                student=row.student,
                seed=row.pretrain_seed,
                pretrain=row.pretrain,
                data_key=row.pretrain_data or row.pretrained_on,
                data_name=row.pretrained_on,
                pool=row.pool,
                setting=None if several else row.setting,
                eval_context=row.eval_context,
                dataset=str(row.dataset),
                split=row.split,
                kd=bool(row.kd_probe),
                teacher_sha=row.teacher_sha256,
                step=row.step,
                config_hash=row.config_hash,
                epoch=extra.get("epoch", 0),
                degenerate=row.degenerate,
                probe=(row.settings or {}).get("eval.protocol") if row.task == "linear" else None,
            )
        )
    return out


def _paper_probe_first(obs: list[Obs]) -> list[Obs]:
    """Where a checkpoint was probed both ways on a dataset, the claims read the paper's protocol
    (SGD on augmented crops); its fast proxy (a solver on centre-crop features) then shows only in
    the agreement table. The two can disagree most about random and barely trained features, which
    the proxy flatters (README, "The `cpu` tiers")."""
    papered = {(o.sha, o.dataset) for o in obs if o.probe == "paper"}
    return [o for o in obs if not (o.probe == "fast" and (o.sha, o.dataset) in papered)]


def _at_last_epoch(obs: list[Obs]) -> list[Obs]:
    """One value per checkpoint and eval step: the one at its last recorded epoch."""
    last: dict[tuple, Obs] = {}
    for o in obs:
        key = (o.sha, o.step, o.config_hash)
        if key not in last or o.epoch > last[key].epoch:
            last[key] = o
    return list(last.values())


# --- groups and verdicts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    values: tuple[float, ...]  # one per checkpoint (its records averaged)
    seeds: tuple = ()
    setting: str | None = None  # the one setting its checkpoints share (leaderboard.matching.setting_id)
    records: int = 0  # the records behind the values, when more than one per seed

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float | None:
        if len(self.values) < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))

    def text(self) -> str:
        link = f" [setting {self.setting}](#setting-{self.setting})" if self.setting else ""
        n = f"n={len(self.values)}"
        if self.records > len(self.values):
            n += f"; {self.records} records, averaged per checkpoint"
        if self.std is None:
            return f"{self.mean:.4g} ({n}){link}"
        return f"{self.mean:.4g} ± {self.std:.3g} ({n}){link}"


@dataclass
class Row:
    claim: Claim
    student: str | None
    dataset: str
    left: Group
    right: Group
    diff: Difference | None
    p_holds: float | None = None  # one-sided, before correction
    p_fails: float | None = None
    p_holds_adj: float | None = None  # Holm over every tested row of the board
    p_fails_adj: float | None = None
    verdict: str = INCONCLUSIVE
    note: str = ""
    right_student: str | None = None  # the other arm's student, when the claim compares across students
    pretrained_on: str | None = None  # the data both arms were pre-trained on (a random init: none)
    data_key: str | None = None  # that data's identity: its content fingerprint, else its name
    data_names: tuple[str, ...] = ()  # every name the arms' pre-trainings gave that data
    tested: bool = False  # an interval exists and the task measured something (it is in the family)
    degenerate: str = ""  # why some of its numbers came from a degenerate state (shown beside it)

    @property
    def gap(self) -> float:
        return self.left.mean - self.right.mean


def _seeds_short(claim: Claim, left: Group, right: Group) -> list[str]:
    return [
        arm.name for arm, g in ((claim.left, left), (claim.right, right)) if len(g.values) < arm.min_seeds
    ]


def _row(claim: Claim, dataset: str, lg: Group, lp: list[Obs], rg: Group, rp: list[Obs]) -> Row:
    """One row of the board: the left arm's group ``lg`` (from its observations ``lp``) against the
    right arm's ``rg`` (from ``rp``), with its interval and test, or a note saying why there is none."""
    both = lp + rp
    trained = next((o.data_name for o in both if o.data_name is not None), None)
    row = Row(claim, lp[0].student, dataset, lg, rg, None, right_student=rp[0].student, pretrained_on=trained)
    row.data_key = next((o.data_key for o in both if o.data_key is not None), None)
    row.data_names = tuple(sorted({o.data_name for o in both if o.data_name is not None}))
    row.degenerate = "; ".join(sorted({o.degenerate for o in both if o.degenerate}))
    short = _seeds_short(claim, lg, rg)
    pair = (list(lg.seeds), list(rg.seeds)) if not (claim.left.teacher or claim.right.teacher) else None
    row.diff = None if short else difference(lg.values, rg.values, pair_by=pair)
    if short or row.diff is None:
        need = max(claim.left.min_seeds, claim.right.min_seeds, 2)
        row.note = f"needs ≥ {need} seeds: {', '.join(short) or 'both arms'}"
    elif claim.min_signal is not None and max(lg.mean, rg.mean) < claim.min_signal:
        row.note = f"no signal: both below {claim.min_signal:g}"
    elif row.diff.sd <= SAME * max(1.0, abs(lg.mean), abs(rg.mean)):
        # a spread of 0 from a few seeds (scores on a grid repeat) is no evidence that the true spread
        # is 0: a zero-width interval would call the claim certain
        row.note = "no spread: every seed gave the same " + (
            "difference" if row.diff.method == PAIRED else "value"
        )
    else:
        test = rule_test(row.diff, claim.rule, claim.margin)
        row.p_holds, row.p_fails, row.tested = test.p_holds, test.p_fails, True
    return row


def verdicts(p_holds: list[float], p_fails: list[float]) -> tuple[list[str], list[float], list[float]]:
    """The verdicts of one board's tested rows: (verdict, Holm-adjusted p(holds), adjusted
    p(does not hold)) per row, each side's p-values adjusted over the whole family."""
    adj_h, adj_f = holm(list(p_holds)), holm(list(p_fails))
    out = [
        HOLDS if h < ALPHA else FAILS if f < ALPHA else INCONCLUSIVE
        for h, f in zip(adj_h, adj_f, strict=True)
    ]
    return out, adj_h, adj_f


def decide(rows: list[Row]) -> None:
    """Holm over every tested row (one family per board), then each row's verdict and note."""
    tested = [r for r in rows if r.tested]
    found, adj_h, adj_f = verdicts([r.p_holds for r in tested], [r.p_fails for r in tested])
    for r, v, ph, pf in zip(tested, found, adj_h, adj_f, strict=True):
        r.verdict, r.p_holds_adj, r.p_fails_adj = v, ph, pf
        # "better" is a directional finding of its own: read at the board's (Bonferroni) correction
        better = r.diff.p_above(0.0) < ALPHA / len(tested)
        if v == FAILS and r.claim.rule == "greater" and r.claim.margin and better:
            r.note = f"better, but not by the declared {r.claim.margin:g}"
        if v == INCONCLUSIVE:
            n = seeds_needed(r.diff, r.claim.rule, r.claim.margin, ALPHA / len(tested))
            r.note = (
                "the observed difference is on the wrong side of the margin: more seeds would not make it hold"
                if n is None
                else f"would need > {MAX_SEEDS} seeds per arm"
                if n > MAX_SEEDS
                else f"≈ {n} seeds per arm would decide it at the observed spread and this board's correction"
            )


def _context_key(o: Obs, claim: Claim, with_student: bool) -> tuple:
    """What two arms must share (pre-training data aside: see _rows_for)."""
    budget = tuple(o.pretrain.get(k) for k in claim.budget()) if claim.same_budget else ()
    head = o.pretrain.get("hidden") if claim.same_head else None
    return (o.dataset, o.split, o.eval_context, o.student if with_student else None, budget, head)


def _pools(obs: list[Obs]) -> list[tuple[Group, list[Obs]]]:
    by: dict[str, list[Obs]] = {}
    for o in obs:
        by.setdefault(o.pool, []).append(o)
    pools = sorted(by.values(), key=lambda p: (-len(p), p[0].pool))
    return [(_per_checkpoint(p), p) for p in pools]


def _per_checkpoint(pool: list[Obs]) -> Group:
    """One value per checkpoint: a pre-trained checkpoint is the unit of replication, so one evaluated
    twice is one replicate, not two (counting it twice would narrow the interval on no new
    evidence). A record that names no checkpoint is a unit per seed, else of its own. Two checkpoints
    of one seed stay two values with one seed, which the pairing by seed refuses."""
    units: dict[object, list[Obs]] = {}
    for i, o in enumerate(pool):
        key = ("sha", o.sha) if o.sha else ("seed", str(o.seed)) if o.seed is not None else ("record", i)
        units.setdefault(key, []).append(o)
    values = tuple(sum(o.value for o in u) / len(u) for u in units.values())
    seeds = tuple(u[0].seed for u in units.values())
    return Group(values, seeds, pool[0].setting, records=len(pool))


def _on_subset(dataset: str, claim: Claim) -> bool:
    """Semi-supervised records name their labelled subset (DATASET@1%); the others have none."""
    return dataset.endswith(claim.dataset_suffix) if claim.dataset_suffix else "@" not in dataset


def claim_rows(df: pd.DataFrame, claims: tuple[Claim, ...] = CLAIMS) -> list[Row]:
    """Every (claim, context, left setting, right setting) the table allows, with its verdict."""
    if df.empty:
        return []
    teacher_shas = set(df.teacher_sha256.dropna())
    rows: list[Row] = []
    for claim in claims:
        sub = df[(df.task == claim.task) & (df.metric == claim.metric)]
        obs = _paper_probe_first([o for o in observations(sub) if _on_subset(o.dataset, claim)])
        if claim.last_epoch:
            obs = _at_last_epoch(obs)
        left = [o for o in obs if claim.left.selects(o, teacher_shas)]
        right = [o for o in obs if claim.right.selects(o, teacher_shas)]
        rows += _rows_for(claim, left, right)
    decide(rows)
    return rows


def _rows_for(claim: Claim, left: list[Obs], right: list[Obs]) -> list[Row]:
    teacher_side = claim.left.teacher or claim.right.teacher
    with_student = claim.same_student and not teacher_side
    rows = []
    contexts: dict[tuple, tuple[list[Obs], list[Obs]]] = {}
    untrained: list[tuple[int, Obs]] = []  # random inits: pre-trained on nothing, they join every context
    for side, obs in ((0, left), (1, right)):
        for o in obs:
            if o.method == "random-init" and o.data_key is None:
                untrained.append((side, o))
                continue
            key = _context_key(o, claim, with_student) + (o.data_key,)
            contexts.setdefault(key, ([], []))[side].append(o)
    for side, o in untrained:
        partial = _context_key(o, claim, with_student)
        for key, sides in contexts.items():
            if key[:-1] == partial:
                sides[side].append(o)
    for (dataset, *_), (lefts, rights) in contexts.items():
        for lg, lp in _pools(lefts):
            for rg, rp in _pools(rights):
                if _same_teacher(claim, lp, rp):
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
    if not claim.same_teacher:
        return True
    a, b = {o.teacher_sha for o in lp}, {o.teacher_sha for o in rp}
    return None in a or None in b or a == b


# --- across datasets -------------------------------------------------------------------------------


def reproduced_on(verdicts: dict[str, str]) -> bool:
    """Reproduced: holds on each of two or more pre-training datasets (an intersection-union test: each
    dataset's verdict is already at the board's corrected level, so no further correction is due)."""
    return len(verdicts) >= 2 and all(v == HOLDS for v in verdicts.values())


def reproduced(rows: list[Row]) -> list[dict]:
    """Per claim and student: the verdict on each pre-training dataset (a transfer task's rows count
    for the data its checkpoints were pre-trained on), and whether it is reproduced."""
    by: dict[tuple, dict[str, list[str]]] = {}
    decided = {_summary_cell(r) for r in rows if r.tested}
    for r in rows:
        key, student, base = _summary_cell(r)
        if not r.tested and (key, student, base) in decided:
            continue  # an untested variant (e.g. the paper probe of seed 0) does not overrule a tested row
        by.setdefault((key, student), {}).setdefault(base, []).append(r.verdict)
    label = _data_labels(rows)
    out = []
    for claim in CLAIMS:
        for (key, student), per in by.items():
            if key != claim.key:
                continue
            # a dataset with several rows (variants) counts as holding only if every one holds
            each = {label[d]: HOLDS if all(v == HOLDS for v in vs) else _worst(vs) for d, vs in per.items()}
            out.append(
                {"claim": claim, "student": student, "verdicts": each, "reproduced": reproduced_on(each)}
            )
    return out


def _summary_cell(r: Row) -> tuple[str, str | None, str]:
    """(claim, student, pre-training dataset) of the reproduction table a row counts for: a teacher
    row counts for the student it is compared with."""
    student = r.right_student if r.claim.left.teacher else r.student
    return r.claim.key, student, r.data_key or r.pretrained_on or r.dataset.split("@")[0]


def _data_labels(rows: list[Row]) -> dict[str, str]:
    """Pre-training data identity -> its column heading: the names its pre-trainings gave it (one content
    under two names is one dataset), with the fingerprint where one name covers two contents."""
    names: dict[str, set[str]] = {}
    for r in rows:
        key = _summary_cell(r)[2]
        names.setdefault(key, set()).update(r.data_names or [r.pretrained_on or r.dataset.split("@")[0]])
    shared = {n for key, ns in names.items() for n in ns if any(n in o for k, o in names.items() if k != key)}
    return {
        key: " / ".join(sorted(ns)) + (f" ({key[:8]})" if ns & shared else "") for key, ns in names.items()
    }


def _worst(verdicts: list[str]) -> str:
    return FAILS if FAILS in verdicts else INCONCLUSIVE


def probe_agreement(df: pd.DataFrame) -> list[dict]:
    """Per dataset and pre-training seed: whether the fast probe and the paper probe order the same
    checkpoints (one per method and setting) the same way, counted in swapped pairs (Kendall)."""
    if df.empty:
        return []
    by: dict[tuple, dict[str, dict[str, tuple[float, str]]]] = {}
    sub = df[(df.task == "linear") & (df.metric == "top1")]
    read = (
        "settings",
        "checkpoint_sha256",
        "record",
        "dataset",
        "pretrain_seed",
        "label",
        "method",
        "student",
        "value",
    )
    for row in rows_of(sub, *read):
        probe = row.settings.get("eval.protocol")
        if (
            probe not in ("fast", "paper")
            or row.checkpoint_sha256 is None
            or "arch" in (row.record.get("extra") or {})
        ):
            continue
        key = (row.dataset, row.pretrain_seed)
        name = row.label or f"{row.method} {row.student}"
        by.setdefault(key, {}).setdefault(row.checkpoint_sha256, {})[probe] = (row.value, name)
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


# --- what the leaderboard shows --------------------------------------------------------------------

VERDICT_TEXT = {HOLDS: "holds", FAILS: "**does not hold**", INCONCLUSIVE: "inconclusive"}


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _interval(r: Row) -> str:
    if r.diff is None:
        return f"{r.gap:+.4g} (no interval)"
    return f"{r.diff.diff:+.4g} [{r.diff.low:+.3g}, {r.diff.high:+.3g}]"


def _rule(claim: Claim) -> str:
    symbol = RULE_SYMBOL[claim.rule]
    if claim.rule == "equivalent":
        return f"{symbol} ±{claim.margin:g}"
    if claim.margin:
        return (
            f"{symbol} by {claim.margin:g}"
            if claim.rule in ("greater", "less")
            else f"{symbol} −{claim.margin:g}"
        )
    return symbol


def _notes(r: Row) -> str:
    parts = [p for p in (r.note, r.claim.caveat, r.degenerate and f"degenerate: {r.degenerate}") if p]
    return f" ({'; '.join(parts)})" if parts else ""


def claims_section(df: pd.DataFrame, rows: list[Row] | None = None, chart: str | None = None) -> list[str]:
    """Markdown lines of the claims tables, or nothing when no claim has both arms in the table
    (``rows``: the claims' rows when already computed; ``chart``: a picture of their intervals)."""
    rows = claim_rows(df) if rows is None else rows
    agreement = probe_agreement(df)
    if not rows and not agreement:
        return []
    family = sum(r.tested for r in rows)
    lines = [
        "## The paper's claims, checked on these records",
        "",
        "Each claim is the paper's statement with its direction and the margin its words declare "
        "(`disco_bench/claims.py`, declared before any record is read). Two arms meet only with the same "
        "dataset, split, evaluation settings and pre-training data and (unless the claim spans them) student, "
        "pre-training budget and teacher checkpoint. *difference* is mean(left) − mean(right) with its 95 % "
        "interval: paired by seed when both arms have the same seeds, Welch otherwise, one-sample against "
        "a single teacher checkpoint (the *test* column). `>` holds when the interval's lower bound exceeds "
        "the margin, `≥` when it exceeds −margin, `≈` when the interval lies inside ±margin (two one-sided "
        "tests), `<` mirrors `>`; a claim does not hold when the interval lies on the other side (for `≈`, "
        "outside the band, each side at half the level). The "
        f"p-values are Holm-adjusted over the {family} tested rows of this board and read at 0.025 per "
        "side; an inconclusive row says how many seeds per arm the observed difference and spread would "
        "need (80 % power at this board's Bonferroni level, which Holm's never exceeds).",
        "",
    ]
    if rows:
        lines += [
            "| source | claim | student | dataset (← pre-trained on) | left | right | difference [95 % CI] "
            "| test | p (Holm) | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            student = r.student if r.right_student == r.student else f"{r.student} vs {r.right_student}"
            trained = f" ← {r.pretrained_on}" if r.pretrained_on and r.pretrained_on not in r.dataset else ""
            test = f"{r.diff.method}, df {r.diff.df:.3g}" if r.diff else "—"
            p = _p(r.p_holds_adj if r.verdict != FAILS else r.p_fails_adj)
            lines.append(
                f"| {r.claim.source} | {r.claim.text} `{_rule(r.claim)}` | {student} | {r.dataset}{trained} | "
                f"{r.claim.left.name} {r.left.text()} | {r.claim.right.name} {r.right.text()} | "
                f"{_interval(r)} | {test} | {p} | {VERDICT_TEXT[r.verdict]}{_notes(r)} |"
            )
        lines.append("")
        if chart:
            lines += [f"![every tested claim's difference with its 95 % interval]({chart})", ""]
        quoted = {r.claim.key: r.claim for r in rows}
        lines += ["What each claim encodes (the paper's words or numbers):", ""]
        lines += [f"- `{c.key}` ({c.source}): {c.quote}" for c in quoted.values() if c.quote] + [""]
    summary = reproduced(rows)
    if summary:
        datasets = sorted({d for s in summary for d in s["verdicts"]})
        lines += [
            "### Reproduced on every dataset",
            "",
            "Columns: the data the checkpoints were pre-trained on (a transfer task counts for it). A claim is "
            "reproduced when it holds, at this board's corrected level, on each of two or more datasets.",
            "",
            "| source | claim | student | " + " | ".join(datasets) + " | reproduced |",
            "|---|---|---|" + "---|" * len(datasets) + "---|",
        ]
        for s in summary:
            cells = " | ".join(
                VERDICT_TEXT[s["verdicts"][d]] if d in s["verdicts"] else "—" for d in datasets
            )
            caveat = f" ({s['claim'].caveat})" if s["claim"].caveat else ""
            lines.append(
                f"| {s['claim'].source} | {s['claim'].text}{caveat} | {s['student']} | {cells} | "
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
