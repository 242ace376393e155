"""Optimisers and their schedules, one recipe per method family.

- MoCo-v2, DisCo, SEED, AT, RKD (and SwAV/DINO with ``swav_optimizer=sgd`` / ``dino_optimizer=sgd``):
  SGD with momentum, lr ``base_lr`` x batch/256, cosine per epoch without warm-up (``schedule``).
- SwAV (``swav``, ``swav+disco``): LARS as SwAV's code runs it (apex LARC, ``clip=False``, on SGD
  with momentum), lr ``swav_base_lr`` x batch/256 after a linear warm-up, then a cosine to
  ``swav_final_lr_fraction`` of it, set every step; weight decay ``swav_weight_decay`` on every
  parameter.
- DINO (``dino``, ``dino+disco``): AdamW with no weight decay on biases and norm parameters, lr
  ``dino_base_lr`` x batch/256 after a linear warm-up from 0 then a cosine to ``dino_min_lr``, weight
  decay on a cosine from ``dino_weight_decay`` to ``dino_weight_decay_end``, each parameter's
  gradient clipped to norm ``dino_clip_grad`` before the step, as DINO's code does.

A parameter whose gradient is None after the backward (a frozen layer whose gradient the method
cancelled) is skipped entirely by each of them: no update, no weight decay, no momentum.
"""

from __future__ import annotations

import math

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each parameter p with gradient g is scaled by the trust ratio

        d = trust x |p| / (|g| + wd |p| + eps) x (g + wd p)      (g unchanged if |p| or |g| is 0)
        buf = momentum x buf + d   (buf = d at the first step);   p = p - lr x buf

    which is apex's LARC with ``clip=False`` wrapped around ``torch.optim.SGD``, as SwAV trains.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, eps=eps
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, trust = group["weight_decay"], group["trust_coefficient"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                ratio = trust * p_norm / (g_norm + wd * p_norm + group["eps"])
                d = torch.where((p_norm > 0) & (g_norm > 0), (grad + wd * p) * ratio, grad)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


class ClippedAdamW(torch.optim.AdamW):
    """AdamW that first scales each parameter's gradient to norm at most ``clip`` (DINO's
    ``clip_gradients``: per parameter, factor clip / (norm + 1e-6) when below 1; 0 turns it off)."""

    def __init__(self, params, clip: float = 0.0, **kwargs):
        super().__init__(params, **kwargs)
        self.clip = clip

    @torch.no_grad()
    def step(self, closure=None):
        if self.clip > 0:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        factor = self.clip / (torch.linalg.vector_norm(p.grad) + 1e-6)
                        p.grad.mul_(factor.clamp(max=1.0))  # x 1.0 leaves a small gradient bit-identical
        return super().step(closure)


def family(cfg) -> str:
    """The optimiser recipe a run uses: ``lars`` / ``adamw`` for the SwAV / DINO testbeds, else ``sgd``."""
    base = cfg.method.split("+")[0]  # the choices are checked by the config (PretrainConfig)
    return {"swav": cfg.swav_optimizer, "dino": cfg.dino_optimizer}.get(base, "sgd")


def decay_groups(module: torch.nn.Module) -> list[dict]:
    """Trainable parameters in two groups: decayed, then biases and norm parameters (1-d) without decay."""
    decayed, plain = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (plain if name.endswith(".bias") or p.dim() == 1 else decayed).append(p)
    return [{"params": decayed}, {"params": plain, "weight_decay": 0.0}]


def build_optimizer(cfg, method: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimiser for ``method``'s trainable parameters (the rate is set by ``apply_schedule``)."""
    params = [p for p in method.parameters() if p.requires_grad]
    kind = family(cfg)
    if kind == "lars":
        return LARS(
            params,
            lr=peak_lr(cfg),
            momentum=cfg.sgd_momentum,
            weight_decay=cfg.swav_weight_decay,
            trust_coefficient=cfg.swav_lars_trust,
        )
    if kind == "adamw":
        return ClippedAdamW(
            decay_groups(method), clip=cfg.dino_clip_grad, lr=peak_lr(cfg), weight_decay=cfg.dino_weight_decay
        )
    return torch.optim.SGD(params, lr=cfg.lr(), momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay)


def peak_lr(cfg) -> float:
    """The learning rate after warm-up, scaled linearly with the global batch."""
    kind = family(cfg)
    if kind == "lars":
        return cfg.swav_base_lr * cfg.batch_size / 256
    if kind == "adamw":
        return cfg.dino_base_lr * cfg.batch_size / 256
    return cfg.lr()


def lr_at(cfg, epoch: int) -> float:
    """The SGD recipe's rate for a whole epoch: cosine per epoch, no warm-up, or constant."""
    if cfg.schedule == "constant":  # the config admits cosine and constant only
        return cfg.lr()
    return cfg.lr() * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def warmup_cosine(step: int, total: int, warmup: int, start: float, peak: float, final: float) -> float:
    """Per-step value of SwAV's and DINO's schedules: ``warmup`` steps evenly from ``start`` to
    ``peak`` (both ends included, as numpy's linspace), then a half cosine from ``peak`` to ``final``
    over the remaining ``total - warmup`` steps."""
    warmup = min(warmup, total)
    if step < warmup:
        return start + (peak - start) * step / (warmup - 1) if warmup > 1 else start
    t, n = step - warmup, max(total - warmup, 1)
    return final + 0.5 * (peak - final) * (1.0 + math.cos(math.pi * min(t, n) / n))


def apply_schedule(optimizer: torch.optim.Optimizer, cfg, step: int, steps_per_epoch: int) -> None:
    """Set the learning rate (and DINO's weight decay) for ``step`` (0-based) of the run."""
    kind = family(cfg)
    if kind == "sgd":
        lr = lr_at(cfg, step // steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return
    total = cfg.epochs * steps_per_epoch
    peak = peak_lr(cfg)
    if kind == "lars":
        lr = warmup_cosine(
            step,
            total,
            cfg.swav_warmup_epochs * steps_per_epoch,
            peak * cfg.swav_warmup_start_fraction,
            peak,
            peak * cfg.swav_final_lr_fraction,
        )
    else:
        lr = warmup_cosine(step, total, cfg.dino_warmup_epochs * steps_per_epoch, 0.0, peak, cfg.dino_min_lr)
        # the decay schedule has no warm-up; it applies to the decayed group only
        optimizer.param_groups[0]["weight_decay"] = warmup_cosine(
            step, total, 0, 0.0, cfg.dino_weight_decay, cfg.dino_weight_decay_end
        )
    for group in optimizer.param_groups:
        group["lr"] = lr
