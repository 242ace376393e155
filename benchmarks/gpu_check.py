"""One command that shows every GPU path of the project working, in a few minutes on one CUDA GPU:

    python benchmarks/gpu_check.py                      # one CUDA GPU: paper-like sizes, under 8 minutes
    python benchmarks/gpu_check.py --dry-run            # any machine: the same stages on the CPU at toy sizes

Stages (each reports images, seconds, img/s and, where the work is mostly matrix products, the
share of the device's peak bf16 rate that its FLOPs per image reach):

1. ``pretrain``: DisCo pre-training (Eff-B0 <- R-50 shapes) with ``amp=bf16 channels_last=true``
   through ``torchrun`` (NCCL on CUDA, gloo on the CPU), via ``python -m disco_bench pretrain``'s code.
2. ``teacher``: the frozen teacher's batched forward over both views (bf16, channels_last).
3. ``probe``: the paper linear probe (SGD on a frozen backbone, BN in eval mode) for one epoch.
4. ``faster-rcnn-c4`` / ``mask-rcnn-c4``: Detectron2 Faster R-CNN C4 (VOC format) and Mask R-CNN
   C4 (COCO format) for a few iterations on generated scenes (skipped, and said so, without Detectron2).
5. ``jpeg+aug``: ``torchvision.io.decode_jpeg`` on the device, then aug+ on the decoded tensors.

Everything it needs (images, scenes, random-weight checkpoints) is generated under ``--work``;
nothing is downloaded. ``--out FILE`` also writes the table as Markdown (for benchmarks/).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from pretrain.distributed import DistInfo  # noqa: E402

# dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched on the device name
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "GH200": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A40": 150.0,
    "A30": 165.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": 125.0,
    "T4": 65.0,
}


@dataclass(frozen=True)
class Sizes:
    """How big each stage runs: ``full`` for one GPU (under 8 minutes), ``dry`` for a CPU (seconds)."""

    student: str
    teacher: str
    image_size: int
    images: int  # generated ImageFolder train images
    batch: int
    pretrain_steps: int
    teacher_batches: int
    det_iters: int
    det_image_size: int
    det_backbone: str
    jpegs: int


FULL = Sizes(
    student="efficientnet_b0",
    teacher="resnet50",
    image_size=224,
    images=512,
    batch=128,
    pretrain_steps=40,
    teacher_batches=20,
    det_iters=20,
    det_image_size=512,
    det_backbone="resnet50",
    jpegs=512,
)
DRY = Sizes(
    student="test_resnet",
    teacher="resnet10t",
    image_size=32,
    images=16,
    batch=8,
    pretrain_steps=2,
    teacher_batches=2,
    det_iters=1,
    det_image_size=64,
    det_backbone="resnet18",
    jpegs=8,
)


@dataclass
class Stage:
    name: str
    images: int = 0
    seconds: float = 0.0
    flops_per_image: float | None = None  # forward (+ backward where the stage trains)
    note: str = ""

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 and self.images else None


def peak_tflops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "CPU", None
    name = torch.cuda.get_device_name(device)
    match = next((k for k in PEAK_BF16_TFLOPS if k in name), None)
    return name, PEAK_BF16_TFLOPS[match] if match else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# ---------------------------------------------------------------- inputs, all generated ------------


def make_inputs(work: Path, sizes: Sizes) -> dict[str, str]:
    from disco_bench.embedded import EmbeddedConfig, make_embedded
    from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
    from pretrain.train import save_random_encoder

    per_class = max(2, sizes.images // 4)
    images = make_embedded(
        work / "images",
        EmbeddedConfig(classes=4, train_per_class=per_class, val_per_class=2, image_size=sizes.image_size),
        progress=False,
    )
    scenes = make_embedded_detection(
        work / "scenes",
        EmbeddedDetectionConfig(
            classes=3, train_images=8, val_images=4, image_size=sizes.det_image_size, max_objects=2
        ),
        progress=False,
    )
    return {
        "images": str(images),
        "scenes": str(scenes),
        "teacher": save_random_encoder(
            work / "teacher.pt", sizes.teacher, 2048 if sizes is FULL else 64, 128
        ),
        "student": save_random_encoder(work / "student.pt", sizes.student, 64, 128, seed=1),
        "det_student": save_random_encoder(work / "det_student.pt", sizes.det_backbone, 64, 128, seed=2),
    }


# ---------------------------------------------------------------- stages -------------------------


def pretrain_config(inputs: dict, sizes: Sizes, device: torch.device, out: Path):
    from pretrain.config import PretrainConfig

    return PretrainConfig(
        method="disco",
        student=sizes.student,
        teacher_ckpt=inputs["teacher"],
        data=inputs["images"],
        out=str(out),
        epochs=sizes.pretrain_steps,
        batch_size=sizes.batch,
        image_size=sizes.image_size,
        max_steps=sizes.pretrain_steps,
        device=device.type,
        amp="bf16",
        channels_last=True,
        workers=min(8, os.cpu_count() or 1) if device.type == "cuda" else 0,
        queue_size=4096,
    )


def stage_pretrain(inputs: dict, sizes: Sizes, device: torch.device, work: Path) -> Stage:
    """DisCo through torchrun (1 process): NCCL on CUDA, gloo on the CPU; the worker reports img/s."""
    result = work / "pretrain-summary.json"
    spec = work / "pretrain-spec.json"
    spec.write_text(
        json.dumps(
            {"sizes": asdict(sizes), "inputs": inputs, "device": device.type, "out": str(work / "run")}
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        str(Path(__file__).resolve()),
        "--pretrain-worker",
        str(spec),
        str(result),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not result.exists():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise RuntimeError(
            f"torchrun pretrain exited with {proc.returncode}: {lines[-1] if lines else 'no output'}"
        )
    summary = json.loads(result.read_text())
    cfg = pretrain_config(inputs, sizes, device, work / "flops")
    return Stage(
        "pretrain (DisCo, torchrun, bf16, channels_last)",
        summary["images"],
        summary["seconds"],
        pretrain_step_flops(cfg, device),
        f"backend {summary['backend']}, {summary['steps']} steps",
    )


def pretrain_worker(spec_path: str, result_path: str) -> None:
    import torch.distributed as dist

    from pretrain.train import pretrain

    spec = json.loads(Path(spec_path).read_text())
    sizes, device = Sizes(**spec["sizes"]), torch.device(spec["device"])
    cfg = pretrain_config(spec["inputs"], sizes, device, Path(spec["out"]))
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # pretrain joins this group
    backend = dist.get_backend()
    summary = pretrain(cfg, progress=False)
    images = summary["steps"] * cfg.batch_size
    if DistInfo.from_env().is_main:
        Path(result_path).write_text(
            json.dumps(
                {
                    "images": images,
                    "seconds": images / summary["images_per_s"],
                    "steps": summary["steps"],
                    "backend": backend,
                }
            )
        )
    dist.destroy_process_group()


def pretrain_step_flops(cfg, device: torch.device) -> float:
    """FLOPs per image of one DisCo training step (both views, key encoder, teacher), batch of 2."""
    from pretrain.train import build_method

    method = build_method(cfg)[0].to(device).train()
    views = [torch.randn(2, 3, cfg.image_size, cfg.image_size, device=device) for _ in range(2)]

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = method(views)["loss"]
        loss.backward()

    return count_flops(step) / 2


def stage_teacher(inputs: dict, sizes: Sizes, device: torch.device) -> Stage:
    from pretrain.methods.base import FrozenTeacher
    from pretrain.teachers import load_teacher

    encoder, _ = load_teacher(inputs["teacher"])
    teacher = FrozenTeacher(encoder, amp="bf16", channels_last=True).to(device)
    views = [torch.randn(sizes.batch, 3, sizes.image_size, sizes.image_size, device=device) for _ in range(2)]
    teacher.embed_views(views, batched=True)  # warm-up (cuDNN autotune, allocator)
    sync(device)
    start = time.perf_counter()
    for _ in range(sizes.teacher_batches):
        teacher.embed_views(views, batched=True)
    sync(device)
    flops = count_flops(lambda: teacher(views[0][:1]))
    return Stage(
        "teacher forward (batched views, bf16)",
        2 * sizes.batch * sizes.teacher_batches,
        time.perf_counter() - start,
        flops,
    )


def stage_probe(inputs: dict, sizes: Sizes, device: torch.device, work: Path) -> Stage:
    from downstream.config import EvalConfig
    from downstream.registry import TASKS

    cfg = EvalConfig(
        ckpt=inputs["student"],
        data=inputs["images"],
        out=str(work / "probe"),
        protocol="paper",
        epochs=1,
        image_size=sizes.image_size,
        batch_size=sizes.batch,
        device=device.type,
        workers=min(8, os.cpu_count() or 1) if device.type == "cuda" else 0,
    )
    train_images = sum(1 for p in (Path(inputs["images"]) / "train").rglob("*") if p.is_file())
    sync(device)
    start = time.perf_counter()
    TASKS["linear"].run(cfg, progress=False)
    sync(device)
    return Stage(
        "linear probe (paper protocol, 1 epoch)",
        train_images,
        time.perf_counter() - start,
        None,
        "includes the val pass and the backbone-unchanged check",
    )


def stage_detection(inputs: dict, sizes: Sizes, device: torch.device, work: Path, dataset: str) -> Stage:
    from downstream.config import EvalConfig
    from downstream.registry import TASKS

    name = "Detectron2 " + ("Faster R-CNN C4 (VOC)" if dataset == "voc" else "Mask R-CNN C4 (COCO)")
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return Stage(name, note="skipped: Detectron2 is not installed (bash scripts/install_detectron2.sh)")
    batch = 4 if device.type == "cuda" else 2
    cfg = EvalConfig(
        ckpt=inputs["det_student"],
        data=inputs["scenes"],
        out=str(work / f"det-{dataset}"),
        device=device.type,
        det_dataset=dataset,
        det_backend="detectron2",
        det_max_iter=sizes.det_iters,
        det_image_size=sizes.det_image_size,
        det_batch_size=batch,
    )
    sync(device)
    start = time.perf_counter()
    TASKS["detection"].run(cfg, progress=False)
    sync(device)
    return Stage(
        name,
        sizes.det_iters * batch,
        time.perf_counter() - start,
        None,
        "includes building the model and the test pass",
    )


def stage_jpeg(inputs: dict, sizes: Sizes, device: torch.device) -> Stage:
    from PIL import Image
    from torchvision.io import decode_jpeg
    from torchvision.transforms import v2

    from pretrain.augment import blur_kernel

    files = sorted(p for p in (Path(inputs["images"]) / "train").rglob("*") if p.is_file())
    data = []
    for i in range(sizes.jpegs):
        buf = io.BytesIO()
        Image.open(files[i % len(files)]).convert("RGB").save(buf, format="JPEG", quality=90)
        data.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    aug = v2.Compose(
        [  # aug+ on decoded uint8 tensors, on the device
            v2.RandomResizedCrop(sizes.image_size, scale=(0.2, 1.0), antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(blur_kernel(sizes.image_size), sigma=(0.1, 2.0))], p=0.5),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )

    def run() -> None:
        decoded = decode_jpeg(data, device=device)
        for image in decoded:
            aug(image)

    run()  # warm-up (nvjpeg handles, kernels)
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return Stage(
        f"JPEG decode ({device.type}) + aug+",
        len(data),
        time.perf_counter() - start,
        None,
        f"{sizes.image_size} px source images",
    )


# ---------------------------------------------------------------- table --------------------------


def table(stages: list[Stage], device_name: str, peak: float | None) -> str:
    peak_text = f"{peak:.0f} TFLOP/s bf16 dense" if peak else "n/a"
    lines = [
        f"Device: {device_name}; peak {peak_text}; torch {torch.__version__}",
        "",
        "| stage | images | seconds | img/s | GFLOP/img | img/s at peak | % of peak | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in stages:
        ips = s.images_per_s
        gflop = f"{s.flops_per_image / 1e9:.2f}" if s.flops_per_image else "-"
        at_peak = peak * 1e12 / s.flops_per_image if peak and s.flops_per_image else None
        share = f"{100 * ips / at_peak:.1f}" if at_peak and ips else "-"
        lines.append(
            f"| {s.name} | {s.images} | {s.seconds:.3f} | {f'{ips:.4g}' if ips else '-'} | {gflop} | "
            f"{f'{at_peak:.0f}' if at_peak else '-'} | {share} | {s.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="the CPU at toy sizes (what the tests run)")
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default=None, help="default: cuda, or cpu with --dry-run"
    )
    parser.add_argument(
        "--work", default=None, help="folder for the generated inputs (default: a temporary one)"
    )
    parser.add_argument("--out", default=None, help="also write the table as Markdown to this file")
    parser.add_argument("--pretrain-worker", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pretrain_worker:
        pretrain_worker(*args.pretrain_worker)
        return 0
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda: no CUDA device is visible (use --dry-run to check the CPU paths)",
            file=sys.stderr,
        )
        return 2
    sizes = DRY if args.dry_run else FULL
    device_name, peak = peak_tflops(device)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        inputs = make_inputs(work, sizes)
        print(f"inputs generated in {time.perf_counter() - t0:.1f} s under {work}", flush=True)
        stages: list[Stage] = []
        steps = [
            ("pretrain", lambda: stage_pretrain(inputs, sizes, device, work)),
            ("teacher", lambda: stage_teacher(inputs, sizes, device)),
            ("probe", lambda: stage_probe(inputs, sizes, device, work)),
            ("faster-rcnn-c4", lambda: stage_detection(inputs, sizes, device, work, "voc")),
            ("mask-rcnn-c4", lambda: stage_detection(inputs, sizes, device, work, "coco")),
            ("jpeg+aug", lambda: stage_jpeg(inputs, sizes, device)),
        ]
        failed = []
        for key, run in steps:
            started = time.perf_counter()
            try:
                stage = run()
            except Exception as exc:  # noqa: BLE001 -- every stage runs; the failures are listed at the end
                stage = Stage(
                    key, note=f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                )
                failed.append(key)
            stages.append(stage)
            print(
                f"{key}: done in {time.perf_counter() - started:.1f} s{' (' + stage.note + ')' if stage.note else ''}",
                flush=True,
            )
        text = table(stages, device_name, peak)
        print(text)
        print(f"total {time.perf_counter() - t0:.0f} s")
        if args.out:
            Path(args.out).write_text(
                f"# gpu_check ({'dry run, ' if args.dry_run else ''}{device_name})\n\n{text}\n"
            )
    if failed:
        print(f"error: stages failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
