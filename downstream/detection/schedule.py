"""The paper's detection schedules (METHOD.md section 5) and how a shortened run derives from them.

VOC07+12 -> VOC07 test, Faster R-CNN C4: batch 32, lr 0.1, 200 warm-up iterations, lr x0.1 at 18k
and 22.2k, 48k iterations, train short side 400-800, test 800. COCO train2017 -> val2017, Mask
R-CNN C4: 180k iterations, lr 0.11, train short side 600-800, test 800. METHOD.md does not state
COCO's batch, decay steps or warm-up; they follow MoCo's 2x COCO schedule as run in Detectron2
(batch 32 like VOC, steps at 120k and 160k, Detectron2's default 1000 warm-up iterations).

``--max-iter N`` scales the decay steps and the warm-up with N; ``--image-size S`` trains and tests
at short side S (long side capped at S * 1333 / 800, Detectron2's ratio) and scales the sampled RoIs
RPN proposals and kept detections per image with the image area (at least 64, 256, 100 at test
and 20); ``det_batch_size`` scales
the lr linearly unless ``det_lr`` is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from downstream.config import EvalConfig
from pretrain.errors import InputError


@dataclass(frozen=True)
class Schedule:
    max_iter: int
    batch_size: int
    lr: float
    warmup_iters: int
    steps: tuple[int, ...]  # iterations at which the lr is multiplied by 0.1
    train_min_size: tuple[int, int]  # short side drawn uniformly from [lo, hi] per image
    test_min_size: int
    max_size: int  # cap on the long side
    rois_per_image: int = 512  # sampled RoIs per image for the box head (Detectron2's default)
    proposals_per_image: int = 2000  # RPN proposals kept per image in training (post-NMS)
    test_proposals_per_image: int = 1000  # RPN proposals scored by the box head per test image
    detections_per_image: int = 100  # kept per test image (COCO's maxDets); masks are predicted for each
    weight_decay: float = 1e-4
    momentum: float = 0.9

    def lr_factor(self, it: int) -> float:
        """Multiplier of ``lr`` at iteration ``it``: linear warm-up from 0.001, then step decays."""
        decay = 0.1 ** sum(it >= s for s in self.steps)
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            return decay * (0.001 * (1 - alpha) + alpha)
        return decay


PAPER_SCHEDULES = {
    "voc": Schedule(max_iter=48_000, batch_size=32, lr=0.1, warmup_iters=200, steps=(18_000, 22_200),
                    train_min_size=(400, 800), test_min_size=800, max_size=1333),
    "coco": Schedule(max_iter=180_000, batch_size=32, lr=0.11, warmup_iters=1000, steps=(120_000, 160_000),
                     train_min_size=(600, 800), test_min_size=800, max_size=1333),
}
NORMS = ("syncbn", "bn", "frozen")
BACKENDS = ("torchvision", "detectron2")


def effective_schedule(cfg: EvalConfig) -> Schedule:
    """The paper schedule for ``cfg.det_dataset`` with the overrides ``cfg`` asks for."""
    if cfg.det_dataset not in PAPER_SCHEDULES:
        raise InputError(f"det_dataset {cfg.det_dataset!r}: expected one of {', '.join(PAPER_SCHEDULES)}")
    if cfg.det_backend not in BACKENDS:
        raise InputError(f"det_backend {cfg.det_backend!r}: expected one of {', '.join(BACKENDS)}")
    if cfg.det_norm not in NORMS:
        raise InputError(f"det_norm {cfg.det_norm!r}: expected one of {', '.join(NORMS)}")
    if cfg.det_trials < 1:
        raise InputError(f"det_trials {cfg.det_trials}: expected at least 1")
    s = PAPER_SCHEDULES[cfg.det_dataset]
    changes: dict = {}
    if cfg.det_max_iter is not None:
        if cfg.det_max_iter < 1:
            raise InputError(f"det_max_iter {cfg.det_max_iter}: expected a positive number of iterations")
        scale = cfg.det_max_iter / s.max_iter
        # distinct steps inside the run: Detectron2's scheduler accepts nothing else
        steps = tuple(sorted({round(x * scale) for x in s.steps} & set(range(1, cfg.det_max_iter))))
        changes |= {"max_iter": cfg.det_max_iter, "steps": steps,
                    "warmup_iters": max(1, round(s.warmup_iters * scale))}
    if cfg.det_image_size is not None:
        if cfg.det_image_size < 32:
            raise InputError(f"det_image_size {cfg.det_image_size}: expected at least 32 pixels")
        size = cfg.det_image_size
        # RoI and proposal budgets scale with the image area (an 800 px image holds 39x a 128 px one)
        area = (size / 800) ** 2
        changes |= {"train_min_size": (size, size), "test_min_size": size, "max_size": round(size * 1333 / 800),
                    "rois_per_image": max(64, round(s.rois_per_image * area)),
                    "proposals_per_image": max(256, round(s.proposals_per_image * area)),
                    "test_proposals_per_image": max(100, round(s.test_proposals_per_image * area)),
                    "detections_per_image": max(20, round(s.detections_per_image * area))}
    if cfg.det_batch_size is not None:
        if cfg.det_batch_size < 1:
            raise InputError(f"det_batch_size {cfg.det_batch_size}: expected at least 1")
        changes |= {"batch_size": cfg.det_batch_size, "lr": s.lr * cfg.det_batch_size / s.batch_size}
    if cfg.det_lr is not None:
        changes["lr"] = cfg.det_lr
    return dataclasses.replace(s, **changes)
