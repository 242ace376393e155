"""CPU-side two-view samples/s per core of each data path, and the cost of aug_impl=gpu's device half.

    python benchmarks/loader.py [--data DIR] [--images 64] [--repeats 3] [--batch 64] [--write-readme]

``--data`` is an ImageFolder split (DIR/<class>/<image>) or a root holding train/. Without it the
script writes ``--generate`` ImageNet-like JPEGs (``--source-size`` 500x375, quality 90) to a
temporary folder. The first ``--images`` files are timed through ``MultiViewDataset`` exactly as
the pre-training DataLoader workers run it (read, decode, two views, one torch thread, one
process: samples/s per core), for each aug_impl:

- torchvision: the reference aug+ (PIL + transforms.v2), both views finished on the CPU;
- fast: FastAugPlus, both views finished on the CPU;
- gpu (CPU side): read, reduced-size JPEG decode where the crops allow, crop/flip both views to
  uint8, draw the photometric parameters; what the workers do on a GPU run.

A decode-only row gives the floor. Then the device half of aug_impl=gpu (colour jitter, greyscale,
blur, normalisation on a batch of ``--batch`` two-view samples) is timed on the CPU (one thread)
and on CUDA when present. The last line is
``cpu-side samples/s per core: X (gpu path) vs Y (torchvision aug+)``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import alternate, load_average, machine, median, section_header, write_readme_section  # noqa: E402
from benchmarks.augment import write_jpegs  # noqa: E402
from infra.errors import InputError  # noqa: E402
from pretrain.augment import aug_plus_for  # noqa: E402
from pretrain.data import MultiViewDataset, image_folder, pil_loader  # noqa: E402
from pretrain.device_augment import GpuAugPlus  # noqa: E402

IMPLS = {
    "torchvision": "torchvision aug+ (aug_impl=torchvision)",
    "fast": "FastAugPlus (aug_impl=fast)",
    "gpu": "gpu path, CPU side (aug_impl=gpu)",
}


def split_of(data: Path) -> Path:
    """The ImageFolder split to read: DIR/train when DIR holds one, else DIR itself."""
    return data / "train" if (data / "train").is_dir() else data


def generated_folder(root: Path, n: int, width: int, height: int) -> Path:
    """An ImageFolder of ``n`` ImageNet-like JPEGs (one class; quality 90)."""
    (root / "class0").mkdir(parents=True)
    write_jpegs(root / "class0", n, width, height)
    return root


def views_of(dataset: MultiViewDataset, count: int):
    def run():
        for i in range(count):
            dataset[(0, i)]

    return run


def decode_only(dataset: MultiViewDataset, count: int):
    paths = [path for path, _ in dataset.base.samples[:count]]

    def run():
        for path in paths:
            pil_loader(path)

    return run


def device_half(dataset: MultiViewDataset, aug: GpuAugPlus, batch: int, device: torch.device):
    """One batch of two-view samples through the device half (inputs already on the device)."""
    samples = [dataset[(0, i % len(dataset))][0] for i in range(batch)]
    views = [
        (
            torch.stack([s[v][0] for s in samples]).to(device),
            torch.stack([s[v][1] for s in samples]).to(device),
        )
        for v in range(2)
    ]

    def run():
        for pixels, params in views:
            aug.on_device(pixels, params)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="ImageFolder split (or a root holding train/)")
    parser.add_argument("--generate", type=int, default=64, help="JPEGs to write when --data is not given")
    parser.add_argument("--source-size", default="500x375", help="generated JPEG size, WxH")
    parser.add_argument("--images", type=int, default=64, help="files timed per round")
    parser.add_argument("--size", type=int, default=224, help="view side")
    parser.add_argument("--batch", type=int, default=64, help="two-view samples per device-half call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # per core
    load_before = load_average()
    print(f"machine: {machine()}\nload average before: {load_before}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if args.data is None:
                w, _, h = args.source_size.partition("x")
                split = generated_folder(Path(tmp) / "jpegs", args.generate, int(w), int(h or w))
                source = f"{args.generate} generated JPEGs of {args.source_size} px (quality 90)"
            else:
                split = split_of(args.data)
                source = f"ImageFolder {split}"
            base = image_folder(split)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        count = min(args.images, len(base))
        datasets = {impl: MultiViewDataset(base, aug_plus_for(args.size, impl), 2, seed=0) for impl in IMPLS}
        candidates = {"decode only (PIL, full size)": decode_only(datasets["gpu"], count)}
        candidates |= {label: views_of(datasets[impl], count) for impl, label in IMPLS.items()}
        times = alternate(candidates, args.repeats, args.warmup)
        rate = {name: count / median(t) for name, t in times.items()}

        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        device_rows = []
        for device in devices:
            run = device_half(datasets["gpu"], datasets["gpu"].transforms[0], args.batch, device)
            t = alternate({"device half": run}, args.repeats, args.warmup, device)["device half"]
            where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu, 1 thread"
            device_rows.append((where, args.batch / median(t)))

    torchvision_rate, gpu_rate = rate[IMPLS["torchvision"]], rate[IMPLS["gpu"]]
    settings = (
        f"{source}; {count} files per round, {args.size} px views, two views per sample, 1 torch thread; "
        f"medians of {args.repeats} alternated rounds after {args.warmup} warm-up round(s)"
    )
    head = "| data path (CPU side) | two-view samples/s per core | vs torchvision aug+ |\n|---|---|---|"
    rows = [f"| {name} | {r:.1f} | {r / torchvision_rate:.2f}x |" for name, r in rate.items()]
    dhead = (
        f"| aug_impl=gpu device half (jitter, grey, blur, normalise; batch {args.batch}) | two-view samples/s |\n"
        "|---|---|"
    )
    drows = [f"| {where} | {r:.1f} |" for where, r in device_rows]
    final = (
        f"cpu-side samples/s per core: {gpu_rate:.1f} (gpu path) vs {torchvision_rate:.1f} (torchvision aug+)"
    )
    print(settings, head, *rows, "", dhead, *drows, sep="\n")
    print(f"load average after: {load_average()}")
    if args.write_readme:
        body = [
            section_header("cpu", load_before),
            settings + "\n",
            head,
            *rows,
            "",
            dhead,
            *drows,
            "",
            final,
        ]
        write_readme_section("loader", "\n".join(body))
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
