"""Typed configuration of a pre-training run. Every field that changes a number is recorded."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from infra.errors import InputError
from infra.validation import (
    SEED,
    Device,
    Each,
    FieldError,
    OneOf,
    OrNull,
    Range,
    at_least,
    field_rules,
    fraction,
    positive,
    protocol_fields,
    readers_of,
    setting,
    validate_fields,
)

# Who reads a field (its ``readers``): None for every method, a tuple of method names, or a test of
# the method's class. A setting the chosen method does not read is refused where it is given (the
# CLI, a suite step), dropped where a suite's defaults give it to every step, and never recorded.
CONTRASTIVE = ("moco", "disco", "disco*", "at", "at+disco", "rkd", "rkd+disco")  # MoCo-v2's InfoNCE term
QUEUED = (*CONTRASTIVE, "seed")  # a queue of past embeddings
DISCO_TERM = ("disco", "disco*", "distill-only", "at+disco", "rkd+disco", "swav+disco", "dino+disco")
MULTICROP = ("swav", "swav+disco", "dino", "dino+disco")
SWAV = ("swav", "swav+disco")
DINO = ("dino", "dino+disco")


def _distillers(method_cls) -> bool:
    return method_cls.needs_teacher


AMPS = ("none", "bf16", "fp16")
TEMPERATURE = positive()
WEIGHT = Range(low=0.0)  # a loss weight (0 switches the term off)
MOMENTUM = fraction()


def _method_names() -> list[str]:
    from pretrain.methods import METHODS  # read when checked: the registry imports this module

    return sorted(METHODS)


# the augmentation pipelines of pretrain.augment, named here (torch-free) so a config is checked
# without importing torch
AUG_IMPLS = ("torchvision", "fast", "gpu")


def _aug_impls() -> tuple[str, ...]:
    return AUG_IMPLS


RUNTIME = {"protocol": False}  # where files go and how fast: never part of a protocol


@dataclass
class PretrainConfig:
    method: str = setting("moco", OneOf(_method_names))  # a key of pretrain.methods.METHODS
    # timm name (or alias) of the network being trained: resolved (with suggestions) by pretrain.models.resolve_arch
    student: str = setting("resnet18")
    # teacher architecture; needed when the checkpoint does not say
    teacher: str | None = setting(None, readers=_distillers)
    teacher_ckpt: str | None = setting(None, readers=_distillers, **RUNTIME)  # recorded as its sha256
    data: str = setting("", **RUNTIME)  # ImageFolder root holding train/
    out: str = setting("runs/pretrain", **RUNTIME)
    epochs: int = setting(200, at_least(1))
    batch_size: int = setting(256, at_least(1))  # global batch (split over ranks)
    image_size: int = setting(224, at_least(2))  # aug+'s smallest blur (3 taps, reflect-padded) needs 2 px
    base_lr: float = setting(0.03, positive())  # for a batch of 256; scaled linearly with the global batch
    sgd_momentum: float = setting(0.9, fraction(high_open=True))
    weight_decay: float = setting(1e-4, Range(low=0.0))
    schedule: str = setting(
        "cosine", OneOf(("cosine", "constant"))
    )  # cosine (per epoch, no warm-up) | constant
    # the random seed (initial weights, data order, augmentation draws); not the SEED method, whose
    # settings are the seed_* fields below
    seed: int = setting(0, SEED)
    # DataLoader workers; None: 0 on a CPU, on CUDA pretrain.data.default_workers
    workers: int | None = setting(None, OrNull(at_least(0)), **RUNTIME)
    device: str = setting("auto", Device(), **RUNTIME)  # auto | cpu | cuda
    # none | bf16 | fp16: autocast for the whole step (bf16 only on a CPU)
    amp: str = setting("none", OneOf(AMPS))
    # fp32 NHWC for the whole step (only float rounding changes); None: on where benchmarks/ measured it
    # faster, see with_memory_format_for; the resolved value is what the protocol records
    channels_last: bool | None = setting(None)
    # --- speed options; each changes numbers slightly, so each is off by default and recorded ---
    # none | bf16 | fp16: autocast around the frozen teacher's forward only, on any device
    teacher_amp: str = setting("none", OneOf(AMPS), readers=_distillers)
    # the frozen teacher's weights and inputs; None: as channels_last
    teacher_channels_last: bool | None = setting(None, readers=_distillers)
    # torchvision (reference aug+) | fast (pretrain.augment.FastAugPlus, same draws) | gpu
    # (pretrain.device_augment: crop in the workers, the rest batched on the device)
    aug_impl: str = setting("torchvision", OneOf(_aug_impls))
    save_every_steps: int = setting(
        0, at_least(0), **RUNTIME
    )  # also checkpoint every N steps (0: only at epoch ends)
    log_every: int = setting(10, at_least(1), **RUNTIME)
    max_steps: int = setting(
        0, at_least(0)
    )  # stop after N steps in all (0: run every epoch); for tests and quick looks
    # --- method settings (docs/method.md#moco-v2, #disco, #seed) ---
    dim: int = setting(128, at_least(1))  # dino+disco takes the teacher's; records hold the resolved width
    hidden: int | None = setting(
        None, OrNull(at_least(0))
    )  # student head hidden width; None: the method's default
    queue_size: int = setting(65536, at_least(1), readers=QUEUED)
    key_momentum: float = setting(0.999, MOMENTUM, readers=CONTRASTIVE)
    temperature: float = setting(0.2, TEMPERATURE, readers=CONTRASTIVE)
    # single-process stand-in for shuffle-BN (see methods/base.py)
    shuffle_bn_splits: int = setting(2, at_least(1), readers=CONTRASTIVE)
    distill_weight: float = setting(1.0, WEIGHT, readers=DISCO_TERM)  # lambda
    # sum (reference) | mean (batch-size invariant)
    distill_reduction: str = setting("sum", OneOf(("sum", "mean")), readers=DISCO_TERM)
    # eval (default, correct) | train (reference behaviour)
    teacher_bn: str = setting("eval", OneOf(("eval", "train")), readers=_distillers)
    # the SEED method's (Fang et al. 2021; method="seed") softmax temperatures tau_S and tau_T of the
    # student's and the teacher's similarities, nothing to do with the random ``seed`` above; the
    # names stay because they are in every SEED record's protocol and config hash
    seed_student_temp: float = setting(0.2, TEMPERATURE, readers=("seed",))
    seed_teacher_temp: float = setting(1e-4, TEMPERATURE, readers=("seed",))
    # --- testbeds beside DisCo ---
    # at, at+disco: beta/2 with beta = 1000 (Zagoruyko & Komodakis), per stage pair; see methods/at.py
    at_weight: float = setting(500.0, WEIGHT, readers=("at", "at+disco"))
    # stage outputs paired by output stride
    at_strides: tuple[int, ...] = setting((4, 8, 16, 32), Each(at_least(1)), readers=("at", "at+disco"))
    # rkd, rkd+disco: Park et al.'s weights (distance 1, angle 2)
    rkd_distance_weight: float = setting(1.0, WEIGHT, readers=("rkd", "rkd+disco"))
    rkd_angle_weight: float = setting(2.0, WEIGHT, readers=("rkd", "rkd+disco"))
    # swav, swav+disco (Caron et al. 2020 defaults)
    swav_prototypes: int = setting(3000, at_least(1), readers=SWAV)
    swav_temperature: float = setting(0.1, TEMPERATURE, readers=SWAV)
    swav_sinkhorn_eps: float = setting(0.05, positive(), readers=SWAV)
    swav_sinkhorn_iters: int = setting(3, at_least(1), readers=SWAV)
    # prototypes get no gradient in the first N epochs (SwAV: 313 iters at 4096)
    swav_freeze_prototypes_epochs: int = setting(1, at_least(0), readers=SWAV)
    # feature queue for Sinkhorn (SwAV's batch-256 recipe), cut to a multiple of the batch
    swav_queue_length: int = setting(3840, at_least(0), readers=SWAV)
    # the queue is used only when the global batch is at most this
    swav_queue_max_batch: int = setting(256, at_least(0), readers=SWAV)
    swav_queue_start_epoch: int = setting(15, at_least(0), readers=SWAV)
    # SwAV's optimiser (pretrain/optim.py): LARS on SGD momentum sgd_momentum, lr swav_base_lr x batch/256,
    # linear warm-up from swav_warmup_start_fraction x lr, then a cosine to swav_final_lr_fraction x lr
    # lars | sgd (sgd: the base_lr / weight_decay / schedule fields, as moco)
    swav_optimizer: str = setting("lars", OneOf(("lars", "sgd")), readers=SWAV)
    swav_base_lr: float = setting(0.6, positive(), readers=SWAV)
    swav_final_lr_fraction: float = setting(0.001, fraction(), readers=SWAV)
    swav_warmup_epochs: int = setting(10, at_least(0), readers=SWAV)
    swav_warmup_start_fraction: float = setting(0.0625, fraction(), readers=SWAV)  # 0.3 -> 4.8 at batch 4096
    swav_weight_decay: float = setting(1e-6, Range(low=0.0), readers=SWAV)
    swav_lars_trust: float = setting(0.001, positive(), readers=SWAV)
    # multi-crop for swav and dino: 2 large crops (image_size) + N small ones; 0 = two aug+ views
    multicrop_small_crops: int = setting(
        0, at_least(0), readers=MULTICROP
    )  # 6 gives SwAV's 2x224 + 6x96 (DINO uses 10)
    multicrop_small_size: int = setting(96, at_least(2), readers=MULTICROP)  # side of a small crop in pixels
    multicrop_large_scale: tuple[float, float] = setting(
        (0.14, 1.0), Each(fraction(low_open=True), ordered=True), readers=MULTICROP
    )
    multicrop_small_scale: tuple[float, float] = setting(
        (0.05, 0.14), Each(fraction(low_open=True), ordered=True), readers=MULTICROP
    )
    # dino, dino+disco (Caron et al. 2021 defaults; the projector bottleneck is `dim`)
    dino_out_dim: int = setting(
        65536, at_least(1), readers=DINO
    )  # prototypes of the last (weight-normalised) layer
    dino_student_temp: float = setting(0.1, TEMPERATURE, readers=DINO)
    dino_teacher_temp: float = setting(0.04, TEMPERATURE, readers=DINO)
    dino_warmup_teacher_temp: float = setting(
        0.04, TEMPERATURE, readers=DINO
    )  # linear warm-up from this to dino_teacher_temp
    dino_warmup_teacher_temp_epochs: int = setting(0, at_least(0), readers=DINO)
    dino_center_momentum: float = setting(0.9, MOMENTUM, readers=DINO)
    dino_momentum: float = setting(
        0.996, MOMENTUM, readers=DINO
    )  # EMA teacher momentum, cosine schedule to 1 over the run
    dino_freeze_last_layer_epochs: int = setting(1, at_least(0), readers=DINO)
    # DINO's optimiser (pretrain/optim.py): AdamW, lr dino_base_lr x batch/256 after a linear warm-up from 0,
    # cosine to dino_min_lr; weight decay cosine dino_weight_decay -> dino_weight_decay_end (none on biases/norms);
    # each parameter's gradient clipped to norm dino_clip_grad (0: off)
    # adamw | sgd (sgd: the base_lr / weight_decay / schedule fields, as moco)
    dino_optimizer: str = setting("adamw", OneOf(("adamw", "sgd")), readers=DINO)
    dino_base_lr: float = setting(5e-4, positive(), readers=DINO)
    dino_min_lr: float = setting(1e-6, Range(low=0.0), readers=DINO)
    dino_warmup_epochs: int = setting(10, at_least(0), readers=DINO)
    dino_weight_decay: float = setting(0.04, Range(low=0.0), readers=DINO)
    dino_weight_decay_end: float = setting(0.4, Range(low=0.0), readers=DINO)
    dino_clip_grad: float = setting(3.0, Range(low=0.0), readers=DINO)

    def __post_init__(self) -> None:
        validate_fields(self)

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
                "teacher_ckpt", f"teacher_ckpt={self.teacher_ckpt}: {self.why_unread('teacher_ckpt')}"
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
        """The settings that make a number comparable: every field declared ``protocol`` that this
        method reads (no paths, no other method's settings)."""
        values = asdict(self)
        return {k: values[k] for k in protocol_fields(PretrainConfig) if method_reads(self.method, k)}

    def unread(self, names) -> list[str]:
        """Those of ``names`` (fields) that this config's method does not read."""
        return [name for name in names if not method_reads(self.method, name)]

    def why_unread(self, name: str) -> str:
        """Why a setting of ``name`` is refused for this method, and what to do instead."""
        if readers_of(PretrainConfig)[name] is _distillers:
            return f"method {self.method!r} takes no teacher; drop it, or choose a distiller ({', '.join(readers_named(name))})"
        return (
            f"method {self.method!r} does not read {name}; drop it, or choose a method that does "
            f"({', '.join(readers_named(name))})"
        )


def method_reads(method: str, name: str) -> bool:
    """Whether ``method`` reads field ``name`` (its declared ``readers``)."""
    readers = readers_of(PretrainConfig)[name]
    if readers is None:
        return True
    if callable(readers):
        from pretrain.methods import METHODS

        return bool(readers(METHODS[method]))
    return method in readers


def readers_named(name: str) -> list[str]:
    """The methods that read field ``name``, sorted."""
    return [m for m in _method_names() if method_reads(m, name)]


def _needs_teacher(method: str) -> bool:
    from pretrain.methods import METHODS

    return METHODS[method].needs_teacher


FIELD_RULES = field_rules(PretrainConfig)  # one rule per field, each declared on its field
