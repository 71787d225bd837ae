"""Layer skipping as a cheaper draft (issue 23 asks for a draft at c <= 0.2): the 0.5B with some decoder layers, or
only their MLPs (88% of a layer's weight bytes), left out, without training. Prints, per number of layers left out:

- alpha, the draft's greedy agreement with the int4 target's own greedy continuations, teacher-forced: at T = 0
  that is the per-token acceptance (the draft's argmax against the target's next token after the same prefix);
- c, the left-out draft's int4 single-token step (its 32,768-token restricted head, as the default profile's 0.5B)
  over the target's int4 t(1), both timed here;
- Leviathan's predicted speedup on HumanEval at K = 3 with the target's measured t(4) / t(1), beside the full
  draft's.

Which layers: each one left out alone is scored on selection prompts (HumanEval rows 100-111, XSum rows 100-105,
outside Table 1's and Figure 1's rows 0-23), and the n best (the least harmful alone) are left out together, n =
0..--most, without re-scoring after each; alpha is reported on held-out prompts (HumanEval rows 60-71, XSum rows
60-65). Continuations run past EOS, as the default profile's rows do (ignore_eos). Agreement is computed with the
draft in bf16 (a prompt's teacher-forced pass in int4 takes ~10x longer on CPU); its int4 twin differs in rounding
only. A left-out MLP still pays its norm and a few small ops here (its GEMMs return zeros), so c is a slight
overestimate for kind mlp. Nothing is asserted.

    python -m benchmarks.layer_skip --kind layer   # ~15 min on 2 AVX-512 cores
    python -m benchmarks.layer_skip --kind mlp
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch

from reproduce.analysis.theory import predicted_speedup
from reproduce.engine import models
from reproduce.engine.decoding import autoregressive_decode
from reproduce.engine.fast_lm import FastLlamaLM
from reproduce.engine.restricted import restricted_lm
from reproduce.engine.sampling import SamplingParams
from reproduce.engine.timing import time_rows
from reproduce.runs.vocabulary import restricted_vocabulary
from reproduce.tasks import build_prompt_ids, load_examples

TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
SELECTION = {"humaneval": range(100, 112), "xsum": range(100, 106)}
HELD_OUT = {"humaneval": range(60, 72), "xsum": range(60, 66)}
PROMPT_TOKENS = {"humaneval": 1024, "xsum": 300}
GREEDY = SamplingParams(temperature=0.0)


@dataclasses.dataclass(frozen=True)
class Zeros:
    """A GEMM weight whose output is zero: an MLP of two of them adds exactly nothing to the residual stream."""
    out_features: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.out_features)


def without(lm, left_out: list[int], kind: str, hidden: int, intermediate: int):
    """A copy of `lm` over the same weights, with the decoder layers (kind "layer") or the MLPs (kind "mlp") at
    `left_out` gone, and a KV cache of its own. `hidden`, `intermediate`: the model config's widths."""
    clone = copy.copy(lm)
    if kind == "layer":  # norms too, before new_cache(): the cache has a slot per remaining layer
        clone.layers = [w for i, w in enumerate(lm.layers) if i not in left_out]
        clone.norms = [n for i, n in enumerate(lm.norms) if i not in left_out]
    else:
        clone.layers = [dataclasses.replace(w, gate_up=Zeros(2 * intermediate), down=Zeros(hidden))
                        if i in left_out else w for i, w in enumerate(lm.layers)]
    clone.new_cache()
    return clone


def load_pair(runtime: str = "int4"):
    """(target, draft) as loaded models, the default profile's 32,768-token restricted vocabulary, and the target
    LM in `runtime` (int4 in the committed layer-skip reports) the continuations and t(n) come from; 2 threads, as
    the runs use."""
    torch.set_num_threads(2)
    target, draft = models.load_model(TARGET, torch.bfloat16), models.load_model(DRAFT, torch.bfloat16)
    kept = restricted_vocabulary(target.tokenizer, target.vocab_size, 32768)
    return target, draft, kept, FastLlamaLM.from_hf(target.model, target.vocab_size, 1280, runtime)


def task_prompts(tokenizer, rows: dict[str, range]) -> list[tuple[str, list[int]]]:
    """(task, prompt ids) of each row, as the default profile builds them (HumanEval raw, XSum in its chat form)."""
    return [(task, build_prompt_ids(example, tokenizer, PROMPT_TOKENS[task],
                                    use_chat_template=False if task == "humaneval" else None))
            for task, task_rows in rows.items() for example in load_examples(task, task_rows)]


