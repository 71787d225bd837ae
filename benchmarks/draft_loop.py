"""Where a model draft's time goes inside the speculative loop, on the default profile's pair.

Loads experiments/default.yaml's target and its restricted 0.5B draft (runtime auto, as `make reproduce` does), and on
each HumanEval prompt decodes greedily with ArS and SpS (K, stop_below), both after one shared prefill, the draft's
body and head wrapped in timers. Prints per prompt: ArS and SpS ms a token and their ratio, the draft's ms per proposed
token and c (over ArS's ms a token), the median body call of one row and of two rows (two follow a fully accepted
step: the last drafted token and the target's bonus one), the head, the target's ms a step, and the same one-row body
call outside the loop (back to back, and right after a target call: the cache the target's weights evicted). Nothing
is asserted.

    python -m benchmarks.draft_loop [--prompts 3] [--k 3] [--stop-below 0.4]   # ~2 min
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from reproduce import tasks
from reproduce.engine.decoding import autoregressive_decode, prefill, speculative_decode
from reproduce.engine.sampling import SamplingParams
from reproduce.runs.config import load_config
from reproduce.runs.pool import ModelPool

DRAFT = "qwen-0.5b"  # the default profile's restricted 0.5B


class Timed:
    """A callable wrapped so that each call's (rows, ms) is recorded."""

    def __init__(self, call, calls: list):
        self.call, self.calls = call, calls

    def __call__(self, token_ids_or_x, *args):
        start = time.perf_counter()
        out = self.call(token_ids_or_x, *args)
        self.calls.append((len(token_ids_or_x), (time.perf_counter() - start) * 1e3))
        return out


def median_of(calls: list, rows: int) -> float:
    picked = [ms for n, ms in calls if n == rows]
    return statistics.median(picked) if picked else float("nan")


def default_draft_pool(k: int, stop_below: float) -> ModelPool:
    """The default profile's target and its restricted 0.5B alone (runtime auto, as `make reproduce` loads them),
    drafting K tokens with `stop_below`; no sweeps, ArS and SpS only."""
    config = load_config("default")
    spec = next(d for d in config.drafts if d.name == DRAFT)
    spec = dataclasses.replace(spec, stop_below=stop_below, k_values=(k,))
    return ModelPool(dataclasses.replace(config, drafts=(spec,), sweeps={}, methods=("ars", "sps")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--stop-below", type=float, default=0.4)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    pool = default_draft_pool(args.k, args.stop_below)
    target, drafter = pool.target_lm, pool.drafters[DRAFT]
    draft_lm = drafter.lm
    body_calls, head_calls = [], []
    body = draft_lm.hidden_states
    draft_lm.hidden_states = Timed(body, body_calls)  # instance attributes: this LM only
    draft_lm.head = Timed(draft_lm.head, head_calls)
    params = SamplingParams(temperature=0.0)
    print(f"runtimes {pool.runtimes}; greedy, K = {args.k}, stop_below {args.stop_below}, {args.new_tokens} tokens")
    print("| prompt | ArS ms/token | SpS ms/token | ArS / SpS | acceptance | draft ms / proposed | c | body 1 row | "
          "body 2 rows | head | target ms / step | body alone: warm | after a target call |")
    print("|---" * 13 + "|")
    for example in tasks.load_examples("humaneval", range(args.prompts)):
        ids = tasks.build_prompt_ids(example, pool.target.tokenizer, 1024, use_chat_template=False)
        prefill(target, ids)
        drafter.prefill(ids, target)
        ars = autoregressive_decode(target, ids, args.new_tokens, params, torch.Generator().manual_seed(0),
                                    prefilled=True)
        body_calls.clear()
        head_calls.clear()
        sps = speculative_decode(target, drafter, ids, args.k, args.new_tokens, params,
                                 torch.Generator().manual_seed(0), prefilled=True)
        length = len(draft_lm.cache_tokens)
        warm, cold = [], []
        for _ in range(20):  # the one-row body outside the loop, back to back
            start = time.perf_counter()
            body([ids[-1]])
            warm.append((time.perf_counter() - start) * 1e3)
            draft_lm.rollback(length)
        for _ in range(8):  # ... and right after a one-row target call
            target.forward([ids[-1]])
            target.rollback(len(target.cache_tokens) - 1)
            start = time.perf_counter()
            body([ids[-1]])
            cold.append((time.perf_counter() - start) * 1e3)
            draft_lm.rollback(length)
        per_proposed = sps.draft_ms / max(sps.proposed, 1)
        print(f"| {example.example_id} | {ars.decode_ms_per_token:.1f} | {sps.decode_ms_per_token:.1f} | "
              f"{ars.decode_ms / sps.decode_ms:.3f} | {sps.acceptance_rate:.3f} | {per_proposed:.2f} | "
              f"{per_proposed / ars.decode_ms_per_token:.3f} | {median_of(body_calls, 1):.2f} | "
              f"{median_of(body_calls, 2):.2f} | {statistics.median(ms for _, ms in head_calls):.2f} | "
              f"{sps.target_ms / len(sps.steps):.1f} | {statistics.median(warm):.2f} | {statistics.median(cold):.2f} |")


if __name__ == "__main__":
    main()
