"""The w4a8 kernel (reproduce/engine/kernels/w4a8.cpp), each of its builds this CPU has, against torch's int4 kernel,
GEMMs alone, on a model's shapes.

Random weights of one decoder stack's four fused GEMMs (qkv, out, gate_up, down; every layer its own weights, so a
pass streams them from memory as a forward does), in both int4 linear modes (the same int4 grid), timed as a pass
over all layers for calls of n = 1..9 rows, and the same kernel on 3-bit weights (w3a8: int4_grid at 3 bits, 20%
fewer bytes); kernels alternate within each round, the best of ROUNDS is kept. Prints
ms per pass, torch / each build, each kernel's t(n)/t(1), and the relative error of both modes against the fp32
GEMM. The avx512 build (AVX-512 VNNI) is timed where the CPU has it; with ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 torch takes its AVX2 paths (the avx2 build is the same code
either way). Nothing is asserted.

    python -m benchmarks.w4a8_kernel [--model target|draft]   # ~3 min
"""

from __future__ import annotations

import argparse
import time

import torch

from reproduce.engine import w4a8
from reproduce.engine.linear import make_linear

# (hidden, intermediate, key/value width, layers) of the Qwen2.5-Coder pair
SHAPES = {"target": (1536, 8960, 256, 28), "draft": (896, 4864, 128, 24)}
ROWS = range(1, 10)
ROUNDS = 3


def stack_shapes(model: str) -> list[tuple[int, int]]:
    """[out, in] of every fused GEMM of `model`'s decoder stack (qkv, out, gate_up, down, layer after layer)."""
    hidden, inter, kv, layers = SHAPES[model]
    return [(hidden + 2 * kv, hidden), (hidden, hidden), (2 * inter, hidden), (hidden, inter)] * layers


def best_pass_ms(kernels: dict, shapes: list[tuple[int, int]], generator: torch.Generator) -> dict:
    """{(name, rows): ms}: the best of ROUNDS passes over a stack (kernels[name]: one callable per GEMM of `shapes`)
    for each row count in ROWS, the kernels alternating within each round, each pass after a warm-up pass."""
    best: dict[tuple[str, int], float] = {}
    for _ in range(ROUNDS):
        for rows in ROWS:
            inputs = [torch.randn(rows, cols, generator=generator) for _, cols in shapes]
            for name, stack in kernels.items():
                for call, activations in zip(stack, inputs):  # warm-up pass
                    call(activations)
                start = time.perf_counter()
                for call, activations in zip(stack, inputs):
                    call(activations)
                ms = (time.perf_counter() - start) * 1e3
                best[name, rows] = min(best.get((name, rows), ms), ms)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="target")
    args = parser.parse_args()
    torch.set_num_threads(2)
    hidden, inter, kv, layers = SHAPES[args.model]
    shapes = stack_shapes(args.model)
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(shape, generator=generator) * 0.02 for shape in shapes]
    int4 = [make_linear(w, "int4") for w in weights]
    packed = [make_linear(w, "w4a8") for w in weights]
    packed3 = [make_linear(w, "w3a8") for w in weights]
    x = torch.randn(5, hidden, generator=generator)
    exact = x @ weights[0].T
    errors = {"int4": float((int4[0](x) - exact).norm() / exact.norm()),
              "w4a8": float((packed[0](x) - exact).norm() / exact.norm())}
    del weights
    builds = [isa for isa in w4a8.ISAS if w4a8.available(isa)]  # what this CPU and compiler can have
    kernels = {"torch int4": [lambda a, lin=lin: lin(a) for lin in int4]}
    for isa in builds:
        mm = w4a8.kernel(isa).w4a8_mm
        for mode, stack in (("w4a8", packed), ("w3a8", packed3)):
            kernels[f"{mode} {isa}"] = [lambda a, lin=lin, mm=mm: mm(a, lin.tiles, lin.out_features, lin.bits)
                                        for lin in stack]
    best = best_pass_ms(kernels, shapes, generator)
    print(f"{args.model}: {layers} layers, hidden {hidden}, GEMMs alone, ms per pass (best of {ROUNDS}); w4a8 builds "
          f"here: {', '.join(builds)} (this process's: {w4a8.isa()}); relative error against fp32 on 5 rows: int4 "
          f"{errors['int4']:.4f}, w4a8 {errors['w4a8']:.4f}")
    names = list(kernels)
    ours = names[1:]
    if not ours:
        print("no w4a8 build works here (w4a8.kernel() says why)")
        return
    print("| rows | " + " | ".join(f"{n} ms" for n in names) + " | " +
          " | ".join(f"torch / {n}" for n in ours) + " | " + " | ".join(f"{n} t(n)/t(1)" for n in names) + " |")
    print("|---" * (1 + len(names) + len(ours) + len(names)) + "|")
    for rows in ROWS:
        cells = [f"{best[n, rows]:.1f}" for n in names]
        cells += [f"{best[names[0], rows] / best[n, rows]:.2f}" for n in ours]
        cells += [f"{best[n, rows] / best[n, 1]:.2f}" for n in names]
        print(f"| {rows} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
