"""Scoring a finished sequence under a model: the per-token log-probs the runner stores for perplexity and tests."""

from __future__ import annotations

import torch

from reproduce.errors import ReproduceError


@torch.inference_mode()
def token_logprobs(lm, prompt_ids: list[int], generated_ids: list[int], prefilled: bool = False) -> list[float]:
    """log P(g_i | prompt, g_<i) under the cached LM `lm` for each generated token, in two calls.

    Scores a method's output under (usually) the target LM the loops ran, runtime included, so the numbers are the
    target's own: lossless sampling leaves their distribution unchanged. `lm` is reset first (give it an LM of its
    own, e.g. `target_lm.fresh()`); its logits are already cut to the shared vocabulary. `prefilled`: `lm`'s cache
    already holds every prompt token but the last (reproduce.engine.decoding.prefill), and is rolled back to them.
    """
    if not prompt_ids or not generated_ids:
        raise ReproduceError("scoring needs a non-empty prompt and at least one generated token")
    if prefilled:
        lm.rewind_to_prompt(prompt_ids)
        # the last prompt token's position predicts g_0, the position of g_i predicts g_{i+1}
        logits = lm.forward([prompt_ids[-1]] + list(generated_ids[:-1]))
    else:
        lm.reset()
        logits = lm.forward(list(prompt_ids), last_only=True)  # predicts g_0
        if len(generated_ids) > 1:  # position of g_i predicts g_{i+1}
            logits = torch.cat([logits, lm.forward(list(generated_ids[:-1]))])
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(1, torch.tensor(generated_ids)[:, None])[:, 0].tolist()
