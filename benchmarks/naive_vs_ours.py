"""A DisCo step written the straightforward way against the project's step, alternated A/B in one process.

    python benchmarks/naive_vs_ours.py [--student resnet18] [--teacher resnet50] [--batch 16] [--size 64]
        [--repeats 3] [--write-readme]

The case the README reports besides the defaults, a small student distilling a large teacher
(minutes on a 2-core CPU):

    python benchmarks/naive_vs_ours.py --student efficientnet_b0 --teacher resnet50 --batch 32 --size 96

naive: the DisCo step as the reference code writes it: a Python loop for the momentum update,
two teacher forwards (one per view) under no_grad, fp32, contiguous NCHW, the queue cloned for
the loss, and one ``.item()`` per logged loss term.

ours (exact): ``pretrain.train.train_step`` on the project's DisCo module with the default
settings in NCHW: multi-tensor momentum update, one host sync per step, and on GPUs one teacher forward
over both views (same numbers with BN frozen). Its first-step loss must equal the naive one
(printed). On CPUs both steps run with pre-training's allocator setting (infra/allocator.py),
which is process-wide; ``--default-allocator`` leaves glibc's defaults for both.

ours (fast): the same with this device's speed options, each recorded in the protocol and off
by default: on a CPU, channels_last for the whole step (oneDNN's NHWC kernels; fp32, so only
rounding changes) and, with bf16 support, the teacher in bf16 autocast (the student stays fp32:
bf16 training of depthwise convolutions can be slower on CPUs); on a GPU, bf16 autocast and
channels_last for the whole step.

ours (before: queue clone): the project's step as it was before the new keys were enqueued after
the backward: the loss read a clone of the whole queue every step (32 MiB at K = 65,536), which the
in-place enqueue would otherwise have changed under autograd.

ours (fp32 channels_last): the exact step with only ``channels_last=true teacher_channels_last=true``
(fp32: float rounding is all that changes). Measured faster on CPUs, it is pre-training's default
there (``PretrainConfig.with_memory_format_for``); "ours (exact)" keeps NCHW to show the gain.

ours (bf16 step), on a CPU with bf16 support only: bf16 autocast and channels_last for the whole
step (``amp=bf16``), which pays off for students without depthwise convolutions.

Same models (identical initial weights), same views; the three run in rotation and the table
gives median seconds per step and the ratio naive / ours.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks._common import (  # noqa: E402
    alternate,
    load_average,
    median,
    section_header,
    start_run,
    write_readme_section,
)
from benchmarks.pretrain_step import build, make_views  # noqa: E402
from infra.distributed import all_gather_cat  # noqa: E402
from pretrain.config import PretrainConfig  # noqa: E402
from pretrain.methods.base import info_nce, momentum_update, shuffled_forward  # noqa: E402
from pretrain.methods.disco import DisCo  # noqa: E402
from pretrain.train import autocast_for, train_step  # noqa: E402


class NaiveDisCo:
    """The straightforward DisCo step, on copies of a project DisCo module's networks and queue."""

    def __init__(self, method, cfg: PretrainConfig):
        self.cfg = cfg
        self.q = copy.deepcopy(method.encoder_q)
        self.k = copy.deepcopy(method.encoder_k)
        self.teacher = copy.deepcopy(method.teacher.encoder).eval()
        self.queue = method.queue.items.detach().clone()
        self.ptr = 0
        self.gen = torch.Generator().manual_seed(cfg.seed + 7919)  # the project's shuffle-BN generator seed
        self.opt = torch.optim.SGD(
            self.q.parameters(), lr=cfg.lr(), momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay
        )
        self.log: list[tuple[float, float, float]] = []

    def step(self, v1: torch.Tensor, v2: torch.Tensor) -> float:
        cfg = self.cfg
        q = self.q(v1)
        with torch.no_grad():
            for p_k, p_q in zip(self.k.parameters(), self.q.parameters(), strict=True):
                p_k.data = p_k.data * cfg.key_momentum + p_q.data * (1.0 - cfg.key_momentum)
            for b_k, b_q in zip(self.k.buffers(), self.q.buffers(), strict=True):
                b_k.data = b_q.data.clone()
            perm = torch.randperm(v2.shape[0], generator=self.gen).to(v2.device)
            chunks = [self.k(c) for c in v2[perm].chunk(cfg.shuffle_bn_splits)]
            k = torch.cat(chunks)[torch.argsort(perm)]
        qk = self.q(v2)
        with torch.no_grad():
            t1 = self.teacher(v1)
            t2 = self.teacher(v2)
        pos = (q * k).sum(dim=1, keepdim=True)
        neg = q @ self.queue.clone().detach().t()
        logits = torch.cat([pos, neg], dim=1) / cfg.temperature
        loss_con = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        loss_dis = F.mse_loss(q, t1, reduction="sum") + F.mse_loss(qk, t2, reduction="sum")
        loss = loss_con + cfg.distill_weight * loss_dis
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        n = k.shape[0]
        idx = (torch.arange(n, device=k.device) + self.ptr) % self.queue.shape[0]
        self.queue[idx] = k
        self.ptr = (self.ptr + n) % self.queue.shape[0]
        self.log.append((loss.item(), loss_con.item(), loss_dis.item()))
        return self.log[-1][0]


