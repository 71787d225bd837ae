"""Engine overhead and the target's verification cost curve, on the offline target.

Prints two measured tables:
1. the share of speculative-decoding wall time spent outside draft and target forward calls (sampling,
   verification, cache bookkeeping, Python), per drafter and temperature; the target is < 5%;
2. the verification cost curve: ms of one target call scoring n = 1..9 new tokens on top of a ~300-token
   cache, and its ratio to n = 1 (the paper's TPU curve is nearly flat; on a CPU it is not).

Timings drift 20-35% within an hour on shared machines, so each table interleaves what it compares and the
ratios are what to quote.

    python -m benchmarks.engine_overhead [--runtime auto|hf|fast-fp32|fast-bf16] [--prompts 4] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reproduce import tasks
from reproduce.engine.decoding import speculative_decode
from reproduce.engine.drafters import ModelDrafter, NgramDrafter
from reproduce.engine.models import load_model
from reproduce.engine.runtime import build_lm, resolve_runtime
from reproduce.engine.sampling import SamplingParams
from reproduce.engine.timing import time_rows


def xsum_prompt_ids(tokenizer, rows: range, max_prompt_tokens: int) -> list[list[int]]:
    """XSum evaluation prompts in the experiments' own format (reproduce.tasks), cut to the token budget."""
    return [tasks.build_prompt_ids(example, tokenizer, max_prompt_tokens) for example in tasks.load_examples("xsum", rows)]


def overhead_table(target, prompts, new_tokens: int, k: int, runtime: str) -> list[dict]:
    target_lm = build_lm(target.model, target.vocab_size, runtime)
    drafters = {
        "ngram": NgramDrafter(target.vocab_size),
        "target-as-draft": ModelDrafter(build_lm(target.model, target.vocab_size, runtime)),
    }
    rows = []
    for temperature in (0.0, 1.0):
        params = SamplingParams(temperature=temperature)
        for name, drafter in drafters.items():
            traces = [
                speculative_decode(target_lm, drafter, ids, k, new_tokens, params, torch.Generator().manual_seed(i))
                for i, ids in enumerate(prompts)
            ]
            # the decode loop: the prefills are model calls outside the steps (Trace.target_ms counts the steps only)
            wall = sum(t.decode_ms for t in traces)
            outside = sum(t.decode_ms - t.draft_ms - t.target_ms for t in traces)
            rows.append(
                {
                    "drafter": name,
                    "temperature": temperature,
                    "k": k,
                    "tokens": sum(len(t.tokens) for t in traces),
                    "wall_ms": wall,
                    "overhead_ms_per_call": outside / sum(t.target_calls for t in traces),
                    "overhead_share": outside / wall,
                }
            )
    return rows


@torch.inference_mode()
def cost_curves(lms: dict, context_ids: list[int], max_n: int, repeats: int):
    """Median ms per (LM, n) of one call scoring n new tokens after `context_ids`, round-robin over repeats,
    n and LMs so drift hits all alike (reproduce.engine.timing); and the median ms of the context's prefill per LM."""
    prefill = {name: [] for name in lms}
    for repeat in range(3):
        for name, lm in lms.items():
            lm.reset()
            start = time.perf_counter()
            lm.forward(context_ids, last_only=True)
            prefill[name].append((time.perf_counter() - start) * 1e3)
    curves = time_rows(lms, context_ids, list(range(1000, 1000 + max_n)), range(1, max_n + 1), repeats,
                       warmup_rounds=2)
    return curves, {name: statistics.median(times) for name, times in prefill.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtime", default="auto", help="auto | hf | fast-fp32 | fast-bf16 (reproduce.engine.runtime)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_model(args.target)
    prompts = xsum_prompt_ids(target.tokenizer, range(args.prompts), max_prompt_tokens=450)
    runtime = resolve_runtime(args.runtime, target.model)
    print(f"target {target.name} ({target.num_parameters / 1e6:.0f}M params, runtime {runtime}), "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")

    overhead_table(target, prompts[:1], 8, args.k, runtime)  # warm-up
    print(f"\n## Engine overhead: share of SpS wall time outside draft and target calls "
          f"({args.prompts} XSum prompts, {args.new_tokens} new tokens, K={args.k})")
    print(f"{'drafter':<16} {'T':>4} {'tokens':>7} {'wall s':>8} {'ms/call':>8} {'share':>7}")
    for row in overhead_table(target, prompts, args.new_tokens, args.k, runtime):
        print(f"{row['drafter']:<16} {row['temperature']:>4} {row['tokens']:>7} {row['wall_ms'] / 1e3:>8.2f} "
              f"{row['overhead_ms_per_call']:>8.2f} {row['overhead_share']:>7.1%}")

    context_ids = (prompts[0] * 4)[: args.context]
    lm = build_lm(target.model, target.vocab_size, runtime)
    curve = cost_curves({runtime: lm}, context_ids, max_n=9, repeats=args.repeats)[0][runtime]
    print(f"\n## Verification cost curve: one target call scoring n new tokens on a {len(context_ids)}-token cache "
          f"(median of {args.repeats})")
    print(f"{'n':<10}" + "".join(f"{n:>7}" for n in curve))
    print(f"{'ms':<10}" + "".join(f"{ms:>7.1f}" for ms in curve.values()))
    print(f"{'t(n)/t(1)':<10}" + "".join(f"{ms / curve[1]:>7.2f}" for ms in curve.values()))


if __name__ == "__main__":
    main()
