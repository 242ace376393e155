"""DisCo (Gao et al., ECCV 2022): MoCo-v2 plus MSE between the student's and the frozen
teacher's final L2-normalised embeddings on both views (paper Eq. 1-2, docs/method.md#disco)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain.methods.moco import MoCo


def disco_distill_loss(
    student_views: list[torch.Tensor], teacher_views: list[torch.Tensor], reduction: str = "sum"
) -> torch.Tensor:
    """Sum over views of MSE(teacher_v, student_v).

    ``reduction='sum'`` is the reference code's ``MSELoss(reduction='sum')``: summed over the
    per-GPU batch and the embedding dims, so its weight grows with the batch. ``'mean'`` averages
    over batch and dims (batch-size invariant); ``mean`` x (B x D) equals ``sum``.
    """
    return sum(
        F.mse_loss(s, t, reduction=reduction) for s, t in zip(student_views, teacher_views, strict=True)
    )


def with_disco_term(
    method, name: str, loss: torch.Tensor, z: list[torch.Tensor], views: list[torch.Tensor]
) -> dict:
    """A testbed's own ``loss`` (logged as ``name``) plus lambda x the DisCo MSE between the student
    embeddings ``z`` of the two large views and the frozen teacher's embeddings of the same views."""
    teacher = method.teacher.embed_views(views[:2])
    loss_dis = disco_distill_loss(z[:2], teacher, method.cfg.distill_reduction)
    return {
        "loss": loss + method.cfg.distill_weight * loss_dis,
        name: loss.detach(),
        "loss_dis": loss_dis.detach(),
    }


class DisCo(MoCo):
    needs_teacher = True

    @staticmethod
    def default_hidden(feat: int) -> int:
        return 2048  # the paper's fix for the Distilling Bottleneck, for every student

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        v1, v2 = views
        q, loss_con = self.contrastive(v1, v2)
        qk = self.encoder_q(v2)  # separate forward: BN statistics per view, as in the reference
        t1, t2 = self.teacher.embed_views([v1, v2])
        loss_dis = disco_distill_loss([q, qk], [t1, t2], self.cfg.distill_reduction)
        loss = loss_con + self.cfg.distill_weight * loss_dis
        return {"loss": loss, "loss_con": loss_con.detach(), "loss_dis": loss_dis.detach()}


class DisCoStar(DisCo):
    """DisCo* (Tab. 3): DisCo with the student head's hidden width = student feature width."""

    @staticmethod
    def default_hidden(feat: int) -> int:
        return feat
