"""Load an encoder (backbone + projection head) from a checkpoint file, detecting its format.

Formats: this project's own checkpoints and MoCo's ``main_moco.py`` checkpoints. Each format is
a ``(detect, load)`` pair in FORMATS. Every key must be used or be an expected drop (momentum
encoder, queue, ...); anything else is an InputError listing the keys.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pretrain.checkpoint import CHECKPOINT_FORMAT, file_sha256, load_state_strict, safe_load
from pretrain.errors import InputError
from pretrain.models import Encoder, ProjectionHead, build_backbone, feature_dim


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _build(arch: str, backbone_state: dict, head_state: dict | None, source: str, head_bn: bool = False) -> Encoder:
    backbone = build_backbone(arch)
    load_state_strict(backbone, backbone_state, f"{source} (backbone, arch {arch})")
    if not head_state:
        raise InputError(f"{source} has no projection head: a teacher needs one to give embeddings")
    first = head_state["net.0.weight"]
    last_key = max((k for k in head_state if k.endswith(".weight")), key=lambda k: int(k.split(".")[1]))
    single = last_key == "net.0.weight"
    hidden = 0 if single else first.shape[0]
    out_dim = head_state[last_key].shape[0]
    head = ProjectionHead(feature_dim(backbone), hidden, out_dim, batchnorm=head_bn)
    load_state_strict(head, head_state, f"{source} (projection head)")
    return Encoder(backbone, head)


# --- this project's checkpoints -------------------------------------------------------------


def _is_own(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def _load_own(obj: dict, source: str, arch: str | None) -> tuple[Encoder, dict]:
    enc = obj["encoder"]
    if arch and arch != enc["arch"]:
        raise InputError(f"{source} holds a {enc['arch']} encoder, not the requested {arch}")
    encoder = _build(enc["arch"], enc["backbone"], enc["head"], source, head_bn=enc.get("head_bn", False))
    info = {
        "format": "disco-bench",
        "arch": enc["arch"],
        "method": obj.get("config", {}).get("method"),
        "teacher": (obj.get("teacher") or {}).get("arch"),
        "protocol": obj.get("protocol", {}),
    }
    return encoder, info


# --- MoCo main_moco.py ------------------------------------------------------------------------


def _is_moco(obj: Any) -> bool:
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    return isinstance(sd, dict) and any(k.startswith(("module.encoder_q.", "encoder_q.")) for k in sd)


def _load_moco(obj: dict, source: str, arch: str | None) -> tuple[Encoder, dict]:
    sd = obj["state_dict"]
    prefix = "module.encoder_q." if any(k.startswith("module.encoder_q.") for k in sd) else "encoder_q."
    root = prefix[: -len("encoder_q.")]
    expected_drops = (root + "encoder_k.", root + "queue")
    stray = [k for k in sd if not k.startswith(prefix) and not k.startswith(expected_drops)]
    if stray:
        raise InputError(f"{source}: MoCo checkpoint has keys outside encoder_q/encoder_k/queue: {', '.join(sorted(stray)[:8])}")
    q = _strip(sd, prefix)
    arch = arch or obj.get("arch")
    if not arch:
        raise InputError(f"{source}: MoCo checkpoint does not name its arch; pass the teacher architecture")
    backbone = {k: v for k, v in q.items() if not k.startswith("fc.")}
    fc = _strip(q, "fc.")
    head = {f"net.{k}": v for k, v in fc.items()}
    if set(fc) == {"weight", "bias"}:
        head = {"net.0.weight": fc["weight"], "net.0.bias": fc["bias"]}
    return _build(arch, backbone, head, source), {"format": "moco", "arch": arch, "method": "moco", "teacher": None}


FORMATS: dict[str, tuple[Callable[[Any], bool], Callable[..., tuple[Encoder, dict]]]] = {
    "disco-bench": (_is_own, _load_own),
    "moco": (_is_moco, _load_moco),
}


def load_encoder(path: str | Path, arch: str | None = None) -> tuple[Encoder, dict]:
    """(encoder, info) from any supported checkpoint; info has format, arch, method, teacher, sha256."""
    obj = safe_load(path, "checkpoint")
    source = f"checkpoint {path}"
    for name, (detect, load) in FORMATS.items():
        if detect(obj):
            encoder, info = load(obj, source, arch)
            info["sha256"] = file_sha256(path)
            info["path"] = str(path)
            return encoder, info
    keys = ", ".join(sorted(obj)[:6]) if isinstance(obj, dict) else type(obj).__name__
    raise InputError(f"{source}: unrecognised checkpoint layout (top-level keys: {keys}); expected one of {sorted(FORMATS)}")
