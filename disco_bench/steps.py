"""Step kinds a suite can schedule: name -> function(step, ctx) -> records. Each step is also a
command a user can run alone (``disco-bench pretrain`` / ``disco-bench eval TASK``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from disco_bench import results
from disco_bench.config import from_dict, replace, scoped
from downstream.config import EvalConfig
from downstream.registry import TASKS
from downstream.result import Measurement, TaskResult
from pretrain.checkpoint import file_sha256
from pretrain.config import PretrainConfig
from pretrain.errors import InputError
from pretrain.train import pretrain


@dataclass
class RunContext:
    out: Path
    dataset_paths: dict[str, Path]
    defaults: dict[str, dict]
    overrides: dict = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # step id -> config hash
    progress: bool = True

    @property
    def records_path(self) -> Path:
        return self.out / "results.jsonl"

    def checkpoint(self, step_id: str) -> Path:
        return self.out / "checkpoints" / step_id / "final.pt"


def _resolve(params: dict, ctx: RunContext) -> dict:
    """Replace ``@id`` with that step's checkpoint path and dataset names with their paths."""
    out = {}
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("@"):
            out[key] = str(ctx.checkpoint(value[1:]))
        elif key == "data":
            out[key] = str(ctx.dataset_paths[value])
        else:
            out[key] = value
    return out


def _hashable(step, params: dict, ctx: RunContext, config: dict) -> dict:
    """What identifies a step's numbers: its config with paths replaced by what they stand for."""
    cfg = dict(config)
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("@"):
            cfg[key] = "@" + ctx.hashes.get(value[1:], value)
        elif key == "data":
            cfg[key] = value
    cfg.pop("out", None)
    return {"kind": step.kind, "task": step.task, "config": cfg}


def pretrain_config(step, ctx: RunContext) -> PretrainConfig:
    where = f"step {step.id}: "
    cfg = from_dict(PretrainConfig, ctx.defaults.get("pretrain", {}), where + "defaults.pretrain: ")
    cfg = replace(cfg, _resolve(step.params, ctx), where)
    cfg = replace(cfg, scoped(ctx.overrides, "pretrain"), "--set pretrain.")
    return dataclasses.replace(cfg, out=str(ctx.out / "checkpoints" / step.id))


def eval_config(step, ctx: RunContext) -> EvalConfig:
    where = f"step {step.id}: "
    if step.task not in TASKS:
        raise InputError(f"{where}unknown task {step.task!r}: choose from {', '.join(sorted(TASKS))}")
    cfg = from_dict(EvalConfig, ctx.defaults.get("eval", {}), where + "defaults.eval: ")
    cfg = replace(cfg, _resolve(step.params, ctx), where)
    cfg = replace(cfg, scoped(ctx.overrides, "eval"), "--set eval.")
    return dataclasses.replace(cfg, out=str(ctx.out / "eval" / step.id))


def step_config(step, ctx: RunContext):
    return STEP_KINDS[step.kind][0](step, ctx)


def step_hash(step, ctx: RunContext) -> str:
    cfg = step_config(step, ctx)
    return results.config_hash(_hashable(step, step.params, ctx, dataclasses.asdict(cfg)))


def pretrain_records(cfg: PretrainConfig, summary: dict, **common) -> list[dict]:
    ms = [Measurement(f"final_{k}", v, Path(cfg.data).name, "train") for k, v in summary["final_loss"].items()]
    if summary.get("images_per_s"):
        ms.append(Measurement("images_per_s", summary["images_per_s"], Path(cfg.data).name, "train"))
    teacher = summary.get("teacher") or {}
    return results.make_records(
        TaskResult("pretrain", ms, cfg.protocol()), student=cfg.student, teacher=teacher.get("arch"), method=cfg.method,
        seed=cfg.seed, protocol=cfg.protocol(), checkpoint_sha256=file_sha256(summary["checkpoint"]), **common,
    )


def run_pretrain_step(step, ctx: RunContext, config_hash: str) -> list[dict]:
    cfg = pretrain_config(step, ctx)
    started = results.now()
    summary = pretrain(cfg, resume=True, progress=ctx.progress)
    return pretrain_records(cfg, summary, config_hash=config_hash, started_at=started, finished_at=results.now(),
                            step=step.id, label=step.label)


def eval_records(cfg: EvalConfig, result: TaskResult, **common) -> list[dict]:
    src = result.source
    protocol = {"eval": result.protocol, "pretrain": src.get("protocol", {})}
    return results.make_records(result, student=src.get("arch"), teacher=src.get("teacher"), method=src.get("method"),
                                seed=cfg.seed, protocol=protocol, checkpoint_sha256=src.get("sha256"), **common)


def run_eval_step(step, ctx: RunContext, config_hash: str) -> list[dict]:
    cfg = eval_config(step, ctx)
    started = results.now()
    result = TASKS[step.task].run(cfg, progress=ctx.progress)
    return eval_records(cfg, result, config_hash=config_hash, started_at=started, finished_at=results.now(), step=step.id,
                        label=step.label)


# kind -> (config builder, runner)
STEP_KINDS = {
    "pretrain": (pretrain_config, run_pretrain_step),
    "eval": (eval_config, run_eval_step),
}
