"""``disco-bench convert --to detectron2 CKPT OUT.pkl``: a student's ResNet backbone as Detectron2 weights.

timm's (= torchvision's) ResNet names map onto Detectron2's ResNet as
``conv1 -> stem.conv1``, ``bn1 -> stem.conv1.norm``, ``layerN.B -> res{N+1}.B``, inside a block
``bnK -> convK.norm``, ``downsample.0 -> shortcut``, ``downsample.1 -> shortcut.norm``. The file is
Detectron2's pickle format with ``matching_heuristics``, so ``res5.*`` lands in the backbone (FPN)
or in the C4 box head (``roi_heads.res5``), like Detectron2's own converted ImageNet weights.
Every key must map; the model's input must then be RGB with the ImageNet mean/std in 0-255 units
and ``STRIDE_IN_1X1: False`` (the stride sits in the 3x3 conv, as in torchvision).

The detectron2 backend reads the file back with :func:`read_detectron2_weights` (the project's safe
loader for array pickles, never an unrestricted pickle) and places each key itself
(:func:`place_weights`): ``backbone.<key>`` where the model has it, else ``roi_heads.<key>`` (the C4
box head's res5).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from downstream.array_pickle import load_array_pickle
from downstream.backbone import load_backbone
from infra.checkpoint import atomic_write
from infra.errors import InputError

# ResNets Detectron2 builds: plain stem, basic blocks (18, 34) or bottlenecks (50+).
D2_RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}

_STEM = {"conv1.weight": "stem.conv1.weight"} | {
    f"bn1.{p}": f"stem.conv1.norm.{p}"
    for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
}
_BLOCK = re.compile(r"layer([1-4])\.(\d+)\.(.+)")
_INNER = [
    (re.compile(r"bn(\d)\.(.+)"), r"conv\1.norm.\2"),
    (re.compile(r"conv(\d)\.weight"), r"conv\1.weight"),
    (re.compile(r"downsample\.0\.weight"), "shortcut.weight"),
    (re.compile(r"downsample\.1\.(.+)"), r"shortcut.norm.\1"),
]


def detectron2_key(key: str) -> str | None:
    """Detectron2's name for a timm/torchvision ResNet key, or None if it has none."""
    if key in _STEM:
        return _STEM[key]
    m = _BLOCK.fullmatch(key)
    if not m:
        return None
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    for pattern, replacement in _INNER:
        if pattern.fullmatch(rest):
            return f"res{stage}.{block}.{pattern.sub(replacement, rest)}"
    return None


def resnet_to_detectron2(state: dict[str, torch.Tensor], source: str) -> dict[str, np.ndarray]:
    """Every key renamed (an InputError lists any that has no Detectron2 name); values as numpy arrays."""
    unmapped = [k for k in state if detectron2_key(k) is None]
    if unmapped:
        raise InputError(
            f"{source}: {len(unmapped)} key(s) have no Detectron2 ResNet name: {', '.join(unmapped[:6])} "
            "(expected a plain torchvision/timm ResNet)"
        )
    return {detectron2_key(k): v.detach().cpu().numpy() for k, v in state.items()}


def convert_checkpoint(ckpt: str, out: str | Path) -> dict:
    """Write Detectron2 weights for ``ckpt``'s backbone to ``out`` (a .pkl); return a summary."""
    out = Path(out)
    if out.suffix != ".pkl":
        raise InputError(f"{out}: Detectron2 reads converted weights from a .pkl file; name the output *.pkl")
    backbone, info = load_backbone(ckpt)
    if info["arch"] not in D2_RESNET_DEPTHS:
        raise InputError(
            f"checkpoint {ckpt} holds a {info['arch']}: convert handles {', '.join(D2_RESNET_DEPTHS)}; "
            "other students plug into Detectron2 through the timm FPN backbone (eval detection "
            "--backend detectron2 loads them directly)"
        )
    model = resnet_to_detectron2(backbone.state_dict(), f"checkpoint {ckpt}")
    payload = {
        "model": model,
        "__author__": "disco-bench",
        "matching_heuristics": True,
        "arch": info["arch"],
        "source_sha256": info.get("sha256"),
    }
    atomic_write(out, lambda handle: pickle.dump(payload, handle, protocol=4))
    return {"out": str(out), "arch": info["arch"], "keys": len(model)}


def read_detectron2_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The ``model`` arrays of a Detectron2 ``.pkl`` (as :func:`convert_checkpoint` writes it), read by
    the safe loader; anything but a dict of named arrays is an InputError."""
    payload = load_array_pickle(path, "Detectron2 weights file", encoding="latin1")
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in model.items()
    ):
        raise InputError(
            f"{path}: expected Detectron2 weights, a dict whose 'model' maps names to numpy arrays"
        )
    return model


def place_weights(
    weights: dict[str, np.ndarray], model_state: dict[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """Converted ``weights`` under the model's own names (``backbone.`` first, then ``roi_heads.``); a key
    with no place in the model, or of another shape, is an InputError."""
    placed, stray = {}, []
    for key, value in weights.items():
        target = next((p + key for p in ("backbone.", "roi_heads.") if p + key in model_state), None)
        if target is None:
            stray.append(key)
            continue
        if tuple(model_state[target].shape) != value.shape:
            raise InputError(
                f"{source}: {key} has shape {value.shape}, the model's {target} {tuple(model_state[target].shape)}"
            )
        placed[target] = torch.from_numpy(np.ascontiguousarray(value))
    if stray:
        raise InputError(
            f"{source}: {len(stray)} key(s) have no place in the Detectron2 model: {', '.join(sorted(stray)[:6])}"
        )
    return placed
