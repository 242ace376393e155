"""DINO (Caron et al., ICCV 2021) for the student (``dino``), and with the DisCo term to a frozen
teacher (``dino+disco``): the paper's DINO testbed (ViT-Tiny / XCiT-Tiny students via timm
``vit_tiny_patch16_224`` / ``xcit_tiny_12_p16_224``, ViT-Small / XCiT-Small teachers).

Student: backbone (CLS token) -> DINO projector (3 Linear layers, GELU, hidden ``hidden`` or
2048, bottleneck ``dim``) -> L2-normalised z -> weight-normalised prototype layer (``dino_out_dim``
rows, norm fixed to 1). DINO's own teacher is an EMA of the student (momentum ``dino_momentum``
raised to 1 on a cosine over the run); its outputs on the two large views are centred
(centre momentum ``dino_center_momentum``) and sharpened (``dino_teacher_temp``). The prototype
layer gets no gradient for the first ``dino_freeze_last_layer_epochs`` epochs, as in DINO.

The DisCo term (the paper does not say which embedding it uses): MSE between the student's z,
the L2-normalised bottleneck before the prototype layer (the embedding this project exports as
the student's head output), and the frozen teacher's embedding, which for a DINO teacher loaded
with its head is the same bottleneck; on the two large views, like DisCo's two views. Chosen
because it is the analogue of DisCo's final-embedding MSE (the prototype scores are DINO's own
target) and it has the same width on both sides (``dim``: 256 for the released DINO heads).

Trained as DINO trains: AdamW (no weight decay on biases and norms), a linear lr warm-up then a
cosine, weight decay on a cosine from ``dino_weight_decay`` to ``dino_weight_decay_end``, per-parameter
gradient clipping (``dino_optimizer`` ...; pretrain/optim.py), the last layer frozen for the first
epoch (its gradient cancelled after the backward). ``dino+disco`` takes the bottleneck width from
the teacher's embedding (256 for the released DINO heads), whatever ``dim`` says.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from infra.distributed import is_distributed
from infra.errors import InputError
from pretrain.methods.base import Method, momentum_update
from pretrain.methods.disco import with_disco_term
from pretrain.methods.multicrop import MultiCropMixin, encode_by_size, multicrop_views
from pretrain.models import Encoder, ProjectionHead, feature_dim


def dino_loss(
    student_logits: list[torch.Tensor],
    teacher_logits: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """Mean over pairs (teacher view i, student view v != i) of the batch-mean cross-entropy
    -sum_k softmax((t_i - center) / teacher_temp)_k log softmax(s_v / student_temp)_k.

    student_logits: (B, K) per view (large views first); teacher_logits: (B, K) per large view;
    center: (K,) or (1, K).
    """
    total, pairs = student_logits[0].new_zeros(()), 0
    for i, t in enumerate(teacher_logits):
        p = F.softmax((t - center) / teacher_temp, dim=-1).detach()
        for v, s in enumerate(student_logits):
            if v == i:
                continue
            total = total + (-(p * F.log_softmax(s / student_temp, dim=-1)).sum(dim=-1)).mean()
            pairs += 1
    return total / pairs


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher_logits: list[torch.Tensor], momentum: float) -> torch.Tensor:
    """center * m + (1 - m) * mean of the teacher outputs over the (global) batch and large views."""
    batch = torch.cat(teacher_logits)
    total = batch.sum(dim=0, keepdim=True)
    count = batch.shape[0]
    if is_distributed():
        dist.all_reduce(total)
        count *= dist.get_world_size()
    return center * momentum + total / count * (1 - momentum)


def cosine_to_one(base: float, step: int, total_steps: int) -> float:
    """DINO's EMA momentum: base at step 0, rising on a half cosine to 1 at total_steps."""
    if total_steps <= 0:
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1.0) / 2.0


