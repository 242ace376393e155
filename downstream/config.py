"""Typed configuration shared by the evaluation tasks; a task reads the fields it needs."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field

from pretrain.validation import (
    FREE,
    Device,
    Each,
    OneOf,
    OrNull,
    Range,
    at_least,
    fraction,
    positive,
    validate_fields,
)

# Fields that only matter to one protocol or one task: a record lists only those that shaped its number.
PAPER_FIELDS = {"epochs", "batch_size", "lr", "lr_milestones", "weight_decay"}
FAST_FIELDS = {"fast_weight_decays", "fast_holdout", "fast_max_iter"}
TASK_FIELDS = {
    "semisup": {"subset_fraction", "subset_list"},
    "cifar": {"cifar_variant"},
    "knn": {"knn_k", "knn_temperature"},
    "tsne": {"classes", "per_class", "tsne_perplexity", "tsne_knn_k"},
    "mi": {"mi_bins"},
    "detection": {
        "det_dataset",
        "det_backend",
        "det_trials",
        "det_max_iter",
        "det_image_size",
        "det_batch_size",
        "det_lr",
        "det_norm",
        "det_clip_grad",
        "det_head",
    },  # detection
}
KD_FIELDS = {"kd_teacher", "kd_alpha", "kd_temperature"}  # recorded only when KD is on
# Where files go and how fast they are made; never part of a protocol.
RUNTIME_FIELDS = {
    "ckpt",
    "data",
    "out",
    "workers",
    "device",
    "feature_batch_size",
    "amp",
    "channels_last",
    "ckpts",
    "ckpt_labels",
}


_WARNED_NO_WORKERS: list[bool] = []  # the CUDA warning is printed once per process


@dataclass
class EvalConfig:
    ckpt: str = ""  # checkpoint written by pretrain, or a supported external format
    data: str = ""  # dataset root (ImageFolder with train/ and val/, or a task's own layout)
    out: str = "runs/eval"  # where task artefacts (probe checkpoints, plots) go
    protocol: str = "paper"  # paper | fast
    epochs: int = 100
    image_size: int = 224
    batch_size: int = 256  # global batch; split evenly over torchrun processes
    lr: float | None = (
        None  # None: the task's default (docs/method.md#linear): linear 30 ResNet / 3 others; semisup, cifar 3
    )
    lr_milestones: tuple[float, ...] = (0.6, 0.8)  # fractions of the epochs (60 and 80 of 100)
    weight_decay: float = 0.0
    seed: int = 0
    workers: int | None = None  # DataLoader workers; None: loader_workers() decides for the device
    device: str = "auto"
    feature_batch_size: int = 512
    amp: str = "bf16"  # backbone forward precision on GPU: none | bf16 | fp16 (CPU always runs fp32)
    channels_last: bool = True  # GPU only
    # fast protocol: full-batch L-BFGS on cached features, weight decay chosen on a held-out part
    fast_weight_decays: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    fast_holdout: float = 0.2
    fast_max_iter: int = 200
    # semisup: a SimCLR list file (one image file name per line), or else a stratified fraction of train
    subset_fraction: float = 0.01
    subset_list: str = ""
    # cifar: which pickle folder when DATA holds both (auto | cifar10 | cifar100)
    cifar_variant: str = "auto"
    # knn: weighted vote of the k nearest train features (k capped at the train size), InstDisc/DINO style
    knn_k: tuple[int, ...] = (20, 200)
    knn_temperature: float = 0.07
    extra: dict = field(default_factory=dict)  # task-specific settings
    # analysis (tsne, mi): several checkpoints side by side
    ckpts: list[str] = field(default_factory=list)  # checkpoints to compare; empty: just ckpt
    ckpt_labels: list[str] = field(
        default_factory=list
    )  # legend names, one per checkpoint; empty: "method arch"
    classes: int = (
        10  # t-SNE: the first CLASSES classes of val/ (sorted), PER_CLASS images each (docs/method.md#tsne)
    )
    per_class: int = 50
    tsne_perplexity: float = 30.0  # capped at (images - 1) / 3
    tsne_knn_k: int = 5  # t-SNE separation score: leave-one-out kNN accuracy in feature space
    mi_bins: int = 30  # MI: equal bins on [0, 1] per softmax dimension (docs/method.md#mi)
    # detection: paper schedules (docs/method.md#detection) unless shortened; None means the paper's value
    det_dataset: str = "voc"  # detection: voc (Faster R-CNN) | coco (Mask R-CNN)
    det_backend: str = "torchvision"  # detection: torchvision | detectron2
    det_trials: int = 1  # detection: runs with seeds seed .. seed+N-1; records mean and std (paper VOC: 5)
    det_max_iter: int | None = None  # detection: None = 48k VOC / 180k COCO; steps and warm-up scale with it
    det_image_size: int | None = (
        None  # detection: None = paper scales; else train and test at this short side
    )
    det_batch_size: int | None = None  # detection: None = 32; lr scales linearly with it unless det_lr is set
    det_lr: float | None = None  # detection: None = 0.1 VOC / 0.11 COCO at batch 32
    det_norm: str = "syncbn"  # detection: syncbn (BN on one process) | bn | frozen
    det_clip_grad: float | None = (
        None  # detection: gradient-norm clip; None = off at the paper schedule, on for short ones; 0 = off
    )
    det_head: str = (
        "extranorm"  # detection C4 box head: extranorm (MoCo's Res5ROIHeadsExtraNorm + PreciseBN) | res5
    )
    # kd: Hinton KD at the probe stage (linear, semisup, cifar probes); see downstream/kd.py
    kd_teacher: str = ""  # a classifier file (backbone + trained linear head); empty: KD off
    kd_alpha: float = 0.5  # weight of the soft (teacher) term; 1 - alpha on the labels
    kd_temperature: float = 2.0
    kd_save_classifier: bool = (
        False  # write OUT/classifier.pt (this backbone + the trained head) for use as kd_teacher
    )

    def __post_init__(self) -> None:
        validate_fields(self, FIELD_RULES)

    def loader_workers(self) -> int:
        """``workers``, or when unset what pre-training uses on this device (none on a CPU; on CUDA
        the cores this process may use, shared among the node's processes: pretrain.data.default_workers).
        A CUDA run left with none is warned once, in one line."""
        import torch

        from pretrain.data import default_workers

        device = "cuda" if self.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        workers = self.workers
        if workers is None:
            workers = default_workers(device, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if device == "cuda" and workers == 0 and not _WARNED_NO_WORKERS:
            _WARNED_NO_WORKERS.append(True)
            print(
                "warning: workers=0 on CUDA: images are decoded inside the evaluating process while "
                "the GPU waits; leave workers unset (one per core) or set workers>0",
                file=sys.stderr,
            )
        return workers

    def protocol_dict(self, task: str = "linear") -> dict:
        """The settings that make ``task``'s numbers comparable (other tasks' and protocols' fields left out)."""
        skip = set(RUNTIME_FIELDS) | {"kd_save_classifier"}
        if not self.kd_teacher:
            skip |= KD_FIELDS
        for other, fields in TASK_FIELDS.items():
            if other != task:
                skip |= fields
        if task == "knn":  # kNN trains nothing: neither probe protocol applies
            skip |= PAPER_FIELDS | FAST_FIELDS | {"protocol"}
        elif self.protocol == "fast":
            skip |= PAPER_FIELDS
        else:
            skip |= FAST_FIELDS
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k not in skip}


