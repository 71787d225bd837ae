"""A whole forward with the fused layer ops (reproduce/engine/kernels/layer_ops.cpp) against the same forward with
torch's ops between the GEMMs, on one model of the Qwen2.5-Coder pair's shapes.

Random weights in one linear mode (default w4a8, what `auto` picks for both models on AVX-512 and AVX2 CPUs), every
layer its own weights (a forward streams them from memory), the head as the runs have it: the target's whole
vocabulary (in int8 for the int4 modes, make_linear's head rule), the draft's 32,768 restricted rows in the body's
mode. Both LMs share the weights; t(n) is
reproduce.engine.timing.time_rows' median of an n-token call after a 250-token context, the two alternating call by
call. Prints t(n) for n = 1..9 of each, their difference (what the fusion saves a call) and ratio. Nothing is
asserted.

    python -m benchmarks.layer_ops [--model target|draft] [--mode w4a8]   # ~1-2 min
"""

from __future__ import annotations

import argparse
import copy

import torch
from transformers import Qwen2Config

from reproduce.engine import layer_ops, w4a8
from reproduce.engine.fast_lm import FastLlamaLM, LayerWeights
from reproduce.engine.linear import LINEAR_MODES, make_linear
from reproduce.engine.timing import time_rows

# (hidden, intermediate, layers, heads, kv heads, head rows) of the Qwen2.5-Coder pair as the runs use it
SHAPES = {"target": (1536, 8960, 28, 12, 2, 151936), "draft": (896, 4864, 24, 14, 2, 32768)}
CONTEXT, ROWS, REPEATS = 250, range(1, 10), 9


def random_lm(model: str, mode: str) -> FastLlamaLM:
    hidden, inter, depth, heads, kv_heads, head_rows = SHAPES[model]
    config = Qwen2Config(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=depth,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=head_rows,
                         rope_theta=1e6)
    generator = torch.Generator().manual_seed(0)
    weight = lambda *shape: torch.randn(shape, generator=generator) * 0.02  # noqa: E731
    head_dim = hidden // heads
    layers = [LayerWeights(make_linear(weight((heads + 2 * kv_heads) * head_dim, hidden), mode),
                           make_linear(weight(hidden, heads * head_dim), mode),
                           make_linear(weight(2 * inter, hidden), mode), make_linear(weight(hidden, inter), mode),
                           qkv_bias=weight((heads + 2 * kv_heads) * head_dim))
              for _ in range(depth)]
    norms = [(torch.ones(hidden), torch.ones(hidden)) for _ in layers]
    table = weight(head_rows, hidden)
    head = make_linear(table, mode, head=model == "target")  # a restricted head is in the body's mode
    return FastLlamaLM(config, table.to(torch.bfloat16), layers, norms, torch.ones(hidden), head, head_rows,
                       CONTEXT + max(ROWS), mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="draft")
    parser.add_argument("--mode", choices=[m for m in LINEAR_MODES if m != "fp32"], default="w4a8")
    args = parser.parse_args()
    if not layer_ops.available():
        print(f"the fused layer ops do not build here: {layer_ops._build()}")
        return
    if args.mode == "w4a8" and not w4a8.available():
        print(f"the w4a8 kernel does not build here: {w4a8._build(w4a8.isa())}; try --mode int4")
        return
    torch.set_num_threads(2)
    fused = random_lm(args.model, args.mode)
    plain = copy.copy(fused)  # the same weights, a cache of its own, torch's ops
    plain.new_cache()
    plain.ops = None
    tokens = torch.randint(SHAPES[args.model][5], (CONTEXT + max(ROWS),), generator=torch.Generator().manual_seed(1))
    tokens = tokens.tolist()
    t = time_rows({"fused": fused, "torch": plain}, tokens[:CONTEXT], tokens[CONTEXT:], ROWS, REPEATS)
    print(f"{args.model} ({args.mode}, {SHAPES[args.model][2]} layers, a {CONTEXT}-token context): whole forward, "
          f"median of {REPEATS} calls, ms")
    print("| rows | torch's ops | fused ops | saved | torch / fused |")
    print("|---|---|---|---|---|")
    for n in ROWS:
        print(f"| {n} | {t['torch'][n]:.1f} | {t['fused'][n]:.1f} | {t['torch'][n] - t['fused'][n]:.1f} | "
              f"{t['torch'][n] / t['fused'][n]:.2f} |")


if __name__ == "__main__":
    main()
