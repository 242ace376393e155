"""Typed configuration of a pre-training run. Every field that changes a number is recorded."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16 (autocast on CUDA; recorded in the protocol)
    channels_last: bool = False
    save_every_steps: int = 0  # also checkpoint every N steps (0: only at epoch ends)
    log_every: int = 10
    max_steps: int = 0  # stop after N steps in all (0: run every epoch); for tests and quick looks
    # --- method settings (METHOD.md sections 1 and 4) ---
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

    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    def protocol(self) -> dict:
        """The settings that make a number comparable (no paths)."""
        skip = {"data", "out", "teacher_ckpt", "workers", "device", "log_every", "save_every_steps"}
        return {k: v for k, v in asdict(self).items() if k not in skip}
