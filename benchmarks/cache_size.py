"""How many weight bytes stay cached between passes on this CPU: the w4a8 kernel (one row) over n copies of the
0.5B draft's fused gate_up weight (5.4 MB each), pass after pass, for growing n. While the copies fit the share of
the last-level cache this process gets, a pass reads them at the kernel's cache-hot rate; past it, at the memory's.
The draft's body is ~224 MB: unless it fits, its cost per token follows its bytes, as the target's does (issue 23's
c <= 0.2). Prints GB/s per total size (the first quartile of the passes). Nothing is asserted.

    python -m benchmarks.cache_size   # ~1 min
"""

from __future__ import annotations

import time

import torch

from reproduce.engine import w4a8
from reproduce.engine.linear import make_linear

OUT, IN = 2 * 4864, 896  # the 0.5B's gate_up: both halves in one GEMM
COPIES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96)


def main() -> None:
    torch.set_num_threads(2)
    weight = make_linear(torch.randn(OUT, IN, generator=torch.Generator().manual_seed(0)) * 0.02, "w4a8")
    mm, x = w4a8.kernel().w4a8_mm, torch.randn(1, IN)
    mb = weight.tiles.numel() / 1e6
    print(f"w4a8 ({w4a8.isa()} build) over copies of the 0.5B's gate_up, {mb:.2f} MB each, 2 threads\n\n"
          "| copies | MB | GB/s |\n|---|---|---|")
    for copies in COPIES:
        tiles = [weight.tiles.clone() for _ in range(copies)]
        passes = []
        for _ in range(max(5, 200 // copies)):
            start = time.perf_counter()
            for t in tiles:
                mm(x, t, OUT, 4)
            passes.append(time.perf_counter() - start)
        seconds = sorted(passes)[len(passes) // 4]
        print(f"| {copies} | {copies * mb:.0f} | {copies * mb / 1e3 / seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
