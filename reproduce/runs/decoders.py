"""How each method kind decodes one unit (one prompt under one setting): a function per kind of
catalogue.METHOD_KINDS, each returning the engine's Trace, and the prompt's prefills they share (`PromptCaches`).

The runner (runs.runner) picks the function by the row's kind and turns the trace into a raw row; the llama.cpp
peers' decoders live in runs.llamacpp_peer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reproduce.catalogue import METHOD_KINDS
from reproduce.engine.decoding import autoregressive_decode, prefill, speculative_decode
from reproduce.runs import llamacpp_peer
from reproduce.runs.peers import hf_generate
from reproduce.runs.plan import Method, Unit

if TYPE_CHECKING:
    from reproduce.runs.pool import ModelPool


class PromptCaches:
    """One prompt's prefills, each run once per model however many methods decode the prompt: the loops only
    append past the prompt, so each decode rolls back to it (prefilled=True) and starts from bitwise the same cache.
    `ms` holds each prefill's time, keyed by the LM or drafter prefilled."""

    def __init__(self, prompt_ids: list[int]):
        self.prompt_ids = prompt_ids
        self.ms: dict[int, float] = {}
        self.scores: dict[tuple, list[float]] = {}  # target log-probs per (block runtime, distinct scored output)

    def lm(self, lm) -> float:
        """Prefill a cached LM (the target, or a model decoding alone) on first use; its prefill's ms."""
        if id(lm) not in self.ms:
            self.ms[id(lm)] = prefill(lm, self.prompt_ids)
        return self.ms[id(lm)]

    def drafter(self, drafter, target) -> float:
        """Prefill a drafter's own cache on first use (after the target's: the target drafting for itself copies
        the target's); its prefill's ms."""
        self.lm(target)
        if id(drafter) not in self.ms:
            self.ms[id(drafter)] = drafter.prefill(self.prompt_ids, target)
        return self.ms[id(drafter)]


def _decode_ars(lm, unit: Unit, prompt_ids, generator, eos, caches: PromptCaches):
    prefill_ms = caches.lm(lm)
    trace = autoregressive_decode(lm, prompt_ids, unit.max_new_tokens, unit.params, generator, eos, prefilled=True)
    trace.prefill_ms = prefill_ms
    return trace


def _decode_sps(target, drafter, k: int, unit: Unit, prompt_ids, generator, eos, caches: PromptCaches):
    draft_prefill_ms = caches.drafter(drafter, target)
    trace = speculative_decode(target, drafter, prompt_ids, k, unit.max_new_tokens, unit.params, generator, eos,
                               prefilled=True)
    trace.prefill_ms, trace.draft_prefill_ms = caches.lm(target), draft_prefill_ms
    return trace


def _ars(pool: ModelPool, unit: Unit, method: Method, prompt_ids, generator, eos, seed, caches):
    return _decode_ars(pool.target_for(unit), unit, prompt_ids, generator, eos, caches)


def _sps(pool: ModelPool, unit: Unit, method: Method, prompt_ids, generator, eos, seed, caches):
    return _decode_sps(pool.target_for(unit), pool.drafters[method.draft], method.k, unit, prompt_ids, generator, eos,
                       caches)


def _ars_hf(pool: ModelPool, unit: Unit, method: Method, prompt_ids, generator, eos, seed, caches):
    return _decode_ars(pool.target_hf_lm, unit, prompt_ids, generator, eos, caches)


def _sps_hf(pool: ModelPool, unit: Unit, method: Method, prompt_ids, generator, eos, seed, caches):
    return _decode_sps(pool.target_hf_lm, pool.hf_drafters[method.draft], method.k, unit, prompt_ids, generator,
                       eos, caches)


def _draft_only(pool: ModelPool, unit: Unit, method: Method, prompt_ids, generator, eos, seed, caches):
    """The draft decoding alone: its own prefill stands where the target's stands for ArS."""
    return _decode_ars(pool.draft_lms[method.draft], unit, prompt_ids, generator, eos, caches)


def _hf(pool: ModelPool, unit: Unit, method: Method, prompt_ids, generator, eos, seed, caches):
    assistant, ngram_size, stop_below = None, None, 0.0
    if method.draft is not None:
        spec = pool.config.draft(method.draft)
        if spec.kind.is_model:
            assistant, stop_below = pool.draft_models[method.draft].model, spec.stop_below
        else:
            ngram_size = spec.ngram_size
    return hf_generate(pool.target, unit, method, prompt_ids, seed, assistant, ngram_size, ignore_eos=eos is None,
                       stop_below=stop_below)


# How each method kind of catalogue.METHOD_KINDS decodes one unit; each returns a Trace.
# ars_repeat is ArS again on its own seed stream (row_seed), to measure the ArS-vs-ArS spread.
DECODERS = {"ars": _ars, "ars_repeat": _ars, "sps": _sps, "ars_hf": _ars_hf, "sps_hf": _sps_hf,
            "draft_only": _draft_only, "hf_generate": _hf, "hf_assisted": _hf, **llamacpp_peer.DECODERS}
assert set(DECODERS) == set(METHOD_KINDS), "every method kind needs a decoder"
