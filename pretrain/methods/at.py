"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017) added to MoCo-v2 (``at``) or to DisCo
(``at+disco``), the AT rows of the paper's Table 5.

Stage pairs: every timm CNN lists its stage outputs in ``feature_info`` with their output stride
(ResNet ``layer1..layer4``; EfficientNet / MobileNet-v3 ``blocks.1, blocks.2, blocks.4, blocks.6``).
Student and teacher stages are paired by stride, the last module of each stride, for the strides
in ``cfg.at_strides`` (default 4, 8, 16, 32: the four residual stages of a ResNet teacher against
the student's four stride levels). Channel counts need not match: an attention map averages the
squared activations over channels. Families without four stride levels (ViT, XCiT: one stride)
are refused with an error naming the strides they have.

The AT term is computed on the query view v1 (the view the student encodes with gradient in
MoCo), with the teacher's maps of the same view.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from infra.errors import InputError
from pretrain.methods.disco import DisCo, disco_distill_loss
from pretrain.methods.moco import MoCo


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W): the mean over channels of the squared activations (AT's F^2_mean),
    in fp32 even under bf16/fp16 autocast (squares of activations lose precision there)."""
    return features.float().pow(2).mean(dim=1)


def at_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    """Sum over stage pairs of mean_{b, positions} (a_s - a_t)^2, a = L2-normalised flattened attention map.

    Feature maps are (B, C, H, W) with any channel counts. When a pair's spatial sizes differ, both
    attention maps are average-pooled (``adaptive_avg_pool2d``) to the smaller height and width
    before normalising: pooling keeps each region's mean activation energy, so a finer map is
    compared with a coarser one region by region.
    """
    total = student_maps[0].new_zeros((), dtype=torch.float32)
    for fs, ft in zip(student_maps, teacher_maps, strict=True):
        a_s, a_t = attention_map(fs), attention_map(ft)
        size = (min(a_s.shape[1], a_t.shape[1]), min(a_s.shape[2], a_t.shape[2]))
        if tuple(a_s.shape[1:]) != size:
            a_s = F.adaptive_avg_pool2d(a_s.unsqueeze(1), size).squeeze(1)
        if tuple(a_t.shape[1:]) != size:
            a_t = F.adaptive_avg_pool2d(a_t.unsqueeze(1), size).squeeze(1)
        a_s = F.normalize(a_s.flatten(1), dim=1)
        a_t = F.normalize(a_t.flatten(1), dim=1)
        total = total + (a_s - a_t).pow(2).mean()
    return total


def stage_modules(backbone: nn.Module, strides: tuple[int, ...], role: str) -> dict[int, str]:
    """stride -> name of the last module with that output stride in timm's ``feature_info``."""
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise InputError(
            f"AT {role}: {type(backbone).__name__} has no timm feature_info; expected a timm CNN with stages"
        )
    entries = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
    last_at = {int(e["reduction"]): e["module"] for e in entries}
    missing = [s for s in strides if s not in last_at]
    if missing:
        raise InputError(
            f"at_strides: the {role} {type(backbone).__name__} has no stage at stride {missing} "
            f"(it has {sorted(last_at)}); AT needs a CNN student and teacher with those strides"
        )
    return {s: last_at[s] for s in strides}


class StageTaps:
    """Forward hooks keeping the output of the chosen stages from the backbone's latest forward."""

    def __init__(self, backbone: nn.Module, strides: tuple[int, ...], role: str):
        self.strides = tuple(strides)
        self.maps: dict[int, torch.Tensor] = {}
        modules = dict(backbone.named_modules())
        for stride, name in stage_modules(backbone, self.strides, role).items():
            modules[name].register_forward_hook(partial(self._keep, stride))

    def _keep(self, stride: int, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self.maps[stride] = output

    def take(self) -> list[torch.Tensor]:
        """The maps of the latest forward in stride order; cleared so a stale map is never reused."""
        if set(self.maps) != set(self.strides):
            raise RuntimeError(f"stage maps missing for strides {sorted(set(self.strides) - set(self.maps))}")
        maps = [self.maps[s] for s in self.strides]
        self.maps = {}
        return maps

    def discard(self) -> None:
        """Drop maps nobody will read (they would keep activations alive until the next forward)."""
        self.maps = {}


class AttentionTransfer(MoCo):
    """``at``: MoCo-v2 + at_weight x AT between student and teacher stage maps on v1."""

    needs_teacher = True

    def __init__(self, cfg, backbone: nn.Module, teacher):
        super().__init__(cfg, backbone, teacher)
        # after MoCo's deepcopy, so the momentum encoder carries no hooks
        self.student_taps = StageTaps(self.encoder_q.backbone, cfg.at_strides, "student")
        self.teacher_taps = StageTaps(teacher.encoder.backbone, cfg.at_strides, "teacher")

    def attention_term(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher embedding of ``view``, AT loss): call right after the student encoded ``view``."""
        student_maps = self.student_taps.take()
        t = self.teacher(view)
        return t, at_loss(student_maps, self.teacher_taps.take())

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        v1, v2 = views
        _, loss_con = self.contrastive(v1, v2)
        _, loss_at = self.attention_term(v1)
        loss = loss_con + self.cfg.at_weight * loss_at
        return {"loss": loss, "loss_con": loss_con.detach(), "loss_at": loss_at.detach()}


class AttentionTransferDisCo(AttentionTransfer):
    """``at+disco``: DisCo (both views, MSE to the teacher's embeddings) + at_weight x AT on v1."""

    default_hidden = staticmethod(DisCo.default_hidden)

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        v1, v2 = views
        q, loss_con = self.contrastive(v1, v2)
        t1, loss_at = self.attention_term(v1)
        qk = self.encoder_q(v2)
        t2 = self.teacher(v2)
        loss_dis = disco_distill_loss([q, qk], [t1, t2], self.cfg.distill_reduction)
        self.student_taps.discard()  # the v2 maps of qk and t2 are not used by AT
        self.teacher_taps.discard()
        loss = loss_con + self.cfg.distill_weight * loss_dis + self.cfg.at_weight * loss_at
        return {
            "loss": loss,
            "loss_con": loss_con.detach(),
            "loss_dis": loss_dis.detach(),
            "loss_at": loss_at.detach(),
        }
