"""The two CPU tiers measure the claims they promise: ``cpu-full`` (which includes ``cpu``) every
claim the leaderboard checks, ``cpu`` the central ones (Table 1 and the setup checks) with the seeds
its intervals need. For each such entry of ``CLAIMS`` (on the detection layout the suite uses),
both arms reach a step of the claim's task with enough seeds, on each of the two pre-training
datasets. A claim added to the registry without suite steps fails here, before anyone spends hours
on a run that cannot answer it."""

from __future__ import annotations

import pytest

from disco_bench.claims import CLAIMS, Claim
from disco_bench.suite import load_suite
from pretrain.methods import METHODS

SUITE = load_suite("cpu-full")
TIER = load_suite("cpu")
PRETRAIN_DATA = ("a", "b")
# The one-hour tier's claims: the paper's central comparison and the checks that make it meaningful.
TIER_CLAIMS = ("linear-moco", "linear-seed", "floor-moco", "floor-disco", "headroom-moco", "headroom-random")
TIER_SEEDS = 5  # per arm of DisCo > MoCo-v2 alone and MoCo-v2 alone > random init (README: why)
STUDENT_WIDTH = 512  # the students' feature width (ResNet-10t)


def _default_hidden(method: str) -> int:
    if method in ("disco*", "distill-only"):
        return STUDENT_WIDTH
    return 2048


def _checkpoints(suite=SUITE) -> dict[str, dict]:
    """step id -> what the checkpoint is: method, head width, seed, pre-training data (or a teacher / init)."""
    teachers = {s.params["teacher_ckpt"][1:] for s in suite.steps if "teacher_ckpt" in s.params}
    out = {}
    for s in suite.steps:
        if s.kind == "init":
            out[s.id] = {
                "method": "random-init",
                "seed": s.params.get("seed", 0),
                "data": None,
                "teacher": False,
            }
        elif s.kind == "pretrain":
            method = s.params["method"]
            assert method in METHODS, s.id
            hidden = s.params.get("hidden")
            out[s.id] = {
                "method": method,
                "hidden": _default_hidden(method) if hidden is None else int(hidden),
                "seed": s.params.get("seed", 0),
                "data": s.params["data"],
                "teacher": s.id in teachers,
            }
    return out


def _measured(task: str, metric: str, suite=SUITE) -> list[dict]:
    """The checkpoints each eval step of ``task`` measures (with the data it was pre-trained on)."""
    ckpts, found = _checkpoints(suite), []
    for s in suite.steps:
        if s.kind != "eval" or s.task != task:
            continue
        fraction = s.params.get("subset_fraction")
        if metric.startswith("@") and f"{float(fraction) * 100:g}%" != metric[1:]:  # semisup: DATASET@1%
            continue
        refs = s.params.get("ckpts") or [s.params["ckpt"]]
        found += [ckpts[r[1:]] | {"step": s.id} for r in refs]
    return found


def _arm_seeds(claim: Claim, side: str, measured: list[dict], data: str) -> set:
    arm = getattr(claim, side)
    if arm.teacher:
        return {m["step"] for m in measured if m["teacher"] and m["data"] == data}
    chosen = [
        m
        for m in measured
        if not m["teacher"]
        and m["method"] in arm.methods
        and all(m.get(k) == v for k, v in arm.where)
        and m["data"] in (data, None)
    ]
    return {m["seed"] for m in chosen}


# Claims a one-machine run cannot measure, each with why (every other claim must be measurable).
OUT_OF_REACH = {
    "larger-teacher-r101": "one teacher per dataset: teachers of several sizes are the full suite's",
    "larger-teacher-r152": "one teacher per dataset: teachers of several sizes are the full suite's",
    "testbed-swav": "the SwAV testbed (multi-crop, LARS) is the testbeds suite's",
    "testbed-dino": "the DINO testbed (ViT students) is the testbeds suite's",
}


def _claims_in_suite() -> list[Claim]:
    det_layouts = {s.params.get("det_dataset") for s in SUITE.steps if s.task == "detection"}
    metric_of = {"voc": "AP50", "coco": "box_AP50"}
    return [
        c
        for c in CLAIMS
        if c.key not in OUT_OF_REACH
        and (c.task != "detection" or c.metric in {metric_of[d] for d in det_layouts})
    ]


def test_every_claim_out_of_reach_is_a_claim():
    assert set(OUT_OF_REACH) <= {c.key for c in CLAIMS}


@pytest.mark.parametrize("claim", _claims_in_suite(), ids=lambda c: c.key)
@pytest.mark.parametrize("data", PRETRAIN_DATA)
def test_every_claim_has_both_arms_with_enough_seeds_on_each_dataset(claim, data):
    measured = _measured(claim.task, claim.dataset_suffix or claim.metric)
    for side in ("left", "right"):
        arm = getattr(claim, side)
        got = _arm_seeds(claim, side, measured, data)
        assert len(got) >= arm.min_seeds, f"{claim.key} on {data}: {arm.name} has {sorted(got)}"


@pytest.mark.parametrize("key", TIER_CLAIMS)
@pytest.mark.parametrize("data", PRETRAIN_DATA)
def test_the_one_hour_tier_measures_its_claims_with_the_seeds_its_intervals_need(key, data):
    (claim,) = [c for c in CLAIMS if c.key == key]
    measured = _measured(claim.task, claim.metric, TIER)
    need = {"linear-seed": 3}.get(key, TIER_SEEDS)  # SEED is reported with its interval, not gated on
    for side in ("left", "right"):
        arm = getattr(claim, side)
        got = _arm_seeds(claim, side, measured, data)
        assert len(got) >= (1 if arm.teacher else need), f"{key} on {data}: {arm.name} has {sorted(got)}"


def test_the_full_tier_builds_on_the_one_hour_tier_without_changing_it():
    assert SUITE.includes == "cpu" and SUITE.defaults == TIER.defaults
    assert SUITE.steps[: len(TIER.steps)] == TIER.steps
    assert not {s.id for s in SUITE.steps[len(TIER.steps) :] if s.kind == "pretrain" and "teacher" in s.id}


@pytest.mark.parametrize("suite", [TIER, SUITE], ids=["cpu", "cpu-full"])
def test_every_checkpoint_probed_fast_is_probed_by_the_paper_probe_too(suite):
    """The claims read the paper probe where a checkpoint has both (claims._paper_probe_first); the
    fast one is then compared with it checkpoint by checkpoint, so the two must come in pairs."""

    def probed(protocol: str) -> set[tuple]:
        default = suite.defaults["eval"]["protocol"]
        return {
            (s.params["ckpt"], s.params["data"])
            for s in suite.steps
            if s.task == "linear" and s.params.get("protocol", default) == protocol
        }

    assert probed("fast") == probed("paper") and len(probed("paper")) >= 38
