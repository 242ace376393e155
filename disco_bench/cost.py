"""The dry-run cost model: how many GPU-hours a step needs, written down so it can be checked.

    GPU-hours = images x epochs x FLOPs per image / ASSUMED_FLOP_PER_GPU_SECOND / 3600

- FLOPs per image = 2 x multiply-accumulates of one forward pass at the step's image size
  (backbone MACs at 224 px from BACKBONE_GMACS_224, scaled by (size / 224)^2), times the number
  of passes the step makes per image: a trained pass costs 3 forwards (forward + backward),
  a no-grad pass (momentum encoder, frozen teacher, frozen probe backbone) costs 1.
- ASSUMED_FLOP_PER_GPU_SECOND is calibrated on one measured run: MoCo's README reports 53 hours on
  8 V100s for MoCo-v2 ResNet-50, 200 epochs of ImageNet; this model counts 8.4e18 FLOPs for that
  run, i.e. 5.5e12 FLOP/s sustained per V100 (data loading, fp32, all-gathers included). Newer
  GPUs run faster (roughly x2-3 for an A100); lightweight depthwise networks (EfficientNet,
  MobileNet) run well below the rate, so treat their estimates as lower bounds.
- CPU time divides the same FLOPs by ASSUMED_FLOP_PER_CPU_CORE_SECOND times the cores this process
  may use (its affinity mask, not the host's count). The rate is calibrated on the DisCo step of
  benchmarks/README.md (ResNet-18 student, ResNet-50 teacher, batch 16, 64 px, 2 cores): this
  model counts 3.41 GFLOP per image there, 54.5 GFLOP per 0.571 s step, i.e. 9.5e10 FLOP/s on
  2 cores, 4.8e10 per core (EfficientNet-B0's DisCo step at 96 px measured 9.1e10 on 2 cores).
- Heads, losses, the queue and the linear classifier are ignored (under 1% for these models).
- Detection fine-tunes every parameter: iterations x batch x trials x 3 forwards of the backbone
  at the schedule's mean train short side, on a 4:3 image. The RPN and RoI heads (the C4 res5 head
  runs on 512 RoIs per image) are not counted, so detection estimates are lower bounds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from infra.environment import available_cores

ASSUMED_FLOP_PER_GPU_SECOND = 5.5e12
ASSUMED_FLOP_PER_CPU_CORE_SECOND = 4.8e10
# a command whose estimate on this machine passes this says so before it starts
LONG_RUN_SECONDS = 10 * 60

# Forward multiply-accumulates (GMACs) of each backbone at 224 px (pooled features, no classifier),
# counted with torch.utils.flop_counter (convolutions and matmuls) on this repository's builders.
BACKBONE_GMACS_224 = {
    "resnet18": 1.814,
    "resnet34": 3.663,
    "resnet50": 4.087,
    "resnet101": 7.799,
    "resnet152": 11.512,
    "resnet50w2": 15.866,
    "efficientnet_b0": 0.385,
    "efficientnet_b1": 0.568,
    "mobilenetv3_large_100": 0.215,
    "vit_tiny_patch16_224": 1.253,
    "xcit_tiny_12_p16_224": 1.230,
    "vit_small_patch16_224": 4.598,
    "xcit_small_12_p16_224": 4.795,
}

# Training images per dataset name, for datasets the suite does not generate.
DATASET_IMAGES = {
    "imagenet": 1_281_167,
    "cifar10": 50_000,
    "cifar100": 50_000,
    "voc": 16_551,  # VOC07+12 trainval
    "coco": 118_287,  # train2017
}

# Per image and step of pre-training: (trained student passes, no-grad student passes, teacher passes).
METHOD_PASSES = {
    "moco": (1, 1, 0),  # q on view 1 (trained), momentum key on view 2
    "disco": (2, 1, 2),  # q on both views (MSE to the teacher on both), momentum key, teacher on both
    "disco*": (2, 1, 2),
    "seed": (1, 0, 1),  # one view through student and teacher, no momentum encoder
    "distill-only": (2, 0, 2),  # DisCo's MSE alone: the student and the teacher on both views, no key encoder
}
DEFAULT_PASSES = (2, 1, 2)  # a method not listed above is costed like DisCo (said in the estimate)


@dataclass(frozen=True)
class Cost:
    gpu_hours: float | None  # None: no rule for this step
    basis: str  # how it was computed, in words

    def cpu_hours(self, cores: int | None = None) -> float | None:
        """The same FLOPs on ``cores`` CPU cores (default: this process's)."""
        if self.gpu_hours is None:
            return None
        rate = ASSUMED_FLOP_PER_CPU_CORE_SECOND * (cores or available_cores())
        return self.gpu_hours * ASSUMED_FLOP_PER_GPU_SECOND / rate

    def seconds_here(self, on_gpu: bool) -> float | None:
        """Wall-clock seconds on this machine: one GPU if ``on_gpu``, else its CPU cores."""
        if self.gpu_hours is None:
            return None
        return 3600 * (self.gpu_hours if on_gpu else self.cpu_hours())

    def text(self) -> str:
        if self.gpu_hours is None:
            return f"? GPU-h ({self.basis})"
        cores = available_cores()
        cpu = duration(3600 * self.cpu_hours(cores))
        return f"~{self.gpu_hours:.3g} GPU-h, ~{cpu} on {cores} CPU core{'s' if cores > 1 else ''} ({self.basis})"


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.4 h``, ``5.2 days``: the unit a reader thinks in."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@cache
def backbone_gmacs(arch: str) -> float:
    """MACs of one 224-px forward, from the table or else counted (once per architecture)."""
    return BACKBONE_GMACS_224[arch] if arch in BACKBONE_GMACS_224 else count_gmacs(arch)


def count_gmacs(arch: str) -> float:
    """Count on a meta-device model: shapes only, so no memory and no arithmetic is spent."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pretrain.models import build_backbone

    with torch.device("meta"):
        model = build_backbone(arch).eval()
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2e9


def forward_flops(arch: str, image_size: int) -> float:
    return 2e9 * backbone_gmacs(arch) * (image_size / 224) ** 2


def gpu_hours(flops: float) -> float:
    return flops / ASSUMED_FLOP_PER_GPU_SECOND / 3600


def dataset_images(spec: dict, name: str, path: str | Path | None = None) -> int | None:
    """Training images of a suite dataset: counted from its ``generate`` spec, else from the folder
    at ``path`` when it exists, else known by name."""
    gen = spec.get("generate")
    if gen is not None:
        carved = int(gen.get("carve_val_per_class", 0))  # carved out of train for selection: not trained on
        return int(gen.get("classes", 10)) * (int(gen.get("train_per_class", 100)) - carved)
    counted = folder_images(spec.get("kind", "imagefolder"), path) if path is not None else None
    return counted if counted is not None else DATASET_IMAGES.get(name)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif"}


def folder_images(kind: str, path: str | Path) -> int | None:
    """Training images in a dataset folder of ``kind`` that exists, counted from what it holds
    (None when the folder is missing or not in that layout): ImageFolder files under train/, CIFAR
    pickle rows, VOC trainval lists (07 and 12), COCO's train2017 annotation file."""
    path = Path(path)
    if kind == "imagefolder":
        train = path / "train"
        if not train.is_dir():
            return None
        return sum(
            1 for _, _, files in os.walk(train) for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES
        )
    if kind == "cifar":
        from downstream.array_pickle import load_array_pickle  # the safe reader: builds arrays, runs nothing

        for folder, names in (
            ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)]),
            ("cifar-100-python", ["train"]),
        ):
            for root in (path / folder, path):
                files = [root / n for n in names if (root / n).is_file()]
                if files:
                    return sum(
                        len(load_array_pickle(f, "CIFAR batch", encoding="bytes")[b"data"]) for f in files
                    )
        return None
    if kind == "voc":
        devkit = path / "VOCdevkit" if (path / "VOCdevkit").is_dir() else path
        lists = [devkit / year / "ImageSets" / "Main" / "trainval.txt" for year in ("VOC2007", "VOC2012")]
        found = [f for f in lists if f.is_file()]
        return sum(len(f.read_text().split()) for f in found) if found else None
    if kind == "coco":
        ann = path / "annotations" / "instances_train2017.json"
        if not ann.is_file():
            return None
        with open(ann) as handle:
            return len(json.load(handle).get("images", []))
    return None