AMPS = ("none", "bf16", "fp16")

# One rule per field (pretrain.validation): type from the annotation, then this range or choice.
FIELD_RULES = {
    "ckpt": FREE,  # paths: checked when read, naming the file
    "data": FREE,
    "out": FREE,
    "protocol": OneOf(("paper", "fast")),
    "epochs": at_least(1),
    "image_size": at_least(1),
    "batch_size": at_least(1),
    "lr": OrNull(positive()),
    "lr_milestones": Each(fraction(low_open=True), ordered=True),
    "weight_decay": Range(low=0.0),
    "seed": at_least(0),
    "workers": OrNull(at_least(0)),
    "device": Device(),
    "feature_batch_size": at_least(1),
    "amp": OneOf(AMPS),
    "channels_last": FREE,
    "fast_weight_decays": Each(Range(low=0.0)),
    "fast_holdout": fraction(low_open=True, high_open=True),
    "fast_max_iter": at_least(1),
    "subset_fraction": fraction(low_open=True),
    "subset_list": FREE,
    "cifar_variant": OneOf(("auto", "cifar10", "cifar100")),
    "knn_k": Each(at_least(1)),
    "knn_temperature": positive(),
    "extra": FREE,
    "ckpts": FREE,
    "ckpt_labels": FREE,
    "classes": at_least(2),
    "per_class": at_least(1),
    "tsne_perplexity": positive(),
    "tsne_knn_k": at_least(1),
    "mi_bins": at_least(1),
    "det_dataset": OneOf(("voc", "coco")),
    "det_backend": OneOf(("torchvision", "detectron2")),
    "det_trials": at_least(1),
    "det_max_iter": OrNull(at_least(1)),
    "det_image_size": OrNull(at_least(32)),  # smaller leaves no room for the anchors
    "det_batch_size": OrNull(at_least(1)),
    "det_lr": OrNull(positive()),
    "det_norm": OneOf(("syncbn", "bn", "frozen")),
    "det_clip_grad": OrNull(Range(low=0.0)),
    "det_head": OneOf(("extranorm", "res5")),
    "kd_teacher": FREE,
    "kd_alpha": fraction(),
    "kd_temperature": positive(),
    "kd_save_classifier": FREE,
}
