"""The pre-training methods. Add one: write a module, add one line to METHODS.

A method is an ``nn.Module`` built as ``Method(cfg, student_backbone, teacher_or_None)`` with
class attributes ``num_views`` and ``needs_teacher``, a ``student`` property (the Encoder whose
backbone and head are exported) and ``forward(views) -> {'loss': ..., other detached terms}``.
"""

from pretrain.methods.disco import DisCo, DisCoStar
from pretrain.methods.moco import MoCo
from pretrain.methods.seed import SEED

METHODS = {
    "moco": MoCo,
    "disco": DisCo,
    "disco*": DisCoStar,
    "seed": SEED,
}
