"""The paper's detection schedules (docs/method.md#detection) and how a shortened run derives from them.

VOC07+12 -> VOC07 test, Faster R-CNN C4: batch 32, lr 0.1, 200 warm-up iterations, lr x0.1 at 18k
and 22.2k, 48k iterations, train short side 400-800, test 800. COCO train2017 -> val2017, Mask
R-CNN C4: 180k iterations, lr 0.11, train short side 600-800, test 800. The paper does not state
COCO's batch, decay steps or warm-up; they follow MoCo's 2x COCO schedule as run in Detectron2
(batch 32 like VOC, steps at 120k and 160k, Detectron2's default 1000 warm-up iterations).

``--max-iter N`` scales the decay steps with N. A short run must not start at full learning rate on
heads that are still random (that is what made 20-iteration runs diverge), so the warm-up is the
paper's scaled to N but at least N/5 iterations (never more than the paper's), gradient-norm
clipping is on (``SHORT_RUN_CLIP_GRAD``) unless ``det_clip_grad`` says otherwise, and PreciseBN
averages the BatchNorm statistics over min(200, N) batches. ``--image-size S`` trains and tests
at short side S (long side capped at S * 1333 / 800, Detectron2's ratio) and scales the sampled RoIs
RPN proposals and kept detections per image with the image area (at least 64, 256, 100 at test
and 20); ``det_batch_size`` scales
the lr linearly unless ``det_lr`` is given.

A loss that still turns non-finite ends the run with :class:`DetectionDiverged` (one line: the
iteration, every loss term, and what to change).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from downstream.config import EvalConfig
from infra.errors import InputError


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
    clip_grad: float = 0.0  # gradient-norm clipping (0 = off, the paper's setting)
    precise_bn_iters: int = 200  # batches PreciseBN averages BatchNorm statistics over (Detectron2's default)

    def lr_factor(self, it: int) -> float:
        """Multiplier of ``lr`` at iteration ``it``: linear warm-up from 0.001, then step decays."""
        decay = 0.1 ** sum(it >= s for s in self.steps)
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            return decay * (0.001 * (1 - alpha) + alpha)
        return decay


PAPER_SCHEDULES = {
    "voc": Schedule(
        max_iter=48_000,
        batch_size=32,
        lr=0.1,
        warmup_iters=200,
        steps=(18_000, 22_200),
        train_min_size=(400, 800),
        test_min_size=800,
        max_size=1333,
    ),
    "coco": Schedule(
        max_iter=180_000,
        batch_size=32,
        lr=0.11,
        warmup_iters=1000,
        steps=(120_000, 160_000),
        train_min_size=(600, 800),
        test_min_size=800,
        max_size=1333,
    ),
}
# A shortened run clips the gradient norm at this value unless det_clip_grad says otherwise: with a
# few dozen iterations, one bad batch on random heads is a large part of the run.
SHORT_RUN_CLIP_GRAD = 10.0
WARMUP_MIN_FRACTION = 0.2  # of a shortened run's iterations (capped at the paper's warm-up)


class DetectionDiverged(InputError):
    """The detection loss became NaN/Inf: the settings (lr, clipping, warm-up) do not fit the data."""


def loss_curve(losses: list[float], points: int = 10) -> list[float]:
    """The training loss as ``points`` means over consecutive tenths of the run (recorded per trial)."""
    return [
        round(float(np.mean(part)), 5)
        for part in np.array_split(np.asarray(losses, dtype=float), min(points, len(losses)))
        if len(part)
    ]


def diverged(
    iteration: int, terms: dict[str, float], schedule: Schedule, clip_grad: float
) -> DetectionDiverged:
    """The one-line error for a non-finite loss at ``iteration`` (counted from 1)."""
    parts = ", ".join(f"{k} {v:.4g}" for k, v in terms.items())
    return DetectionDiverged(
        f"detection loss is not finite at iteration {iteration} of {schedule.max_iter} ({parts}; lr {schedule.lr:g}, "
        f"warm-up {schedule.warmup_iters}, clip_grad {clip_grad:g}); lower det_lr, lengthen the warm-up with more "
        "det_max_iter, or set det_clip_grad (e.g. --set det_lr=0.01 det_clip_grad=1)"
    )


def effective_schedule(cfg: EvalConfig) -> Schedule:
    """The paper schedule for ``cfg.det_dataset`` with the overrides ``cfg`` asks for."""
    # det_dataset, det_backend, det_norm, det_trials, det_max_iter are checked by EvalConfig (one place per field)
    s = PAPER_SCHEDULES[cfg.det_dataset]
    changes: dict = {}
    if cfg.det_max_iter is not None:
        scale = cfg.det_max_iter / s.max_iter
        # distinct steps inside the run: Detectron2's scheduler accepts nothing else
        steps = tuple(sorted({round(x * scale) for x in s.steps} & set(range(1, cfg.det_max_iter))))
        warmup = max(
            1,
            round(s.warmup_iters * scale),
            min(s.warmup_iters, round(cfg.det_max_iter * WARMUP_MIN_FRACTION)),
        )
        changes |= {
            "max_iter": cfg.det_max_iter,
            "steps": steps,
            "warmup_iters": warmup,
            "clip_grad": SHORT_RUN_CLIP_GRAD,
            "precise_bn_iters": min(s.precise_bn_iters, cfg.det_max_iter),
        }
    if cfg.det_image_size is not None:
        size = cfg.det_image_size
        # RoI and proposal budgets scale with the image area (an 800 px image holds 39x a 128 px one)
        area = (size / 800) ** 2
        changes |= {
            "train_min_size": (size, size),
            "test_min_size": size,
            "max_size": round(size * 1333 / 800),
            "rois_per_image": max(64, round(s.rois_per_image * area)),
            "proposals_per_image": max(256, round(s.proposals_per_image * area)),
            "test_proposals_per_image": max(100, round(s.test_proposals_per_image * area)),
            "detections_per_image": max(20, round(s.detections_per_image * area)),
        }
    if cfg.det_batch_size is not None:
        changes |= {"batch_size": cfg.det_batch_size, "lr": s.lr * cfg.det_batch_size / s.batch_size}
    if cfg.det_lr is not None:
        changes["lr"] = cfg.det_lr
    if cfg.det_clip_grad is not None:
        changes["clip_grad"] = cfg.det_clip_grad
    return dataclasses.replace(s, **changes)
