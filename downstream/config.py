"""Typed configuration shared by the evaluation tasks; a task reads the fields it needs."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import asdict, dataclass

from infra.validation import (
    SEED,
    Device,
    Each,
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
from pretrain.config import AMPS

# Who reads a field (its ``readers``, a Reads): which tasks, under which probe protocol, whether only
# with a KD teacher. A setting the task does not read is refused where it is given (the CLI, a suite
# step), dropped where a suite's defaults give it to every step, and never recorded.
PROBES = ("linear", "semisup", "cifar")  # train a probe the way ``protocol`` says (paper: SGD; fast: L-BFGS)
SGD_PROBES = (*PROBES, "mi")  # mi trains its SGD probe under either protocol
FEATURE_TASKS = (*SGD_PROBES, "knn", "tsne")  # run a frozen backbone over images (all but detection)
SEVERAL = ("tsne", "mi")  # compare several checkpoints side by side


@dataclass(frozen=True)
class Reads:
    tasks: tuple[str, ...] | None = None  # None: every task
    protocols: tuple[str, ...] = ("paper", "fast")  # under which protocol the PROBES read it
    kd_only: bool = False  # read only when a KD teacher is set (kd_teacher)


def reads(tasks=None, protocols=("paper", "fast"), kd_only=False) -> Reads:
    return Reads(tuple(tasks) if tasks is not None else None, tuple(protocols), kd_only)


# Detection's batch on a CPU. The paper's 32 images take minutes per iteration on a few cores (an
# iteration at 200 px took 89 s on 2 shared cores; at the paper's 600-800 px none finished in 60 s),
# and a first try at batch 32 saw the loss jump 4.3 -> 35.9 by iteration 7. At 4 images an
# iteration costs an eighth, the lr scales linearly to 0.0125 (VOC) / 0.01375 (COCO), and the
# loss is down to 3.9 by iteration 7 (5.4 7.7 6.4 5.9 5.5 4.9 3.9; COCO layout,
# embedded scenes, ResNet-18, 200 px, 20-30 s per iteration on 2 shared cores).
CPU_DETECTION_BATCH = 4
RUNTIME = {"protocol": False}  # where files go and how fast: never part of a protocol
PAPER = reads(SGD_PROBES, ("paper",))
FAST = reads(PROBES, ("fast",))
KD = reads(PROBES, kd_only=True)
DETECTION = reads(("detection",))
TSNE = reads(("tsne",))


_WARNED_NO_WORKERS: list[bool] = []  # the CUDA warning is printed once per process


@dataclass
class EvalConfig:
    # checkpoint written by pretrain, or a supported external format; paths: checked when read, naming the file
    ckpt: str = setting("", **RUNTIME)
    data: str = setting(
        "", **RUNTIME
    )  # dataset root (ImageFolder with train/ and val/, or a task's own layout)
    out: str = setting("runs/eval", **RUNTIME)  # where task artefacts (probe checkpoints, plots) go
    protocol: str = setting("paper", OneOf(("paper", "fast")), readers=reads(SGD_PROBES))  # paper | fast
    epochs: int = setting(100, at_least(1), readers=PAPER)
    image_size: int = setting(224, at_least(1), readers=reads(FEATURE_TASKS))
    batch_size: int = setting(
        256, at_least(1), readers=PAPER
    )  # global batch; split evenly over torchrun processes
    # None: the task's default (docs/method.md#linear): linear 30 ResNet / 3 others; semisup, cifar 3
    lr: float | None = setting(None, OrNull(positive()), readers=PAPER)
    # fractions of the epochs (60 and 80 of 100)
    lr_milestones: tuple[float, ...] = setting(
        (0.6, 0.8), Each(fraction(low_open=True), ordered=True), readers=reads(PROBES, ("paper",))
    )
    weight_decay: float = setting(0.0, Range(low=0.0), readers=PAPER)
    seed: int = setting(0, SEED, readers=reads((*SGD_PROBES, "detection")))
    # DataLoader workers; None: loader_workers() decides for the device
    workers: int | None = setting(None, OrNull(at_least(0)), **RUNTIME)
    device: str = setting("auto", Device(), **RUNTIME)
    feature_batch_size: int = setting(512, at_least(1), readers=reads(FEATURE_TASKS), **RUNTIME)
    # backbone forward precision on GPU: none | bf16 | fp16 (CPU always runs fp32)
    amp: str = setting("bf16", OneOf(AMPS), readers=reads(FEATURE_TASKS), **RUNTIME)
    channels_last: bool = setting(True, readers=reads(FEATURE_TASKS), **RUNTIME)  # GPU only
    # fast protocol: full-batch L-BFGS on cached features, weight decay chosen on a held-out part
    fast_weight_decays: tuple[float, ...] = setting(
        (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1), Each(Range(low=0.0)), readers=FAST
    )
    fast_holdout: float = setting(0.2, fraction(low_open=True, high_open=True), readers=FAST)
    fast_max_iter: int = setting(200, at_least(1), readers=FAST)
    # semisup: a SimCLR list file (one image file name per line), or else a stratified fraction of train
    subset_fraction: float = setting(0.01, fraction(low_open=True), readers=reads(("semisup",)))
    subset_list: str = setting("", readers=reads(("semisup",)))
    # which pickle folder when DATA holds both (auto | cifar10 | cifar100)
    cifar_variant: str = setting(
        "auto", OneOf(("auto", "cifar10", "cifar100")), readers=reads(("cifar", "knn", "mi"))
    )
    # knn: weighted vote of the k nearest train features (k capped at the train size), InstDisc/DINO style
    knn_k: tuple[int, ...] = setting((20, 200), Each(at_least(1)), readers=reads(("knn",)))
    knn_temperature: float = setting(0.07, positive(), readers=reads(("knn",)))
    # analysis (tsne, mi): several checkpoints side by side
    ckpts: list[str] = setting(factory=list, readers=reads(SEVERAL), **RUNTIME)  # empty: just ckpt
    # legend names, one per checkpoint; empty: "method arch"
    ckpt_labels: list[str] = setting(factory=list, readers=reads(SEVERAL), **RUNTIME)
    # t-SNE: the first CLASSES classes of val/ (sorted), PER_CLASS images each (docs/method.md#tsne)
    classes: int = setting(10, at_least(2), readers=TSNE)
    per_class: int = setting(50, at_least(1), readers=TSNE)
    tsne_perplexity: float = setting(30.0, positive(), readers=TSNE)  # capped at (images - 1) / 3
    # t-SNE separation score: leave-one-out kNN accuracy in feature space
    tsne_knn_k: int = setting(5, at_least(1), readers=TSNE)
    mi_bins: int = setting(
        30, at_least(1), readers=reads(("mi",))
    )  # MI: equal bins on [0, 1] per softmax dimension
    # detection: paper schedules (docs/method.md#detection) unless shortened; None means the paper's value
    det_dataset: str = setting(
        "voc", OneOf(("voc", "coco")), readers=DETECTION
    )  # voc (Faster R-CNN) | coco (Mask R-CNN)
    det_backend: str = setting("torchvision", OneOf(("torchvision", "detectron2")), readers=DETECTION)
    # runs with seeds seed .. seed+N-1; records mean and std (paper VOC: 5)
    det_trials: int = setting(1, at_least(1), readers=DETECTION)
    # None = 48k VOC / 180k COCO; steps and warm-up scale with it
    det_max_iter: int | None = setting(None, OrNull(at_least(1)), readers=DETECTION)
    # None = paper scales; else train and test at this short side (smaller than 32 leaves no room for the anchors)
    det_image_size: int | None = setting(None, OrNull(at_least(32)), readers=DETECTION)
    # None = 32 on a GPU (the paper), CPU_DETECTION_BATCH on a CPU (for_device); lr scales linearly
    # with it unless det_lr is set
    det_batch_size: int | None = setting(None, OrNull(at_least(1)), readers=DETECTION)
    det_lr: float | None = setting(
        None, OrNull(positive()), readers=DETECTION
    )  # None = 0.1 VOC / 0.11 COCO at batch 32
    # syncbn (BN on one process) | bn | frozen
    det_norm: str = setting("syncbn", OneOf(("syncbn", "bn", "frozen")), readers=DETECTION)
    # gradient-norm clip; None = off at the paper schedule, on for short ones; 0 = off
    det_clip_grad: float | None = setting(None, OrNull(Range(low=0.0)), readers=DETECTION)
    # C4 box head: extranorm (MoCo's Res5ROIHeadsExtraNorm + PreciseBN) | res5
    det_head: str = setting("extranorm", OneOf(("extranorm", "res5")), readers=DETECTION)
    # kd: Hinton KD at the probe stage (linear, semisup, cifar probes); see downstream/kd.py
    kd_teacher: str = setting(
        "", readers=KD
    )  # a classifier file (backbone + trained linear head); empty: KD off
    kd_alpha: float = setting(
        0.5, fraction(), readers=KD
    )  # weight of the soft (teacher) term; 1 - alpha on the labels
    kd_temperature: float = setting(2.0, positive(), readers=KD)
    # write OUT/classifier.pt (this backbone + the trained head) for use as kd_teacher
    kd_save_classifier: bool = setting(False, readers=reads(PROBES), **RUNTIME)

    def __post_init__(self) -> None:
        validate_fields(self)

    def reads(self, name: str, task: str) -> bool:
        """Whether ``task`` reads field ``name`` under this config's protocol and KD setting."""
        r: Reads = readers_of(EvalConfig)[name] or Reads()
        if r.tasks is not None and task not in r.tasks:
            return False
        if task in PROBES and self.protocol not in r.protocols:
            return False
        return not (r.kd_only and not self.kd_teacher)

    def unread(self, names, task: str) -> list[str]:
        """Those of ``names`` (fields) that ``task`` does not read under this config."""
        return [name for name in names if not self.reads(name, task)]

    def for_device(self, on_gpu: bool) -> EvalConfig:
        """This config with its device-dependent defaults filled in: on a CPU an unset det_batch_size
        becomes CPU_DETECTION_BATCH (the record then says which batch trained); on a GPU it stays the
        paper's (None = 32), so GPU records keep the paper's setting."""
        if on_gpu or self.det_batch_size is not None:
            return self
        return dataclasses.replace(self, det_batch_size=CPU_DETECTION_BATCH)

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

    def why_unread(self, name: str, task: str) -> str:
        """Why a setting of ``name`` is refused for ``task`` under this config, and what to do instead."""
        r: Reads = readers_of(EvalConfig)[name] or Reads()
        if r.tasks is not None and task not in r.tasks:
            return f"eval {task} does not read {name}; drop it (read by {', '.join(r.tasks)})"
        if task in PROBES and self.protocol not in r.protocols:
            return (
                f"eval {task} under protocol {self.protocol} does not read {name}; drop it "
                f"(read under protocol {' and '.join(r.protocols)})"
            )
        return f"eval {task} without a KD teacher does not read {name}; drop it, or set kd_teacher"

    def protocol_dict(self, task: str = "linear") -> dict:
        """The settings that make ``task``'s numbers comparable: every field declared ``protocol``
        that the task reads under this protocol (other tasks' and protocols' fields left out)."""
        values = asdict(self)
        return {
            k: (list(values[k]) if isinstance(values[k], tuple) else values[k])
            for k in protocol_fields(EvalConfig)
            if self.reads(k, task)
        }


KD_FIELDS = {
    f.name for f in dataclasses.fields(EvalConfig) if (readers_of(EvalConfig)[f.name] or Reads()).kd_only
}
RUNTIME_FIELDS = {f.name for f in dataclasses.fields(EvalConfig)} - set(protocol_fields(EvalConfig))
FIELD_RULES = field_rules(EvalConfig)  # one rule per field, each declared on its field