def greedy_continuations(target: FastLlamaLM, prompts: list[tuple[str, list[int]]], tokens: int) -> list[list[int]]:
    """The target's own greedy ArS tokens after each prompt, `tokens` of them (past EOS, as ignore_eos rows)."""
    return [autoregressive_decode(target, ids, tokens, GREEDY, torch.Generator()).tokens for _, ids in prompts]


def agreement(lm, prompts, continuations) -> dict[str, float]:
    """Per task, the share of continuation positions where the draft's argmax is the target's next token."""
    hits: dict[str, list[int]] = {}
    for (task, ids), continuation in zip(prompts, continuations):
        lm.reset()
        lm.set_extra_tokens(ids)
        logits = lm.forward_kept(ids + continuation[:-1])[len(ids) - 1 :]
        predicted = lm.kept[logits.argmax(-1)]
        counts = hits.setdefault(task, [0, 0])
        counts[0] += int((predicted == torch.tensor(continuation)).sum())
        counts[1] += len(continuation)
    return {task: right / total for task, (right, total) in hits.items()}


def step_ms(lm, rows: int = 1, steps: int = 30) -> float:
    """Median ms of an n-row call after a 300-token prefix (reproduce.engine.timing); a restricted draft scores its
    kept tokens only, as in the decode loop."""
    forward = getattr(lm, "forward_kept", lm.forward)

    def call_ms(lm, token_ids: list[int]) -> float:
        start = time.perf_counter()
        forward(token_ids)
        return (time.perf_counter() - start) * 1e3

    return time_rows({"lm": lm}, list(range(1000, 1300)), list(range(2000, 2000 + rows)), [rows], steps,
                     warmup_rounds=3, timed_call=call_ms)["lm"][rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("layer", "mlp"), default="layer")
    parser.add_argument("--most", type=int, default=8, help="the most layers left out (the least harmful alone first)")
    parser.add_argument("--tokens", type=int, default=64, help="target continuation tokens a prompt")
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    target, draft, kept, target_lm = load_pair()
    vocab = target.vocab_size
    scoring = restricted_lm(draft.model, vocab, kept, "bf16")
    timing = restricted_lm(draft.model, vocab, kept, "int4")
    timing.set_extra_tokens(list(range(1000, 1300)))
    widths = (draft.model.config.hidden_size, draft.model.config.intermediate_size)

    started = time.time()
    selection, held_out = task_prompts(target.tokenizer, SELECTION), task_prompts(target.tokenizer, HELD_OUT)
    selection_tokens = greedy_continuations(target_lm, selection, args.tokens)
    held_out_tokens = greedy_continuations(target_lm, held_out, args.tokens)
    t1, t_verify = step_ms(target_lm), step_ms(target_lm, args.k + 1)
    full_ms = step_ms(timing)
    print(f"target int4 t(1) = {t1:.1f} ms, t({args.k + 1})/t(1) = {t_verify / t1:.2f}; full draft {full_ms:.1f} ms "
          f"(c = {full_ms / t1:.3f}); continuations {time.time() - started:.0f} s", flush=True)

    def score(alpha: dict[str, float]) -> float:
        return sum(alpha.values())

    singles = {i: score(agreement(without(scoring, [i], args.kind, *widths), selection, selection_tokens))
               for i in range(len(scoring.layers))}
    order = sorted(singles, key=lambda i: -singles[i])
    print(f"{args.kind}s by selection agreement when left out alone (least harmful first): {order}", flush=True)
    print(f"\n| {args.kind}s left out | which | held-out alpha HumanEval | held-out alpha XSum | draft int4 ms | c | "
          f"predicted HumanEval speedup, K={args.k} |\n|---|---|---|---|---|---|---|")
    for count in range(args.most + 1):
        left_out = sorted(order[:count])
        alpha = agreement(without(scoring, left_out, args.kind, *widths), held_out, held_out_tokens)
        ms = step_ms(without(timing, left_out, args.kind, *widths))
        c, a = ms / t1, alpha["humaneval"]
        predicted = predicted_speedup(a, args.k, c, {1: t1, args.k + 1: t_verify})
        print(f"| {count} | {left_out} | {a:.3f} | {alpha['xsum']:.3f} | {ms:.1f} | {c:.3f} | {predicted:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
