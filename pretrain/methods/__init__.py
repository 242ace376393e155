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
The registry imports a method's module when the method is looked up: listing the names (``--help``,
argparse choices) imports no torch.
"""

from infra.lazy_registry import LazyRegistry

METHODS = LazyRegistry(
    {
        "moco": "pretrain.methods.moco:MoCo",
        "disco": "pretrain.methods.disco:DisCo",
        "disco*": "pretrain.methods.disco:DisCoStar",
        "distill-only": "pretrain.methods.distill_only:DistillOnly",
        "seed": "pretrain.methods.seed:SEED",
        "at": "pretrain.methods.at:AttentionTransfer",
        "at+disco": "pretrain.methods.at:AttentionTransferDisCo",
        "rkd": "pretrain.methods.rkd:RelationalKD",
        "rkd+disco": "pretrain.methods.rkd:RelationalKDDisCo",
        "swav": "pretrain.methods.swav:SwAV",
        "swav+disco": "pretrain.methods.swav:SwAVDisCo",
        "dino": "pretrain.methods.dino:DINO",
        "dino+disco": "pretrain.methods.dino:DINODisCo",
    }
)