class QueueCloneDisCo(DisCo):
    """The project's DisCo step before the keys were enqueued after the backward: the loss reads a
    clone of the queue, and this step's keys are enqueued at once."""

    def contrastive(self, v_q: torch.Tensor, v_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.encoder_q(v_q)
        with torch.no_grad():
            momentum_update(self.encoder_k, self.encoder_q, self.cfg.key_momentum)
            k = shuffled_forward(self.encoder_k, v_k, self.cfg.shuffle_bn_splits, self._shuffle_gen)
        loss = info_nce(q, k, self.queue.items.clone().detach(), self.cfg.temperature)
        self.queue.enqueue(all_gather_cat(k))
        return q, loss

    def after_backward(self) -> None:
        pass


def cpu_bf16() -> bool:
    return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def fast_options(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"amp": "bf16", "channels_last": True, "teacher_channels_last": True}
    return {
        "teacher_amp": "bf16" if cpu_bf16() else "none",
        "teacher_channels_last": True,
        "channels_last": True,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--teacher", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--queue-size", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave the C allocator's defaults (pre-training raises its thresholds on CPUs: infra/allocator.py)",
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--section", default="naive_vs_ours")
    args = parser.parse_args(argv)

    device, load_before = start_run(args.threads, args.device, args.default_allocator)
    base = dict(
        method="disco",
        student=args.student,
        teacher=args.teacher,
        batch_size=args.batch,
        image_size=args.size,
        queue_size=args.queue_size,
    )
    # NCHW spelled out: left unset, channels_last is decided per device at set-up (on for CPUs)
    exact_cfg = PretrainConfig(**base, channels_last=False, teacher_channels_last=False)
    fast = fast_options(device)
    fast_cfg = PretrainConfig(**base, **fast)

    ours, opt, scaler = build(exact_cfg, device)
    naive = NaiveDisCo(ours, exact_cfg)
    views = make_views(exact_cfg, 2, device)
    exact_autocast = autocast_for(exact_cfg, device)

    variants = {
        "ours (before: queue clone)": exact_cfg,
        "ours (fp32 channels_last)": PretrainConfig(**base, channels_last=True, teacher_channels_last=True),
        "ours (fast)": fast_cfg,
    }
    if device.type == "cpu" and cpu_bf16():
        variants["ours (bf16 step)"] = PretrainConfig(
            **base, amp="bf16", channels_last=True, teacher_channels_last=True
        )
    runs = {}
    for name, cfg in variants.items():
        method, m_opt, m_scaler = build(cfg, device)
        if name.startswith("ours (before"):
            method.__class__ = QueueCloneDisCo  # same weights and queue, the old queue handling
        runs[name] = (method, make_views(cfg, 2, device), m_opt, m_scaler, autocast_for(cfg, device))

    first = {}
    first["naive"] = naive.step(*views)
    first["ours (exact)"] = train_step(ours, views, opt, scaler, exact_autocast)["loss"]
    for name, (method, v, m_opt, m_scaler, m_autocast) in runs.items():
        first[name] = train_step(method, v, m_opt, m_scaler, m_autocast)["loss"]
    print("first-step loss: " + ", ".join(f"{k} {v:.6f}" for k, v in first.items()), flush=True)

    candidates = {
        "naive": lambda: naive.step(*views),
        "ours (exact)": lambda: train_step(ours, views, opt, scaler, exact_autocast),
    } | {name: (lambda r=r: train_step(r[0], r[1], r[2], r[3], r[4])) for name, r in runs.items()}
    times = alternate(candidates, args.repeats, args.warmup, device)
    med = {k: median(v) for k, v in times.items()}
    # what the queue clone alone costs (the part of "before" that "exact" no longer does), timed on its own
    clone_s = median(alternate({"clone": lambda: ours.queue.items.clone()}, 21, 2, device)["clone"])
    clone_note = (
        f"the queue clone alone ({ours.queue.items.numel() * 4 / 2**20:.0f} MiB): {clone_s * 1e3:.2f} ms, "
        f"{100 * clone_s / med['ours (exact)']:.2f}% of the exact step"
    )
    fast_desc = ", ".join(f"{k}={v}" for k, v in fast.items())
    head = "| step | s per step (median) | all repeats (s) | img/s | naive / this | first-step loss |\n|---|---|---|---|---|---|"
    rows = [
        f"| {k} | {med[k]:.3f} | {', '.join(f'{t:.2f}' for t in times[k])} | {args.batch / med[k]:.1f} | "
        f"{med['naive'] / med[k]:.2f}x | {first[k]:.6f} |"
        for k in candidates
    ]
    print(head, *rows, sep="\n")
    print(
        f"ours (fast) = {fast_desc}; ours (bf16 step) = amp=bf16, channels_last=True, teacher_channels_last=True\n"
        f"{clone_note}\nload average after: {load_average()}"
    )
    if args.write_readme:
        settings = (
            f"DisCo, student {args.student}, teacher {args.teacher}, batch {args.batch}, {args.size} px, "
            f"queue {args.queue_size}; ours (fast) = {fast_desc}; ours (bf16 step, CPU only) = amp=bf16, channels_last=True, "
            f"teacher_channels_last=True; medians of {args.repeats} alternated repeats "
            f"after {args.warmup} warm-up round(s); {clone_note}"
        )
        write_readme_section(
            args.section, "\n".join([section_header(device, load_before), settings + "\n", head, *rows])
        )


if __name__ == "__main__":
    main()