def pretrain_cost(
    method: str, student: str, teacher: str | None, images: int, epochs: int, image_size: int
) -> Cost:
    trained, nograd, teacher_passes = METHOD_PASSES.get(method, DEFAULT_PASSES)
    per_image = (3 * trained + nograd) * forward_flops(student, image_size)
    if teacher_passes and teacher:
        per_image += teacher_passes * forward_flops(teacher, image_size)
    assumed = "" if method in METHOD_PASSES else ", costed like disco"
    basis = f"{images:,} img x {epochs:.3g} ep x {per_image / 1e9:.3g} GFLOP{assumed}"
    return Cost(gpu_hours(images * epochs * per_image), basis)


def probe_cost(arch: str, train_images: int, epochs: int, image_size: int, fast: bool) -> Cost:
    """A frozen backbone: the paper protocol forwards every augmented train image every epoch; the
    fast protocol forwards each train image once (features cached); validation adds ~4% on ImageNet."""
    passes = 1 if fast else epochs
    per_image = forward_flops(arch, image_size)
    basis = f"{train_images:,} img x {passes} pass{'es' if passes > 1 else ''} x {per_image / 1e9:.3g} GFLOP"
    return Cost(gpu_hours(train_images * passes * per_image), basis)


def detection_cost(arch: str, cfg) -> Cost:
    from downstream.detection.schedule import effective_schedule

    sched = effective_schedule(cfg)
    short = sum(sched.train_min_size) / 2
    per_image = 3 * forward_flops(arch, short) * 4 / 3  # a 4:3 image of that short side
    images = sched.max_iter * sched.batch_size * cfg.det_trials
    basis = f"{sched.max_iter:,} it x {sched.batch_size} img x {cfg.det_trials} trial(s) x {per_image / 1e9:.3g} GFLOP, heads not counted"
    return Cost(gpu_hours(images * per_image), basis)


