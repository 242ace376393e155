"""SEED (Fang et al., ICLR 2021): the student matches the teacher's similarity distribution over
a queue of past teacher embeddings (docs/method.md#seed). One view, no momentum encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infra.distributed import all_gather_cat
from pretrain.methods.base import EmbeddingQueue, Method
from pretrain.models import Encoder, ProjectionHead, feature_dim


def seed_loss(
    s: torch.Tensor, t: torch.Tensor, queue: torch.Tensor, tau_s: float, tau_t: float
) -> torch.Tensor:
    """Soft cross-entropy -sum p_T log softmax(z_S), mean over the batch.

    s, t: (B, D) L2-normalised student/teacher embeddings; queue: (K, D) past teacher embeddings.
    z_S = [s.t, s.queue] / tau_s and p_T = softmax([t.t, t.queue] / tau_t).
    """
    z_s = torch.cat([(s * t).sum(1, keepdim=True), s @ queue.t()], dim=1) / tau_s
    z_t = torch.cat([(t * t).sum(1, keepdim=True), t @ queue.t()], dim=1) / tau_t
    return -(F.softmax(z_t, dim=1) * F.log_softmax(z_s, dim=1)).sum(dim=1).mean()


class SEED(Method):
    num_views = 1
    needs_teacher = True

    def __init__(self, cfg, backbone: nn.Module, teacher):
        super().__init__()
        self.cfg = cfg
        feat = feature_dim(backbone)
        hidden = feat if cfg.hidden is None else cfg.hidden
        self.encoder_q = Encoder(backbone, ProjectionHead(feat, hidden, cfg.dim))
        self.teacher = teacher
        self.queue = EmbeddingQueue(cfg.queue_size, cfg.dim)

    @staticmethod
    def default_hidden(feat: int) -> int:
        return feat

    @property
    def student(self) -> Encoder:
        return self.encoder_q

    def after_backward(self) -> None:
        self.queue.flush()

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        self.queue.flush()  # keys a forward without backward left staged
        x = views[0]
        s = self.encoder_q(x)
        t = self.teacher(x)
        loss = seed_loss(s, t, self.queue.items, self.cfg.seed_student_temp, self.cfg.seed_teacher_temp)
        self.queue.stage(all_gather_cat(t))  # written by after_backward
        return {"loss": loss, "loss_seed": loss.detach()}
