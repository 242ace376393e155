"""Hinton knowledge distillation at the probe stage (the KD rows of the paper's Table 5).

With ``kd_teacher`` set, a linear/semi-supervised probe trains its head on
``(1 - kd_alpha) * CE(student, label) + kd_alpha * T^2 * KL(softmax(t / T) || softmax(s / T))``
(T = ``kd_temperature``; alpha 0.5, T 2 as in the paper) where t are the logits of a teacher
classifier: a frozen backbone with a trained linear head. ``kd`` alone is then a probe of a MoCo-v2
student with KD on, ``kd+disco`` a probe of a DisCo student with KD on.

The teacher classifier file is written by a probe run on the teacher's checkpoint with
``kd_save_classifier: true`` (``OUT/classifier.pt``)::

    {"format": "disco-bench/1", "kind": "classifier", "arch": str, "backbone": state_dict,
     "classifier": {"weight": (C, F), "bias": (C,)}, "num_classes": C,
     "source": {"ckpt": path, "sha256": str, "protocol": "paper" | "fast"}}

The head acts on the raw pooled backbone features; a fast-protocol head, fitted on standardised
features, is saved with the standardisation folded into its weights (same logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from downstream.features import Runtime, backbone_features, extract_features, freeze_backbone
from infra.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_torch_save,
    file_sha256,
    load_state_strict,
    safe_load,
)
from infra.errors import InputError
from pretrain.models import build_backbone, feature_dim

CLASSIFIER_KIND = "classifier"


def kd_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Hinton KD: (1 - alpha) * mean CE(s, y) + alpha * T^2 * mean_b KL(softmax(t/T) || softmax(s/T)).

    student_logits, teacher_logits: (B, C); targets: (B,) class indices. T^2 keeps the soft term's
    gradient scale independent of T (Hinton et al. 2015).
    """
    hard = F.cross_entropy(student_logits, targets)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, dim=1)
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return (1.0 - alpha) * hard + alpha * temperature**2 * soft


@dataclass
class SoftTargets:
    """Teacher logits for rows of cached features (fast protocol) with the KD weights."""

    logits: torch.Tensor  # (N, C), row i for training row i
    alpha: float
    temperature: float

    def subset(self, rows: torch.Tensor) -> SoftTargets:
        return SoftTargets(self.logits[rows], self.alpha, self.temperature)

    def loss(self, student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return kd_loss(student_logits, targets, self.logits, self.alpha, self.temperature)


class Classifier(nn.Module):
    """A frozen backbone followed by a linear head: the KD teacher."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def save_classifier(
    path: str | Path,
    source_ckpt: str,
    backbone: nn.Module,
    weight: torch.Tensor,
    bias: torch.Tensor,
    protocol: str,
) -> Path:
    """Write a probe's backbone + linear head as a KD teacher file (format in the module docstring)."""
    from pretrain.teachers import load_encoder  # the arch is what the source checkpoint says it is

    _, info = load_encoder(source_ckpt)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": CLASSIFIER_KIND,
        "arch": info["arch"],
        "backbone": {k: v.detach().cpu() for k, v in backbone.state_dict().items()},
        "classifier": {"weight": weight.detach().float().cpu(), "bias": bias.detach().float().cpu()},
        "num_classes": int(weight.shape[0]),
        "source": {"ckpt": str(source_ckpt), "sha256": info.get("sha256", ""), "protocol": protocol},
    }
    return atomic_torch_save(payload, path)


def fold_standardisation(weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
    """(W', b') with W' x + b' == W ((x - mean) / std) + b for every x."""
    folded = weight / std.unsqueeze(0)
    return folded, bias - folded @ mean


def load_classifier(path: str | Path) -> tuple[Classifier, dict]:
    """(classifier in eval mode, info with arch, num_classes, sha256) from a ``kind: classifier`` file."""
    obj = safe_load(path, "KD teacher classifier")
    if not isinstance(obj, dict) or obj.get("kind") != CLASSIFIER_KIND:
        kind = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        raise InputError(
            f"kd_teacher {path}: expected a classifier file written by a probe with kd_save_classifier=true, "
            f"got kind {kind!r}"
        )
    for key in ("arch", "backbone", "classifier", "num_classes"):
        if key not in obj:
            raise InputError(
                f"kd_teacher {path}: missing key {key!r} (expected arch, backbone, classifier, num_classes)"
            )
    backbone = build_backbone(obj["arch"])
    load_state_strict(backbone, obj["backbone"], f"kd_teacher {path} (backbone, arch {obj['arch']})")
    head = nn.Linear(feature_dim(backbone), int(obj["num_classes"]))
    load_state_strict(head, obj["classifier"], f"kd_teacher {path} (linear head)")
    info = {"arch": obj["arch"], "num_classes": int(obj["num_classes"]), "sha256": file_sha256(path)}
    return Classifier(backbone, head).eval(), info


class KDTeacher:
    """The frozen teacher classifier of a probe run, with the KD weights from the config."""

    def __init__(self, path: str, alpha: float, temperature: float, num_classes: int, rt: Runtime):
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"kd_alpha: expected a value in [0, 1], got {alpha}")
        if temperature <= 0:
            raise InputError(f"kd_temperature: expected a positive value, got {temperature}")
        self.model, self.info = load_classifier(path)
        if self.info["num_classes"] != num_classes:
            raise InputError(
                f"kd_teacher {path} predicts {self.info['num_classes']} classes, the probe's dataset has {num_classes}"
            )
        freeze_backbone(self.model, rt)
        self.alpha, self.temperature, self.rt = alpha, temperature, rt

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return backbone_features(self.model, images, self.rt)

    def loss(self, student_logits: torch.Tensor, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The KD loss of one batch: the teacher sees exactly the student's augmented images."""
        return kd_loss(student_logits, targets, self.logits(images), self.alpha, self.temperature)

    def soft_targets(self, dataset: Dataset, batch_size: int, workers: int, progress: bool) -> SoftTargets:
        logits, _ = extract_features(
            self.model, dataset, batch_size, self.rt, workers, "KD teacher logits", progress
        )
        return SoftTargets(logits, self.alpha, self.temperature)

    def describe(self) -> dict:
        return {"kd_teacher_arch": self.info["arch"], "kd_teacher_sha256": self.info["sha256"]}


def kd_teacher_for(cfg, num_classes: int, rt: Runtime) -> KDTeacher | None:
    """The KD teacher a probe config asks for (``kd_teacher``), or None when KD is off."""
    if not cfg.kd_teacher:
        return None
    return KDTeacher(cfg.kd_teacher, cfg.kd_alpha, cfg.kd_temperature, num_classes, rt)


def save_probe_classifier(cfg, backbone: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> Path | None:
    """``OUT/classifier.pt`` when the probe config asks for it (``kd_save_classifier``), else nothing."""
    if not cfg.kd_save_classifier:
        return None
    return save_classifier(Path(cfg.out) / "classifier.pt", cfg.ckpt, backbone, weight, bias, cfg.protocol)
