"""The ablation "distillation loss only" (DisCo paper, ablation study): the student is trained with
DisCo's MSE to the frozen teacher's embeddings alone, with no contrastive term; same views, lambda
and reduction as DisCo. The paper ran the ablation with the head SEED and DisCo* use (hidden = the
student's feature width: 1280 / 1280 / 512 for EfficientNet-B0 / MobileNet-v3-L / ResNet-18) and
compares it with DisCo at that head, so that is the default width here; the two then differ only by
the InfoNCE term (pass ``hidden`` for another width)."""

from __future__ import annotations

import torch

from pretrain.methods.disco import DisCo, DisCoStar, disco_distill_loss


class DistillOnly(DisCo):
    default_hidden = staticmethod(DisCoStar.default_hidden)  # the ablation's head: the feature width

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        v1, v2 = views
        q, qk = self.encoder_q(v1), self.encoder_q(v2)  # one forward per view, as DisCo's MSE terms
        t1, t2 = self.teacher.embed_views([v1, v2])
        loss_dis = disco_distill_loss([q, qk], [t1, t2], self.cfg.distill_reduction)
        return {"loss": self.cfg.distill_weight * loss_dis, "loss_dis": loss_dis.detach()}
