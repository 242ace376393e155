"""One command that shows every GPU path of the project working, in a few minutes on the CUDA GPUs
of one machine:

    python benchmarks/gpu_check.py                      # CUDA: paper-like sizes, every visible GPU
    python benchmarks/gpu_check.py --dry-run            # any machine: the same stages on the CPU at toy sizes

Stages (each reports images, seconds, img/s and, where the work is mostly matrix products, the
share of the device's peak bf16 rate that its FLOPs per image reach):

1. ``pretrain``: DisCo pre-training (Eff-B0 <- R-50 shapes, ``amp=bf16 channels_last=true
   aug_impl=gpu``, default workers) through ``torchrun`` with one process per GPU (NCCL: MoCo's
   shuffle-BN gathers and the channels_last views' gathers cross processes when there are 2 or
   more GPUs; the dry run starts 2 gloo processes), on ImageNet-like JPEGs (500 x 375, quality 90).
   Timed over steady-state steps only: from the end of the first quarter of the steps to the last
   step, so the workers' start, cuDNN's autotuning and the final save are left out.
2. ``loader``: the same data path alone (workers decode and crop, the device half augments), one
   process with its share of the cores; ``step``: the training step alone on synthetic device
   tensors. Per process, the smaller of the two says what limits ``pretrain``.
3. ``teacher``: the frozen teacher's batched forward over both views (bf16, channels_last).
4. ``probe``: the paper linear probe (SGD on a frozen backbone, BN in eval mode) for one epoch.
5. ``faster-rcnn-c4`` / ``mask-rcnn-c4``: Detectron2 Faster R-CNN C4 (VOC format) and Mask R-CNN
   C4 (COCO format) for a few iterations on generated scenes (skipped, and said so, without Detectron2).

The peak is looked up by the device's exact name (an H100 PCIe and an H100 SXM differ by a third);
a name not in the table gives no peak, and says so. Everything it needs (JPEGs, scenes,
random-weight checkpoints) is generated under ``--work``; nothing is downloaded. ``--out FILE``
also writes the table as Markdown (for benchmarks/).
"""

from __future__ import annotations

import argparse
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

from infra.distributed import DistInfo  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets, keyed by the
# exact name torch.cuda.get_device_name reports: a substring match would take an H100 SXM
# ("NVIDIA H100 80GB HBM3") for a PCIe card or the other way round
PEAK_BF16_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.0,  # SXM5
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100 NVL": 835.0,
    "NVIDIA H200": 989.0,  # SXM
    "NVIDIA H200 NVL": 835.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA L40S": 362.0,
    "NVIDIA L4": 121.0,
    "NVIDIA A10": 125.0,
    "NVIDIA GeForce RTX 4090": 165.0,
}


@dataclass(frozen=True)
class Sizes:
    """How big each stage runs: ``full`` for one GPU (under 8 minutes), ``dry`` for a CPU (seconds)."""

    student: str
    teacher: str
    image_size: int
    jpeg_size: tuple[int, int]  # generated JPEGs, width x height
    batch: int  # per process
    steps_per_epoch: int  # the generated ImageFolder holds this many global batches
    pretrain_steps: int
    loader_batches: int
    teacher_batches: int
    det_iters: int
    det_image_size: int
    det_backbone: str
    det_train_images: int  # the generated scenes
    det_val_images: int
    det_cpu_batch: int  # on a GPU the batch is 4


