"""Hugging Face `generate()` (plain, or assisted by the same draft) as a peer of our loops, timed the same way.

It takes the models it runs (never the runner's pool), so the runner imports it and not the other way round.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time

import torch

from reproduce.engine.decoding import Trace
from reproduce.runs.plan import Method, Unit

# transformers' own assisted generation calls assistant_model.generate(generation_config=..., min_new_tokens=...,
# max_new_tokens=...) (generation/candidate_generator.py) and then warns, once, that passing a generation_config
# together with generation arguments is deprecated. Our calls pass generation arguments only; nothing we pass
# changes what transformers passes itself, so that one message, and only it, is dropped while a peer runs.
INTERNAL_DEPRECATION = "Passing `generation_config` together with generation-related arguments"


class _DropInternalDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return INTERNAL_DEPRECATION not in record.getMessage()


@contextlib.contextmanager
def _without_internal_deprecation():
    logger, quiet = logging.getLogger("transformers.generation.utils"), _DropInternalDeprecation()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


@torch.inference_mode()
def hf_generate(target, unit: Unit, method: Method, prompt_ids: list[int], seed: int, assistant=None,
                ngram_size: int | None = None, ignore_eos: bool = False, stop_below: float = 0.0) -> Trace:
    """Hugging Face `generate()` of `target` (a LoadedModel) as a peer, timed the same way: plain for hf_generate;
    for hf_assisted, assisted by the `assistant` model (a Hugging Face model) or, without one, by prompt lookup
    matching n-grams up to `ngram_size`. `seed` seeds torch's global generator, which generate() samples from.
    `ignore_eos`: decode exactly max_new_tokens, EOS sampled like any token (our loops' ignore_eos). `stop_below`:
    the draft's adaptive length, as HF's assistant_confidence_threshold (0: K tokens every call).
    generate() prefills inside its timing: the trace's decode_ms is end to end (prefill_inside_decode)."""
    generation_config = copy.deepcopy(target.model.generation_config)
    generation_config.eos_token_id = None if ignore_eos else target.eos_token_id
    kwargs = dict(max_new_tokens=unit.max_new_tokens, generation_config=generation_config,
                  pad_token_id=target.eos_token_id)
    if unit.params.greedy:
        kwargs.update(do_sample=False)
    else:
        kwargs.update(do_sample=True, temperature=unit.params.temperature, top_p=unit.params.top_p,
                      top_k=unit.params.top_k or None)
    if method.kind == "hf_assisted":
        if assistant is None:
            # the same longest n-gram as our drafter (HF's default is 2); HF takes the earliest match, ours the latest
            kwargs.update(prompt_lookup_num_tokens=method.k, max_matching_ngram_size=ngram_size)
        else:
            kwargs.update(assistant_model=assistant, num_assistant_tokens=method.k,
                          num_assistant_tokens_schedule="constant", assistant_confidence_threshold=stop_below)
    torch.manual_seed(seed)
    input_ids = torch.tensor([prompt_ids])
    with _without_internal_deprecation():
        start = time.perf_counter()
        output = target.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        wall_ms = (time.perf_counter() - start) * 1e3
    trace = Trace(method.kind, list(prompt_ids), tokens=output[0, len(prompt_ids):].tolist(), decode_ms=wall_ms,
                  prefill_inside_decode=True)
    if not ignore_eos and trace.tokens and trace.tokens[-1] == target.eos_token_id:
        trace.stop_reason = "eos"
    return trace


def warm_up_generate(target, prompt_ids: list[int], max_new_tokens: int, assistants=()) -> None:
    """Untimed greedy generate() calls: plain, then assisted by each of `assistants` (Hugging Face models), so the
    peers pay no first-call costs."""
    with _without_internal_deprecation():
        target.model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                              pad_token_id=target.eos_token_id)
        for assistant in assistants:
            target.model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=target.eos_token_id, assistant_model=assistant,
                                  num_assistant_tokens=2, num_assistant_tokens_schedule="constant")