def eval_cost(task: str, cfg, arch: str | None, train_images: int | None) -> Cost:
    """Classification-style tasks by the probe formula; analysis tasks by the images they read.
    A step comparing several checkpoints (tsne, mi) costs one run per checkpoint, each costed as the first."""
    one = _eval_cost_one(task, cfg, arch, train_images)
    models = max(1, len(getattr(cfg, "ckpts", None) or []))
    if models == 1 or one.gpu_hours is None:
        return one
    return Cost(one.gpu_hours * models, f"{models} checkpoints x {one.basis}")


def _eval_cost_one(task: str, cfg, arch: str | None, train_images: int | None) -> Cost:
    if arch is None:
        return Cost(None, "architecture of the evaluated checkpoint unknown")
    if task == "tsne":
        return probe_cost(arch, cfg.classes * cfg.per_class, 1, cfg.image_size, fast=True)
    if train_images is None:
        return Cost(None, "size of the dataset unknown")
    if task == "semisup":
        train_images = max(1, round(train_images * cfg.subset_fraction))
    if task == "knn":
        return probe_cost(arch, train_images, 1, cfg.image_size, fast=True)
    if task == "detection":
        return detection_cost(arch, cfg)
    if task in ("linear", "semisup", "cifar", "mi"):
        return probe_cost(arch, train_images, cfg.epochs, cfg.image_size, fast=cfg.protocol == "fast")
    return Cost(None, f"no cost rule for task {task!r}")


