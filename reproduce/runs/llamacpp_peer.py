"""llama.cpp as a peer of our loops, on the target's own GGUF, timed on the decode loop like our rows.

- `llamacpp_ars`: llama.cpp's plain decoding, as our ArS loop over reproduce.engine.llamacpp_lm.LlamaCppLM: each
  step is one llama_decode of one token, then our sampling (the unit's SamplingParams, exactly as for `ars`). Its
  prefill is timed apart, once per prompt, as the target's is (runner.PromptCaches).
- `llamacpp_ngram`: llama.cpp's own n-gram speculative decoding, llama-cpp-python's `Llama.generate` with
  `LlamaPromptLookupDecoding(max_ngram_size=<the draft's ngram_size>, num_pred_tokens=K)`: drafted tokens are fed
  with the last one in one llama_decode, each position is sampled by llama.cpp's sampler and a draft token is kept
  while it equals the sample (lossless: the drafts are point masses). All prompt tokens but the last are evaluated
  first (timed as the prefill, once per prompt); the decode loop starts at the last prompt token, as ours does.
  Its sampler chain is llama.cpp's: top-k, top-p, then temperature (ours applies the temperature first), min-p
  and repeat penalty off; greedy at T = 0.

Not here: llama.cpp's draft-model speculative decoding (llama-speculative-simple is a C++ tool the Makefile does
not build, and llama-cpp-python has no draft-model API); measured by hand on this pair it ran ~2x slower than
llama.cpp's plain decoding (notes/llamacpp.md).

The models are built on first use and kept on the runner's pool (`pool.llamacpp`), so runner.py only registers
DECODERS. A target without a GGUF, or a missing llama-cpp-python, fails in one line naming the fix.
"""

from __future__ import annotations

import atexit
import contextlib
import time

import torch

from reproduce.engine.decoding import Trace, autoregressive_decode
from reproduce.engine.llamacpp_lm import (DEFAULT_CONTEXT, LlamaCppLM, LlamaCppModel, import_llama_cpp,
                                          our_model_params)
from reproduce.engine.models import gguf_file


class LlamaCppPeer:
    """The target's GGUF in llama.cpp, loaded once: llama-cpp-python's high-level Llama for its speculative
    decoding, and a LlamaCppLM (a context of our own over the Llama's weights) for our loop. A target already
    running in llama.cpp lends its weights to the LlamaCppLM instead, and the Llama loads the file on first use."""

    def __init__(self, target, vocab_size: int, target_lm=None):
        self.path = gguf_file(target.model)
        self.vocab_size = vocab_size
        self.llama = None
        self.llama_prefill = None  # one object per Llama: PromptCaches keys prefills by id()
        if isinstance(target_lm, LlamaCppLM):
            self.lm = target_lm.fresh()
        else:  # two loads of the 1.1 GB file would map it twice: the resident set counts it twice
            self.lm = LlamaCppLM(LlamaCppModel(self.path, owner=self.high_level()), vocab_size)

    def high_level(self):
        if self.llama is None:
            lib = import_llama_cpp()
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            with _model_params_of_ours(lib):
                self.llama = lib.Llama(str(self.path), n_ctx=DEFAULT_CONTEXT,
                                       n_threads=torch.get_num_threads(), n_threads_batch=torch.get_num_threads(),
                                       draft_model=LlamaPromptLookupDecoding(), flash_attn=True, verbose=False)
            self.llama_prefill = _PrefillOnly(self.llama)
            atexit.register(self.close)  # before interpreter teardown, where the Llama's own __del__ fails noisily
        return self.llama

    def close(self) -> None:
        """Our context first: it may run over the Llama's weights, which closing the Llama frees."""
        if getattr(self, "lm", None) is not None:
            self.lm.close()
        self.llama.close()


@contextlib.contextmanager
def _model_params_of_ours(lib):
    """Llama() takes no switch for llama.cpp's extra weight buffers: have it start from our model parameters
    (llamacpp_lm.our_model_params: off on AMX CPUs, where they crash), then restore llama-cpp-python's function."""
    module = lib.llama_cpp
    default = module.llama_model_default_params
    module.llama_model_default_params = lambda: our_model_params(default())
    try:
        yield
    finally:
        module.llama_model_default_params = default


class _PrefillOnly:
    """What runner.PromptCaches prefills through decoding.prefill (reset, then forward of all prompt tokens but the
    last): the high-level Llama's evaluation of those tokens, which its generate() then reuses as a cached prefix."""

    def __init__(self, llama):
        self.llama = llama

    def reset(self) -> None:
        self.llama.reset()

    def forward(self, token_ids: list[int], last_only: bool = False) -> None:
        self.llama.eval(token_ids)


def peer(pool) -> LlamaCppPeer:
    if getattr(pool, "llamacpp", None) is None:
        pool.llamacpp = LlamaCppPeer(pool.target, pool.vocab_size, pool.target_lm)
    return pool.llamacpp


def _llamacpp_ars(pool, unit, method, prompt_ids, generator, eos, seed, caches):
    lm = peer(pool).lm
    prefill_ms = caches.lm(lm)
    trace = autoregressive_decode(lm, prompt_ids, unit.max_new_tokens, unit.params, generator, eos, prefilled=True)
    trace.method, trace.prefill_ms = method.kind, prefill_ms
    return trace


def _llamacpp_ngram(pool, unit, method, prompt_ids, generator, eos, seed, caches):
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    llama_peer = peer(pool)
    llama = llama_peer.high_level()
    prefill_ms = caches.lm(llama_peer.llama_prefill)
    llama.draft_model = LlamaPromptLookupDecoding(max_ngram_size=pool.config.draft(method.draft).ngram_size,
                                                  num_pred_tokens=method.k)
    llama.set_seed(seed % 0xFFFFFFFF)  # 0xFFFFFFFF would mean a random seed
    params = unit.params
    tokens = []
    start = time.perf_counter()
    # generate() finds all prompt tokens but the last in its cache and evaluates only the last one
    for token in llama.generate(prompt_ids, top_k=params.top_k, top_p=params.top_p, min_p=0.0, typical_p=1.0,
                                temp=params.temperature, repeat_penalty=1.0):
        tokens.append(token)
        if len(tokens) == unit.max_new_tokens or token == eos:
            break
    decode_ms = (time.perf_counter() - start) * 1e3
    trace = Trace(method.kind, list(prompt_ids), tokens=tokens, prefill_ms=prefill_ms, decode_ms=decode_ms)
    if eos is not None and tokens and tokens[-1] == eos:
        trace.stop_reason = "eos"
    return trace


# registered by runner.DECODERS
DECODERS = {"llamacpp_ars": _llamacpp_ars, "llamacpp_ngram": _llamacpp_ngram}
