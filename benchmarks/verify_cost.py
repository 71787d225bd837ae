"""The target's verification cost curve t(n), Hugging Face CachedLM vs FastLlamaLM variants, and their numerics.

Prints:
1. t(n): median ms of one call scoring n = 1..9 new tokens on a ~300-token cache, for every variant, interleaved
   round-robin over (repeat, n, variant) so machine-load drift hits all of them alike; then t(n)/t(1) per variant
   and each variant's t(n) relative to the Hugging Face fp32 t(1) (what a speculative step costs in ArS calls).
2. numerics on real XSum prompts: logits of each variant vs Hugging Face fp32, and each variant's multi-row call vs
   its single-row calls (zero where the mode is batch-invariant: the verification call sees what the ArS baseline's
   call sees): max |diff|, argmax agreement, total variation at T=1.

Timings drift 20-35% within an hour on shared machines: quote ratios from one run; the load average is printed.

    python benchmarks/verify_cost.py [--repeats 15] [--threads 2] [--context 300]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from benchmarks.engine_overhead import cost_curves, xsum_prompt_ids
from reproduce.engine.fast_lm import FastLlamaLM
from reproduce.engine.lm import CachedLM
from reproduce.engine.models import load_model


def variants(model, vocab_size: int) -> dict:
    masked = FastLlamaLM.from_hf(model, vocab_size, linear_mode="bf16")
    masked.row_attention_max = 0  # one masked attention call per layer: cheaper, no longer batch-invariant
    masked.ops = None  # ... in torch's ops (the fused ones attend row by row at any row count)
    return {
        "hf-fp32": CachedLM(model, vocab_size),
        "fast-fp32": FastLlamaLM.from_hf(model, vocab_size, linear_mode="fp32"),
        "fast-int8": FastLlamaLM.from_hf(model, vocab_size, linear_mode="int8"),
        "fast-int4": FastLlamaLM.from_hf(model, vocab_size, linear_mode="int4"),
        "fast-bf16": FastLlamaLM.from_hf(model, vocab_size, linear_mode="bf16"),
        "bf16-masked": masked,
    }


@torch.inference_mode()
def compare(reference: torch.Tensor, other: torch.Tensor) -> tuple[float, float, float]:
    """max |logit diff|, argmax agreement, mean total variation of the T=1 distributions."""
    total_variation = 0.5 * (reference.softmax(-1) - other.softmax(-1)).abs().sum(-1)
    agreement = (reference.argmax(-1) == other.argmax(-1)).float().mean()
    return (reference - other).abs().max().item(), agreement.item(), total_variation.mean().item()


@torch.inference_mode()
def numerics(lms: dict, prompts: list[list[int]], k: int) -> list[tuple[str, float, float, float, int]]:
    """Score each prompt's last k+1 tokens in one call (a verification) and one token at a time (ArS)."""
    rows = {}
    for ids in prompts:
        context, scored = ids[: -(k + 1)], ids[-(k + 1):]
        batched, single = {}, {}
        for name, lm in lms.items():
            lm.reset()
            lm.forward(context, last_only=True)
            batched[name] = lm.forward(scored)
            lm.rollback(len(context))
            single[name] = torch.cat([lm.forward([token]) for token in scored])
        pairs = {f"{name} {k + 1}-row vs hf-fp32 {k + 1}-row": (batched["hf-fp32"], batched[name])
                 for name in lms if name != "hf-fp32"}
        pairs.update({f"{name} {k + 1}-row vs same 1-row": (single[name], batched[name]) for name in lms})
        for label, (reference, other) in pairs.items():
            rows.setdefault(label, []).append(compare(reference, other))
    return [(label, max(r[0] for r in results), statistics.mean(r[1] for r in results),
             statistics.mean(r[2] for r in results), len(results) * (k + 1)) for label, results in rows.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--max-n", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--numerics-prompts", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_model(args.target)
    lms = variants(target.model, target.vocab_size)
    prompts = xsum_prompt_ids(target.tokenizer, range(max(args.numerics_prompts, 1)), max_prompt_tokens=450)
    print(f"target {target.name}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"cpu {torch.backends.cpu.get_cpu_capability()}, load average before {os.getloadavg()[0]:.2f}")

    context_ids = (prompts[0] * 4)[: args.context]
    curves, prefill = cost_curves(lms, context_ids, args.max_n, args.repeats)
    print(f"\n## t(n): ms of one call scoring n new tokens on a {len(context_ids)}-token cache "
          f"(median of {args.repeats}, interleaved), load average after {os.getloadavg()[0]:.2f}")
    header = f"{'variant':<12} {'':<14}" + "".join(f"{n:>7}" for n in range(1, args.max_n + 1))
    print(header)
    baseline = curves["hf-fp32"][1]
    for name, curve in curves.items():
        print(f"{name:<12} {'ms':<14}" + "".join(f"{ms:>7.1f}" for ms in curve.values()))
        print(f"{'':<12} {'t(n)/t(1)':<14}" + "".join(f"{ms / curve[1]:>7.2f}" for ms in curve.values()))
        print(f"{'':<12} {'t(n)/hf t(1)':<14}" + "".join(f"{ms / baseline:>7.2f}" for ms in curve.values()))
    print(f"\nprefill of the {len(context_ids)}-token context, ms (median of 3): "
          + ", ".join(f"{name} {ms:.0f}" for name, ms in prefill.items()))

    if args.numerics_prompts:
        print(f"\n## Numerics: last 5 tokens of {args.numerics_prompts} XSum prompts scored in one call, vs references")
        print(f"{'comparison':<40} {'max|dlogit|':>12} {'argmax agree':>13} {'mean TV T=1':>12} {'positions':>10}")
        for label, max_diff, agreement, total_variation, count in numerics(lms, prompts[: args.numerics_prompts], 4):
            print(f"{label:<40} {max_diff:>12.2e} {agreement:>13.4f} {total_variation:>12.2e} {count:>10}")


if __name__ == "__main__":
    main()
