"""The pre-training loop: one code path for a CPU process, torchrun over gloo, and NCCL on GPUs.

Checkpoints (``last.pt`` every epoch and every ``save_every_steps``; ``final.pt`` at the end) are
written atomically and hold everything a resume needs, so a run killed at any point and started
again ends with the same weights as an uninterrupted run (CPU, same threads).

Resuming is the default: a run finds ``OUT/last.pt`` of the same run and continues from it; "the
same run" compares :func:`training_identity` (every setting that changes a number, paths resolved), so
``--data DIR/`` and ``--data ./DIR`` are the same run. A checkpoint of another run is refused with
the fields that differ; ``restart=True`` (``--restart``) discards it and starts from step 0.

Two objects carry a training run through the loop: :class:`TrainingSetup` (what :func:`set_up` fixes
before the first step: config, device, method, data, optimiser) and :class:`LoopState` (what changes
every step: the step count and the epoch's loss sums; ``last.pt`` saves it).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from infra.allocator import keep_freed_memory
from infra.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_torch_save,
    atomic_write_text,
    load_state_strict,
    nonfinite_keys,
    safe_load,
)
from infra.distributed import AMP_DTYPES, DistInfo, init_distributed, pick_device, shutdown_distributed
from infra.environment import process_environment
from infra.errors import InputError
from pretrain.augment import aug_plus_for
from pretrain.config import MULTICROP, PretrainConfig
from pretrain.data import EpochBatchSampler, MultiViewDataset, data_identity, default_workers, image_folder
from pretrain.methods import METHODS
from pretrain.methods.base import FrozenTeacher
from pretrain.models import Encoder, ProjectionHead, build_backbone, feature_dim
from pretrain.optim import apply_schedule, build_optimizer
from pretrain.teachers import load_teacher


class TrainingDiverged(InputError):
    """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


# --- the method ---------------------------------------------------------------------------------


def build_method(cfg: PretrainConfig):
    """The method module with its student and (frozen) teacher; returns (method, teacher_info)."""
    cls = METHODS[cfg.method]
    cfg.check_teacher()
    teacher, teacher_info = None, None
    if cls.needs_teacher:
        encoder, teacher_info = load_teacher(cfg.teacher_ckpt, cfg.teacher)
        # dino+disco takes its embedding width from the teacher; the others must match it
        if encoder.out_dim != cfg.dim and not cls.dim_from_teacher:
            raise InputError(
                f"teacher embedding size {encoder.out_dim} (from {cfg.teacher_ckpt}) differs from the "
                f"student's dim {cfg.dim}; set dim={encoder.out_dim} (--set dim={encoder.out_dim}) or use a matching teacher"
            )
        teacher = FrozenTeacher(encoder, cfg.teacher_bn, cfg.teacher_amp, cfg.teacher_channels_last)
    torch.manual_seed(cfg.seed)
    method = cls(cfg, build_backbone(cfg.student), teacher)
    return method, teacher_info


def frozen_prefixes(method) -> tuple[str, ...]:
    """State-dict prefixes of the method's frozen teachers: they never change during a run and are
    reloaded from their own file (checked by its sha256), so checkpoints do not carry them."""
    return tuple(f"{name}." for name, module in method.named_modules() if isinstance(module, FrozenTeacher))


def method_state(method) -> dict[str, torch.Tensor]:
    """The method's state that training changes: everything but the frozen teachers."""
    frozen = frozen_prefixes(method)
    return {k: v for k, v in method.state_dict().items() if not (frozen and k.startswith(frozen))}


