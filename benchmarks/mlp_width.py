"""A narrower draft (issue 23 asks for a draft at c <= 0.2): the 0.5B with part of every MLP's width pruned, without
training, the way FLAP (An et al. 2024) prunes structurally. Prints, per kept fraction of the MLP width:

- alpha, the draft's greedy agreement with the int4 target's own greedy continuations, teacher-forced (at T = 0
  the per-token acceptance), on held-out prompts;
- c, the pruned draft's int4 single-token step (its 32,768-token restricted head) over the target's int4 t(1);
- Leviathan's predicted HumanEval speedup at K with the target's measured t(K+1) / t(1).

The MLPs are 88% of a layer's weight bytes, so width is where the draft's bytes are. Which neurons go: those whose
input to down_proj fluctuates least, weighted by their column of down_proj (FLAP's score,
Var[h_j] * ||W_down[:, j]||^2), measured on the selection prompts and their target continuations
(benchmarks.layer_skip's rows: none is held out or in Table 1). What a pruned neuron contributed on average is added
back as a bias of down_proj (FLAP's compensation; the variant "uniform-uncompensated" is the control). Spread
"uniform" keeps the same width in every layer; "global" ranks the scores, standardised per layer, across layers.
Widths are rounded to multiples of 64 (int4 groups inputs by 32).
Agreement is computed with the draft in bf16, timing in int4, as benchmarks.layer_skip does. Nothing is asserted.

    python -m benchmarks.mlp_width   # ~25 min on 2 AVX-512 cores
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch

from benchmarks.layer_skip import (
    HELD_OUT,
    SELECTION,
    agreement,
    greedy_continuations,
    load_pair,
    step_ms,
    task_prompts,
)
from reproduce.analysis.theory import predicted_speedup
from reproduce.engine.restricted import restricted_lm

WIDTH_STEP = 64


@dataclasses.dataclass(frozen=True)
class WithBias:
    """A GEMM weight plus a constant output bias (fp32): the mean contribution of the pruned neurons."""
    inner: object
    bias: torch.Tensor  # [out]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.bias


@dataclasses.dataclass
class NeuronStats:
    """Per layer, the mean and variance of each MLP neuron's activation (the input of down_proj)."""
    means: list[torch.Tensor]  # [intermediate] float64 per layer
    variances: list[torch.Tensor]

    def scores(self, model) -> list[torch.Tensor]:
        """FLAP's fluctuation score per neuron: Var[h_j] * ||W_down[:, j]||^2."""
        return [v * layer.mlp.down_proj.weight.detach().double().pow(2).sum(0)
                for v, layer in zip(self.variances, model.model.layers)]


