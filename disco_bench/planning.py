"""A suite turned into a plan: the steps (cut to ``--only``), their datasets resolved, their config
hashes chained through ``@`` references, and what each step produces. Planning runs nothing; the
runner (this process), a launcher's step process and the leaderboard's suite lookup all plan the
same way, so they agree on every step's config and hash.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from disco_bench.datasets import prepare_datasets
from disco_bench.steps import STEP_KINDS, RunContext, step_config, step_hash
from disco_bench.suite import Step, Suite, select_steps, used_datasets
from infra.errors import InputError

DATA_ROOT_PLACEHOLDER = Path("$DATA_ROOT")  # how a dry run without --data-root shows dataset paths
CHECKPOINT_KINDS = {"pretrain", "checkpoint", "init"}  # kinds whose output other steps read as "@id"


def restrict(suite: Suite, only: list[str] | None) -> Suite:
    """The suite cut down to ``--only`` (with dependencies) and to the datasets its steps read."""
    if only:
        suite = dataclasses.replace(suite, steps=select_steps(suite.steps, only))
    return dataclasses.replace(suite, datasets=used_datasets(suite))


def _needs_data_root(spec: dict) -> bool:
    return spec.get("generate") is None and not Path(spec.get("path", "")).is_absolute()


def build_context(
    suite: Suite,
    out: Path,
    data_root: Path | None,
    overrides: dict,
    progress: bool,
    create: bool,
) -> RunContext:
    """Resolve datasets (generating embedded ones when ``create``; checking all before anything runs)."""
    if data_root is None and not create and any(_needs_data_root(s) for s in suite.datasets.values()):
        data_root = DATA_ROOT_PLACEHOLDER  # a dry run lists the steps without any data on disk
    paths = prepare_datasets(suite, out, data_root, create=create, progress=progress)
    external = {
        s.id: paths[s.params["data"]] for s in suite.steps if s.kind == "checkpoint" and "data" in s.params
    }
    return RunContext(
        out=out,
        dataset_paths=paths,
        defaults=suite.defaults,
        overrides=overrides,
        progress=progress,
        dataset_names={k: suite.dataset_name(k) for k in suite.datasets},
        external=external,
        given_data=frozenset(suite.given),
    )


def plan(suite: Suite, ctx: RunContext) -> list[tuple[Step, str]]:
    """(step, config hash) in order; hashes chain through @references."""
    rows = []
    for step in suite.steps:
        if step.kind not in STEP_KINDS:
            raise InputError(
                f"step {step.id}: unknown kind {step.kind!r}; choose from {', '.join(sorted(STEP_KINDS))}"
            )
        h = step_hash(step, ctx)
        ctx.hashes[step.id] = h
        rows.append((step, h))
    return rows


def check_overrides_are_read(rows: list[tuple[Step, str]], ctx: RunContext) -> None:
    """A suite-wide ``--set pretrain.KEY`` / ``eval.KEY`` is dropped for the steps that do not read
    it (steps.pretrain_config, eval_config); one that no planned step reads would be ignored
    altogether, so it is refused, naming the step kind."""
    from downstream.config import EvalConfig
    from pretrain.config import PretrainConfig

    for key, value in ctx.overrides.items():
        scope, _, name = key.partition(".")
        steps = [s for s, _ in rows if s.kind == scope]
        configs = [(s, step_config(s, ctx)) for s in steps]
        read = [
            s
            for s, cfg in configs
            if (isinstance(cfg, PretrainConfig) and not cfg.unread([name]))
            or (isinstance(cfg, EvalConfig) and not cfg.unread([name], s.task))
        ]
        if configs and not read:
            raise InputError(
                f"--set {key}={value}: no {scope} step of this run reads {name} "
                f"({', '.join(sorted({_what(s, cfg) for s, cfg in configs}))}); drop it"
            )


def _what(step: Step, cfg) -> str:
    return f"method {cfg.method}" if step.kind == "pretrain" else f"task {step.task}"


def is_done(step: Step, ctx: RunContext, config_hash: str, records: list[dict]) -> bool:
    have = any(r.get("step") == step.id and r.get("config_hash") == config_hash for r in records)
    if step.kind in CHECKPOINT_KINDS:
        return have and ctx.checkpoint(step.id).exists()
    return have


def architectures(rows: list[tuple[Step, str]], configs: dict[str, object]) -> dict[str, str | None]:
    """step id -> architecture of the network it produces (or, for an eval, evaluates)."""
    arch: dict[str, str | None] = {}
    for step, _ in rows:
        cfg = configs[step.id]
        if step.kind in ("pretrain", "init"):
            arch[step.id] = cfg.student
        elif step.kind == "checkpoint":
            arch[step.id] = cfg.arch
        else:  # an eval: the (first) checkpoint it evaluates
            ref = step.params.get("ckpt") or (step.params.get("ckpts") or [None])[0]
            arch[step.id] = arch.get(ref[1:]) if isinstance(ref, str) and ref.startswith("@") else None
    return arch
