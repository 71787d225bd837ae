"""The pair's target in every linear mode: verification cost t(n), batch invariance, numerics, and the draft's cost.

Defaults to the offline Qwen2.5-Coder pair (1.5B target, 0.5B draft). Prints, on the CPU at hand:
1. the probe's choice for `runtime: auto` (reproduce.engine.probe) for the target at K and for the draft;
2. t(n): median ms of one real target call scoring n = 1..9 new tokens after a cache of C tokens, per mode and C,
   interleaved round-robin over (repeat, n, mode) so drift hits all modes alike; t(n)/t(1), and t(1) against
   fp32's (how much faster each mode makes ArS than the fp32 runtime);
3. batch invariance on the real model: each call of n = 2..9 tokens bitwise equal to n single-token calls;
4. numerics against the dequantized GGUF computed in fp32 (fast-fp32): max |logit diff|, mean total variation at
   T = 1 and greedy (argmax) agreement, teacher-forced on HumanEval prompts with their canonical solutions;
5. the draft's t(1) per mode and c = t_draft(1) / t_target(1) against each target mode.
fp32 (today's runtime on AVX2) is timed at 1 and K+1 rows only; bf16 only where the CPU has native bf16 (elsewhere
it is emulated and slower than fp32) unless --modes names it. Timings drift 20-35% within an hour on shared
machines: quote ratios from one run; the load average is printed.

    python -m benchmarks.verify_cost_qwen [--modes int4,int8,bf16,fp32] [--contexts 100,400] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os

import torch

from reproduce.engine.fast_lm import FastLlamaLM, weight_bytes
from reproduce.engine.models import load_model, shared_vocab_size
from reproduce.engine.probe import choose, format_choice, probe_model
from reproduce.engine.runtime import cpu_has_native_bf16
from reproduce.engine.timing import time_rows
from reproduce.tasks import build_prompt_ids, load_examples


NEW_IDS = list(range(1000, 1010))  # the tokens a timed call appends after the context


@torch.inference_mode()
def batch_invariant(lm, context_ids: list[int], scored: list[int]) -> bool:
    lm.reset()
    lm.forward(context_ids, last_only=True)
    single = torch.cat([lm.forward([token]) for token in scored])
    for n in range(2, len(scored) + 1):
        lm.rollback(len(context_ids))
        if not torch.equal(lm.forward(scored[:n]), single[:n]):
            return False
    return True


@torch.inference_mode()
def teacher_forced_logits(lm, sequences: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    rows = []
    for prompt, answer in sequences:
        lm.reset()
        lm.forward(prompt[:-1], last_only=True)
        rows.append(lm.forward(prompt[-1:] + answer[:-1]))
    return torch.cat(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--draft", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--modes", default=None, help="default: int4,int8,fp32, and bf16 on CPUs with native bf16")
    parser.add_argument("--contexts", default="100,400")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-n", type=int, default=9)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--problems", type=int, default=3, help="HumanEval problems for the numerics")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modes = (args.modes or ("int4,int8,bf16,fp32" if cpu_has_native_bf16() else "int4,int8,fp32")).split(",")
    target, draft = load_model(args.target, dtype=torch.bfloat16), load_model(args.draft, dtype=torch.bfloat16)
    vocab = shared_vocab_size(target, draft)
    print(f"target {target.name}, draft {draft.name}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.2f}")
    for name, loaded, role in ((target.name, target, "target"), (draft.name, draft, "draft")):
        print(format_choice(f"{name} as {role}", choose(probe_model(loaded.model.config, vocab), role, args.k),
                            args.k if role == "target" else None))

    lms = {mode: FastLlamaLM.from_hf(target.model, vocab, linear_mode=mode) for mode in modes}
    drafts = {mode: FastLlamaLM.from_hf(draft.model, vocab, linear_mode=mode) for mode in modes if mode != "fp32"}
    print("\nweights read per token, MB: target " + ", ".join(f"{m} {weight_bytes(lm) / 1e6:.0f}" for m, lm in lms.items())
          + "; draft " + ", ".join(f"{m} {weight_bytes(lm) / 1e6:.0f}" for m, lm in drafts.items()))

    examples = load_examples("humaneval", [0, args.problems])
    sequences = [(build_prompt_ids(e, target.tokenizer, 1000), target.tokenizer.encode(e.reference)[:96])
                 for e in examples]
    text = [t for prompt, answer in sequences for t in prompt + answer]

    t1 = {}
    # fp32 (today's AVX2 runtime, ~4x dearer per call) only at 1 and K+1 rows
    rows = {mode: [1, args.k + 1] if mode == "fp32" else list(range(1, args.max_n + 1)) for mode in modes}
    for context in map(int, args.contexts.split(",")):
        ms = time_rows(lms, text[:context], NEW_IDS, rows, args.repeats)
        print(f"\n## t(n), ms of one call scoring n tokens after {context} cached tokens "
              f"(median of {args.repeats}, interleaved), load average {os.getloadavg()[0]:.2f}")
        print(f"{'mode':<6}{'':<11}" + "".join(f"{n:>8}" for n in range(1, args.max_n + 1)))
        for mode in modes:
            t1.setdefault(mode, ms[mode][1])
            print(f"{mode:<6}{'ms':<11}" + "".join(f"{ms[mode][n]:>8.1f}" if n in ms[mode] else f"{'':>8}"
                                                   for n in range(1, args.max_n + 1)))
            print(f"{'':<6}{'t(n)/t(1)':<11}" + "".join(f"{ms[mode][n] / ms[mode][1]:>8.2f}" if n in ms[mode]
                                                          else f"{'':>8}" for n in range(1, args.max_n + 1)))
        if "fp32" in modes:
            print("ArS speed against fp32, t(1) of fp32 / t(1): "
                  + ", ".join(f"{m} {ms['fp32'][1] / ms[m][1]:.2f}x" for m in modes))

    print("\n## batch invariance on the real target: calls of 2..9 tokens vs single-token calls, after 100 tokens")
    for mode, lm in lms.items():
        print(f"{mode:<6} {'bitwise equal' if batch_invariant(lm, text[:100], text[100:109]) else 'DIFFERS'}")

    if "fp32" in lms:
        reference = teacher_forced_logits(lms["fp32"], sequences)
        print(f"\n## numerics vs the dequantized GGUF in fp32 (fast-fp32), teacher-forced on {len(examples)} "
              f"HumanEval prompts + canonical solutions ({reference.shape[0]} positions)")
        print(f"{'mode':<6}{'max |dlogit|':>14}{'mean TV (T=1)':>15}{'argmax agree':>14}")
        for mode, lm in lms.items():
            logits = teacher_forced_logits(lm, sequences)
            tv = 0.5 * (reference.softmax(-1) - logits.softmax(-1)).abs().sum(-1)
            agree = (reference.argmax(-1) == logits.argmax(-1)).float().mean()
            print(f"{mode:<6}{(logits - reference).abs().max().item():>14.3f}{tv.mean().item():>15.4f}"
                  f"{agree.item():>14.3f}")

    print("\n## the draft: t(1) in ms (median of 9 after 100 tokens) and c = t_draft(1) / t_target(1)")
    draft_ms = time_rows(drafts, text[:100], NEW_IDS, [1], 9)
    for mode, curve in draft_ms.items():
        print(f"draft {mode:<5} {curve[1]:6.1f} ms; c against target "
              + ", ".join(f"{m} {curve[1] / t:.2f}" for m, t in t1.items()))


if __name__ == "__main__":
    main()