# --- "this will take a while" before a command starts ---------------------------------------------

EVAL_DATA_KINDS = {"cifar": "cifar"}  # task -> dataset layout its --data holds (default imagefolder)


def eval_train_images(task: str, cfg) -> int | None:
    """Training images an eval of ``task`` reads from ``cfg.data`` (counted in the folder)."""
    kind = cfg.det_dataset if task == "detection" else EVAL_DATA_KINDS.get(task, "imagefolder")
    return folder_images(kind, cfg.data)


def checkpoint_arch(path: str) -> str | None:
    """The architecture a checkpoint holds; None when it cannot be read (the task itself then says why)."""
    from infra.errors import InputError
    from pretrain.teachers import load_encoder

    try:
        return load_encoder(path)[1].get("arch")
    except (InputError, OSError):
        return None


def long_run_note(estimate: Cost, on_gpu: bool, what: str, quick: str) -> str | None:
    """One line when ``estimate`` passes LONG_RUN_SECONDS on this machine (one GPU, or its CPU cores):
    the estimate and ``quick``, the flag that makes it short; None otherwise."""
    seconds = estimate.seconds_here(on_gpu)
    if seconds is None or seconds <= LONG_RUN_SECONDS:
        return None
    cores = available_cores()
    where = "one GPU" if on_gpu else f"{cores} CPU core{'s' if cores > 1 else ''}"
    return f"note: {what} is estimated at ~{duration(seconds)} on {where} ({estimate.basis}); {quick}"


def eval_note(task: str, cfg, arch: str | None, on_gpu: bool) -> str | None:
    """The long-run line of ``eval TASK`` with ``cfg``, naming the quick variant and its estimate."""
    images = eval_train_images(task, cfg)
    estimate = eval_cost(task, cfg, arch, images)
    if task == "detection":
        from downstream.detection.schedule import effective_schedule

        sched_iters = effective_schedule(cfg).max_iter
        per_iter = (estimate.seconds_here(on_gpu) or 0) / sched_iters
        estimate_iters = max(10, int(LONG_RUN_SECONDS / 2 / per_iter)) if per_iter else 100
        quick = f"--max-iter {estimate_iters} takes ~{duration(per_iter * estimate_iters)} (a smoke test, not the paper's number)"
    elif cfg.protocol == "paper" and task in ("linear", "semisup", "cifar", "mi"):
        fast = eval_cost(task, dataclasses.replace(cfg, protocol="fast"), arch, images)
        quick = f"--protocol fast takes ~{duration(fast.seconds_here(on_gpu) or 0)}"
    else:
        quick = "--epochs N shortens it"
    return long_run_note(estimate, on_gpu, f"eval {task}", quick)


def pretrain_note(cfg, on_gpu: bool) -> str | None:
    """The long-run line of ``pretrain`` with ``cfg`` (the teacher counted when its architecture is named)."""
    images = folder_images("imagefolder", cfg.data)
    if images is None:
        return None
    epochs = cfg.epochs
    if cfg.max_steps:  # the run ends at max_steps steps (drop_last batches), perhaps before its epochs
        epochs = min(epochs, cfg.max_steps / max(1, images // cfg.batch_size))
    estimate = pretrain_cost(cfg.method, cfg.student, cfg.teacher, images, epochs, cfg.image_size)
    per_epoch = (estimate.seconds_here(on_gpu) or 0) / epochs
    epochs = max(1, int(LONG_RUN_SECONDS / 2 / per_epoch)) if per_epoch else 1
    quick = f"--epochs {epochs} takes ~{duration(per_epoch * epochs)} (or --set max_steps=N)"
    return long_run_note(estimate, on_gpu, f"pretrain {cfg.method} {cfg.student}", quick)
