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
    amp: str = "none"  # none | bf16 | fp16: autocast for the whole step (bf16 only on a CPU); recorded in the protocol
    channels_last: bool = False
    # --- speed options (issue 9); each changes numbers slightly, so each is off by default and recorded ---
    teacher_amp: str = "none"  # none | bf16 | fp16: autocast around the frozen teacher's forward only, on any device
    teacher_channels_last: bool = False  # the frozen teacher's weights and inputs in channels_last
    aug_impl: str = "torchvision"  # torchvision (reference aug+) | fast (pretrain.augment.FastAugPlus, same draws)
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
    swav_freeze_prototypes_steps: int = 313  # prototypes get no gradient for the first N steps
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

    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    def protocol(self) -> dict:
        """The settings that make a number comparable (no paths)."""
        skip = {"data", "out", "teacher_ckpt", "workers", "device", "log_every", "save_every_steps"}
        base = self.method.split("+")[0]  # at+disco reads the at_ fields, ...
        skip |= {k for k in asdict(self) for prefix, users in METHOD_FIELDS.items() if k.startswith(prefix) and base not in users}
        return {k: v for k, v in asdict(self).items() if k not in skip}


# Field prefixes read by some methods only (issue 5): recorded only for those methods (and their +disco).
METHOD_FIELDS = {"at_": ("at",), "rkd_": ("rkd",), "swav_": ("swav",), "multicrop_": ("swav", "dino"), "dino_": ("dino",)}