def load_method_state(method, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict inverse of :func:`method_state`: every key of it present, nothing else (no teacher key either)."""
    load_state_strict(method, state, source, supplied_elsewhere=frozen_prefixes(method))


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


def save_random_encoder(path: str | Path, arch: str, hidden: int, dim: int, seed: int = 0) -> str:
    """A random-init encoder saved exactly as pre-training saves a finished student (a baseline for the
    downstream tasks, a stand-in teacher for tests and benchmarks)."""
    torch.manual_seed(seed)
    backbone = build_backbone(arch)
    encoder = Encoder(backbone, ProjectionHead(feature_dim(backbone), hidden, dim))
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": "pretrain",
        "done": True,
        "config": {"method": "random-init"},
        "protocol": {},
        "encoder": export_encoder(SimpleNamespace(student=encoder), SimpleNamespace(student=arch)),
    }
    return str(atomic_torch_save(payload, path))


def resolved_protocol(
    cfg: PretrainConfig, method, teacher_info: dict | None, data: dict | None = None
) -> dict:
    """cfg.protocol() with what the config leaves implicit resolved: the student head's actual
    hidden width (``hidden=None`` means the method's default), its embedding width (dino+disco takes
    the teacher's), which teacher file was distilled and which data it trained on
    (``data.data_identity``: name, fingerprint, path)."""
    protocol = cfg.protocol() | {"hidden": method.student.head.hidden, "dim": method.student.head.out_dim}
    if data:
        protocol["data"] = data
    if teacher_info:
        protocol["teacher_ckpt"] = {k: teacher_info.get(k) for k in ("arch", "format", "sha256", "head")}
    return protocol


# --- optimiser, schedule, one step --------------------------------------------------------------


def autocast_for(cfg: PretrainConfig, device: torch.device):
    """Autocast for the whole step: bf16 or fp16 on CUDA; bf16 on a CPU (fp16 there has no loss
    scaling, so it is refused). ``amp='none'``, the default, keeps fp32 everywhere."""
    if cfg.amp == "none":
        return nullcontext()
    dtype = AMP_DTYPES[cfg.amp]
    if device.type == "cpu" and dtype is torch.float16:
        raise InputError("amp='fp16' needs CUDA (loss scaling runs on GPUs only); use amp='bf16' on a CPU")
    return torch.autocast(device.type, dtype=dtype)


def student_view_sizes(cfg: PretrainConfig) -> list[int]:
    """The sides (px) of the views the student trains on: the global size, and the small multi-crop
    size where the method takes small crops."""
    small = cfg.multicrop_small_size if cfg.method in MULTICROP and cfg.multicrop_small_crops else None
    return sorted({cfg.image_size, *([small] if small else [])})


def refuse_cpu_bf16_on_a_1x1_map(cfg: PretrainConfig, student: nn.Module, device: torch.device) -> None:
    """amp='bf16' on a CPU where a strided convolution with a kernel wider than 1 sees a 1-pixel map
    is refused: torch's CPU bf16 weight gradient there reads memory the kernel never wrote, so it is
    wrong in most steps, and only sometimes NaN (benchmarks/bf16_conv_edge.py; a ResNet's last stage
    at 16 px). One no-grad forward per view size finds such convolutions before any training."""
    if device.type != "cpu" or cfg.amp != "bf16":
        return
    found: list[str] = []

    def on_a_1x1_map(name: str):
        def hook(conv, inputs, _output):
            spatial = inputs[0].shape[-2:]
            if any(n == 1 and s > 1 and k > 1 for n, s, k in zip(spatial, conv.stride, conv.kernel_size)):
                found.append(name)

        return hook

    handles = [
        m.register_forward_hook(on_a_1x1_map(n))
        for n, m in student.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    was_training = student.training
    try:
        student.eval()  # no BatchNorm statistics move
        with torch.no_grad():
            for size in student_view_sizes(cfg):
                found.clear()
                student(torch.zeros(1, 3, size, size))
                if found:
                    raise InputError(
                        f"amp='bf16' on a CPU at {size} px: {cfg.student}'s {found[0]} (a strided convolution) "
                        "sees a 1x1 map, where torch's CPU bf16 weight gradient can be wrong "
                        "(benchmarks/bf16_conv_edge.py); expected larger images (image_size / "
                        "multicrop_small_size) or amp='none'"
                    )
    finally:
        student.train(was_training)
        for handle in handles:
            handle.remove()


def train_step(model, views: list[torch.Tensor], optimizer, scaler, autocast) -> dict[str, float]:
    """One optimisation step of ``model`` (a method module, or DDP around one) on a batch of views.

    Returns the method's loss terms as floats, all fetched in one device-to-host copy (one sync per
    step, not one per term). A non-finite loss is returned before any gradient is applied, so the
    caller can stop with the weights of the previous step. benchmarks/pretrain_step.py times this.
    """
    with autocast:
        terms = model(views)
    values = dict(
        zip(
            terms,
            torch.stack([v.detach().reshape(()).double() for v in terms.values()]).tolist(),
            strict=True,
        )
    )
    if not math.isfinite(values["loss"]):
        return values
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["loss"]).backward()
    method = getattr(model, "module", model)  # DDP wraps the method
    method.after_backward()  # e.g. the queue takes this step's keys once the loss no longer reads them
    scaler.step(optimizer)
    scaler.update()
    return values


# --- what makes two runs the same run -----------------------------------------------------------


def training_identity(
    cfg: PretrainConfig, teacher_info: dict | None, method=None, data: dict | None = None
) -> dict:
    """The canonical config a resume must match: every setting that changes a number, never its
    spelling. It starts from ``cfg.protocol()`` (no output folder, progress or loader settings, no
    fields of other methods); the data folder is an absolute resolved path (a trailing slash, a
    relative path or a symlink name the same folder); the teacher is its architecture and the
    sha256 of its file; the student head's widths are the resolved ones (``hidden=None`` and the
    method's default are one run); tuples and lists are one thing (JSON); the data's fingerprint
    (``data_fingerprint``) tells the same folder with other images in it apart."""
    ident = cfg.protocol()
    ident["data"] = str(Path(cfg.data).expanduser().resolve()) if cfg.data else ""
    if data:
        ident["data_fingerprint"] = data["fingerprint"]
    if teacher_info:
        ident |= {"teacher": teacher_info["arch"], "teacher_ckpt": f"sha256:{teacher_info['sha256']}"}
    if method is not None:
        ident |= {"hidden": method.student.head.hidden, "dim": method.student.head.out_dim}
    return json.loads(json.dumps(ident))


def identity_differences(saved: dict, now: dict) -> list[str]:
    """``field (checkpoint X, now Y)`` for every field whose value differs."""
    missing = "<not set>"
    return [
        f"{k} (checkpoint {saved.get(k, missing)!r}, now {now.get(k, missing)!r})"
        for k in sorted(set(saved) | set(now))
        if saved.get(k, missing) != now.get(k, missing)
    ]


# --- setting up a run ---------------------------------------------------------------------------


@dataclass
class TrainingSetup:
    """Everything a training run fixes before its first step (built by :func:`set_up`; never changed
    by the loop, apart from the method's and optimiser's tensors)."""

    cfg: PretrainConfig
    dist_info: DistInfo
    device: torch.device
    method: torch.nn.Module
    teacher_info: dict | None
    protocol: dict
    identity: dict
    dataset: MultiViewDataset
    sampler: EpochBatchSampler
    per_epoch: int
    total_steps: int
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    # the device half of aug_impl='gpu' (pretrain.device_augment.DeviceAugPlus): uint8 views in, views out
    device_aug: object | None = None

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def final_path(self) -> Path:
        return self.out / "final.pt"


@dataclass
class LoopState:
    """Where the training loop stands: the step count and the epoch's sums, which change every step.
    ``last.pt`` saves it besides the weights and optimiser."""

    step: int = 0
    epoch_means: list[dict] = field(default_factory=list)
    running: dict[str, float] = field(default_factory=dict)  # sums of the current epoch's logged values
    saved_step: int | None = None  # the step last.pt holds: named when the loss diverges
    images_per_s: float | None = None  # training speed of the run that finished (kept in final.pt)

    def last_good(self, last_path: Path) -> str:
        return f"{last_path} (step {self.saved_step})" if self.saved_step is not None else "none"


def build_data(cfg: PretrainConfig, method, dist_info: DistInfo, local_batch: int):
    """(dataset, sampler, steps per epoch, device half of the augmentation or None) for the method's views."""
    # a method may ask for one transform per view (multi-crop); otherwise every view is aug+
    transforms = method.view_transforms() or aug_plus_for(cfg.image_size, cfg.aug_impl)
    dataset = MultiViewDataset(image_folder(Path(cfg.data) / "train"), transforms, method.num_views, cfg.seed)
    # (epoch, index) pairs: persistent workers augment the sampler's epoch, not their copy's
    sampler = EpochBatchSampler(
        len(dataset), local_batch, cfg.seed, dist_info.rank, dist_info.world_size, tag_epoch=True
    )
    per_epoch = sampler.batches_per_epoch()
    if per_epoch == 0:
        raise InputError(
            f"the {len(dataset)} images of {cfg.data}/train do not fill one global batch of {cfg.batch_size}"
        )
    return dataset, sampler, per_epoch, getattr(transforms, "on_device", None)


def resolve_workers(cfg: PretrainConfig, device: torch.device, warn: bool = True) -> PretrainConfig:
    """``workers=None`` decided for this device and node (pretrain.data.default_workers); a CUDA
    run left with none gets a one-line warning (its GPU would wait on decoding) where ``warn``
    (rank 0: one line for the run, not one per process)."""
    workers = cfg.workers
    if workers is None:
        workers = default_workers(device.type, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if warn and device.type == "cuda" and workers == 0:
        print(
            "warning: workers=0 on CUDA: images are decoded and augmented inside the training "
            "process while the GPU waits; leave workers unset (one per core) or set workers>0",
            file=sys.stderr,
        )
    return dataclasses.replace(cfg, workers=workers)


def check_teacher_is_not_an_output(cfg: PretrainConfig) -> None:
    """The teacher file must not be one this run overwrites (``OUT/final.pt``, ``OUT/last.pt``):
    ``--restart`` would delete it, and the run's own checkpoints would replace the teacher it names."""
    if not cfg.teacher_ckpt:
        return
    teacher = Path(cfg.teacher_ckpt).expanduser().resolve()
    out = Path(cfg.out).expanduser().resolve()
    if teacher in (out / "final.pt", out / "last.pt"):
        raise InputError(
            f"--teacher-ckpt {cfg.teacher_ckpt} is inside --out {cfg.out}, where this run writes its own "
            f"{teacher.name}; expected a teacher outside the output folder (copy it, or choose another --out)"
        )


def set_up(cfg: PretrainConfig, data_name: str | None = None) -> TrainingSetup:
    """Build the method, data and optimiser; every check of the input happens here, before any file is
    touched. ``data_name``: what the records call the data (a suite's dataset name; default: the folder's)."""
    device_type = "cuda" if cfg.device in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    dist_info = init_distributed(device_type)
    device = pick_device(cfg.device, dist_info)
    cfg = cfg.with_memory_format_for(device.type)  # recorded as resolved, so the protocol says what ran
    cfg = resolve_workers(cfg, device, warn=dist_info.is_main)
    if device.type == "cuda":
        # every step has the same shapes (the sampler drops the last partial batch): autotune once
        torch.backends.cudnn.benchmark = True
    autocast_for(cfg, device)  # an amp this device cannot run: refused here, not once the progress bar is up
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for the activations each step re-allocates (same numbers)
    if cfg.batch_size % dist_info.world_size:
        raise InputError(
            f"batch_size {cfg.batch_size} is not divisible by the {dist_info.world_size} processes"
        )
    local_batch = cfg.batch_size // dist_info.world_size
    check_teacher_is_not_an_output(cfg)
    method, teacher_info = build_method(cfg)
    refuse_cpu_bf16_on_a_1x1_map(cfg, method.student, device)
    dataset, sampler, per_epoch, device_aug = build_data(cfg, method, dist_info, local_batch)
    data = data_identity(cfg.data, [path for path, _ in dataset.base.samples], data_name)
    total_steps = per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    method.to(device)
    if cfg.channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, method)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and device.type == "cuda")
    protocol = resolved_protocol(cfg, method, teacher_info, data)
    # the environment (processes, threads, versions) that produced the numbers besides the settings;
    # the key is "run" because every record and checkpoint already stores it under that name
    protocol["run"] = process_environment(dist_info.world_size, local_batch, device)
    return TrainingSetup(
        cfg,
        dist_info,
        device,
        method,
        teacher_info,
        protocol,
        training_identity(cfg, teacher_info, method, data),
        dataset,
        sampler,
        per_epoch,
        total_steps,
        optimizer,
        scaler,
        device_aug,
    )


