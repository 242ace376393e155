"""Tasks that compare several checkpoints side by side (t-SNE, mutual information).

They take ``cfg.ckpts`` (or the single ``cfg.ckpt``), load one checkpoint at a time (a teacher can
be large), and tag every measurement with who it belongs to, because a record carries only one
``student``/``method``/``checkpoint_sha256`` (the first checkpoint's).
"""

from __future__ import annotations

from downstream.config import EvalConfig
from infra.errors import InputError


def checkpoint_paths(cfg: EvalConfig) -> list[str]:
    """The checkpoints to compare, in the order given: ``cfg.ckpts``, else ``[cfg.ckpt]``."""
    paths = list(cfg.ckpts) or ([cfg.ckpt] if cfg.ckpt else [])
    if not paths:
        raise InputError("no checkpoint given: set ckpt (one path) or ckpts (a list of paths)")
    if cfg.ckpt and cfg.ckpts and cfg.ckpt != cfg.ckpts[0]:
        raise InputError(
            f"ckpt {cfg.ckpt!r} and ckpts {list(cfg.ckpts)!r} disagree: give one of them, or ckpt = ckpts[0]"
        )
    if cfg.ckpt_labels and len(cfg.ckpt_labels) != len(paths):
        raise InputError(
            f"ckpt_labels has {len(cfg.ckpt_labels)} names for {len(paths)} checkpoints: give one per checkpoint"
        )
    return paths


def default_label(info: dict) -> str:
    """``method arch`` plus ``<- teacher`` for a distilled student, e.g. ``disco mobilenetv3_small_050 <- resnet18``."""
    label = f"{info.get('method') or '?'} {info.get('arch') or '?'}"
    return f"{label} <- {info['teacher']}" if info.get("teacher") else label


class Labeller:
    """Names checkpoints for legends and records: the user's names, else a unique default label."""

    def __init__(self, cfg: EvalConfig):
        self.given = list(cfg.ckpt_labels)
        self.seen: set[str] = set()

    def __call__(self, index: int, info: dict) -> str:
        base = str(self.given[index]) if self.given else default_label(info)
        label, n = base, 2
        while label in self.seen:  # two checkpoints of the same method and arch still get two names
            label, n = f"{base} #{n}", n + 1
        self.seen.add(label)
        return label


def identity(label: str, info: dict) -> dict:
    """What a measurement's ``extra`` says about the checkpoint it measures."""
    return {
        "ckpt": label,
        "arch": info.get("arch"),
        "method": info.get("method"),
        "teacher": info.get("teacher"),
        "sha256": info.get("sha256"),
    }
