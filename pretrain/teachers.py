"""Load an encoder (backbone + projection head) from a checkpoint file, detecting its format.

Formats, tried in the order of FORMATS (each a ``(detect, load)`` pair):

- ``disco-bench``: this project's own checkpoints (``final.pt`` / ``last.pt``).
- ``moco``: MoCo ``main_moco.py`` (``state_dict`` with ``module.encoder_q.*``; the MLP ``fc.0``/``fc.2``).
  Dropped: the momentum encoder ``encoder_k.*``, ``queue``, ``queue_ptr``.
- ``swav``: a raw state dict (``module.`` prefix) or ``{'state_dict': ...}`` with ``projection_head.*``
  (Linear-BN-ReLU-Linear). Dropped: ``prototypes.*``. The embedding is L2-normalised as in SwAV.
- ``dino``: ``{'teacher': ..., 'student': ...}`` (DINO's ``checkpoint.pth``; the ``teacher`` entry is
  used, being the model DINO evaluates) or one such state dict, keys ``backbone.*`` / ``head.*``.
  The embedding is the DINO head's MLP output (the 256-d bottleneck, L2-normalised, as DINO
  normalises it before its last layer). Dropped: ``head.last_layer.*`` (the 65,536 prototypes,
  like SwAV's). A DisCo student distilling from it therefore needs ``dim=256``.
- ``plain``: a torchvision/timm backbone-only state dict (optionally under ``state_dict``/``model``,
  optionally ``module.``-prefixed). Dropped: the classifier (``fc.*`` for ResNets). There is no
  projection head, so the encoder has ``head=None``: it loads as a backbone for evaluation, and
  :func:`load_teacher` refuses it with the fix.

Every other missing or unexpected key is an InputError listing the keys. Architectures that the
file does not name are inferred for torchvision-layout ResNets (``models.infer_resnet_arch``) or
taken from ``--teacher``.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from infra.checkpoint import CHECKPOINT_FORMAT, file_sha256, load_state_strict, nonfinite_keys, safe_load
from infra.errors import InputError
from pretrain.models import ALIASES, Encoder, ProjectionHead, build_backbone, feature_dim, infer_resnet_arch

Loaded = tuple[Encoder, dict]


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _without(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


def _unwrap_ddp(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that DistributedDataParallel adds, when every key has it."""
    if state and all(k.startswith("module.") for k in state):
        return _strip(state, "module.")
    return state


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())
    )


def _same_arch(a: str, b: str) -> bool:
    return ALIASES.get(a, a) == ALIASES.get(b, b)


def _pick_arch(requested: str | None, named: str | None, backbone_state: dict, source: str) -> str:
    """The requested arch (it must agree with the file's), else the file's, else the inferred ResNet."""
    if requested and named and not _same_arch(requested, named):
        raise InputError(f"{source} holds a {named} encoder, not the requested {requested}")
    arch = requested or named or infer_resnet_arch(backbone_state)
    if not arch:
        raise InputError(
            f"{source} does not name its architecture and its keys are not a torchvision-layout ResNet; "
            "name it: pretrain --teacher ARCH, or (for eval and convert, which read the file alone) save "
            "it as {'arch': TIMM_NAME, 'state_dict': ...}"
        )
    return arch


