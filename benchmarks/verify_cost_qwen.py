"""Verification cost curve t(n) of a larger target in the fast runtime, and its draft's relative cost c.

Defaults to the offline Qwen2.5-Coder pair (1.5B target, 0.5B draft). Prints, for one runtime:
1. t(n): median ms of one target call scoring n = 1..9 new tokens on a ~300-token cache, and t(n)/t(1);
2. the draft's t(1) and c = t_draft(1) / t_target(1), the draft's cost in target calls (Leviathan et al.'s c).
Target and draft calls are interleaved round-robin over (repeat, n, model), so machine-load drift hits both alike.

Both models are loaded in bf16 to save memory (which also rounds their fp32 norms and biases: slightly other
numerics, the same cost) and each Hugging Face model is dropped once the fast runtime has copied its weights:
~9 GB of RAM for fast-bf16 (measured), more for fast-fp32. Timings drift 20-35% within an hour on shared machines: quote ratios from one run.

    python -m benchmarks.verify_cost_qwen [--runtime fast-bf16] [--repeats 15] [--context 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc
import os

import torch

from benchmarks.engine_overhead import cost_curves, xsum_prompt_ids
from reproduce.engine.runtime import build_lm, cpu_has_native_bf16
from reproduce.engine.models import load_model, shared_vocab_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--draft", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--runtime", default="fast-bf16", choices=["fast-bf16", "fast-fp32"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--max-n", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target, draft = load_model(args.target, dtype=torch.bfloat16), load_model(args.draft, dtype=torch.bfloat16)
    vocab = shared_vocab_size(target, draft)
    lms = {}
    for name, loaded in (("target", target), ("draft", draft)):
        lms[name] = build_lm(loaded.model, vocab, args.runtime)
        loaded.model = None  # the fast runtime holds its own copy of the weights: free Hugging Face's
        gc.collect()
    print(f"target {target.name}, draft {draft.name}, runtime {args.runtime}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}, native bf16 "
          f"{cpu_has_native_bf16()}, load average before {os.getloadavg()[0]:.2f}")

    prompt = xsum_prompt_ids(target.tokenizer, range(1), max_prompt_tokens=450)[0]
    context_ids = (prompt * 4)[: args.context]
    curves, prefill = cost_curves(lms, context_ids, args.max_n, args.repeats)
    print(f"\n## t(n): ms of one call scoring n new tokens on a {len(context_ids)}-token cache "
          f"(median of {args.repeats}, interleaved), load average after {os.getloadavg()[0]:.2f}")
    print(f"{'model':<8} {'':<10}" + "".join(f"{n:>8}" for n in range(1, args.max_n + 1)))
    for name, curve in curves.items():
        print(f"{name:<8} {'ms':<10}" + "".join(f"{ms:>8.1f}" for ms in curve.values()))
        print(f"{'':<8} {'t(n)/t(1)':<10}" + "".join(f"{ms / curve[1]:>8.2f}" for ms in curve.values()))
    print(f"\nc = t_draft(1) / t_target(1) = {curves['draft'][1]:.1f} / {curves['target'][1]:.1f} ms "
          f"= {curves['draft'][1] / curves['target'][1]:.3f}")
    print(f"prefill of the {len(context_ids)}-token context, ms (median of 3): "
          + ", ".join(f"{name} {ms:.0f}" for name, ms in prefill.items()))


if __name__ == "__main__":
    main()