# --- resume or start ----------------------------------------------------------------------------


def saved_identity(saved: dict, setup: TrainingSetup) -> dict:
    """A checkpoint's run identity; one written before data fingerprints were recorded is judged by
    the data's path alone."""
    config = dict(saved.get("config") or {})
    config.setdefault("data_fingerprint", setup.identity.get("data_fingerprint"))
    return config


def check_same_run(setup: TrainingSetup, path: Path, saved: dict) -> None:
    config = saved_identity(saved, setup)
    then, now = config["data_fingerprint"], setup.identity["data_fingerprint"]
    if then != now and config.get("data") == setup.identity["data"]:  # same folder, other images
        raise InputError(
            f"{path} was trained on other data: the images under {setup.cfg.data}/train changed since "
            f"(fingerprint {then[:12]} then, {now[:12]} now: "
            f"images added, removed, renamed or resized); pass --restart to discard it and start over on "
            "the data as it is now (in a suite: delete it), or restore the data"
        )
    differences = identity_differences(config, setup.identity)
    if differences:
        raise InputError(
            f"{path} belongs to a different run: {'; '.join(differences)}; pass --restart to discard "
            "it and start over (in a suite: delete it), or choose another --out"
        )


def remove_stale_temp_files(out: Path) -> None:
    """Temp siblings a killed save left behind (``.last.pt.XXXX.tmp``); no other process writes
    here (the output folder's lock), so none of them is being written."""
    for name in ("last.pt", "final.pt", "log.csv"):
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def discard_previous(setup: TrainingSetup) -> None:
    """``--restart``: the checkpoints and logs of whatever ran in this folder before."""
    for path in (setup.last_path, setup.final_path, setup.out / "log.csv"):
        path.unlink(missing_ok=True)
    shutil.rmtree(setup.out / "tb", ignore_errors=True)


