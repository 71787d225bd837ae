"""Fewer bits for the draft's weights (issue 23 asks for a draft at c <= 0.2; the 0.5B at 4 bits is bytes-bound at
~0.23 of the target): what a 3- or 2-bit draft would keep of its acceptance, before anyone writes a kernel for it.

The 0.5B's decoder GEMM weights are rounded to an asymmetric b-bit grid per group of G inputs (w = q * scale + low, q
in 0..2^b - 1: the int4 grid of reproduce.engine.linear.int4_grid at other widths) and kept in bf16, and the model
runs in the bf16 runtime with the default profile's 32,768-token restricted head, in bf16 too. The w4a8 runtime
rounds activations to int8 and keeps that head in 4 bits, so the alphas here are the grids' alone, a little above the
runtime's; the rows compare grids like for like (experiments/draft-bits.yaml measures the w3a8 runtime in the loop).
Prints, per (b, G):

- the bytes a weight would take (b bits + a bf16 scale and zero per group), and the body's MB;
- alpha, the draft's greedy agreement with the w4a8 target's own greedy continuations, teacher-forced (at T = 0 the
  per-token acceptance), on benchmarks.layer_skip's held-out prompts (HumanEval rows 60-71, XSum rows 60-65);
- c: the 4-bit row is the real w4a8 draft's single-token step (restricted head) over the w4a8 target's t(1), both
  timed here; the other rows scale that step by the draft's bytes (body + head), which assumes a kernel at the
  same bandwidth and small ops that shrink with the bytes: an optimistic c, so an upper bound on the gain;
- Leviathan's predicted HumanEval and XSum speedups at K with the target's measured t(K+1) / t(1).

Nothing is asserted.

    python -m benchmarks.draft_bits   # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import copy

import torch

from benchmarks.layer_skip import DRAFT, HELD_OUT, TARGET, agreement, greedy_continuations, step_ms, task_prompts
from reproduce.analysis.theory import predicted_speedup
from reproduce.engine import models
from reproduce.engine.fast_lm import FastLlamaLM
from reproduce.engine.restricted import restricted_lm
from reproduce.runs.vocabulary import restricted_vocabulary

GEMMS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SCALE_BITS = 32  # a bf16 scale and a bf16 zero per group


def fake_quantized(weight: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """`weight` rounded to the asymmetric `bits`-bit grid per group of `group` inputs, as bf16."""
    out_features, in_features = weight.shape
    groups = weight.float().reshape(out_features, in_features // group, group)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    levels = 2**bits - 1
    scale = ((high - low) / levels).clamp(min=1e-8)
    codes = ((groups - low) / scale).round().clamp(0, levels)
    return (codes * scale + low).reshape(out_features, in_features).to(weight.dtype)


@torch.inference_mode()
def quantized_copy(model, bits: int, group: int):
    """A deep copy of the Hugging Face model with every decoder GEMM's weight on the b-bit grid."""
    copied = copy.deepcopy(model)
    for weight in gemm_weights(copied):
        weight.copy_(fake_quantized(weight, bits, group))
    return copied


def gemm_weights(model) -> list[torch.Tensor]:
    """Every decoder layer's GEMM weights (attention's four, the MLP's three)."""
    return [getattr(parent, name).weight for layer in model.model.layers for parent in (layer.self_attn, layer.mlp)
            for name in GEMMS if hasattr(parent, name)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", default="4:32,4:64,3:32,3:64,2:32", help="bits:group pairs")
    parser.add_argument("--tokens", type=int, default=64, help="target continuation tokens a prompt")
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    target, draft = models.load_model(TARGET, torch.bfloat16), models.load_model(DRAFT, torch.bfloat16)
    vocab = target.vocab_size
    kept = restricted_vocabulary(target.tokenizer, vocab, 32768)
    target_lm = FastLlamaLM.from_hf(target.model, vocab, 1280, "w4a8")
    held_out = task_prompts(target.tokenizer, HELD_OUT)
    continuations = greedy_continuations(target_lm, held_out, args.tokens)
    t1, t_verify = step_ms(target_lm), step_ms(target_lm, args.k + 1)
    timing = restricted_lm(draft.model, vocab, kept, "w4a8")
    timing.set_extra_tokens(list(range(1000, 1300)))
    draft_ms = step_ms(timing)
    parameters = sum(weight.numel() for weight in gemm_weights(draft.model))
    head_mb = len(kept) * draft.model.config.hidden_size * (4 + SCALE_BITS / 32) / 8 / 1e6  # the w4a8 head
    grids = [tuple(int(part) for part in grid.split(":")) for grid in args.grids.split(",")]
    base_bits = 4 + SCALE_BITS / 32  # the grid of the w4a8 draft whose step draft_ms is
    base_mb = parameters * base_bits / 8 / 1e6 + head_mb
    curve = {1: t1, args.k + 1: t_verify}
    print(f"target w4a8 t(1) = {t1:.1f} ms, t({args.k + 1})/t(1) = {t_verify / t1:.2f}; draft w4a8 step "
          f"{draft_ms:.1f} ms (c = {draft_ms / t1:.3f}); draft body {parameters / 1e6:.0f}M GEMM weights, head "
          f"{head_mb:.0f} MB")
    print(f"\n| bits | group | bits a weight | body MB | held-out alpha HumanEval | held-out alpha XSum | c "
          f"| predicted speedup HumanEval, K={args.k} | XSum |\n|---|---|---|---|---|---|---|---|---|")
    for bits, group in grids:
        alpha = agreement(restricted_lm(quantized_copy(draft.model, bits, group), vocab, kept, "bf16"), held_out,
                          continuations)
        per_weight = bits + SCALE_BITS / group
        body_mb = parameters * per_weight / 8 / 1e6
        c = draft_ms / t1 * (body_mb + head_mb) / base_mb
        speedups = [predicted_speedup(alpha[task], args.k, c, curve) for task in ("humaneval", "xsum")]
        print(f"| {bits} | {group} | {per_weight:.2f} | {body_mb:.0f} | {alpha['humaneval']:.3f} | "
              f"{alpha['xsum']:.3f} | {c:.3f} | {speedups[0]:.2f}x | {speedups[1]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
