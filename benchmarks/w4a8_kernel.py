"""The w4a8 kernel (reproduce/engine/kernels/w4a8.cpp) against torch's int4 kernel, GEMMs alone, on a model's shapes.

Random weights of one decoder stack's four fused GEMMs (qkv, out, gate_up, down; every layer its own weights, so a
pass streams them from memory as a forward does), in both int4 linear modes (the same int4 grid), timed as a pass
over all layers for calls of n = 1..5 rows; modes alternate within each round, the best of ROUNDS is kept. Prints
ms per pass, torch / w4a8, each mode's t(n)/t(1), and the relative error of both against the fp32 GEMM. Run it
again with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 for torch's AVX2 paths (the
w4a8 kernel is the same AVX2 code either way). Nothing is asserted.

    python -m benchmarks.w4a8_kernel [--model target|draft]   # ~2 min
"""

from __future__ import annotations

import argparse
import time

import torch

from reproduce.engine.linear import make_linear

# (hidden, intermediate, key/value width, layers) of the Qwen2.5-Coder pair
SHAPES = {"target": (1536, 8960, 256, 28), "draft": (896, 4864, 128, 24)}
ROWS = range(1, 6)
ROUNDS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="target")
    args = parser.parse_args()
    torch.set_num_threads(2)
    hidden, inter, kv, layers = SHAPES[args.model]
    shapes = [(hidden + 2 * kv, hidden), (hidden, hidden), (2 * inter, hidden), (hidden, inter)] * layers
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(shape, generator=generator) * 0.02 for shape in shapes]
    linears = {mode: [make_linear(w, mode) for w in weights] for mode in ("int4", "w4a8")}
    x = torch.randn(5, hidden, generator=generator)
    errors = {mode: float((linears[mode][0](x) - x @ weights[0].T).norm() / (x @ weights[0].T).norm())
              for mode in linears}
    del weights
    best: dict[tuple[str, int], float] = {}
    for _ in range(ROUNDS):
        for rows in ROWS:
            inputs = [torch.randn(rows, cols, generator=generator) for _, cols in shapes]
            for mode, stack in linears.items():
                for linear, activations in zip(stack, inputs):  # warm-up pass
                    linear(activations)
                start = time.perf_counter()
                for linear, activations in zip(stack, inputs):
                    linear(activations)
                ms = (time.perf_counter() - start) * 1e3
                best[mode, rows] = min(best.get((mode, rows), ms), ms)
    print(f"{args.model}: {layers} layers, hidden {hidden}, GEMMs alone; relative error against fp32 on 5 rows: "
          f"int4 {errors['int4']:.4f}, w4a8 {errors['w4a8']:.4f}")
    print("| rows | torch int4 ms | w4a8 ms | torch / w4a8 | int4 t(n)/t(1) | w4a8 t(n)/t(1) |")
    print("|---|---|---|---|---|---|")
    for rows in ROWS:
        torch_ms, ours = best["int4", rows], best["w4a8", rows]
        print(f"| {rows} | {torch_ms:.1f} | {ours:.1f} | {torch_ms / ours:.2f} | {torch_ms / best['int4', 1]:.2f} | "
              f"{ours / best['w4a8', 1]:.2f} |")


if __name__ == "__main__":
    main()