def restore(setup: TrainingSetup, saved: dict) -> LoopState:
    """Put the method, optimiser, scaler and RNGs back where ``last.pt`` left them."""
    load_method_state(setup.method, saved["method_state"], f"resume checkpoint {setup.last_path}")
    setup.optimizer.load_state_dict(saved["optimizer"])
    setup.scaler.load_state_dict(saved["scaler"])
    restore_rng(saved["rng"], setup.device)
    return LoopState(
        step=saved["step"],
        epoch_means=list(saved["epoch_means"]),
        running=dict(saved["running"]),
        saved_step=saved["step"],
    )


def resume_or_start(setup: TrainingSetup, restart: bool) -> LoopState:
    """The loop state restored from ``last.pt`` of the same run, or a fresh start (``restart`` discards
    what is there). A ``final.pt`` without ``last.pt`` must be of the same run too; training then
    starts from step 0 and replaces it."""
    if setup.dist_info.is_main:
        remove_stale_temp_files(setup.out)
    if restart:
        if setup.dist_info.is_main:
            discard_previous(setup)
        return LoopState()
    if setup.last_path.exists():
        saved = load_previous(setup.last_path, "resume checkpoint", RESUME_KEYS)
        check_same_run(setup, setup.last_path, saved)
        return restore(setup, saved)
    if setup.final_path.exists():
        check_same_run(setup, setup.final_path, load_previous(setup.final_path, "previous final checkpoint"))
    return LoopState()


