"""The pre-training loop: one code path for a CPU process, torchrun over gloo, and NCCL on GPUs.

Checkpoints (``last.pt`` every epoch and every ``save_every_steps``; ``final.pt`` at the end) are
written atomically and hold everything a resume needs, so a run killed at any point and started
again with ``resume=True`` ends with the same weights as an uninterrupted run (CPU, same threads).
"""

from __future__ import annotations

import csv
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from pretrain.allocator import keep_freed_memory
from pretrain.augment import AUG_IMPLS, aug_plus_for
from pretrain.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save, load_state_strict, safe_load
from pretrain.config import PretrainConfig
from pretrain.data import EpochBatchSampler, MultiViewDataset, image_folder
from pretrain.distributed import DistInfo, init_distributed, shutdown_distributed
from pretrain.errors import InputError
from pretrain.methods import METHODS
from pretrain.methods.base import AMP_DTYPES, FrozenTeacher
from pretrain.models import build_backbone
from pretrain.teachers import load_teacher


class TrainingDiverged(InputError):
    """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


def pick_device(name: str, dist_info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", dist_info.local_rank)
    return torch.device(name)


def build_method(cfg: PretrainConfig):
    """The method module with its student and (frozen) teacher; returns (method, teacher_info)."""
    if cfg.method not in METHODS:
        raise InputError(f"unknown method {cfg.method!r}: expected one of {', '.join(sorted(METHODS))}")
    cls = METHODS[cfg.method]
    teacher, teacher_info = None, None
    if cls.needs_teacher:
        if not cfg.teacher_ckpt:
            raise InputError(f"method {cfg.method!r} needs a teacher: pass --teacher-ckpt PATH")
        encoder, teacher_info = load_teacher(cfg.teacher_ckpt, cfg.teacher)
        if encoder.out_dim != cfg.dim:
            raise InputError(
                f"teacher embedding size {encoder.out_dim} (from {cfg.teacher_ckpt}) differs from the "
                f"student's dim {cfg.dim}; set dim={encoder.out_dim} (--set dim={encoder.out_dim}) or use a matching teacher"
            )
        if cfg.teacher_amp not in AMP_DTYPES:
            raise InputError(f"unknown teacher_amp {cfg.teacher_amp!r}: expected one of {', '.join(AMP_DTYPES)}")
        teacher = FrozenTeacher(encoder, cfg.teacher_bn, cfg.teacher_amp, cfg.teacher_channels_last)
    torch.manual_seed(cfg.seed)
    method = cls(cfg, build_backbone(cfg.student), teacher)
    return method, teacher_info


def method_state(method) -> dict[str, torch.Tensor]:
    """The method's state without the frozen teacher (which is reloaded from its own file)."""
    return {k: v for k, v in method.state_dict().items() if not k.startswith("teacher.")}


def export_encoder(method, cfg: PretrainConfig) -> dict:
    enc = method.student
    return {
        "arch": cfg.student,
        "backbone": enc.backbone.state_dict(),
        "head": enc.head.state_dict(),
        "feature_dim": enc.head.in_dim,
        "hidden": enc.head.hidden,
        "dim": enc.head.out_dim,
        "head_spec": enc.head.spec(),
    }


def run_protocol(cfg: PretrainConfig, method, teacher_info: dict | None) -> dict:
    """cfg.protocol() with what the config leaves implicit resolved: the student head's actual
    hidden width (``hidden=None`` means the method's default) and which teacher file was distilled."""
    protocol = cfg.protocol() | {"hidden": method.student.head.hidden}
    if teacher_info:
        protocol["teacher_ckpt"] = {k: teacher_info.get(k) for k in ("arch", "format", "sha256", "head")}
    return protocol


