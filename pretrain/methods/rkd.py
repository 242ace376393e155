"""Relational knowledge distillation (Park et al., CVPR 2019) added to MoCo-v2 (``rkd``) or to DisCo
(``rkd+disco``), the RKD rows of the paper's Table 5.

Both terms act on the final L2-normalised embeddings of the query view v1: the student's q and the
frozen teacher's t1 (widths may differ; only relations within the batch are compared). Under
DDP the relations are those within each process's batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain.methods.disco import DisCo, disco_distill_loss
from pretrain.methods.moco import MoCo


def _off_diagonal(n: int, device) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Teacher relations in fp32 even when the teacher ran under bf16/fp16 autocast."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def normalised_distances(x: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances divided by their mean over pairs i != j (diagonal 0)."""
    diff = x.unsqueeze(1) - x.unsqueeze(0)
    # clamp before sqrt: the diagonal is 0 and sqrt has no gradient there
    dist = diff.pow(2).sum(dim=2).clamp_min(1e-12).sqrt()
    off = _off_diagonal(x.shape[0], x.device)
    dist = dist * off
    return dist / dist[off].mean()


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber (delta 1) between normalised pairwise distances, mean over ordered pairs i != j.

    student: (B, Ds), teacher: (B, Dt), B >= 2.
    """
    off = _off_diagonal(student.shape[0], student.device)
    with torch.no_grad():
        d_t = normalised_distances(_at_least_fp32(teacher))
    d_s = normalised_distances(student)
    return F.smooth_l1_loss(d_s[off], d_t[off].to(d_s.dtype), beta=1.0)


def angle_cosines(x: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B, B) where [j, i, k] = cos of the angle at x_j between x_i and x_k."""
    unit = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), dim=2)  # unit[j, i] = (x_i - x_j) / |x_i - x_j|
    return unit @ unit.transpose(1, 2)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber (delta 1) between angle cosines, mean over triplets (j; i, k) with i != j and k != j.

    student: (B, Ds), teacher: (B, Dt), B >= 3. Triplets with i == k count (their cosine is 1 on
    both sides, a zero term), as in a dense implementation over all vertex pairs.
    """
    n = student.shape[0]
    off = _off_diagonal(n, student.device)
    mask = off.unsqueeze(2) & off.unsqueeze(1)  # [j, i, k]: i != j and k != j
    with torch.no_grad():
        a_t = angle_cosines(_at_least_fp32(teacher))
    a_s = angle_cosines(student)
    return F.smooth_l1_loss(a_s[mask], a_t[mask].to(a_s.dtype), beta=1.0)


def rkd_loss(
    student: torch.Tensor, teacher: torch.Tensor, distance_weight: float, angle_weight: float
) -> torch.Tensor:
    return distance_weight * rkd_distance_loss(student, teacher) + angle_weight * rkd_angle_loss(
        student, teacher
    )


class RelationalKD(MoCo):
    """``rkd``: MoCo-v2 + RKD (distance and angle) between q and the teacher's t1 on v1."""

    needs_teacher = True

    def relational_term(self, q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return rkd_loss(q, t, self.cfg.rkd_distance_weight, self.cfg.rkd_angle_weight)

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        v1, v2 = views
        q, loss_con = self.contrastive(v1, v2)
        loss_rkd = self.relational_term(q, self.teacher(v1))
        loss = loss_con + loss_rkd
        return {"loss": loss, "loss_con": loss_con.detach(), "loss_rkd": loss_rkd.detach()}


class RelationalKDDisCo(RelationalKD):
    """``rkd+disco``: DisCo (both views) + RKD between q and t1 on v1."""

    default_hidden = staticmethod(DisCo.default_hidden)

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        v1, v2 = views
        q, loss_con = self.contrastive(v1, v2)
        qk = self.encoder_q(v2)
        t1, t2 = self.teacher.embed_views([v1, v2])
        loss_dis = disco_distill_loss([q, qk], [t1, t2], self.cfg.distill_reduction)
        loss_rkd = self.relational_term(q, t1)
        loss = loss_con + self.cfg.distill_weight * loss_dis + loss_rkd
        return {
            "loss": loss,
            "loss_con": loss_con.detach(),
            "loss_dis": loss_dis.detach(),
            "loss_rkd": loss_rkd.detach(),
        }
