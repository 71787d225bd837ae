"""The w16a32 kernel (reproduce/engine/kernels/w16a32.cpp) against torch's bf16 and int8 GEMMs, GEMMs alone, on a
model's shapes: how flat each one's cost is from 1 to 9 rows, what the paper's regime asks of a target.

Random weights of one decoder stack's four fused GEMMs (qkv, out, gate_up, down; every layer its own weights, so a
pass streams them from memory as a forward does) in linear modes w16a32, bf16 (torch, chunked as the runtime runs it)
and int8, timed as a pass over all layers for calls of n = 1..9 rows; modes alternate within each round, the best of
ROUNDS is kept. Prints ms per pass and t(n)/t(1). With ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2 torch takes its AVX2 paths (the w16a32 build is the same code either way). Nothing is
asserted.

    python -m benchmarks.w16a32_kernel [--model target|draft]   # ~3 min, ~7 GB for the target
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.w4a8_kernel import ROUNDS, ROWS, SHAPES, best_pass_ms, stack_shapes
from reproduce.engine.linear import make_linear

MODES = ("w16a32", "bf16", "int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="target")
    args = parser.parse_args()
    torch.set_num_threads(2)
    hidden, _, _, layers = SHAPES[args.model]
    shapes = stack_shapes(args.model)
    generator = torch.Generator().manual_seed(0)
    stacks: dict[str, list] = {mode: [] for mode in MODES}
    for shape in shapes:  # one fp32 weight at a time: the stack in fp32 would be 5 GB for the target
        weight = torch.randn(shape, generator=generator) * 0.02
        for mode in MODES:
            stacks[mode].append(make_linear(weight, mode))
    best = best_pass_ms(stacks, shapes, generator)
    print(f"{args.model}: {layers} layers, hidden {hidden}, GEMMs alone, ms per pass (best of {ROUNDS})")
    print("| rows | " + " | ".join(f"{m} ms" for m in MODES) + " | " + " | ".join(f"{m} t(n)/t(1)" for m in MODES)
          + " |")
    print("|---" * (1 + 2 * len(MODES)) + "|")
    for rows in ROWS:
        print(f"| {rows} | " + " | ".join(f"{best[m, rows]:.1f}" for m in MODES) + " | "
              + " | ".join(f"{best[m, rows] / best[m, 1]:.2f}" for m in MODES) + " |")


if __name__ == "__main__":
    main()
