"""The pre-training methods. Add one: write a module, add one line to METHODS.

A method is a :class:`pretrain.methods.base.Method`, built as ``Method(cfg, student_backbone,
teacher_or_None)``: class attributes ``num_views``, ``needs_teacher`` and ``dim_from_teacher``, a
``student`` property (the Encoder whose backbone and head are exported) and ``forward(views) ->
{'loss': ..., other detached terms}``. The hooks the training loop calls on every method have
no-op defaults there: ``view_transforms() -> list | None`` (one transform per view, e.g.
multi-crop; None: aug+ for every view; an instance may then set its own ``num_views``),
``on_step(step, total_steps, steps_per_epoch)`` before each step (schedules) and
``after_backward()`` between the backward and the optimiser step (frozen layers drop their
gradients there, as SwAV's and DINO's code cancel them; queues take the step's keys). Which
config fields a method reads is declared on the fields (``readers`` in pretrain.config).
"""

from pretrain.methods.at import AttentionTransfer, AttentionTransferDisCo
from pretrain.methods.dino import DINO, DINODisCo
from pretrain.methods.disco import DisCo, DisCoStar
from pretrain.methods.distill_only import DistillOnly
from pretrain.methods.moco import MoCo
from pretrain.methods.rkd import RelationalKD, RelationalKDDisCo
from pretrain.methods.seed import SEED
from pretrain.methods.swav import SwAV, SwAVDisCo

METHODS = {
    "moco": MoCo,
    "disco": DisCo,
    "disco*": DisCoStar,
    "distill-only": DistillOnly,
    "seed": SEED,
    "at": AttentionTransfer,
    "at+disco": AttentionTransferDisCo,
    "rkd": RelationalKD,
    "rkd+disco": RelationalKDDisCo,
    "swav": SwAV,
    "swav+disco": SwAVDisCo,
    "dino": DINO,
    "dino+disco": DINODisCo,
}
