"""Images/s of one pre-training step next to its compute floor, and the step's peak memory.

    python benchmarks/pretrain_step.py [--student resnet18] [--teacher resnet50] [--batch 16] [--size 64]
        [--methods disco,moco,seed] [--repeats 3] [--teacher-amp bf16] [--teacher-channels-last] [--write-readme]

The case the README reports besides the defaults, a small student distilling a large teacher
(EfficientNet-B0 student, ResNet-50 teacher, batch 32, 96 px; minutes per run on a 2-core CPU):

    python benchmarks/pretrain_step.py --student efficientnet_b0 --teacher resnet50 --batch 32 --size 96 --methods disco

The step is ``pretrain.train.train_step`` (forward, one host sync for the loss terms, backward,
SGD step) on the project's method modules. The floor is the sum of the separately timed model
passes the step cannot avoid, with the same settings:

- DisCo: student forward+backward on both views, momentum-encoder forward on the key view,
  teacher forward on both views;
- MoCo-v2: student forward+backward on the query view, momentum forward on the key view;
- SEED: student forward+backward on the view, teacher forward on it.

overhead = step time / floor - 1. All candidates of a method run in rotation (step, then each
floor pass, repeated), so a change in the machine's load hits them alike; the table gives
medians. Views are random tensors: data loading is timed by benchmarks/augment.py. Weights are
random (timing does not depend on them), so no checkpoint is needed.

Memory: after the timing, ``--mem-steps`` more steps, each with its own peak (process RSS
high-water mark on CPU, torch.cuda.max_memory_allocated on GPUs), and the memory held after each
step, first against last, to show whether it grows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import (  # noqa: E402
    alternate,
    load_average,
    median,
    memory_kind,
    memory_mib,
    reset_peak,
    section_header,
    start_run,
    sync,
    write_readme_section,
)
from pretrain.config import PretrainConfig  # noqa: E402
from pretrain.methods import METHODS  # noqa: E402
from pretrain.methods.base import FrozenTeacher  # noqa: E402
from pretrain.methods.disco import DisCo  # noqa: E402
from pretrain.models import Encoder, ProjectionHead, build_backbone, feature_dim  # noqa: E402
from pretrain.optim import build_optimizer  # noqa: E402
from pretrain.train import autocast_for, train_step  # noqa: E402


def build(cfg: PretrainConfig, device: torch.device):
    """The method module (random weights, random MoCo-v2-style teacher head) and its optimiser."""
    cls = METHODS[cfg.method]
    teacher = None
    if cls.needs_teacher:
        torch.manual_seed(cfg.seed + 1)
        backbone = build_backbone(cfg.teacher)
        encoder = Encoder(backbone, ProjectionHead(feature_dim(backbone), 2048, cfg.dim))
        teacher = FrozenTeacher(encoder, cfg.teacher_bn, cfg.teacher_amp, cfg.teacher_channels_last)
    torch.manual_seed(cfg.seed)
    method = cls(cfg, build_backbone(cfg.student), teacher).to(device)
    if cfg.channels_last:
        method.to(memory_format=torch.channels_last)
    method.train()
    optimizer = build_optimizer(cfg, method)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and device.type == "cuda")
    return method, optimizer, scaler


def make_views(cfg: PretrainConfig, n: int, device: torch.device) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    views = [
        torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=gen).to(device)
        for _ in range(n)
    ]
    if cfg.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    return views


def floor_passes(method, cfg: PretrainConfig, views: list[torch.Tensor], autocast) -> dict[str, callable]:
    """The model passes a step of ``cfg.method`` cannot avoid, each as a callable."""
    student = method.encoder_q
    n_student = 2 if isinstance(method, DisCo) else 1

    def student_fwd_bwd():
        with autocast:
            out = sum(student(v).float().sum() for v in views[:n_student])
        out.backward()
        student.zero_grad(set_to_none=True)

    passes = {f"student fwd+bwd ({n_student} view{'s' * (n_student > 1)})": student_fwd_bwd}
    if hasattr(method, "encoder_k"):

        def momentum_fwd():
            with torch.no_grad(), autocast:
                method.encoder_k(views[1])

        passes["momentum fwd (1 view)"] = momentum_fwd
    if getattr(method, "teacher", None) is not None:
        teacher_views = views[:2] if n_student == 2 else views[:1]

        def teacher_fwd():
            with autocast:
                method.teacher.embed_views(teacher_views)

        passes[f"teacher fwd ({len(teacher_views)} view{'s' * (len(teacher_views) > 1)})"] = teacher_fwd
    return passes


def bench_method(
    cfg: PretrainConfig, device: torch.device, repeats: int, warmup: int, mem_steps: int
) -> dict:
    method, optimizer, scaler = build(cfg, device)
    views = make_views(cfg, method.num_views, device)
    autocast = autocast_for(cfg, device)

    def step():
        train_step(method, views, optimizer, scaler, autocast)

    candidates = {"step": step} | floor_passes(method, cfg, views, autocast)
    times = alternate(candidates, repeats, warmup, device)
    medians = {name: median(t) for name, t in times.items()}
    floor = sum(v for k, v in medians.items() if k != "step")

    held, peaks = [], []
    for _ in range(mem_steps):
        reset_peak(device)
        step()
        sync(device)
        cur, peak = memory_mib(device)
        held.append(cur)
        peaks.append(peak)
    return {"medians": medians, "times": times, "floor": floor, "held": held, "peaks": peaks}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--teacher", default="resnet50")
    parser.add_argument("--batch", type=int, default=16, help="per-process batch")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--methods", default="disco,moco,seed")
    parser.add_argument("--queue-size", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mem-steps", type=int, default=6)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave the C allocator's defaults (pre-training raises its thresholds on CPUs: infra/allocator.py)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    parser.add_argument("--teacher-amp", default="none", choices=("none", "bf16", "fp16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--teacher-channels-last", action="store_true")
    parser.add_argument(
        "--write-readme", action="store_true", help="write the table into benchmarks/README.md"
    )
    parser.add_argument(
        "--section", default="pretrain_step", help="README section name (with --write-readme)"
    )
    args = parser.parse_args(argv)

    device, load_before = start_run(args.threads, args.device, args.default_allocator)
    head = (
        "| method | step s | floor s | overhead | step img/s | floor img/s | floor passes (median s) |\n"
        "|---|---|---|---|---|---|---|"
    )
    mem_head = f"| method | peak MiB per step ({memory_kind(device)}) | held MiB after step 1 / {args.mem_steps} | growth MiB |\n|---|---|---|---|"
    rows, mem_rows = [], []
    print(head, flush=True)
    for name in args.methods.split(","):
        cfg = PretrainConfig(
            method=name,
            student=args.student,
            teacher=args.teacher,
            batch_size=args.batch,
            image_size=args.size,
            queue_size=args.queue_size,
            amp=args.amp,
            channels_last=args.channels_last,
            teacher_amp=args.teacher_amp,
            teacher_channels_last=args.teacher_channels_last,
        )
        r = bench_method(cfg, device, args.repeats, args.warmup, args.mem_steps)
        step_s, floor = r["medians"]["step"], r["floor"]
        parts = "; ".join(f"{k} {v:.3f}" for k, v in r["medians"].items() if k != "step")
        row = (
            f"| {name} | {step_s:.3f} | {floor:.3f} | {100 * (step_s / floor - 1):+.1f}% | "
            f"{args.batch / step_s:.1f} | {args.batch / floor:.1f} | {parts} |"
        )
        rows.append(row)
        held = r["held"]
        if held and held[0] is not None:
            mem_rows.append(
                f"| {name} | {max(r['peaks']):.0f} | {held[0]:.0f} / {held[-1]:.0f} | {held[-1] - held[0]:+.0f} |"
            )
        print(row, flush=True)
        print(f"  step times (s): {', '.join(f'{t:.3f}' for t in r['times']['step'])}", flush=True)
    print()
    print(mem_head, *mem_rows, sep="\n")
    print(f"load average after: {load_average()}")
    settings = (
        f"student {args.student}, teacher {args.teacher}, batch {args.batch}, {args.size} px, queue {args.queue_size}, "
        f"amp {args.amp}, channels_last {args.channels_last}, teacher_amp {args.teacher_amp}, "
        f"teacher_channels_last {args.teacher_channels_last}; medians of {args.repeats} alternated repeats "
        f"after {args.warmup} warm-up round(s)"
    )
    if args.write_readme:
        body = "\n".join(
            [section_header(device, load_before), settings + "\n", head, *rows, "", mem_head, *mem_rows]
        )
        write_readme_section(args.section, body)


if __name__ == "__main__":
    main()