FULL = Sizes(
    student="efficientnet_b0",
    teacher="resnet50",
    image_size=224,
    jpeg_size=(500, 375),
    batch=64,
    steps_per_epoch=4,
    pretrain_steps=40,
    loader_batches=12,
    teacher_batches=20,
    det_iters=20,
    det_image_size=512,
    det_backbone="resnet50",
    det_train_images=8,
    det_val_images=4,
    det_cpu_batch=2,
)
DRY = Sizes(
    student="test_resnet",
    teacher="resnet10t",
    image_size=32,
    jpeg_size=(64, 48),
    batch=4,
    steps_per_epoch=2,
    pretrain_steps=4,
    loader_batches=3,
    teacher_batches=2,
    det_iters=1,
    det_image_size=32,
    det_backbone="resnet18",
    det_train_images=4,
    det_val_images=2,
    det_cpu_batch=1,
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
    """(device name, its dense bf16 peak or None when the exact name is not in PEAK_BF16_TFLOPS)."""
    if device.type != "cuda":
        return "CPU", None
    name = torch.cuda.get_device_name(device)
    return name, PEAK_BF16_TFLOPS.get(name)


def processes_for(device: torch.device) -> int:
    """One process per visible GPU; 2 gloo processes on the CPU, so the dry run crosses processes too."""
    return torch.cuda.device_count() if device.type == "cuda" else 2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# ---------------------------------------------------------------- inputs, all generated ------------


def make_inputs(work: Path, sizes: Sizes, processes: int) -> dict[str, str]:
    from benchmarks.augment import write_jpegs
    from disco_bench.embedded import EmbeddedConfig, make_embedded
    from disco_bench.embedded_detection import EmbeddedDetectionConfig, make_embedded_detection
    from pretrain.train import save_random_encoder

    images = make_embedded(
        work / "images",
        EmbeddedConfig(
            classes=4, train_per_class=max(2, sizes.batch), val_per_class=2, image_size=sizes.image_size
        ),
        progress=False,
    )
    # the pre-training data: ImageNet-like JPEGs, enough for steps_per_epoch global batches
    per_class = sizes.batch * processes * sizes.steps_per_epoch // 4
    for c in range(4):
        (work / "jpegs" / "train" / f"class{c}").mkdir(parents=True, exist_ok=True)
        write_jpegs(work / "jpegs" / "train" / f"class{c}", per_class, *sizes.jpeg_size, seed=c)
    scenes = make_embedded_detection(
        work / "scenes",
        EmbeddedDetectionConfig(
            classes=3,
            train_images=sizes.det_train_images,
            val_images=sizes.det_val_images,
            image_size=sizes.det_image_size,
            max_objects=2,
        ),
        progress=False,
    )
    return {
        "images": str(images),
        "jpegs": str(work / "jpegs"),
        "scenes": str(scenes),
        "teacher": save_random_encoder(
            work / "teacher.pt", sizes.teacher, 2048 if sizes is FULL else 64, 128
        ),
        "student": save_random_encoder(work / "student.pt", sizes.student, 64, 128, seed=1),
        "det_student": save_random_encoder(work / "det_student.pt", sizes.det_backbone, 64, 128, seed=2),
    }


# ---------------------------------------------------------------- stages -------------------------


def pretrain_config(inputs: dict, sizes: Sizes, device: torch.device, out: Path, processes: int):
    """The GPU settings the README recommends: bf16, channels_last, aug_impl=gpu, default workers."""
    from pretrain.config import PretrainConfig

    return PretrainConfig(
        method="disco",
        student=sizes.student,
        teacher_ckpt=inputs["teacher"],
        data=inputs["jpegs"],
        out=str(out),
        epochs=sizes.pretrain_steps,
        batch_size=sizes.batch * processes,
        image_size=sizes.image_size,
        max_steps=sizes.pretrain_steps,
        device=device.type,
        amp="bf16",
        channels_last=True,
        aug_impl="gpu",
        queue_size=4096,
    )


def steady(stamps: list[float], per_step: int) -> tuple[int, float]:
    """(images, seconds) from the end of the first quarter of the steps to the last one: the
    steady state, without the workers' start, autotuning or the first epochs' page cache."""
    first = max(1, len(stamps) // 4)
    return (len(stamps) - first) * per_step, stamps[-1] - stamps[first - 1]


def stage_pretrain(inputs: dict, sizes: Sizes, device: torch.device, work: Path, processes: int) -> Stage:
    """DisCo through torchrun, one process per GPU (NCCL) or 2 on the CPU (gloo); rank 0 reports
    the steady-state rate of the whole machine."""
    result = work / "pretrain-summary.json"
    spec = work / "pretrain-spec.json"
    spec.write_text(
        json.dumps(
            {
                "sizes": asdict(sizes),
                "inputs": inputs,
                "device": device.type,
                "out": str(work / "run"),
                "processes": processes,
            }
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        str(Path(__file__).resolve()),
        "--pretrain-worker",
        str(spec),
        str(result),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if device.type == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # two processes share the cores
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not result.exists():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise RuntimeError(
            f"torchrun pretrain exited with {proc.returncode}: {lines[-1] if lines else 'no output'}"
        )
    summary = json.loads(result.read_text())
    cfg = pretrain_config(inputs, sizes, device, work / "flops", processes)
    return Stage(
        "pretrain (DisCo, torchrun, bf16, channels_last, aug_impl=gpu)",
        summary["images"],
        summary["seconds"],
        pretrain_step_flops(cfg, device),
        f"backend {summary['backend']}, {summary['processes']} processes, {summary['workers']} workers each, "
        f"steady-state steps {summary['timed_steps']} of {summary['steps']}",
    )


def pretrain_worker(spec_path: str, result_path: str) -> None:
    import torch.distributed as dist

    import pretrain.train as train_module

    spec = json.loads(Path(spec_path).read_text())
    sizes, device = Sizes(**spec["sizes"]), torch.device(spec["device"])
    cfg = pretrain_config(spec["inputs"], sizes, device, Path(spec["out"]), spec["processes"])
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # pretrain joins this group
    backend = dist.get_backend()
    # the end of every step (the step reads its loss terms back, so the device is done with it)
    stamps, workers, real_step, real_set_up = [], [], train_module.step_once, train_module.set_up

    def timed_step(*args, **kwargs):
        row = real_step(*args, **kwargs)
        stamps.append(time.perf_counter())
        return row

    def noted_set_up(*args, **kwargs):
        run = real_set_up(*args, **kwargs)
        workers.append(run.cfg.workers)
        return run

    train_module.step_once, train_module.set_up = timed_step, noted_set_up
    summary = train_module.pretrain(cfg, progress=False)
    images, seconds = steady(stamps, cfg.batch_size)
    if DistInfo.from_env().is_main:
        Path(result_path).write_text(
            json.dumps(
                {
                    "images": images,
                    "seconds": seconds,
                    "steps": summary["steps"],
                    "timed_steps": len(stamps) - max(1, len(stamps) // 4),
                    "backend": backend,
                    "processes": dist.get_world_size(),
                    "workers": workers[0],
                }
            )
        )
    dist.destroy_process_group()


def stage_loader(inputs: dict, sizes: Sizes, device: torch.device, processes: int) -> Stage:
    """One process's data path alone, as pretrain builds it (its default workers, aug_impl=gpu):
    batches read, moved to the device and augmented there; steady state after the first quarter."""
    from pretrain.augment import aug_plus_for
    from pretrain.data import EpochBatchSampler, MultiViewDataset, default_workers, image_folder

    aug = aug_plus_for(sizes.image_size, "gpu")
    dataset = MultiViewDataset(image_folder(Path(inputs["jpegs"]) / "train"), aug, 2, seed=0)
    sampler = EpochBatchSampler(len(dataset), sizes.batch, seed=0, tag_epoch=True)
    workers = default_workers(device.type, processes)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    stamps, epoch = [], 0
    while len(stamps) < sizes.loader_batches:
        sampler.set_epoch(epoch)
        for views, _ in loader:
            for pixels, params in views:
                aug.on_device(pixels.to(device, non_blocking=True), params.to(device, non_blocking=True))
            sync(device)
            stamps.append(time.perf_counter())
            if len(stamps) == sizes.loader_batches:
                break
        epoch += 1
    images, seconds = steady(stamps, sizes.batch)
    return Stage(
        "loader alone (one process, aug_impl=gpu)", images, seconds, None, f"{workers} workers, steady state"
    )


def stage_step(inputs: dict, sizes: Sizes, device: torch.device, work: Path, processes: int) -> Stage:
    """One process's training step alone on synthetic device tensors (no loader), steady state."""
    from pretrain.train import autocast_for, build_method, train_step

    cfg = pretrain_config(inputs, sizes, device, work / "step", processes)
    method = build_method(cfg)[0].to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    views = [
        torch.randn(sizes.batch, 3, sizes.image_size, sizes.image_size, device=device).contiguous(
            memory_format=torch.channels_last
        )
        for _ in range(2)
    ]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    stamps = []
    for _ in range(sizes.loader_batches):
        train_step(method, views, optimizer, scaler, autocast_for(cfg, device))
        stamps.append(time.perf_counter())  # train_step reads its loss terms back: the device is done
    images, seconds = steady(stamps, sizes.batch)
    return Stage("step alone (one process, synthetic inputs)", images, seconds, None, "steady state")


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
    TASKS["linear"].evaluate(cfg, progress=False)
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
    batch = 4 if device.type == "cuda" else sizes.det_cpu_batch
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
    TASKS["detection"].evaluate(cfg, progress=False)
    sync(device)
    return Stage(
        name,
        sizes.det_iters * batch,
        time.perf_counter() - start,
        None,
        "includes building the model and the test pass",
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


def which_limits(stages: list[Stage]) -> str:
    """One line: per process, the loader's rate against the step's, and which one limits pre-training."""
    loader, step = (next((s for s in stages if s.name.startswith(p)), None) for p in ("loader", "step"))
    if not (loader and step and loader.images_per_s and step.images_per_s):
        return "limit: unknown (the loader or the step stage failed)"
    limit = "the loader" if loader.images_per_s < step.images_per_s else "the step"
    return (
        f"per process: loader {loader.images_per_s:.4g} img/s vs step {step.images_per_s:.4g} img/s: "
        f"{limit} limits pre-training"
    )


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
        processes = processes_for(device)
        inputs = make_inputs(work, sizes, processes)
        print(f"inputs generated in {time.perf_counter() - t0:.1f} s under {work}", flush=True)
        stages: list[Stage] = []
        steps = [
            ("pretrain", lambda: stage_pretrain(inputs, sizes, device, work, processes)),
            ("loader", lambda: stage_loader(inputs, sizes, device, processes)),
            ("step", lambda: stage_step(inputs, sizes, device, work, processes)),
            ("teacher", lambda: stage_teacher(inputs, sizes, device)),
            ("probe", lambda: stage_probe(inputs, sizes, device, work)),
            ("faster-rcnn-c4", lambda: stage_detection(inputs, sizes, device, work, "voc")),
            ("mask-rcnn-c4", lambda: stage_detection(inputs, sizes, device, work, "coco")),
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
        text = table(stages, device_name, peak) + "\n\n" + which_limits(stages)
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
