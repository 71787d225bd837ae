"""llama.cpp as a runtime for our loops: a GGUF scored through llama-cpp-python's low-level API.

Same contract as reproduce.engine.fast_lm.FastLlamaLM (reset / forward / rollback / next_logits / fresh,
cache_tokens, vocab_size): `forward` is one `llama_decode` on a batch asking for logits at every position (or the
last only), `rollback` is `llama_memory_seq_rm` of the positions past the kept prefix, and `fresh()` opens a new
context (a KV cache of its own) over the same loaded model, so the weights are in memory once.

The numerics are the GGUF's own, as llama.cpp computes them (for a Q4_K_M file: its quantized weights and its
int8-quantized activations in the dot products): a target in this runtime is that model, not the Hugging Face
dequantization the other runtimes run. Whether a batched call returns bitwise the logits of single-token calls
(batch invariance, needed for greedy SpS == ArS) depends on llama.cpp's kernels on the CPU:
reproduce.engine.llamacpp_probe measures it.

llama_cpp is imported on first use only, so the rest of the suite runs where it is missing or failed to build.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from reproduce.engine.lm import CacheSync
from reproduce.errors import ReproduceError
from reproduce.provenance import cpu_flags

LLAMA_CPP_VERSION = "0.3.36"  # the llama-cpp-python the Makefile builds
INSTALL_FIX = (f"run `make install` (it builds llama-cpp-python=={LLAMA_CPP_VERSION} from PyPI's sdist, "
               "~3 min on 2 cores; needs cmake and a C++ compiler)")
DEFAULT_CONTEXT = 4096  # tokens a context holds: prompt plus output (a 1.5B Qwen2's f16 cache: 112 MB)


def import_llama_cpp():
    """The llama_cpp module, or one line saying how to get it (missing, or its shared library fails to load)."""
    try:
        import llama_cpp
        import llama_cpp._logger
    except (ImportError, OSError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ReproduceError(f"runtime llama.cpp needs llama-cpp-python, which does not import ({reason}): "
                             f"{INSTALL_FIX}") from None
    llama_cpp._logger.set_verbose(False)  # llama.cpp's load logs go to stderr; keep errors only
    return llama_cpp


def llama_cpp_build() -> str | None:
    """The installed llama.cpp build's CPU features ("AVX2 = 1 | ..."; an AVX2-only build on an AVX-512 CPU says
    so), None where llama-cpp-python does not import."""
    try:
        return import_llama_cpp().llama_print_system_info().decode(errors="replace").strip()
    except ReproduceError:
        return None


def cpu_has_amx() -> bool:
    return "amx_tile" in cpu_flags()


def our_model_params(model_params):
    """llama.cpp's model parameters as we load every GGUF: on AMX CPUs without its extra (repacked) weight buffers.
    Its AMX matmul (ggml_backend_amx_mul_mat) segfaulted on the first llama_decode of the Q4_K_M 1.5B on our AMX
    Xeon (llama-cpp-python 0.3.36, native build); the plain CPU kernels run it."""
    model_params.use_extra_bufts = not cpu_has_amx()
    return model_params


class LlamaCppModel:
    """A GGUF loaded once by llama.cpp (memory-mapped); every context over it shares these weights."""

    def __init__(self, path, owner=None):
        """Load `path`, or (`owner`: a llama-cpp-python Llama that loaded it) use the owner's weights, which the
        owner frees: one mapping of the file in memory, not two."""
        self.lib = import_llama_cpp()
        self.path = str(path)
        if owner is not None:
            self.owner, self.ptr = owner, owner._model.model
        else:
            params = our_model_params(self.lib.llama_model_default_params())
            self.ptr = self.lib.llama_model_load_from_file(self.path.encode(), params)
            if not self.ptr:
                raise ReproduceError(f"llama.cpp could not load {self.path}: check that it is a GGUF of an "
                                     f"architecture llama.cpp (llama-cpp-python {LLAMA_CPP_VERSION}) supports")
            # freed with this object, or at exit after every context (finalizers run newest first)
            weakref.finalize(self, self.lib.llama_model_free, self.ptr)
        self.n_vocab = self.lib.llama_vocab_n_tokens(self.lib.llama_model_get_vocab(self.ptr))
        self.n_ctx_train = self.lib.llama_model_n_ctx_train(self.ptr)


class _Context:
    """One llama.cpp context (its KV cache) and a token batch of its size, freed together."""

    def __init__(self, model: LlamaCppModel, n_ctx: int, n_threads: int):
        lib = self.lib = model.lib
        self.model = model  # the weights outlive every context over them
        params = lib.llama_context_default_params()
        params.n_ctx = params.n_batch = n_ctx  # any forward fits one llama_decode call
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = n_threads
        # named, not llama.cpp's "auto": the peer's high-level Llama (runs.llamacpp_peer) is given the same, so both
        # compute the same numbers (with and without flash attention, greedy outputs differed after ~10 tokens)
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.no_perf = True
        self.ptr = lib.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise ReproduceError(f"llama.cpp could not create a context of {n_ctx} tokens for {model.path}: "
                                 "free memory or lower the context")
        self.memory = lib.llama_get_memory(self.ptr)
        self.batch = lib.llama_batch_init(n_ctx, 0, 1)
        self.free = weakref.finalize(self, _free_context, lib, self.ptr, self.batch)
        for i in range(n_ctx):  # one sequence (id 0) throughout
            self.batch.n_seq_id[i] = 1
            self.batch.seq_id[i][0] = 0


def _free_context(lib, context, batch) -> None:
    lib.llama_batch_free(batch)
    lib.llama_free(context)


class LlamaCppLM(CacheSync):
    """A GGUF in llama.cpp, one context of `n_ctx` tokens, and the token ids its cache holds.

    `vocab_size` cuts the logits to the vocabulary shared with the other model (the GGUF's padded rows dropped)."""

    def __init__(self, model: LlamaCppModel, vocab_size: int | None = None, n_threads: int | None = None,
                 n_ctx: int = DEFAULT_CONTEXT):
        self.model = model
        self.vocab_size = vocab_size or model.n_vocab
        if self.vocab_size > model.n_vocab:
            raise ReproduceError(f"{model.path} scores {model.n_vocab} tokens, fewer than the {self.vocab_size} "
                                 "asked for: pick the GGUF of this tokenizer's model")
        self.n_threads = n_threads or torch.get_num_threads()
        self.n_ctx = min(n_ctx, model.n_ctx_train)  # no longer than the model was trained for
        self.new_cache()

    @classmethod
    def load(cls, path, vocab_size: int | None = None, n_threads: int | None = None,
             n_ctx: int = DEFAULT_CONTEXT) -> "LlamaCppLM":
        return cls(LlamaCppModel(path), vocab_size, n_threads, n_ctx)

    def new_cache(self) -> None:
        """A context of its own over the same weights (fresh(): the copy must not write into the original's)."""
        self._context = _Context(self.model, self.n_ctx, self.n_threads)
        self.cache_tokens: list[int] = []

    def close(self) -> None:
        """Free the context now (before a borrowed model's owner frees the weights under it)."""
        self._context.free()

    def reset(self) -> None:
        self._context.lib.llama_memory_clear(self._context.memory, False)
        self.cache_tokens = []

    def rollback(self, length: int) -> None:
        """Keep the first `length` cached tokens: remove positions length.. from the sequence."""
        if length < len(self.cache_tokens):
            context = self._context
            if not context.lib.llama_memory_seq_rm(context.memory, 0, length, -1):
                raise ReproduceError(f"llama.cpp refused to roll back {self.model.path}'s cache to {length} tokens")
            del self.cache_tokens[length:]

    @torch.inference_mode()
    def forward(self, token_ids: list[int], last_only: bool = False) -> torch.Tensor:
        """Append `token_ids` to the cache; return float32 logits [n, vocab_size] (or [1, vocab_size])."""
        n, start = len(token_ids), len(self.cache_tokens)
        if start + n > self.n_ctx:
            raise ReproduceError(f"{start + n} tokens exceed the llama.cpp context of {self.n_ctx}: build the LM "
                                 "with a larger n_ctx, or shorten the prompt or the output")
        context = self._context
        batch = context.batch
        batch.n_tokens = n
        for i, token in enumerate(token_ids):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.logits[i] = not last_only or i == n - 1
        status = context.lib.llama_decode(context.ptr, batch)
        if status != 0:
            raise ReproduceError(f"llama_decode failed (status {status}) on {n} tokens at position {start} of "
                                 f"{self.model.path}")
        rows = 1 if last_only else n
        logits = np.ctypeslib.as_array(context.lib.llama_get_logits(context.ptr), shape=(rows, self.model.n_vocab))
        self.cache_tokens.extend(token_ids)
        return torch.from_numpy(logits[:, : self.vocab_size].copy())  # llama.cpp reuses its buffer next call
