"""What the fast probe trades: both linear-probe protocols on the embedded dataset, timed.

    python benchmarks/probe.py [--ckpt PATH] [--paper-epochs 10] [--device auto] [--out runs/bench-probe] [--write-readme]

Without --ckpt a quick MoCo-v2 checkpoint (mobilenetv3_small_050, a few epochs) is pre-trained on
the embedded dataset first. Prints one row per protocol: wall time and top-1/top-5 on val.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import load_average, machine, section_header, write_readme_section  # noqa: E402
from disco_bench.embedded import EmbeddedConfig, make_embedded  # noqa: E402
from downstream import linear  # noqa: E402
from downstream.config import EvalConfig  # noqa: E402
from pretrain.config import PretrainConfig  # noqa: E402
from pretrain.train import pretrain  # noqa: E402


def quick_checkpoint(data: Path, out: Path, epochs: int, device: str) -> str:
    final = out / "final.pt"
    if final.exists():
        return str(final)
    cfg = PretrainConfig(
        method="moco",
        student="mobilenetv3_small_050",
        data=str(data),
        out=str(out),
        epochs=epochs,
        batch_size=64,
        image_size=32,
        queue_size=1024,
        key_momentum=0.99,
        device=device,
    )
    return pretrain(cfg, progress=False)["checkpoint"]


def timed_probe(cfg: EvalConfig) -> tuple[float, dict[str, float]]:
    shutil.rmtree(cfg.out, ignore_errors=True)  # never resume: time the whole probe
    start = time.perf_counter()
    result = linear.evaluate(cfg, progress=False)
    return time.perf_counter() - start, {m.metric: m.value for m in result.measurements}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt", default=None, help="checkpoint to probe (default: pre-train a quick MoCo-v2 one)"
    )
    parser.add_argument("--out", default="runs/bench-probe")
    parser.add_argument("--paper-epochs", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--write-readme", action="store_true", help="write the table into benchmarks/README.md"
    )
    args = parser.parse_args(argv)
    load_before = load_average()

    out = Path(args.out)
    data = make_embedded(
        out / "data",
        EmbeddedConfig(classes=10, train_per_class=60, val_per_class=20, image_size=32),
        progress=False,
    )
    ckpt = args.ckpt or quick_checkpoint(data, out / "moco", args.pretrain_epochs, args.device)
    base = EvalConfig(ckpt=ckpt, data=str(data), image_size=32, batch_size=64, device=args.device)
    runs = {
        "fast (cached features, L-BFGS, wd sweep)": EvalConfig(
            **{**base.__dict__, "protocol": "fast", "out": str(out / "fast")}
        ),
        f"paper (SGD, {args.paper_epochs} epochs, aug)": EvalConfig(
            **{**base.__dict__, "protocol": "paper", "epochs": args.paper_epochs, "out": str(out / "paper")}
        ),
    }
    print(f"checkpoint: {ckpt}\nmachine: {machine()}\nload average before: {load_before}\n")
    head = "| protocol | seconds | top-1 | top-5 |\n|---|---|---|---|"
    print(head)
    rows = []
    for name, cfg in runs.items():
        seconds, acc = timed_probe(cfg)
        rows.append(f"| {name} | {seconds:.1f} | {acc['top1']:.1f} | {acc['top5']:.1f} |")
        print(rows[-1], flush=True)
    if args.write_readme:
        device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        settings = (
            f"embedded dataset (10 classes, 60 train / 20 val per class, 32 px); checkpoint "
            f"{'given' if args.ckpt else f'MoCo-v2 mobilenetv3_small_050, {args.pretrain_epochs} epochs'}"
        )
        write_readme_section(
            "probe", "\n".join([section_header(device, load_before), settings + "\n", head, *rows])
        )


if __name__ == "__main__":
    main()
