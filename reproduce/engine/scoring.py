"""Scoring a finished sequence under a model: the per-token log-probs the runner stores for perplexity and tests."""

from __future__ import annotations

import torch

from reproduce.errors import ReproduceError


@torch.inference_mode()
def token_logprobs(model, prompt_ids: list[int], generated_ids: list[int], vocab_size: int | None = None) -> list[float]:
    """log P_model(g_i | prompt, g_<i) for each generated token, in one forward pass.

    Scores a method's output under a (usually the target) model: lossless sampling leaves their distribution
    unchanged. `vocab_size` cuts padded embedding rows from the softmax, as the decoders do.
    """
    if not prompt_ids or not generated_ids:
        raise ReproduceError("scoring needs a non-empty prompt and at least one generated token")
    device = next(model.parameters()).device
    input_ids = torch.tensor([list(prompt_ids) + list(generated_ids)], device=device)
    # Position t predicts token t+1: the generated tokens are predicted by positions len(prompt)-1 .. L-2.
    logits = model(input_ids=input_ids).logits[0, len(prompt_ids) - 1 : -1].float()  # [N, V]
    if vocab_size is not None:
        logits = logits[:, :vocab_size]
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(generated_ids, device=device)
    return log_probs.gather(1, targets[:, None])[:, 0].tolist()  # [N]
