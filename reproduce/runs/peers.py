"""Hugging Face `generate()` (plain, or assisted by the same draft) as a peer of our loops, timed the same way.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from reproduce.engine.decoding import Trace
from reproduce.runs.plan import Method, Unit

if TYPE_CHECKING:
    from reproduce.runs.runner import ModelPool


@torch.inference_mode()
def hf_generate(pool: ModelPool, unit: Unit, method: Method, prompt_ids: list[int], seed: int) -> Trace:
    """Hugging Face `generate()` (plain, or assisted by the same draft) as a peer, timed the same way; `seed` seeds
    torch's global generator, which generate() samples from."""
    kwargs = dict(max_new_tokens=unit.max_new_tokens, eos_token_id=pool.target.eos_token_id,
                  pad_token_id=pool.target.eos_token_id)
    if unit.params.greedy:
        kwargs.update(do_sample=False)
    else:
        kwargs.update(do_sample=True, temperature=unit.params.temperature, top_p=unit.params.top_p,
                      top_k=unit.params.top_k or None)
    if method.kind == "hf_assisted":
        if pool.config.draft(method.draft).kind.kind == "ngram":
            # the same longest n-gram as our drafter (HF's default is 2); HF takes the earliest match, ours the latest
            kwargs.update(prompt_lookup_num_tokens=method.k,
                          max_matching_ngram_size=pool.config.draft(method.draft).ngram_size)
        else:
            kwargs.update(assistant_model=pool.draft_models[method.draft].model, num_assistant_tokens=method.k,
                          num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0)
    torch.manual_seed(seed)
    input_ids = torch.tensor([prompt_ids])
    start = time.perf_counter()
    output = pool.target.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    trace = Trace(method.kind, list(prompt_ids), tokens=output[0, len(prompt_ids):].tolist())
    trace.wall_ms = (time.perf_counter() - start) * 1e3
    if trace.tokens and trace.tokens[-1] == pool.target.eos_token_id:
        trace.stop_reason = "eos"
    return trace
