"""The detection task: fine-tune a student as a detector on VOC (boxes) or COCO (boxes + masks) and
report, in percent, on VOC: ``AP``, ``AP50``, ``AP75`` (Detectron2's PASCAL VOC evaluator); on COCO:
``box_AP``, ``box_AP50``, ``box_AP75`` and, with masks, ``mask_AP``, ``mask_AP50``, ``mask_AP75``
(pycocotools). Records name the dataset by its folder (a suite renames it, e.g. ``voc``, ``coco``);
the protocol says which layout was read (``det_dataset``), the train/test sets, the degenerate
annotations dropped, and any stated fallback (VOC2007 without VOC2012).

``det_trials`` N runs N fine-tunings with seeds seed..seed+N-1; each metric is then recorded as the
mean, with ``<metric>_std`` (sample standard deviation) beside it and the per-trial values in
``extra`` (MoCo reports VOC as the mean of 5 trials).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from downstream.config import EvalConfig
from downstream.detection.data import read_train_test
from downstream.detection.distributed import share_from_main
from downstream.detection.metrics import detection_metrics
from downstream.detection.schedule import effective_schedule
from downstream.result import Measurement, TaskResult


def _backend(name: str):
    # imported on demand: the detectron2 backend needs detectron2 installed, the other does not
    if name == "detectron2":
        with (
            warnings.catch_warnings()
        ):  # Detectron2 0.7 scripts functions with torch.jit, deprecated in torch 2.x
            warnings.filterwarnings("ignore", message=".*torch.jit.script", category=FutureWarning)
            from downstream.detection import detectron2_backend

        return detectron2_backend
    from downstream.detection import torchvision_backend

    return torchvision_backend


def aggregate(trials: list[dict[str, float]], dataset: str) -> list[Measurement]:
    """One measurement per metric (mean over trials), plus ``_std`` when there is more than one."""
    out = []
    for metric in trials[0]:
        values = [t[metric] for t in trials]
        if len(values) == 1:
            out.append(Measurement(metric, values[0], dataset, "test"))
            continue
        std = float(np.std(values, ddof=1))
        out.append(
            Measurement(
                metric,
                float(np.mean(values)),
                dataset,
                "test",
                {"trials": len(values), "per_trial": values, "std": std},
            )
        )
        out.append(Measurement(f"{metric}_std", std, dataset, "test", {"trials": len(values)}))
    return out


def evaluate(cfg: EvalConfig, progress: bool = True) -> TaskResult:
    from downstream.features import pick_device

    cfg = cfg.for_device(pick_device(cfg.device).type == "cuda")  # e.g. the CPU's batch
    schedule = effective_schedule(cfg)
    backend = _backend(cfg.det_backend)
    train, test = read_train_test(cfg.det_dataset, cfg.data)
    masks = cfg.det_dataset == "coco" and train.has_masks
    trials, details, info = [], [], {}
    for t in range(cfg.det_trials):
        predictions, detail, info = backend.fine_tune_and_predict(
            cfg, train, test, masks, schedule, cfg.seed + t, progress
        )
        # predictions are gathered on rank 0 alone (None elsewhere): it evaluates, every rank gets the metrics
        metrics = (
            detection_metrics(test, predictions, masks, cfg.det_dataset) if predictions is not None else None
        )
        trials.append(share_from_main(metrics))
        details.append(detail)
    protocol = (
        cfg.protocol_dict("detection")
        | {
            "model": ("Mask" if masks else "Faster") + " R-CNN",
            "schedule": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(schedule).items()
            },
            "train_images": len(train.images),
            "test_images": len(test.images),
            "classes": len(train.classes),
            "train_set": train.name,
            "test_set": test.name,
            "trial_details": details,
            "evaluator": "Detectron2 PASCAL VOC (VOC2007 11-point, IoU .50:.95)"
            if cfg.det_dataset == "voc"
            else "pycocotools COCOeval",
            "dropped_annotations": {"train": train.dropped, "test": test.dropped},
        }
        | ({"fallback": train.note} if train.note else {})
    )
    return TaskResult(
        task="detection", measurements=aggregate(trials, Path(cfg.data).name), protocol=protocol, source=info
    )
