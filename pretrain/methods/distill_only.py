"""The ablation "distillation loss only" (DisCo paper, ablation study): the student is trained with
DisCo's MSE to the frozen teacher's embeddings alone, with no contrastive term; same views, head
(hidden 2048), lambda and reduction as DisCo, so the two differ only by the InfoNCE term."""

from __future__ import annotations

import torch

from pretrain.methods.disco import DisCo, disco_distill_loss


class DistillOnly(DisCo):
    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        v1, v2 = views
        q, qk = self.encoder_q(v1), self.encoder_q(v2)  # one forward per view, as DisCo's MSE terms
        t1, t2 = self.teacher.embed_views([v1, v2])
        loss_dis = disco_distill_loss([q, qk], [t1, t2], self.cfg.distill_reduction)
        return {"loss": self.cfg.distill_weight * loss_dis, "loss_dis": loss_dis.detach()}
