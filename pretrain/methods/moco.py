"""MoCo-v2 (Chen et al. 2020): query encoder, momentum key encoder, queue of keys, InfoNCE.

Used for teachers and for the student-alone baseline; DisCo builds on it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from infra.distributed import all_gather_cat
from pretrain.methods.base import EmbeddingQueue, Method, info_nce, momentum_update, shuffled_forward
from pretrain.models import Encoder, ProjectionHead, feature_dim


class MoCo(Method):
    num_views = 2
    needs_teacher = False

    def __init__(self, cfg, backbone: nn.Module, teacher=None):
        super().__init__()
        self.cfg = cfg
        feat = feature_dim(backbone)
        hidden = self.default_hidden(feat) if cfg.hidden is None else cfg.hidden
        self.encoder_q = Encoder(backbone, ProjectionHead(feat, hidden, cfg.dim))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.queue = EmbeddingQueue(cfg.queue_size, cfg.dim)
        self.teacher = teacher
        self._shuffle_gen = torch.Generator().manual_seed(cfg.seed + 7919)

    @staticmethod
    def default_hidden(feat: int) -> int:
        return feat

    # The single-process shuffle-BN permutations come from this generator; checkpointing its
    # state (as the module's extra state) is what makes a resumed run draw the same ones.
    def get_extra_state(self) -> torch.Tensor:
        return self._shuffle_gen.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self._shuffle_gen.set_state(state)

    @property
    def student(self) -> Encoder:
        return self.encoder_q

    def contrastive(self, v_q: torch.Tensor, v_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query embedding of ``v_q`` and the MoCo loss against the momentum key of ``v_k``."""
        self.queue.flush()  # keys a forward without backward left staged
        q = self.encoder_q(v_q)
        with torch.no_grad():
            momentum_update(self.encoder_k, self.encoder_q, self.cfg.key_momentum)
            k = shuffled_forward(self.encoder_k, v_k, self.cfg.shuffle_bn_splits, self._shuffle_gen)
        loss = info_nce(q, k, self.queue.items, self.cfg.temperature)
        self.queue.stage(all_gather_cat(k))  # written by after_backward
        return q, loss

    def after_backward(self) -> None:
        self.queue.flush()

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        _, loss = self.contrastive(views[0], views[1])
        return {"loss": loss, "loss_con": loss.detach()}
