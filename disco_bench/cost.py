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
- Heads, losses, the queue and the linear classifier are ignored (under 1% for these models).
- Detection fine-tunes every parameter: iterations x batch x trials x 3 forwards of the backbone
  at the schedule's mean train short side, on a 4:3 image. The RPN and RoI heads (the C4 res5 head
  runs on 512 RoIs per image) are not counted, so detection estimates are lower bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

ASSUMED_FLOP_PER_GPU_SECOND = 5.5e12

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

    def text(self) -> str:
        if self.gpu_hours is None:
            return f"? GPU-h ({self.basis})"
        return f"~{self.gpu_hours:.3g} GPU-h ({self.basis})"


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


def dataset_images(spec: dict, name: str) -> int | None:
    """Training images of a suite dataset: counted from its ``generate`` spec, else known by name."""
    gen = spec.get("generate")
    if gen is not None:
        carved = int(gen.get("carve_val_per_class", 0))  # carved out of train for selection: not trained on
        return int(gen.get("classes", 10)) * (int(gen.get("train_per_class", 100)) - carved)
    return DATASET_IMAGES.get(name)


def pretrain_cost(
    method: str, student: str, teacher: str | None, images: int, epochs: int, image_size: int
) -> Cost:
    trained, nograd, teacher_passes = METHOD_PASSES.get(method, DEFAULT_PASSES)
    per_image = (3 * trained + nograd) * forward_flops(student, image_size)
    if teacher_passes and teacher:
        per_image += teacher_passes * forward_flops(teacher, image_size)
    assumed = "" if method in METHOD_PASSES else ", costed like disco"
    basis = f"{images:,} img x {epochs} ep x {per_image / 1e9:.3g} GFLOP{assumed}"
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