def head_from_state(
    head_state: dict[str, torch.Tensor], in_dim: int, activation: str = "relu"
) -> ProjectionHead:
    """A ProjectionHead shaped like ``head_state`` (``net.<i>.weight`` Linear layers, optional BN)."""
    linears = sorted(
        (int(k.split(".")[1]), v) for k, v in head_state.items() if k.endswith(".weight") and v.dim() == 2
    )
    if not linears:
        raise InputError(f"projection head has no Linear weights (keys: {', '.join(sorted(head_state)[:8])})")
    layers = len(linears)
    hidden = int(linears[0][1].shape[0]) if layers > 1 else 0
    out_dim = int(linears[-1][1].shape[0])
    batchnorm = any(k.endswith(".running_mean") for k in head_state)
    return ProjectionHead(in_dim, hidden, out_dim, batchnorm=batchnorm, layers=layers, activation=activation)


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Weights holding NaN/Inf (a diverged run) are refused at load time, naming the tensors, rather than
    failing later in some other guise (a probe's 'backbone changed' check, a NaN distillation loss)."""
    bad = nonfinite_keys(state)
    if bad:
        shown = ", ".join(sorted(bad)[:4]) + (f", ... ({len(bad)} in all)" if len(bad) > 4 else "")
        raise InputError(
            f"{source} holds NaN/Inf weights ({shown}); expected finite weights (a checkpoint of a "
            "diverged run?)"
        )


def _build(
    arch: str,
    backbone_state: dict,
    head_state: dict | None,
    source: str,
    activation: str = "relu",
    head_spec: dict | None = None,
) -> Encoder:
    """Build ``arch`` and load both parts strictly; ``head_state=None`` gives a backbone-only encoder."""
    check_finite({**backbone_state, **{f"head.{k}": v for k, v in (head_state or {}).items()}}, source)
    backbone = _loaded_backbone(arch, backbone_state, f"{source} (backbone, arch {arch})")
    if head_state is None:
        return Encoder(backbone, None)
    if head_spec:
        head = ProjectionHead(**head_spec)
    else:
        head = head_from_state(head_state, feature_dim(backbone), activation)
    load_state_strict(head, head_state, f"{source} (projection head)")
    return Encoder(backbone, head)


# Whether a loaded backbone may skip its random initialisation (every weight comes from the file). Only
# load_teacher allows it: pre-training seeds the RNG after the teacher is loaded, so the draws skipped
# change nothing, while an evaluation's RNG stream goes on from where the load leaves it. It saves
# initialising weights only to overwrite them: 0.2-0.6 s per ResNet-50 teacher on a CPU.
_SKIP_RANDOM_INIT: contextvars.ContextVar[bool] = contextvars.ContextVar("skip_random_init", default=False)


def _loaded_backbone(arch: str, state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """``arch`` holding ``state`` (strictly). Without random initialisation where allowed: built on the
    meta device and handed the file's tensors (in the model's dtypes and layout); a model with a tensor the
    file cannot fill (a non-persistent buffer) is built the usual way."""
    if _SKIP_RANDOM_INIT.get():
        with torch.device("meta"):
            backbone = build_backbone(arch)
        own = backbone.state_dict()
        # the model's own dtypes and its contiguous layout, as copying into an initialised model gives
        # (a checkpoint of a channels_last run holds NHWC-strided weights)
        cast = {
            k: v.to(own[k].dtype, memory_format=torch.contiguous_format) if k in own else v
            for k, v in state.items()
        }
        load_state_strict(backbone, cast, source, assign=True)
        if not any(t.is_meta for t in [*backbone.parameters(), *backbone.buffers()]):
            return backbone
    backbone = build_backbone(arch)
    load_state_strict(backbone, state, source)
    return backbone


def _info(fmt: str, encoder: Encoder, arch: str, **extra) -> dict:
    head = encoder.head.spec() if encoder.head is not None else None
    return {"format": fmt, "arch": arch, "method": None, "teacher": None, "head": head} | extra


# --- this project's checkpoints -------------------------------------------------------------


def _is_own(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


# Whether a checkpoint of an unfinished run (a mid-run last.pt, "done": False) may be loaded: only
# where the user asked for it (``eval --allow-unfinished``), for the duration of that command.
_UNFINISHED_ALLOWED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "unfinished_allowed", default=False
)


@contextlib.contextmanager
def unfinished_checkpoints_allowed(allowed: bool = True) -> Iterator[None]:
    token = _UNFINISHED_ALLOWED.set(allowed)
    try:
        yield
    finally:
        _UNFINISHED_ALLOWED.reset(token)


def _unfinished(obj: dict, source: str) -> dict:
    """{} for a finished run's checkpoint; else what the records carry about it (or an error when not allowed)."""
    if obj.get("done", True):
        return {}
    step, epoch = obj.get("step"), obj.get("epoch")
    if not _UNFINISHED_ALLOWED.get():
        raise InputError(
            f"{source} is from an unfinished run (saved at step {step}, epoch {epoch}); expected the "
            "final.pt of a finished run (eval --allow-unfinished evaluates it anyway, and says so in "
            "its records)"
        )
    return {"unfinished": {"step": step, "epoch": epoch}}


def _own_parts(obj: dict, source: str) -> tuple[dict, str | None, dict, dict | None]:
    """(encoder entry, its arch, backbone state, head state), or one line saying what the file lacks."""
    enc = obj.get("encoder")
    if not isinstance(enc, dict) or not _is_tensor_dict(enc.get("backbone")):
        raise InputError(
            f"{source} says it is a {CHECKPOINT_FORMAT} checkpoint but has no encoder weights; "
            "expected a final.pt or last.pt written by disco-bench pretrain"
        )
    head = enc.get("head")
    return enc, enc.get("arch"), enc["backbone"], head if isinstance(head, dict) and head else None


def _load_own(obj: dict, source: str, arch: str | None) -> Loaded:
    enc, named, backbone, head = _own_parts(obj, source)
    unfinished = _unfinished(obj, source)
    arch = _pick_arch(arch, named, backbone, source)
    spec = enc.get("head_spec")
    encoder = _build(arch, backbone, head, source, head_spec=spec)
    protocol = dict(obj.get("protocol") or {}) | unfinished  # the records of an unfinished run say so
    return encoder, _info(
        "disco-bench",
        encoder,
        named or arch,
        method=(obj.get("config") or {}).get("method"),
        teacher=(obj.get("teacher") or {}).get("arch"),
        protocol=protocol,
        steps=obj.get("step"),
        planned_steps=obj.get("planned_steps"),  # absent in checkpoints written before it was recorded
    )


# --- MoCo main_moco.py ------------------------------------------------------------------------


def _is_moco(obj: Any) -> bool:
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    return isinstance(sd, dict) and any(k.startswith(("module.encoder_q.", "encoder_q.")) for k in sd)


def _load_moco(obj: dict, source: str, arch: str | None) -> Loaded:
    raw = obj["state_dict"]
    sd = _unwrap_ddp(raw)
    root = "module." if len(sd) and next(iter(sd)) not in raw else ""
    stray = [root + k for k in sd if not k.startswith(("encoder_q.", "encoder_k.", "queue"))]
    if stray:
        raise InputError(
            f"{source}: MoCo checkpoint has keys outside encoder_q/encoder_k/queue: {', '.join(sorted(stray)[:8])}"
        )
    q = _strip(sd, "encoder_q.")
    backbone = _without(q, ("fc.",))
    fc = _strip(q, "fc.")
    # MoCo v1 has a single Linear (fc.weight); v2 an MLP (fc.0, fc.2)
    head = (
        {f"net.0.{k}": v for k, v in fc.items()}
        if set(fc) <= {"weight", "bias"}
        else {f"net.{k}": v for k, v in fc.items()}
    )
    arch = _pick_arch(arch, obj.get("arch"), backbone, source)
    encoder = _build(arch, backbone, head or None, source)
    return encoder, _info("moco", encoder, arch, method="moco")


# --- SwAV -------------------------------------------------------------------------------------


def _swav_state(obj: Any) -> dict | None:
    sd = obj.get("state_dict") if isinstance(obj, dict) and "state_dict" in obj else obj
    return _unwrap_ddp(sd) if _is_tensor_dict(sd) else None


def _is_swav(obj: Any) -> bool:
    sd = _swav_state(obj)
    return sd is not None and any(k.startswith(("projection_head.", "prototypes.")) for k in sd)


def _load_swav(obj: Any, source: str, arch: str | None) -> Loaded:
    sd = _swav_state(obj)
    proj = _strip(sd, "projection_head.")
    # hidden_mlp=0 in SwAV makes the head one Linear (projection_head.weight)
    head = (
        {f"net.0.{k}": v for k, v in proj.items()}
        if set(proj) <= {"weight", "bias"}
        else {f"net.{k}": v for k, v in proj.items()}
    )
    backbone = _without(sd, ("projection_head.", "prototypes."))
    arch = _pick_arch(arch, None, backbone, source)
    encoder = _build(arch, backbone, head or None, source)
    return encoder, _info("swav", encoder, arch, method="swav")


# --- DINO -------------------------------------------------------------------------------------

DINO_VITS = ("vit_tiny", "vit_small", "vit_base")


def _dino_arch(args: Any) -> str | None:
    """DINO's ``--arch`` as a timm name: ``vit_small`` + patch 16 -> ``vit_small_patch16_224``."""
    arch = getattr(args, "arch", None)
    if not isinstance(arch, str):
        return None
    if arch in DINO_VITS:
        return f"{arch}_patch{getattr(args, 'patch_size', 16)}_224"
    if arch.startswith("xcit_") and not arch.endswith("_224"):
        return arch + "_224"
    return arch


def _dino_state(obj: Any) -> dict | None:
    sd = obj.get("teacher") if isinstance(obj, dict) and "teacher" in obj else obj
    if not _is_tensor_dict(sd):
        return None
    sd = _unwrap_ddp(sd)
    return sd if all(k.startswith(("backbone.", "head.")) for k in sd) else None


def _is_dino(obj: Any) -> bool:
    return _dino_state(obj) is not None


def _load_dino(obj: Any, source: str, arch: str | None) -> Loaded:
    sd = _dino_state(obj)
    backbone = _strip(sd, "backbone.")
    mlp = _strip(sd, "head.mlp.")
    stray = [k for k in _strip(sd, "head.") if not k.startswith(("mlp.", "last_layer."))]
    if stray:
        raise InputError(
            f"{source}: DINO head has keys outside mlp/last_layer: {', '.join(sorted(stray)[:8])}"
        )
    # nlayers=1 in DINOHead makes the MLP one Linear (head.mlp.weight)
    head = (
        {f"net.0.{k}": v for k, v in mlp.items()}
        if set(mlp) <= {"weight", "bias"}
        else {f"net.{k}": v for k, v in mlp.items()}
    )
    named = _dino_arch(obj.get("args")) if isinstance(obj, dict) else None
    arch = _pick_arch(arch, named, backbone, source)
    encoder = _build(arch, backbone, head or None, source, activation="gelu")
    return encoder, _info("dino", encoder, arch, method="dino")


# --- plain torchvision / timm backbone --------------------------------------------------------


def _plain_state(obj: Any) -> dict | None:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and _is_tensor_dict(obj[key]):
            return _unwrap_ddp(obj[key])
    return _unwrap_ddp(obj) if _is_tensor_dict(obj) else None


def _is_plain(obj: Any) -> bool:
    return _plain_state(obj) is not None


def _classifier_prefix(backbone: torch.nn.Module) -> str:
    """The classifier's key prefix (``fc.`` for ResNets, ``classifier.`` for EfficientNet, ``head.`` for ViT)."""
    model_cfg = getattr(backbone, "pretrained_cfg", None) or {}
    return model_cfg.get("classifier", "fc") + "."


def _load_plain(obj: Any, source: str, arch: str | None) -> Loaded:
    sd = _plain_state(obj)
    named = obj.get("arch") if isinstance(obj, dict) and isinstance(obj.get("arch"), str) else None
    arch = _pick_arch(arch, named, sd, source)
    backbone = build_backbone(arch)
    # the file's classifier is an expected drop: the backbone is built without one (num_classes=0)
    state = _without(sd, (_classifier_prefix(backbone),))
    check_finite(state, source)
    load_state_strict(backbone, state, f"{source} (backbone, arch {arch})")
    encoder = Encoder(backbone, None)
    return encoder, _info("plain", encoder, arch)


FORMATS: dict[str, tuple[Callable[[Any], bool], Callable[..., Loaded]]] = {
    "disco-bench": (_is_own, _load_own),
    "moco": (_is_moco, _load_moco),
    "swav": (_is_swav, _load_swav),
    "dino": (_is_dino, _load_dino),
    "plain": (_is_plain, _load_plain),  # last: any flat state dict matches
}


def _read(path: str | Path) -> Any:
    # DINO's checkpoint.pth stores its argparse.Namespace of options; a Namespace only holds
    # attributes, so allowing it keeps the load free of code execution.
    with torch.serialization.safe_globals([argparse.Namespace]):
        return safe_load(path, "checkpoint")


def detect_format(obj: Any) -> str | None:
    return next((name for name, (detect, _) in FORMATS.items() if detect(obj)), None)


def load_encoder(path: str | Path, arch: str | None = None) -> Loaded:
    """(encoder, info) from any supported checkpoint; info has format, arch, method, teacher, head, sha256."""
    obj = _read(path)
    source = f"checkpoint {path}"
    name = detect_format(obj)
    if name is None:
        keys = ", ".join(sorted(map(str, obj))[:6]) if isinstance(obj, dict) else type(obj).__name__
        raise InputError(
            f"{source}: unrecognised checkpoint layout (top-level keys: {keys}); expected one of {', '.join(FORMATS)}"
        )
    encoder, info = FORMATS[name][1](obj, source, arch)
    info["sha256"] = file_sha256(path)
    info["path"] = str(path)
    return encoder, info


def load_teacher(path: str | Path, arch: str | None = None) -> Loaded:
    """Like :func:`load_encoder`, but the encoder must have a projection head (a teacher's embedding). Its
    backbone is not randomly initialised first (``_SKIP_RANDOM_INIT``)."""
    token = _SKIP_RANDOM_INIT.set(True)
    try:
        encoder, info = load_encoder(path, arch)
    finally:
        _SKIP_RANDOM_INIT.reset(token)
    if encoder.head is None:
        raise InputError(
            f"teacher checkpoint {path} is a backbone-only ({info['format']}) {info['arch']} state dict with no "
            "projection head, so it has no embedding to distil; pass the self-supervised checkpoint that "
            "includes the head (MoCo main_moco.py, SwAV, DINO or a disco-bench final.pt). A backbone-only file "
            "still loads for evaluation (disco-bench eval TASK --ckpt PATH)"
        )
    return encoder, info
