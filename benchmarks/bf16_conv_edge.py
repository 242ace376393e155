"""How often torch's CPU bf16 convolution gives a wrong weight gradient at one edge shape.

A 3x3 convolution with stride 2 and padding 1 whose input map is 1x1 (what ResNets' last stage sees
at 16 px images) gets its bf16 weight gradient from a CPU kernel that reads memory it never wrote:
with glibc keeping freed memory (infra.allocator.keep_freed_memory, which pre-training applies on
CPUs) and that memory holding old data, the gradient is wrong in a large share of backward passes,
NaN/Inf in some of them. fp32, a 2x2 input and stride 1 are not affected. Pre-training therefore
refuses amp=bf16 on a CPU where a strided convolution of the student would see a 1-pixel map
(pretrain.train.refuse_cpu_bf16_on_a_1x1_map), and the tests run bf16 at 32 px.

Each row runs the same backward ``--trials`` times, after filling freed memory with random bytes,
and counts the weight gradients that are not finite and those that are wrong: non-finite, or not
zero where the fp32 gradient of the same inputs is exactly zero (the kernel taps that only meet
padding). Rerun it after a torch upgrade: when the first row reads 0 wrong, the limit is gone.

    python benchmarks/bf16_conv_edge.py [--trials 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from infra.allocator import keep_freed_memory  # noqa: E402

# (input map size, stride, channels_last, autocast dtype or None): the failing shape first, then what
# changes one thing each
CASES = [
    (1, 2, True, torch.bfloat16),
    (1, 2, False, torch.bfloat16),
    (1, 2, True, None),
    (1, 1, True, torch.bfloat16),
    (2, 2, True, torch.bfloat16),
]


def leave_garbage_in_freed_memory(gen: torch.Generator) -> None:
    """Allocate blocks of random bytes and free them, so the next allocations get memory holding data."""
    blocks = [
        torch.randint(-(2**31), 2**31 - 1, (n,), dtype=torch.int32, generator=gen)
        for n in (1 << 12, 1 << 16, 1 << 18, 1 << 20)
        for _ in range(4)
    ]
    del blocks


def count_bad(size: int, stride: int, channels_last: bool, dtype, trials: int) -> tuple[int, int]:
    """(passes with a non-finite weight gradient, passes with a wrong one) of ``trials``."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 256, size, size, generator=gen)
    w0 = torch.randn(512, 256, 3, 3, generator=gen) * 0.02
    out = (size - 1) // stride + 1
    g0 = torch.randn(8, 512, out, out, generator=gen)
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def weight_grad(autocast_dtype):
        x = x0.clone().to(memory_format=layout).requires_grad_()
        w = w0.clone().to(memory_format=layout).requires_grad_()
        with torch.autocast(
            "cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
        ):
            y = torch.nn.functional.conv2d(x, w, stride=stride, padding=1)
        y.backward(g0.to(memory_format=layout).to(y.dtype))
        return w.grad

    padding_only = weight_grad(None) == 0  # taps that never meet the input: their gradient is exactly 0
    non_finite = wrong = 0
    for _ in range(trials):
        leave_garbage_in_freed_memory(gen)
        grad = weight_grad(dtype)
        finite = bool(torch.isfinite(grad).all())
        non_finite += not finite
        wrong += not finite or bool(grad[padding_only].ne(0).any())
    return non_finite, wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100, help="backward passes per row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    kept = keep_freed_memory()
    print(f"torch {torch.__version__}; glibc keeps freed memory: {kept}; {args.trials} trials per row\n")
    print("| input map | stride | channels_last | dtype | non-finite weight grads | wrong weight grads |")
    print("|---|---:|---|---|---:|---:|")
    for size, stride, channels_last, dtype in CASES:
        non_finite, wrong = count_bad(size, stride, channels_last, dtype, args.trials)
        name = "bf16" if dtype is not None else "fp32"
        print(f"| {size}x{size} | {stride} | {channels_last} | {name} | {non_finite} | {wrong} |")


if __name__ == "__main__":
    main()
