"""Two-view aug+ throughput per CPU core: the project's pipelines against plain torchvision PIL ones.

    python benchmarks/augment.py [--images 48] [--source-size 224] [--size 224] [--repeats 3] [--write-readme]

Writes ``--images`` JPEGs of ``--source-size`` px (smooth colour fields plus noise, quality 90)
to a temporary folder, then times decode + two aug+ views per image, in one process with one
torch thread (images/s per core), for:

- plain v1: torchvision.transforms (v1) on PIL images, as MoCo-v2's reference code builds aug+;
- plain v2: torchvision.transforms.v2 on PIL images (``pretrain.augment.aug_plus``, the
  project's reference implementation, aug_impl='torchvision');
- ours: ``pretrain.augment.FastAugPlus`` (aug_impl='fast'): the same random draws, the blur as
  two matrix products, one PIL-to-tensor conversion.

The pipelines run in rotation over the same files; the table gives medians of the rounds. With
CUDA present a GPU row is added: torchvision.io.decode_jpeg on the device and the v2 pipeline on
device tensors (``--gpu-batch`` files decoded per call). ``--device-path cpu`` runs that path on
the CPU instead, to check it where no GPU is lent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks._common import alternate, load_average, machine, median, section_header, write_readme_section  # noqa: E402
from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD, FastAugPlus, aug_plus, blur_kernel  # noqa: E402
from pretrain.data import pil_loader  # noqa: E402


def write_jpegs(folder: Path, n: int, width: int, height: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(n):
        fx, fy, phase = rng.uniform(2, 12, 3)
        base = np.stack(
            [
                np.sin(x / width * fx + phase),
                np.cos(y / height * fy),
                np.sin((x + y) / (width + height) * fx),
            ],
            2,
        )
        rgb = 127 + 90 * base + rng.normal(0, 12, (height, width, 3))
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def plain_v1(size: int):
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(blur_kernel(size), sigma=(0.1, 2.0))], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def two_views(paths: list[Path], transform):
    def run():
        for p in paths:
            img = pil_loader(str(p))
            transform(img)
            transform(img)

    return run


def device_path(paths: list[Path], size: int, device: torch.device, batch: int):
    """Decode on ``device`` (nvJPEG on CUDA) and run the v2 aug+ on device tensors, two views per file."""
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms import v2

    data = [read_file(str(p)) for p in paths]
    transform = v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(blur_kernel(size), sigma=(0.1, 2.0))], p=0.5),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )

    def run():
        for start in range(0, len(data), batch):
            images = decode_jpeg(data[start : start + batch], device=device)
            for img in images:
                transform(img)
                transform(img)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--source-size", default="224", help="JPEG size: N (square) or WxH, e.g. 500x375")
    parser.add_argument("--size", type=int, default=224, help="output crop side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device-path", default="auto", help="auto (cuda when present), cuda, cpu or none")
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--section", default="augment")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # per core
    w, _, h = args.source_size.partition("x")
    width, height = int(w), int(h or w)
    load_before = load_average()
    print(f"machine: {machine()}\nload average before: {load_before}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.images, width, height)
        candidates = {
            "plain v1 (torchvision.transforms, PIL)": two_views(paths, plain_v1(args.size)),
            "plain v2 (transforms.v2, PIL; aug_impl=torchvision)": two_views(paths, aug_plus(args.size)),
            "ours (FastAugPlus; aug_impl=fast)": two_views(paths, FastAugPlus(args.size)),
        }
        times = alternate(candidates, args.repeats, args.warmup)
        rate = {k: len(paths) / median(v) for k, v in times.items()}
        dev = args.device_path
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "none"
        device_row = None
        if dev != "none":
            device = torch.device(dev)
            run = device_path(paths, args.size, device, args.gpu_batch)
            dtimes = alternate({"device": run}, args.repeats, args.warmup, device)
            name = f"decode + v2 on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'} tensors"
            device_row = (name, len(paths) / median(dtimes["device"]))
    plain = rate["plain v2 (transforms.v2, PIL; aug_impl=torchvision)"]
    plain_v1_rate = rate["plain v1 (torchvision.transforms, PIL)"]
    head = "| pipeline | two-view images/s per core (median) | vs plain v2 | vs plain v1 |\n|---|---|---|---|"
    rows = [f"| {k} | {v:.1f} | {v / plain:.2f}x | {v / plain_v1_rate:.2f}x |" for k, v in rate.items()]
    if device_row:
        rows.append(
            f"| {device_row[0]} (whole device, not per core) | {device_row[1]:.1f} | {device_row[1] / plain:.2f}x | "
            f"{device_row[1] / plain_v1_rate:.2f}x |"
        )
    print(head, *rows, sep="\n")
    print(f"load average after: {load_average()}")
    if args.write_readme:
        settings = (
            f"{args.images} JPEGs of {width}x{height} px (quality 90), {args.size} px views, decode + 2 views per image, "
            f"1 torch thread; medians of {args.repeats} alternated rounds after {args.warmup} warm-up round(s)"
        )
        write_readme_section(
            args.section, "\n".join([section_header("cpu", load_before), settings + "\n", head, *rows])
        )


if __name__ == "__main__":
    main()
