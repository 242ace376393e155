"""Typed configuration of a pre-training run. Every field that changes a number is recorded."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from pretrain.errors import InputError
from pretrain.validation import (
    FREE,
    Device,
    Each,
    FieldError,
    OneOf,
    OrNull,
    Range,
    at_least,
    fraction,
    positive,
    validate_fields,
)


@dataclass
class PretrainConfig:
    method: str = "moco"  # a key of pretrain.methods.METHODS
    student: str = "resnet18"  # timm name (or alias) of the network being trained
    teacher: str | None = None  # teacher architecture; needed when the checkpoint does not say
    teacher_ckpt: str | None = None
    data: str = ""  # ImageFolder root holding train/
    out: str = "runs/pretrain"
    epochs: int = 200
    batch_size: int = 256  # global batch (split over ranks)
    image_size: int = 224
    base_lr: float = 0.03  # for a batch of 256; scaled linearly with the global batch
    sgd_momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine (per epoch, no warm-up) | constant
    seed: int = 0
    workers: int | None = None  # DataLoader workers; None: 0 on a CPU, on CUDA pretrain.data.default_workers
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16: autocast for the whole step (bf16 only on a CPU); recorded in the protocol
    # fp32 NHWC for the whole step (only float rounding changes); None: on where benchmarks/ measured it
    # faster, see with_memory_format_for; the resolved value is what the protocol records
    channels_last: bool | None = None
    # --- speed options (issue 9); each changes numbers slightly, so each is off by default and recorded ---
    teacher_amp: str = (
        "none"  # none | bf16 | fp16: autocast around the frozen teacher's forward only, on any device
    )
    teacher_channels_last: bool | None = (
        None  # the frozen teacher's weights and inputs; None: as channels_last
    )
    aug_impl: str = (  # torchvision (reference aug+) | fast (pretrain.augment.FastAugPlus, same draws)
        "torchvision"  # | gpu (pretrain.device_augment: crop in the workers, the rest batched on the device)
    )
    save_every_steps: int = 0  # also checkpoint every N steps (0: only at epoch ends)
    log_every: int = 10
    max_steps: int = 0  # stop after N steps in all (0: run every epoch); for tests and quick looks
    # --- method settings (docs/method.md#moco-v2, #disco, #seed) ---
    dim: int = 128
    hidden: int | None = None  # student head hidden width; None: the method's default
    queue_size: int = 65536
    key_momentum: float = 0.999
    temperature: float = 0.2
    shuffle_bn_splits: int = 2  # single-process stand-in for shuffle-BN (see methods/base.py)
    distill_weight: float = 1.0  # lambda
    distill_reduction: str = "sum"  # sum (reference) | mean (batch-size invariant)
    teacher_bn: str = "eval"  # eval (default, correct) | train (reference behaviour)
    seed_student_temp: float = 0.2
    seed_teacher_temp: float = 1e-4
    # --- issue 5 methods ---
    # at, at+disco: beta/2 with beta = 1000 (Zagoruyko & Komodakis), per stage pair; see methods/at.py
    at_weight: float = 500.0
    at_strides: tuple[int, ...] = (4, 8, 16, 32)  # stage outputs paired by output stride
    # rkd, rkd+disco: Park et al.'s weights (distance 1, angle 2)
    rkd_distance_weight: float = 1.0
    rkd_angle_weight: float = 2.0
    # swav, swav+disco (Caron et al. 2020 defaults)
    swav_prototypes: int = 3000
    swav_temperature: float = 0.1
    swav_sinkhorn_eps: float = 0.05
    swav_sinkhorn_iters: int = 3
    swav_freeze_prototypes_epochs: int = (
        1  # prototypes get no gradient in the first N epochs (SwAV: 313 iters at 4096)
    )
    swav_queue_length: int = (
        3840  # feature queue for Sinkhorn (SwAV's batch-256 recipe), cut to a multiple of the batch
    )
    swav_queue_max_batch: int = 256  # the queue is used only when the global batch is at most this
    swav_queue_start_epoch: int = 15
    # SwAV's optimiser (pretrain/optim.py): LARS on SGD momentum sgd_momentum, lr swav_base_lr x batch/256,
    # linear warm-up from swav_warmup_start_fraction x lr, then a cosine to swav_final_lr_fraction x lr
    swav_optimizer: str = "lars"  # lars | sgd (sgd: the base_lr / weight_decay / schedule fields, as moco)
    swav_base_lr: float = 0.6
    swav_final_lr_fraction: float = 0.001
    swav_warmup_epochs: int = 10
    swav_warmup_start_fraction: float = 0.0625  # 0.3 -> 4.8 at batch 4096
    swav_weight_decay: float = 1e-6
    swav_lars_trust: float = 0.001
    # multi-crop for swav and dino: 2 large crops (image_size) + N small ones; 0 = two aug+ views
    multicrop_small_crops: int = 0  # 6 gives SwAV's 2x224 + 6x96 (DINO uses 10)
    multicrop_small_size: int = 96  # side of a small crop in pixels
    multicrop_large_scale: tuple[float, float] = (0.14, 1.0)
    multicrop_small_scale: tuple[float, float] = (0.05, 0.14)
    # dino, dino+disco (Caron et al. 2021 defaults; the projector bottleneck is `dim`)
    dino_out_dim: int = 65536  # prototypes of the last (weight-normalised) layer
    dino_student_temp: float = 0.1
    dino_teacher_temp: float = 0.04
    dino_warmup_teacher_temp: float = 0.04  # linear warm-up from this to dino_teacher_temp
    dino_warmup_teacher_temp_epochs: int = 0
    dino_center_momentum: float = 0.9
    dino_momentum: float = 0.996  # EMA teacher momentum, cosine schedule to 1 over the run
    dino_freeze_last_layer_epochs: int = 1
    # DINO's optimiser (pretrain/optim.py): AdamW, lr dino_base_lr x batch/256 after a linear warm-up from 0,
    # cosine to dino_min_lr; weight decay cosine dino_weight_decay -> dino_weight_decay_end (none on biases/norms);
    # each parameter's gradient clipped to norm dino_clip_grad (0: off)
    dino_optimizer: str = "adamw"  # adamw | sgd (sgd: the base_lr / weight_decay / schedule fields, as moco)
    dino_base_lr: float = 5e-4
    dino_min_lr: float = 1e-6
    dino_warmup_epochs: int = 10
    dino_weight_decay: float = 0.04
    dino_weight_decay_end: float = 0.4
    dino_clip_grad: float = 3.0

    def __post_init__(self) -> None:
        validate_fields(self, FIELD_RULES)

    def check_teacher(self) -> None:
        """The method and the teacher agree. Checked on the finished config (``train.build_method``,
        before any file is touched), not in ``__post_init__``: that also runs on each layer a config
        is built from (a suite's defaults before its step, the CLI's flags before ``--set``), where a
        teacher may come before the method that reads it."""
        if not self.teacher_ckpt and _needs_teacher(self.method):
            raise InputError(f"method {self.method!r} needs a teacher: pass --teacher-ckpt PATH")
        if self.teacher_ckpt and not _needs_teacher(self.method):
            # a teacher the method never reads: the run would be MoCo-v2 (or SwAV, DINO) alone
            # while its command line says it distils
            raise FieldError(
                "teacher_ckpt",
                f"teacher_ckpt={self.teacher_ckpt}: method {self.method!r} takes no teacher; drop it, or "
                f"choose a distiller ({', '.join(m for m in _method_names() if _needs_teacher(m))})",
            )

    def with_memory_format_for(self, device_type: str) -> PretrainConfig:
        """The config with its ``None`` channels_last settings decided for this device.

        On CPUs fp32 channels_last is on: ``benchmarks/naive_vs_ours.py`` measured the DisCo step with a
        ResNet-50 teacher 1.17x (ResNet-18 student), 1.14x (MobileNetV3-L) and 1.32x (EfficientNet-B0)
        faster than NCHW, with the same first-step loss to six decimals (oneDNN's NHWC kernels; only the
        float rounding changes). On GPUs it stays off until a GPU benchmark says otherwise. A value
        given explicitly is kept.
        """
        on = device_type == "cpu"
        student = on if self.channels_last is None else self.channels_last
        teacher = on if self.teacher_channels_last is None else self.teacher_channels_last
        return dataclasses.replace(self, channels_last=student, teacher_channels_last=teacher)

    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    def protocol(self) -> dict:
        """The settings that make a number comparable (no paths)."""
        skip = {"data", "out", "teacher_ckpt", "workers", "device", "log_every", "save_every_steps"}
        base = self.method.split("+")[0]  # at+disco reads the at_ fields, ...
        skip |= {
            k
            for k in asdict(self)
            for prefix, users in METHOD_FIELDS.items()
            if k.startswith(prefix) and base not in users
        }
        return {k: v for k, v in asdict(self).items() if k not in skip}


# Field prefixes read by some methods only (issue 5): recorded only for those methods (and their +disco).
METHOD_FIELDS = {
    "at_": ("at",),
    "rkd_": ("rkd",),
    "swav_": ("swav",),
    "multicrop_": ("swav", "dino"),
    "dino_": ("dino",),
}


def _method_names() -> list[str]:
    from pretrain.methods import METHODS  # read when checked: the registry imports this module

    return sorted(METHODS)


def _needs_teacher(method: str) -> bool:
    from pretrain.methods import METHODS

    return METHODS[method].needs_teacher


def _aug_impls() -> tuple[str, ...]:
    from pretrain.augment import AUG_IMPLS

    return AUG_IMPLS


AMPS = ("none", "bf16", "fp16")
TEMPERATURE = positive()
WEIGHT = Range(low=0.0)  # a loss weight (0 switches the term off)
MOMENTUM = fraction()

# One rule per field (pretrain.validation): type from the annotation, then this range or choice.
FIELD_RULES = {
    "method": OneOf(_method_names),
    "student": FREE,  # any timm name or alias: resolved (with suggestions) by pretrain.models.resolve_arch
    "teacher": FREE,
    "teacher_ckpt": FREE,
    "data": FREE,
    "out": FREE,
    "epochs": at_least(1),
    "batch_size": at_least(1),
    "image_size": at_least(1),
    "base_lr": positive(),
    "sgd_momentum": fraction(high_open=True),
    "weight_decay": Range(low=0.0),
    "schedule": OneOf(("cosine", "constant")),
    "seed": at_least(0),
    "workers": OrNull(at_least(0)),
    "device": Device(),
    "amp": OneOf(AMPS),
    "channels_last": FREE,
    "teacher_amp": OneOf(AMPS),
    "teacher_channels_last": FREE,
    "aug_impl": OneOf(_aug_impls),
    "save_every_steps": at_least(0),
    "log_every": at_least(1),
    "max_steps": at_least(0),
    "dim": at_least(1),
    "hidden": OrNull(at_least(0)),
    "queue_size": at_least(1),
    "key_momentum": MOMENTUM,
    "temperature": TEMPERATURE,
    "shuffle_bn_splits": at_least(1),
    "distill_weight": WEIGHT,
    "distill_reduction": OneOf(("sum", "mean")),
    "teacher_bn": OneOf(("eval", "train")),
    "seed_student_temp": TEMPERATURE,
    "seed_teacher_temp": TEMPERATURE,
    "at_weight": WEIGHT,
    "at_strides": Each(at_least(1)),
    "rkd_distance_weight": WEIGHT,
    "rkd_angle_weight": WEIGHT,
    "swav_prototypes": at_least(1),
    "swav_temperature": TEMPERATURE,
    "swav_sinkhorn_eps": positive(),
    "swav_sinkhorn_iters": at_least(1),
    "swav_freeze_prototypes_epochs": at_least(0),
    "swav_queue_length": at_least(0),
    "swav_queue_max_batch": at_least(0),
    "swav_queue_start_epoch": at_least(0),
    "swav_optimizer": OneOf(("lars", "sgd")),
    "swav_base_lr": positive(),
    "swav_final_lr_fraction": fraction(),
    "swav_warmup_epochs": at_least(0),
    "swav_warmup_start_fraction": fraction(),
    "swav_weight_decay": Range(low=0.0),
    "swav_lars_trust": positive(),
    "multicrop_small_crops": at_least(0),
    "multicrop_small_size": at_least(1),
    "multicrop_large_scale": Each(fraction(low_open=True), ordered=True),
    "multicrop_small_scale": Each(fraction(low_open=True), ordered=True),
    "dino_out_dim": at_least(1),
    "dino_student_temp": TEMPERATURE,
    "dino_teacher_temp": TEMPERATURE,
    "dino_warmup_teacher_temp": TEMPERATURE,
    "dino_warmup_teacher_temp_epochs": at_least(0),
    "dino_center_momentum": MOMENTUM,
    "dino_momentum": MOMENTUM,
    "dino_freeze_last_layer_epochs": at_least(0),
    "dino_optimizer": OneOf(("adamw", "sgd")),
    "dino_base_lr": positive(),
    "dino_min_lr": Range(low=0.0),
    "dino_warmup_epochs": at_least(0),
    "dino_weight_decay": Range(low=0.0),
    "dino_weight_decay_end": Range(low=0.0),
    "dino_clip_grad": Range(low=0.0),
}
