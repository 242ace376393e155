"""Typed configuration shared by the evaluation tasks; a task reads the fields it needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class EvalConfig:
    ckpt: str = ""  # checkpoint written by pretrain, or a supported external format
    data: str = ""  # dataset root (ImageFolder with train/ and val/, or a task's own layout)
    out: str = "runs/eval"  # where task artefacts (probe checkpoints, plots) go
    protocol: str = "paper"  # paper | fast
    epochs: int = 100
    image_size: int = 224
    batch_size: int = 256
    lr: float | None = None  # None: lr 3 for EfficientNet/MobileNet, 30 for ResNet (METHOD.md 5)
    lr_milestones: tuple[float, ...] = (0.6, 0.8)  # fractions of the epochs (60 and 80 of 100)
    weight_decay: float = 0.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    feature_batch_size: int = 512
    # fast protocol: full-batch L-BFGS on cached features, weight decay chosen on a held-out part
    fast_weight_decays: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
    fast_holdout: float = 0.2
    fast_max_iter: int = 200
    extra: dict = field(default_factory=dict)  # task-specific settings

    def protocol_dict(self) -> dict:
        skip = {"ckpt", "data", "out", "workers", "device", "feature_batch_size"}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k not in skip}