def lr_at(cfg: PretrainConfig, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return cfg.lr() * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "constant":
        return cfg.lr()
    raise InputError(f"unknown schedule {cfg.schedule!r}: expected cosine or constant")


def autocast_for(cfg: PretrainConfig, device: torch.device):
    """Autocast for the whole step: bf16 or fp16 on CUDA; bf16 on a CPU (fp16 there has no loss
    scaling, so it is refused). ``amp='none'``, the default, keeps fp32 everywhere."""
    if cfg.amp == "none":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    if dtype is None:
        raise InputError(f"unknown amp {cfg.amp!r}: expected none, bf16 or fp16")
    if device.type == "cpu" and dtype is torch.float16:
        raise InputError("amp='fp16' needs CUDA (loss scaling runs on GPUs only); use amp='bf16' on a CPU")
    return torch.autocast(device.type, dtype=dtype)


def train_step(model, views: list[torch.Tensor], optimizer, scaler, autocast) -> dict[str, float]:
    """One optimisation step of ``model`` (a method module, or DDP around one) on a batch of views.

    Returns the method's loss terms as floats, all fetched in one device-to-host copy (one sync per
    step, not one per term). A non-finite loss is returned before any gradient is applied, so the
    caller can stop with the weights of the previous step. benchmarks/pretrain_step.py times this.
    """
    with autocast:
        terms = model(views)
    values = dict(zip(terms, torch.stack([v.detach().reshape(()).double() for v in terms.values()]).tolist(), strict=True))
    if not math.isfinite(values["loss"]):
        return values
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["loss"]).backward()
    scaler.step(optimizer)
    scaler.update()
    return values