class PrototypeLayer(nn.Module):
    """Bias-free Linear(dim, out_dim) with every row L2-normalised: DINO's weight-normed last
    layer with its norm fixed to 1 (``norm_last_layer=True``)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ F.normalize(self.weight, dim=1).t()


class DINO(MultiCropMixin, Method):
    num_views = 2
    needs_teacher = False

    def __init__(self, cfg, backbone: nn.Module, teacher=None):
        super().__init__()
        self.cfg = cfg
        self.num_views = multicrop_views(cfg)
        if cfg.multicrop_small_crops and getattr(backbone, "dynamic_img_size", None) is False:
            raise InputError(
                f"multicrop_small_crops={cfg.multicrop_small_crops} needs a ViT built with dynamic_img_size=True "
                f"(timm kwarg) to take {cfg.multicrop_small_size}px crops; {cfg.student} was built without it"
            )
        feat = feature_dim(backbone)
        hidden = self.default_hidden(feat) if cfg.hidden is None else cfg.hidden
        dim = teacher.dim if self.dim_from_teacher and teacher is not None else cfg.dim
        self.encoder = Encoder(backbone, ProjectionHead(feat, hidden, dim, layers=3, activation="gelu"))
        self.prototypes = PrototypeLayer(dim, cfg.dino_out_dim)
        # DINO's own teacher: an EMA of the student, never trained by the optimiser
        self.ema_encoder = copy.deepcopy(self.encoder)
        self.ema_prototypes = copy.deepcopy(self.prototypes)
        for p in [*self.ema_encoder.parameters(), *self.ema_prototypes.parameters()]:
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, cfg.dino_out_dim))
        self.teacher = teacher
        self.momentum = cfg.dino_momentum
        self.teacher_temp = (
            cfg.dino_warmup_teacher_temp if cfg.dino_warmup_teacher_temp_epochs else cfg.dino_teacher_temp
        )
        self.freeze_last_layer = cfg.dino_freeze_last_layer_epochs > 0

    @staticmethod
    def default_hidden(feat: int) -> int:
        return 2048  # DINO's projector

    @property
    def student(self) -> Encoder:
        return self.encoder

    def on_step(self, step: int, total_steps: int, steps_per_epoch: int) -> None:
        cfg = self.cfg
        self.momentum = cosine_to_one(cfg.dino_momentum, step, total_steps)
        warmup = cfg.dino_warmup_teacher_temp_epochs * steps_per_epoch
        if step < warmup:
            self.teacher_temp = (
                cfg.dino_warmup_teacher_temp
                + (cfg.dino_teacher_temp - cfg.dino_warmup_teacher_temp) * step / warmup
            )
        else:
            self.teacher_temp = cfg.dino_teacher_temp
        self.freeze_last_layer = step < cfg.dino_freeze_last_layer_epochs * steps_per_epoch

    def after_backward(self) -> None:
        # the frozen last layer stays in the graph (DDP needs a gradient for every parameter) and
        # loses its gradient here, so the optimiser skips it: DINO's cancel_gradients_last_layer
        if self.freeze_last_layer:
            self.prototypes.weight.grad = None

    def dino_terms(self, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(student z per view, DINO loss); also moves the EMA teacher and the centre."""
        with torch.no_grad():
            # the EMA step for the previous update (a no-op at step 0, where both are equal)
            momentum_update(self.ema_encoder, self.encoder, self.momentum)
            momentum_update(self.ema_prototypes, self.prototypes, self.momentum)
            teacher_logits = [self.ema_prototypes(z) for z in encode_by_size(self.ema_encoder, views[:2])]
        z = encode_by_size(self.encoder, views)
        student_logits = [self.prototypes(e) for e in z]
        loss = dino_loss(
            student_logits, teacher_logits, self.center, self.cfg.dino_student_temp, self.teacher_temp
        )
        self.center.copy_(updated_center(self.center, teacher_logits, self.cfg.dino_center_momentum))
        return z, loss

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        _, loss = self.dino_terms(views)
        return {"loss": loss, "loss_dino": loss.detach()}


class DINODisCo(DINO):
    """``dino+disco``: DINO + distill_weight x MSE(student z, frozen teacher embedding) on the two large views."""

    needs_teacher = True
    dim_from_teacher = True

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        z, loss_dino = self.dino_terms(views)
        return with_disco_term(self, "loss_dino", loss_dino, z, views)
