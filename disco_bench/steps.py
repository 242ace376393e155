"""Step kinds a suite can schedule: name -> function(step, ctx) -> records. Each step is also a
command a user can run alone (``disco-bench pretrain`` / ``disco-bench eval TASK``)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from disco_bench import results
from disco_bench.config import layered, refuse_unread, replace, scoped
from downstream.config import EvalConfig
from downstream.registry import TASKS
from downstream.result import Measurement, TaskResult
from infra.checkpoint import file_sha256
from infra.errors import InputError
from infra.validation import FREE, at_least, validate_fields
from pretrain.config import PretrainConfig


def step_checkpoint(out: Path, step_id: str) -> Path:
    """Where a suite run in ``out`` keeps the checkpoint step ``step_id`` made."""
    return out / "checkpoints" / step_id / "final.pt"


@dataclass
class RunContext:
    out: Path
    dataset_paths: dict[str, Path]
    defaults: dict[str, dict]
    overrides: dict = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # step id -> config hash
    progress: bool = True
    dataset_names: dict[str, str] = field(default_factory=dict)  # suite dataset key -> name records carry
    external: dict[str, Path] = field(default_factory=dict)  # checkpoint step id -> file under --data-root
    # dataset keys whose folder --dataset replaced: the folder then enters the steps' config hashes
    given_data: frozenset = frozenset()

    @property
    def records_path(self) -> Path:
        return self.out / "results.jsonl"

    def checkpoint(self, step_id: str) -> Path:
        if step_id in self.external:
            return self.external[step_id]
        return step_checkpoint(self.out, step_id)

    def reference(self, ref: str) -> Path:
        """The file ``@ID`` (a step's checkpoint) or ``@ID:PRODUCT`` (a file an eval step writes) names."""
        step_id, _, product = ref.removeprefix("@").partition(":")
        if not product:
            return self.checkpoint(step_id)
        if product not in PRODUCTS:
            raise InputError(f"@{step_id}:{product}: unknown product; choose from {', '.join(PRODUCTS)}")
        return self.out / "eval" / step_id / PRODUCTS[product]

    def dataset_name(self, step, folder: str) -> str:
        """The suite's name for the step's dataset (e.g. 'imagenet'), else the folder's name (also
        when a ``--set SCOPE.data=PATH`` replaced the suite's dataset)."""
        if "data" in overridden(step, self):
            return folder
        return self.dataset_names.get(step.params.get("data"), folder)


# Files an eval step writes that later steps may read as "@ID:NAME": the probe's classifier
# (kd_save_classifier=true), the teacher of a KD probe (kd_teacher).
PRODUCTS = {"classifier": "classifier.pt"}


# settings that name a file or folder a step reads (a --set of one is checked before the run and listed)
PATH_KEYS = ("data", "ckpt", "ckpts", "teacher_ckpt", "kd_teacher", "subset_list")

# step kind -> the --set scope whose keys reach its config (cli._suite_scopes)
SCOPE_OF_KIND = {"pretrain": "pretrain", "eval": "eval"}


def overridden(step, ctx: RunContext) -> dict:
    """The settings of ``step`` a ``--set SCOPE.key=value`` of its kind replaces."""
    scope = SCOPE_OF_KIND.get(step.kind)
    return scoped(ctx.overrides, scope) if scope else {}


def effective_params(step, ctx: RunContext) -> dict:
    """The step's settings as they run: its own, with what a ``--set`` replaces (a checkpoint path in
    place of ``@teacher``, a folder in place of a dataset name), for listings and hashes."""
    return step.params | overridden(step, ctx)


def _is_ref(value) -> bool:
    return isinstance(value, str) and value.startswith("@")


def _resolve(params: dict, ctx: RunContext) -> dict:
    """Replace ``@id`` with that step's checkpoint path and dataset names with their paths."""
    out = {}
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("@"):
            out[key] = str(ctx.reference(value))
        elif isinstance(value, list) and any(_is_ref(v) for v in value):  # ckpts: [@a, @b] (tsne, mi)
            out[key] = [str(ctx.reference(v)) if _is_ref(v) else v for v in value]
        elif key == "data":
            out[key] = str(ctx.dataset_paths[value])
        else:
            out[key] = value
    return out


def _hashed_ref(ref: str, ctx: RunContext) -> str:
    """``@ID[:PRODUCT]`` with the step's config hash for its id, so a changed dependency changes this hash."""
    step_id, sep, product = ref[1:].partition(":")
    return "@" + ctx.hashes.get(step_id, step_id) + sep + product


def _hashable(step, params: dict, ctx: RunContext, config: dict) -> dict:
    """What identifies a step's numbers: its config with paths replaced by what they stand for (a
    setting a ``--set`` replaced keeps its value: the path the step really reads)."""
    cfg = dict(config)
    replaced = overridden(step, ctx)
    for key, value in params.items():
        if key in replaced:
            continue
        if isinstance(value, str) and value.startswith("@"):
            cfg[key] = _hashed_ref(value, ctx)
        elif isinstance(value, list) and any(_is_ref(v) for v in value):
            cfg[key] = [_hashed_ref(v, ctx) if _is_ref(v) else v for v in value]
        elif key == "data":
            cfg[key] = f"{value}={ctx.dataset_paths[value]}" if value in ctx.given_data else value
    cfg.pop("out", None)
    return {"kind": step.kind, "task": step.task, "config": cfg}


def _step_layers(step, ctx: RunContext, scope: str) -> list[tuple[dict, str, bool]]:
    """A step's settings, later on top: the suite's defaults for its kind and the run's ``--set
    SCOPE.key`` (both shared by every step of the kind), and between them the step's own ``with``."""
    where = f"step {step.id}: "
    return [
        (ctx.defaults.get(scope, {}), f"{where}defaults.{scope}: ", True),
        (_resolve(step.params, ctx), where, False),
        (scoped(ctx.overrides, scope), f"--set {scope}.", True),
    ]


def _own_spelling(step) -> dict:
    return {k: f"step {step.id}: {k}={v}" for k, v in step.params.items()}


def pretrain_config(step, ctx: RunContext) -> PretrainConfig:
    cfg, unread = layered(PretrainConfig, _step_layers(step, ctx, "pretrain"), PretrainConfig.unread)
    refuse_unread(unread, _own_spelling(step), cfg.why_unread)
    return dataclasses.replace(cfg, out=str(ctx.out / "checkpoints" / step.id))


def eval_config(step, ctx: RunContext) -> EvalConfig:
    if step.task not in TASKS:
        raise InputError(
            f"step {step.id}: unknown task {step.task!r}: choose from {', '.join(sorted(TASKS))}"
        )
    cfg, unread = layered(
        EvalConfig, _step_layers(step, ctx, "eval"), lambda cfg, names: cfg.unread(names, step.task)
    )
    refuse_unread(unread, _own_spelling(step), lambda name: cfg.why_unread(name, step.task))
    return dataclasses.replace(cfg, out=str(ctx.out / "eval" / step.id))


def step_config(step, ctx: RunContext):
    return STEP_KINDS[step.kind][0](step, ctx)


def run_step(step, ctx: RunContext, config_hash: str) -> list[dict]:
    return STEP_KINDS[step.kind][1](step, ctx, config_hash)


def step_hash(step, ctx: RunContext) -> str:
    cfg = step_config(step, ctx)
    return results.config_hash(_hashable(step, step.params, ctx, dataclasses.asdict(cfg)))


def cut_short_flags(steps: int | None, planned: int | None, who: str = "pre-training") -> list[str]:
    """The degenerate-state sentence of a pre-training that ``max_steps`` ended before its epochs:
    it is labelled by its steps ('8 of 22 steps'), never as the epochs it was configured for."""
    if not steps or not planned or steps >= planned:
        return []
    return [
        f"{who} ended by max_steps after {steps} of {planned} steps ({steps / planned:.0%} of its epochs)"
    ]


def pretrain_records(cfg: PretrainConfig, summary: dict, dataset: str | None = None, **common) -> list[dict]:
    dataset = dataset or Path(cfg.data).name
    ms = [Measurement(f"final_{k}", v, dataset, "train") for k, v in summary["final_loss"].items()]
    if summary.get("images_per_s"):
        ms.append(Measurement("images_per_s", summary["images_per_s"], dataset, "train"))
    teacher = summary.get("teacher") or {}
    protocol = (
        summary.get("protocol") or cfg.protocol()
    )  # resolved head width and teacher file (pretrain.train)
    flags = cut_short_flags(summary.get("steps"), summary.get("planned_steps"))
    return results.make_records(
        TaskResult("pretrain", ms, protocol, degenerate=flags),
        student=cfg.student,
        teacher=teacher.get("arch"),
        method=cfg.method,
        seed=cfg.seed,
        protocol=protocol,
        checkpoint_sha256=file_sha256(summary["checkpoint"]),
        run=protocol.get("run"),
        **common,
    )


STEP_CONFIG_FILE = ".suite-step-config"  # in a suite's step folder: the config hash that began it


def set_aside_superseded(folder: Path, config_hash: str) -> Path | None:
    """A suite owns its step folders. If this step's config changed since the folder was begun (the
    suite or a --set was edited), its checkpoints belong to another run: the folder is moved to
    FOLDER.superseded-<old hash> (never deleted) and the step starts afresh. Same config: kept, so an
    interrupted step resumes. A folder without the marker (older runs) is left for pretrain to judge."""
    marker = folder / STEP_CONFIG_FILE
    moved = None
    if marker.exists() and marker.read_text().strip() != config_hash:
        old = marker.read_text().strip()
        moved = folder.with_name(f"{folder.name}.superseded-{old}")
        if moved.exists():  # the same old config set aside before: keep the later folder, numbered
            moved = folder.with_name(f"{moved.name}-{len(list(folder.parent.glob(moved.name + '*')))}")
        folder.rename(moved)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(config_hash + "\n")
    return moved


def run_pretrain_step(step, ctx: RunContext, config_hash: str) -> list[dict]:
    cfg = pretrain_config(step, ctx)
    started = results.now()
    from pretrain.train import pretrain  # torch and timm: imported by the step that trains

    name = ctx.dataset_name(step, Path(cfg.data).name)
    summary = pretrain(cfg, progress=ctx.progress, data_name=name)  # continues from last.pt of the same run
    return pretrain_records(
        cfg,
        summary,
        dataset=name,
        config_hash=config_hash,
        started_at=started,
        finished_at=results.now(),
        step=step.id,
        label=step.label,
    )


def eval_records(cfg: EvalConfig, result: TaskResult, **common) -> list[dict]:
    src = result.source
    protocol = {"eval": result.protocol, "pretrain": src.get("protocol", {})}
    world = int(os.environ.get("WORLD_SIZE", "1"))  # the probe's batch is split over torchrun processes
    # detection's is the schedule's global batch (det_batch_size), split the same way
    batch = result.protocol["schedule"]["batch_size"] if result.task == "detection" else cfg.batch_size
    result.degenerate += [
        f
        for f in cut_short_flags(src.get("steps"), src.get("planned_steps"), "the checkpoint's pre-training")
        if f not in result.degenerate
    ]
    return results.make_records(
        result,
        student=src.get("arch"),
        teacher=src.get("teacher"),
        method=src.get("method"),
        seed=cfg.seed,
        protocol=protocol,
        checkpoint_sha256=src.get("sha256"),
        run=results.this_process(batch // world, cfg.device),
        **common,
    )


def run_eval_step(step, ctx: RunContext, config_hash: str) -> list[dict]:
    cfg = eval_config(step, ctx)
    started = results.now()
    result = TASKS[step.task].evaluate(cfg, progress=ctx.progress)
    folder = Path(cfg.data).name  # tasks name their dataset by its folder (semisup: folder@1%); the suite may
    name = ctx.dataset_name(step, folder)  # name it better, e.g. 'imagenet' for the paper's comparisons
    # artifacts relative to OUT, so the records (and the leaderboard's links) move with the folder
    result.artifacts = [os.path.relpath(Path(a).absolute(), ctx.out.absolute()) for a in result.artifacts]
    result.measurements = [
        dataclasses.replace(m, dataset=name + m.dataset[len(folder) :])
        if m.dataset == folder or m.dataset.startswith(folder + "@")
        else m
        for m in result.measurements
    ]
    return eval_records(
        cfg,
        result,
        config_hash=config_hash,
        started_at=started,
        finished_at=results.now(),
        step=step.id,
        label=step.label,
    )


@dataclass
class CheckpointConfig:
    """A checkpoint read from a file (a published teacher under --data-root) instead of trained."""

    data: str = ""  # the file (a suite dataset of kind 'file')
    arch: str | None = None  # the architecture it holds, when the file does not say
    method: str = ""  # what trained it (moco, swav, ...): shown in listings and used to match paper rows


def checkpoint_config(step, ctx: RunContext) -> CheckpointConfig:
    return replace(CheckpointConfig(), _resolve(step.params, ctx), f"step {step.id}: ")


def run_checkpoint_step(step, ctx: RunContext, config_hash: str) -> list[dict]:
    """Load the file strictly (every key accounted for) so a wrong file fails here, not in the students."""
    from pretrain.teachers import load_encoder

    cfg = checkpoint_config(step, ctx)
    started = results.now()
    encoder, info = load_encoder(cfg.data, cfg.arch)
    params_m = sum(p.numel() for p in encoder.backbone.parameters()) / 1e6
    name = ctx.dataset_name(step, Path(cfg.data).name)
    return checkpoint_records(
        step,
        config_hash,
        started,
        params_m,
        name,
        {"format": info.get("format"), "arch": info["arch"]},
        student=info["arch"],
        teacher=info.get("teacher"),
        method=info.get("method") or cfg.method or None,
        seed=0,
        checkpoint_sha256=info["sha256"],
    )


def checkpoint_records(
    step, config_hash: str, started: str, params_m: float, dataset: str, protocol: dict, **identity
) -> list[dict]:
    """The one record of a step that makes a checkpoint without training it (read from a file, or
    randomly initialised): its backbone's size, with what the checkpoint is."""
    result = TaskResult("checkpoint", [Measurement("backbone_params_m", params_m, dataset, "-")], protocol)
    return results.make_records(
        result,
        protocol=result.protocol,
        config_hash=config_hash,
        started_at=started,
        finished_at=results.now(),
        step=step.id,
        label=step.label,
        **identity,
    )


@dataclass
class InitConfig:
    """A randomly initialised encoder, saved as pre-training saves a student: the floor every
    pre-training method must clear (a linear probe or a detector on random features)."""

    student: str = "resnet18"
    seed: int = 0
    hidden: int = 2048  # the projection head is not evaluated; its shape only has to load
    dim: int = 128

    def __post_init__(self) -> None:
        validate_fields(self, INIT_FIELD_RULES)


# One rule per field (infra.validation), as pre-training's own for the same fields.
INIT_FIELD_RULES = {
    "student": FREE,  # resolved (with suggestions) by pretrain.models.resolve_arch when built
    "seed": at_least(0),
    "hidden": at_least(0),  # 0: no hidden layer
    "dim": at_least(1),
}


def init_config(step, ctx: RunContext) -> InitConfig:
    return replace(InitConfig(), _resolve(step.params, ctx), f"step {step.id}: ")


def write_random_init(path: Path, cfg: InitConfig) -> float:
    """Save ``cfg``'s randomly initialised encoder at ``path`` (as pre-training saves a student: any
    task reads it) and return its backbone's parameters in millions. The ``init`` step and
    ``eval --baseline random-init`` both make their floor here."""
    from pretrain.models import build_backbone
    from pretrain.train import save_random_encoder

    path.parent.mkdir(parents=True, exist_ok=True)
    save_random_encoder(path, cfg.student, cfg.hidden, cfg.dim, cfg.seed)
    return sum(p.numel() for p in build_backbone(cfg.student).parameters()) / 1e6


def run_init_step(step, ctx: RunContext, config_hash: str) -> list[dict]:
    cfg = init_config(step, ctx)
    started = results.now()
    path = ctx.checkpoint(step.id)
    params_m = write_random_init(path, cfg)
    return checkpoint_records(
        step,
        config_hash,
        started,
        params_m,
        "-",
        {"init": "random"},
        student=cfg.student,
        teacher=None,
        method="random-init",
        seed=cfg.seed,
        checkpoint_sha256=file_sha256(path),
    )


# kind -> (config builder, runner); a plugin adds its own through register_step_kind (disco_bench/plugins.py)
STEP_KINDS = {
    "pretrain": (pretrain_config, run_pretrain_step),
    "eval": (eval_config, run_eval_step),
    "checkpoint": (checkpoint_config, run_checkpoint_step),
    "init": (init_config, run_init_step),
}


def register_step_kind(name: str, config_fn, run_fn) -> None:
    """Add a step kind: ``config_fn(step, ctx)`` builds its config (the config hash is made of it),
    ``run_fn(step, ctx, config_hash)`` runs it and returns its records. Registering the same pair
    again changes nothing (a plugin is loaded by every planner of a process); a name taken by
    another kind is refused, so a plugin cannot replace a built-in kind unnoticed."""
    if STEP_KINDS.get(name, (config_fn, run_fn)) != (config_fn, run_fn):
        raise InputError(f"step kind {name!r} is registered already; a plugin must choose another name")
    STEP_KINDS[name] = (config_fn, run_fn)