RESUME_KEYS = ("step", "epoch_means", "method_state", "optimizer", "scaler", "rng", "running")
DISCARD = "pass --restart to discard it and start over (in a suite: delete it)"


def load_previous(path: Path, what: str, keys: tuple[str, ...] = ()) -> dict:
    """A checkpoint an earlier run left in the output folder, as a pre-training checkpoint of this
    project holding ``keys``; anything else (unreadable, another format, a final.pt copied to
    last.pt) is one error saying how to get past it."""
    try:
        state = safe_load(path, what)
    except InputError as exc:
        raise InputError(f"{exc}; {DISCARD}") from None
    if (
        not isinstance(state, dict)
        or state.get("kind") != "pretrain"
        or not isinstance(state.get("config"), dict)
    ):
        raise InputError(f"{what} {path} is not a pre-training checkpoint of disco-bench; {DISCARD}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise InputError(
            f"{what} {path} holds no training state ({', '.join(missing)} missing: a final.pt copied to "
            f"last.pt?); expected the last.pt a run writes; {DISCARD}"
        )
    return state


# --- checkpoints --------------------------------------------------------------------------------


def checkpoint_payload(setup: TrainingSetup, loop: LoopState, final: bool) -> dict:
    teacher = setup.teacher_info
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": "pretrain",
        "done": final,
        "config": setup.identity,
        "protocol": setup.protocol,
        "step": loop.step,
        "planned_steps": setup.per_epoch * setup.cfg.epochs,  # more than step when max_steps ended the run
        "epoch": loop.step // setup.per_epoch,
        "encoder": export_encoder(setup.method, setup.cfg),
        "teacher": teacher
        and {"arch": teacher["arch"], "sha256": teacher["sha256"], "format": teacher["format"]},
        "epoch_means": loop.epoch_means,
    }
    if final:
        payload["images_per_s"] = loop.images_per_s
    else:
        payload |= {
            "method_state": method_state(setup.method),
            "optimizer": setup.optimizer.state_dict(),
            "scaler": setup.scaler.state_dict(),
            "rng": rng_state(setup.device),
            "running": dict(loop.running),
        }
    return payload