def pretrain(cfg: PretrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) pre-training; returns a summary with the final checkpoint path and losses."""
    out = Path(cfg.out)
    final_path, last_path = out / "final.pt", out / "last.pt"
    device_type = "cuda" if cfg.device in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    dist_info = init_distributed(device_type)
    device = pick_device(cfg.device, dist_info)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for the activations each step re-allocates (same numbers)
    if cfg.batch_size % dist_info.world_size:
        raise InputError(f"batch_size {cfg.batch_size} is not divisible by the {dist_info.world_size} processes")
    local_batch = cfg.batch_size // dist_info.world_size

    method, teacher_info = build_method(cfg)
    # a method may ask for one transform per view (multi-crop); otherwise every view is aug+
    if cfg.aug_impl not in AUG_IMPLS:
        raise InputError(f"unknown aug_impl {cfg.aug_impl!r}: expected one of {', '.join(AUG_IMPLS)}")
    transforms = getattr(method, "view_transforms", lambda: None)() or aug_plus_for(cfg.image_size, cfg.aug_impl)
    dataset = MultiViewDataset(image_folder(Path(cfg.data) / "train"), transforms, method.num_views, cfg.seed)
    sampler = EpochBatchSampler(len(dataset), local_batch, cfg.seed, dist_info.rank, dist_info.world_size)
    per_epoch = sampler.batches_per_epoch()
    if per_epoch == 0:
        raise InputError(f"the {len(dataset)} images of {cfg.data}/train do not fill one global batch of {cfg.batch_size}")
    total_steps = per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    method.to(device)
    if cfg.channels_last:
        method.to(memory_format=torch.channels_last)
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr(), momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and device.type == "cuda")

    step, epoch_means, running = 0, [], {}
    saved_step = None  # the step last.pt holds: named when the loss diverges
    if resume and last_path.exists():
        state = safe_load(last_path, "resume checkpoint")
        if state.get("config") != _resumable(cfg):
            raise InputError(f"{last_path} was written by a different configuration; use another --out or drop --resume")
        load_state_strict(method, {**method_state(method), **state["method_state"]}, f"resume checkpoint {last_path}")
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], device)
        step, epoch_means, running = state["step"], list(state["epoch_means"]), dict(state["running"])
        saved_step = step
    elif final_path.exists() and not resume:
        raise InputError(f"{final_path} already exists; pass --resume to reuse it or choose another --out")

    model = method
    if dist_info.enabled:
        model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()

    def last_good() -> str:
        return f"{last_path} (step {saved_step})" if saved_step is not None else "none"

    def save(kind: str) -> Path:
        nonlocal saved_step
        path = final_path if kind == "final" else last_path
        if not dist_info.is_main:
            return path
        bad = next((k for k, v in method_state(method).items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:  # never overwrite a usable checkpoint with a diverged one
            raise TrainingDiverged(f"{bad} became NaN/Inf after step {step} (epoch {step // per_epoch}); "
                                   f"last good checkpoint: {last_good()}; lower base_lr or check the data")
        payload = {
            "format": CHECKPOINT_FORMAT,
            "kind": "pretrain",
            "done": kind == "final",
            "config": _resumable(cfg),
            "protocol": protocol,
            "step": step,
            "epoch": step // per_epoch,
            "encoder": export_encoder(method, cfg),
            "teacher": teacher_info and {"arch": teacher_info["arch"], "sha256": teacher_info["sha256"], "format": teacher_info["format"]},
            "epoch_means": epoch_means,
        }
        if kind != "final":
            payload |= {"method_state": method_state(method), "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(), "rng": rng_state(device), "running": dict(running)}
        written = atomic_torch_save(payload, path)
        if kind != "final":
            saved_step = step
        return written

    protocol = run_protocol(cfg, method, teacher_info)
    log = StepLog(out / "log.csv", step) if dist_info.is_main else None
    bar = tqdm(total=total_steps, initial=step, disable=not (progress and dist_info.is_main), desc=f"pretrain {cfg.method}", unit="step")
    autocast = autocast_for(cfg, device)
    seen, t0 = 0, time.perf_counter()
    while step < total_steps:
        epoch, start_batch = divmod(step, per_epoch)
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, start_batch)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        # its own generator: a loader drawn from the global RNG would shift it on every (re)start
        loader_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers, pin_memory=device.type == "cuda",
                            persistent_workers=False, generator=loader_gen)
        for views, _ in loader:
            views = [v.to(device, non_blocking=True) for v in views]
            if cfg.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            if hasattr(method, "on_step"):  # schedules inside a method (DINO's EMA momentum, frozen layers)
                method.on_step(step, per_epoch * cfg.epochs, per_epoch)
            values = train_step(model, views, optimizer, scaler, autocast)
            if not math.isfinite(values["loss"]):  # steps count from 1, as in log.csv
                raise TrainingDiverged(f"loss is {values['loss']} at step {step + 1} (epoch {epoch}); last checkpoint with "
                                       f"finite weights: {last_good()}; lower base_lr or check the data")
            step += 1
            seen += views[0].shape[0] * dist_info.world_size
            row = {"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
            row |= values
            if log:
                log.write(row)
            for k, v in row.items():
                running[k] = running.get(k, 0.0) + v
            speed = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.startswith("loss")} | {"img/s": f"{speed:.0f}"})
            bar.update(1)
            epoch_done = step % per_epoch == 0 or step >= total_steps
            if epoch_done:  # close the epoch before saving, so a resume never sees a half-closed one
                n = step - epoch * per_epoch
                epoch_means.append({"epoch": epoch} | {k: v / n for k, v in running.items() if k.startswith("loss")})
                running.clear()
            if epoch_done or (cfg.save_every_steps and step % cfg.save_every_steps == 0):
                save("last")
            if step >= total_steps:
                break
    bar.close()
    if log:
        log.close()
    path = save("final")
    shutdown_distributed(dist_info)
    elapsed = time.perf_counter() - t0
    last = epoch_means[-1] if epoch_means else {}
    return {
        "checkpoint": str(path),
        "steps": step,
        "final_loss": {k: v for k, v in last.items() if k.startswith("loss")},
        "images_per_s": seen / elapsed if elapsed > 0 and seen else None,
        "teacher": teacher_info,
        "protocol": protocol,
    }


def rng_state(device: torch.device) -> dict:
    """The global RNG states a resume restores (the CUDA one draws MoCo's shuffle-BN permutation on GPUs)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _resumable(cfg: PretrainConfig) -> dict:
    """The config a resume must match (progress display and logging cadence may change)."""
    d = dict(cfg.__dict__)
    for k in ("log_every", "workers", "device", "save_every_steps"):
        d.pop(k)
    return d


class StepLog:
    """Per-step loss terms as CSV (and TensorBoard when installed); rows past ``start_step`` that a
    killed run left behind are dropped on resume so the log matches the checkpoint."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        kept = []
        if path.exists() and start_step > 0:
            with open(path, newline="") as handle:
                kept = [r for r in csv.DictReader(handle) if int(r["step"]) <= start_step]
        # the files are opened at the first row, so a run stopped by bad input before its first step leaves none
        self.handle, self.tb = None, None
        self.writer = None
        self.pending = kept

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w", newline="")  # noqa: SIM115 (open for the whole run; close() ends it)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.path.parent / "tb"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def write(self, row: dict) -> None:
        if self.handle is None:
            self._open()
        if self.writer is None:
            self.writer = csv.DictWriter(self.handle, fieldnames=list(row), extrasaction="ignore")
            self.writer.writeheader()
            self.writer.writerows(self.pending)
        self.writer.writerow(row)
        self.handle.flush()
        if self.tb:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.handle:
            self.handle.close()
        if self.tb:
            self.tb.close()