@torch.inference_mode()
def neuron_stats(model, sequences: list[list[int]]) -> NeuronStats:
    """Run the Hugging Face model over `sequences`, accumulating each down_proj input's first two moments."""
    sums, squares, count = {}, {}, {}

    def hook(index):
        def record(module, args):
            h = args[0].reshape(-1, args[0].shape[-1]).double()  # [tokens, intermediate]
            sums[index] = sums.get(index, 0) + h.sum(0)
            squares[index] = squares.get(index, 0) + (h * h).sum(0)
            count[index] = count.get(index, 0) + h.shape[0]
        return record

    handles = [layer.mlp.down_proj.register_forward_pre_hook(hook(i)) for i, layer in enumerate(model.model.layers)]
    try:
        for ids in sequences:
            model(torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    layers = range(len(model.model.layers))
    means = [sums[i] / count[i] for i in layers]
    return NeuronStats(means, [(squares[i] / count[i] - means[i] ** 2).clamp(min=0) for i in layers])


def widths(scores: list[torch.Tensor], keep: float, spread: str) -> list[int]:
    """Neurons kept per layer for a kept fraction `keep` of the total MLP width."""
    full = scores[0].numel()
    if spread == "uniform":
        return [max(WIDTH_STEP, round(keep * full / WIDTH_STEP) * WIDTH_STEP)] * len(scores)
    standardised = [(s - s.mean()) / s.std() for s in scores]
    threshold = torch.cat(standardised).sort(descending=True).values[int(keep * full * len(scores)) - 1]
    return [min(full, max(WIDTH_STEP, round(int((z >= threshold).sum()) / WIDTH_STEP) * WIDTH_STEP))
            for z in standardised]


def pruned_copy(model, stats: NeuronStats, scores: list[torch.Tensor], kept_widths: list[int]):
    """A deep copy of the Hugging Face model with each MLP cut to its `kept_widths` highest-`scores` neurons
    (stats.scores(model)), and per layer the bias [hidden] that compensates the cut ones' mean contribution."""
    pruned = copy.deepcopy(model)
    biases = []
    for layer, score, mean, width in zip(pruned.model.layers, scores, stats.means, kept_widths):
        order = score.argsort(descending=True)
        kept, cut = order[:width].sort().values, order[width:]
        down = layer.mlp.down_proj.weight.detach()
        biases.append((down[:, cut].double() @ mean[cut]).float())
        for linear, weight in ((layer.mlp.gate_proj, layer.mlp.gate_proj.weight.detach()[kept]),
                               (layer.mlp.up_proj, layer.mlp.up_proj.weight.detach()[kept]),
                               (layer.mlp.down_proj, down[:, kept])):
            linear.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
    return pruned, biases


def draft_lm(model, biases, vocab: int, kept_vocab: torch.Tensor, mode: str, compensate: bool):
    """The pruned model as the default profile's draft LM (restricted head), with the compensating biases."""
    lm = restricted_lm(model, vocab, kept_vocab, mode)
    if compensate:
        lm.layers = [dataclasses.replace(w, down=WithBias(w.down, b)) for w, b in zip(lm.layers, biases)]
    lm.set_extra_tokens(list(range(1000, 1300)))
    return lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", default="1.0,0.75,0.6,0.5,0.4", help="kept fractions of the MLP width")
    parser.add_argument("--variants", default="uniform,global,uniform-uncompensated",
                        help="spreads (uniform, global), each with the mean compensation unless -uncompensated")
    parser.add_argument("--tokens", type=int, default=64, help="target continuation tokens a prompt")
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    target, draft, kept_vocab, target_lm = load_pair()
    vocab = target.vocab_size

    started = time.time()
    selection, held_out = task_prompts(target.tokenizer, SELECTION), task_prompts(target.tokenizer, HELD_OUT)
    selection_tokens = greedy_continuations(target_lm, selection, args.tokens)
    held_out_tokens = greedy_continuations(target_lm, held_out, args.tokens)
    stats = neuron_stats(draft.model, [ids + tokens for (_, ids), tokens in zip(selection, selection_tokens)])
    scores = stats.scores(draft.model)
    t1, t_verify = step_ms(target_lm), step_ms(target_lm, args.k + 1)
    print(f"target int4 t(1) = {t1:.1f} ms, t({args.k + 1})/t(1) = {t_verify / t1:.2f}; continuations and "
          f"calibration {time.time() - started:.0f} s", flush=True)
    print(f"\n| variant | kept MLP width | neurons a layer (mean) | held-out alpha HumanEval | held-out alpha XSum "
          f"| draft int4 ms | c | predicted HumanEval speedup, K={args.k} |\n|---|---|---|---|---|---|---|---|")
    for number, variant in enumerate(args.variants.split(",")):
        spread, compensate = variant.removesuffix("-uncompensated"), not variant.endswith("-uncompensated")
        for keep in (float(part) for part in args.keep.split(",")):
            if keep == 1.0 and number:  # the whole draft: one row is enough
                continue
            kept_widths = widths(scores, keep, spread)
            pruned, biases = pruned_copy(draft.model, stats, scores, kept_widths)
            alpha = agreement(draft_lm(pruned, biases, vocab, kept_vocab, "bf16", compensate), held_out,
                              held_out_tokens)
            ms = step_ms(draft_lm(pruned, biases, vocab, kept_vocab, "int4", compensate))
            c, a = ms / t1, alpha["humaneval"]
            predicted = predicted_speedup(a, args.k, c, {1: t1, args.k + 1: t_verify})
            print(f"| {variant} | {keep:.2f} | {sum(kept_widths) / len(kept_widths):.0f} | {a:.3f} | "
                  f"{alpha['xsum']:.3f} | {ms:.1f} | {c:.3f} | {predicted:.2f}x |", flush=True)

if __name__ == "__main__":
    main()