def save_checkpoint(setup: TrainingSetup, loop: LoopState, final: bool) -> Path:
    """Write ``final.pt`` or ``last.pt`` (rank 0 only); a diverged state never overwrites a usable one."""
    path = setup.final_path if final else setup.last_path
    if not setup.dist_info.is_main:
        return path
    weights = method_state(setup.method)
    bad = nonfinite_keys(weights)
    if bad:
        raise TrainingDiverged(
            f"{bad[0]} became NaN/Inf after step {loop.step} (epoch {loop.step // setup.per_epoch}); "
            f"last good checkpoint: {loop.last_good(setup.last_path)}; likely causes: base_lr too high, "
            "a temperature near 0, or NaN/Inf inputs (teacher, data)"
        )
    written = atomic_torch_save(checkpoint_payload(setup, loop, final), path)
    if not final:
        loop.saved_step = loop.step
    return written


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


# --- the loop -----------------------------------------------------------------------------------


def make_loader(setup: TrainingSetup) -> DataLoader:
    """One loader for the whole run; its workers persist across epochs. Each epoch is set on the
    sampler (``epoch_batches``), whose (epoch, index) pairs carry it to the workers."""
    # its own generator: a loader drawn from the global RNG would shift it on every (re)start
    loader_gen = torch.Generator().manual_seed(setup.cfg.seed * 1_000_003)
    return DataLoader(
        setup.dataset,
        batch_sampler=setup.sampler,
        num_workers=setup.cfg.workers,
        pin_memory=setup.device.type == "cuda",
        persistent_workers=setup.cfg.workers > 0,
        generator=loader_gen,
    )


def epoch_batches(setup: TrainingSetup, loader: DataLoader, epoch: int, start_batch: int):
    """The batches of ``epoch`` from ``start_batch`` on (a resumed epoch skips the ones done)."""
    setup.sampler.set_epoch(epoch, start_batch)
    return iter(loader)


def to_device(setup: TrainingSetup, views: list) -> list[torch.Tensor]:
    """The batch's views on the run's device; with aug_impl='gpu' each view arrives as (uint8
    pixels, parameters), crosses as uint8 and is augmented there."""
    if setup.device_aug is not None:
        views = [
            setup.device_aug(
                pixels.to(setup.device, non_blocking=True), params.to(setup.device, non_blocking=True)
            )
            for pixels, params in views
        ]
    else:
        views = [v.to(setup.device, non_blocking=True) for v in views]
    layout = torch.channels_last if setup.cfg.channels_last else torch.contiguous_format
    return [v.contiguous(memory_format=layout) for v in views]


