"""Narrower drafts in the speculative loop (issue 23's c <= 0.2 in the practical regime): the default profile's
restricted 0.5B with every MLP narrowed (benchmarks.mlp_width: FLAP's score, the same width in every layer, the cut
neurons' mean added back as a bias; no training), decoding beside the whole 0.5B and ArS.

Loads experiments/default.yaml's target and restricted 0.5B (runtime auto, as `make reproduce` does: the practical
regime's fastest batch-invariant target), narrows copies of the 0.5B calibrated on benchmarks.layer_skip's selection
rows (neither Table 1's nor held out), and on Table 1's prompts decodes greedily with ArS and with SpS over each
draft (K, stop_below as the default profile's fastest SpS), all after one shared prefill, the order of the methods
turning from prompt to prompt. Prints per task and draft: the decode-loop speedup over ArS (geometric mean over
prompts, 95% t interval, as the report), c in the loop (drafted ms a token over ArS's median target step, as the
report's section 4), acceptance, tokens per target call, the prompts whose tokens equal ArS's, and each narrow draft
against the whole 0.5B, paired by prompt. Nothing is asserted.

    python -m benchmarks.narrow_loop [--widths 0.6,0.65] [--prompts 20] [--tasks humaneval,xsum]   # ~25 min
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.draft_loop import DRAFT, default_draft_pool
from benchmarks.layer_skip import PROMPT_TOKENS, SELECTION, greedy_continuations, task_prompts
from benchmarks.mlp_width import draft_lm, neuron_stats, pruned_copy, widths
from reproduce.analysis.ratios import log_ratio_interval
from reproduce.engine.decoding import autoregressive_decode, prefill, speculative_decode
from reproduce.engine.drafters import RestrictedDrafter
from reproduce.engine.sampling import SamplingParams
from reproduce.runs.pool import ModelPool

NEW_TOKENS = {"humaneval": 128, "xsum": 64}  # as the default profile's Table 1 rows
GREEDY = SamplingParams(temperature=0.0)


def narrow_drafters(pool: ModelPool, keeps: list[float], calibration_tokens: int, stop_below: float) -> dict:
    """{label: RestrictedDrafter} of the 0.5B narrowed to each kept share of its MLP width, in the whole draft's
    runtime and restricted head."""
    record = pool.drafts[DRAFT]
    model, mode = record.model.model, record.runtime.removeprefix("fast-")
    selection = task_prompts(pool.target.tokenizer, SELECTION)
    continuations = greedy_continuations(pool.target_lm, selection, calibration_tokens)
    stats = neuron_stats(model, [ids + c for (_, ids), c in zip(selection, continuations)])
    scores = stats.scores(model)
    out = {}
    for keep in keeps:
        kept_widths = widths(scores, keep, "uniform")
        pruned, biases = pruned_copy(model, stats, scores, kept_widths)
        lm = draft_lm(pruned, biases, pool.vocab_size, record.kept, mode, compensate=True)
        out[f"MLPs at {keep:g} ({kept_widths[0]} neurons)"] = RestrictedDrafter(lm, name=f"width-{keep:g}",
                                                                               stop_below=stop_below)
    return out


def decode_all(pool: ModelPool, drafters: dict, task: str, rows: range, k: int) -> dict:
    """{method: [trace per prompt]}: ArS and SpS over each drafter, greedy, on `task`'s rows, one shared prefill
    a prompt, the methods' order turned by one each prompt (drift spreads over all of them)."""
    target = pool.target_lm
    methods = ["ArS", *drafters]
    traces: dict[str, list] = {m: [] for m in methods}
    for i, (_, ids) in enumerate(task_prompts(pool.target.tokenizer, {task: rows})):
        prefill(target, ids)
        for drafter in drafters.values():
            drafter.prefill(ids, target)
        for method in methods[i % len(methods):] + methods[: i % len(methods)]:
            generator = torch.Generator().manual_seed(0)
            if method == "ArS":
                trace = autoregressive_decode(target, ids, NEW_TOKENS[task], GREEDY, generator, prefilled=True)
            else:
                trace = speculative_decode(target, drafters[method], ids, k, NEW_TOKENS[task], GREEDY, generator,
                                           prefilled=True)
            traces[method].append(trace)
        print(f"{task} prompt {i}: " + ", ".join(f"{m} {traces[m][-1].decode_ms_per_token:.1f}" for m in methods)
              + " ms/token", flush=True)
    return traces


def interval(slow: list, fast: list) -> str:
    ratio = log_ratio_interval([t.decode_ms_per_token for t in slow], [t.decode_ms_per_token for t in fast])
    return f"{ratio['point']:.2f}x [{ratio['ci'][0]:.2f}, {ratio['ci'][1]:.2f}]"


def report(task: str, traces: dict, whole: str) -> None:
    ars = traces["ArS"]
    t1 = statistics.median(step.target_ms for trace in ars for step in trace.steps)  # the report's curve[1]
    print(f"\n{task}, greedy, {len(ars)} prompts; ArS {statistics.mean(t.decode_ms_per_token for t in ars):.1f} ms a "
          f"token, median target step {t1:.1f} ms\n\n| draft | speedup over ArS, decode loop | c in the loop | "
          "acceptance | tokens per target call | prompts equal to ArS | against the whole 0.5B, paired |\n"
          "|---|---|---|---|---|---|---|")
    for method, sps in traces.items():
        if method == "ArS":
            continue
        drafted = sum(t.proposed for t in sps)
        c = sum(t.draft_ms for t in sps) / drafted / t1
        equal = sum(s.tokens == a.tokens for s, a in zip(sps, ars))
        versus = "(itself)" if method == whole else interval(traces[whole], sps)
        print(f"| {method} | {interval(ars, sps)} | {c:.3f} | {sum(t.accepted for t in sps) / drafted:.3f} | "
              f"{sum(len(t.tokens) for t in sps) / sum(len(t.steps) for t in sps):.2f} | {equal} of {len(sps)} | "
              f"{versus} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="0.6,0.65", help="kept shares of the MLP width")
    parser.add_argument("--prompts", type=int, default=20, help="Table 1's first rows of each task")
    parser.add_argument("--tasks", default="humaneval,xsum")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--stop-below", type=float, default=0.4)
    parser.add_argument("--calibration-tokens", type=int, default=64, help="target continuation tokens a row")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if unknown := [task for task in tasks if task not in PROMPT_TOKENS]:  # before minutes of loading, not after
        parser.error(f"--tasks {','.join(unknown)}: choose from {', '.join(PROMPT_TOKENS)}")
    if args.prompts < 2:
        parser.error("--prompts: at least 2 (a t interval over prompts needs two)")
    started = time.time()
    pool = default_draft_pool(args.k, args.stop_below)
    whole = f"whole 0.5B ({pool.drafts[DRAFT].model.model.config.intermediate_size} neurons)"
    drafters = {whole: pool.drafters[DRAFT],
                **narrow_drafters(pool, [float(w) for w in args.widths.split(",")], args.calibration_tokens,
                                  args.stop_below)}
    print(f"runtimes {pool.runtimes}; greedy, K = {args.k}, stop_below {args.stop_below}; "
          f"ready in {time.time() - started:.0f} s", flush=True)
    for task in tasks:
        report(task, decode_all(pool, drafters, task, range(args.prompts), args.k), whole)
    print(f"\n{time.time() - started:.0f} s in all")


if __name__ == "__main__":
    main()