def step_once(
    setup: TrainingSetup, model, loop: LoopState, views: list[torch.Tensor], autocast
) -> dict[str, float]:
    """One step at ``loop.step``; returns the log row (step counted from 1, epoch, lr, loss terms)."""
    epoch = loop.step // setup.per_epoch
    apply_schedule(setup.optimizer, setup.cfg, loop.step, setup.per_epoch)
    # schedules inside a method (DINO's EMA momentum, frozen layers)
    setup.method.on_step(loop.step, setup.per_epoch * setup.cfg.epochs, setup.per_epoch)
    values = train_step(model, views, setup.optimizer, setup.scaler, autocast)
    if not math.isfinite(values["loss"]):  # steps count from 1, as in log.csv
        raise TrainingDiverged(
            f"loss is {values['loss']} at step {loop.step + 1} (epoch {epoch}); last checkpoint "
            f"with finite weights: {loop.last_good(setup.last_path)}; likely causes: base_lr too high, "
            "a temperature near 0, or NaN/Inf inputs (teacher, data)"
        )
    loop.step += 1
    return {"step": loop.step, "epoch": epoch, "lr": setup.optimizer.param_groups[0]["lr"]} | values


def tally_step(setup: TrainingSetup, loop: LoopState, row: dict[str, float]) -> None:
    """Add the row to the epoch's sums; close the epoch when it is complete (before any save, so a
    resume never sees a half-closed one), then checkpoint when one is due."""
    for k, v in row.items():
        loop.running[k] = loop.running.get(k, 0.0) + v
    epoch_done = loop.step % setup.per_epoch == 0 or loop.step >= setup.total_steps
    if epoch_done:
        n = loop.step - row["epoch"] * setup.per_epoch
        loop.epoch_means.append(
            {"epoch": row["epoch"]} | {k: v / n for k, v in loop.running.items() if k.startswith("loss")}
        )
        loop.running.clear()
    every = setup.cfg.save_every_steps
    if epoch_done or (every and loop.step % every == 0):
        save_checkpoint(setup, loop, final=False)


def train(setup: TrainingSetup, model, loop: LoopState, show_progress: bool) -> int:
    """Steps from ``loop.step`` to ``setup.total_steps``, with a progress bar where ``show_progress``
    (rank 0 only); returns the images all processes saw together (this process's batches times the
    process count), from which ``pretrain`` reports the training speed."""
    log = StepLog(setup.out / "log.csv", loop.step) if setup.dist_info.is_main else None
    bar = tqdm(
        total=setup.total_steps,
        initial=loop.step,
        disable=not (show_progress and setup.dist_info.is_main),
        desc=f"pretrain {setup.cfg.method}",
        unit="step",
    )
    autocast = autocast_for(setup.cfg, setup.device)
    images_seen, t0 = 0, time.perf_counter()
    loader = make_loader(setup)
    try:
        while loop.step < setup.total_steps:
            epoch, start_batch = divmod(loop.step, setup.per_epoch)
            for views, _ in epoch_batches(setup, loader, epoch, start_batch):
                views = to_device(setup, views)
                row = step_once(setup, model, loop, views, autocast)
                images_seen += views[0].shape[0] * setup.dist_info.world_size
                if log:
                    log.write(row)
                speed = images_seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(
                    {k: f"{v:.3f}" for k, v in row.items() if k.startswith("loss")}
                    | {"img/s": f"{speed:.0f}"}
                )
                bar.update(1)
                tally_step(setup, loop, row)
                if loop.step >= setup.total_steps:
                    break
    except BaseException:
        if log:
            log.close()
            if loop.saved_step is None and log.start_step == 0:
                log.remove()  # nothing to resume from: a log of steps no checkpoint holds would mislead
        raise
    finally:
        bar.close()
        if log:
            log.close()
    return images_seen


def already_final(setup: TrainingSetup, loop: LoopState) -> dict | None:
    """``final.pt`` of this very run at the step it stopped, or None: the run is finished, and writing
    it again would change its bytes (it records the threads and versions of the process writing it),
    and with them the sha256 a student distilling it, or a record, names."""
    if loop.step < setup.total_steps or not setup.final_path.exists():
        return None
    saved = load_previous(setup.final_path, "previous final checkpoint")
    same = (
        saved.get("done") is True
        and saved.get("step") == loop.step
        and not identity_differences(saved_identity(saved, setup), setup.identity)
    )
    return saved if same else None


def pretrain(
    cfg: PretrainConfig, restart: bool = False, progress: bool = True, data_name: str | None = None
) -> dict:
    """TrainingSetup pre-training, continuing from ``OUT/last.pt`` of the same run unless ``restart``;
    returns a summary with the final checkpoint path and losses. ``progress``: show a progress bar
    (the CLI's ``--quiet`` turns it off). ``data_name``: see :func:`set_up`."""
    setup = set_up(cfg, data_name)
    loop = resume_or_start(setup, restart)
    model = setup.method
    if setup.dist_info.enabled:
        model = DistributedDataParallel(
            setup.method, device_ids=[setup.device.index] if setup.device.type == "cuda" else None
        )
    model.train()
    t0 = time.perf_counter()
    finished = already_final(setup, loop)
    if finished is not None:
        # a run killed after writing final.pt but before its records: its rerun reports the speed the
        # training measured, which final.pt keeps, so no record of it is lost
        path, loop.images_per_s = setup.final_path, finished.get("images_per_s")
    else:
        images_seen = train(setup, model, loop, show_progress=progress)
        elapsed = time.perf_counter() - t0
        loop.images_per_s = images_seen / elapsed if elapsed > 0 and images_seen else None
        path = save_checkpoint(setup, loop, final=True)
    shutdown_distributed(setup.dist_info)
    last = loop.epoch_means[-1] if loop.epoch_means else {}
    return {
        "checkpoint": str(path),
        "steps": loop.step,
        "planned_steps": setup.per_epoch * setup.cfg.epochs,
        "final_loss": {k: v for k, v in last.items() if k.startswith("loss")},
        "images_per_s": loop.images_per_s,
        "teacher": setup.teacher_info,
        "protocol": setup.protocol,
    }


# --- the step log -------------------------------------------------------------------------------


class StepLog:
    """Per-step loss terms as CSV (and TensorBoard when installed); rows past ``start_step`` that a
    killed run left behind are dropped on resume so the log matches the checkpoint. The files are
    opened at the first row, so a run stopped before its first step leaves none; a write that fails
    (disk full) is one InputError naming the file."""

    def __init__(self, path: Path, start_step: int):
        self.path, self.start_step = path, start_step
        self.pending = []
        if path.exists() and start_step > 0:
            with open(path, newline="") as handle:
                self.pending = [r for r in csv.DictReader(handle) if int(r["step"]) <= start_step]
        self.handle, self.tb, self.writer = None, None, None

    def _open(self, fieldnames: list[str]) -> None:
        """Write the header and the kept rows in one atomic replace (a kill while the log is being
        rewritten never loses the rows of the checkpoint), then append from there."""
        if self.start_step == 0:  # a fresh run: no events of an earlier one in its TensorBoard folder
            shutil.rmtree(self.path.parent / "tb", ignore_errors=True)
        kept = io.StringIO()
        head = csv.DictWriter(kept, fieldnames=fieldnames, extrasaction="ignore")
        head.writeheader()
        head.writerows(self.pending)
        atomic_write_text(self.path, kept.getvalue())
        self.handle = open(self.path, "a", newline="")  # noqa: SIM115 (open for the whole run; close() ends it)
        self.writer = csv.DictWriter(self.handle, fieldnames=fieldnames, extrasaction="ignore")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.path.parent / "tb"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def write(self, row: dict) -> None:
        try:
            if self.handle is None:
                self._open(list(row))
            self.writer.writerow(row)
            self.handle.flush()
        except OSError as exc:
            raise InputError(
                f"cannot write {self.path}: {exc.strerror or exc}; the checkpoints are unchanged"
            ) from exc
        if self.tb:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.handle:
            self.handle.close()
        if self.tb:
            self.tb.close()
        self.handle, self.tb = None, None

    def remove(self) -> None:
        """Delete what this log wrote (a fresh run that stopped before its first checkpoint)."""
        if self.writer is not None:
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.path.parent / "tb", ignore_errors=True)
