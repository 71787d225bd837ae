"""llama.cpp as a peer of our loops, on the target's own GGUF, timed on the decode loop like our rows.

- `llamacpp_ars`: llama.cpp's plain decoding, as our ArS loop over reproduce.engine.llamacpp_lm.LlamaCppLM: each
  step is one llama_decode of one token, then our sampling (the unit's SamplingParams, exactly as for `ars`). Its
  prefill is timed apart, once per prompt, as the target's is (decoders.PromptCaches).
- `llamacpp_ngram`: llama.cpp's own n-gram speculative decoding, llama-cpp-python's `Llama.generate` with
  `LlamaPromptLookupDecoding(max_ngram_size=<the draft's ngram_size>, num_pred_tokens=K)`: drafted tokens are fed
  with the last one in one llama_decode, each position is sampled by llama.cpp's sampler and a draft token is kept
  while it equals the sample (lossless: the drafts are point masses). All prompt tokens but the last are evaluated
  first (timed as the prefill, once per prompt); the decode loop starts at the last prompt token, as ours does.
  Its sampler chain is llama.cpp's: top-k, top-p, then temperature (ours applies the temperature first), min-p
  and repeat penalty off; greedy at T = 0.

- `llamacpp_draft`: llama.cpp's own draft-model speculative decoding, its `llama-speculative-simple` tool (built by
  `make install` from the same sdist's sources; llama-cpp-python has no draft-model API) on the target's and the
  draft's GGUFs, K tokens drafted a step, in a subprocess per row. The prompt goes in as text (llama.cpp tokenizes
  it with the GGUF's tokenizer); the decode time is the tool's own ("decoded N tokens in T seconds", its prefill
  apart), the output its printed text, re-tokenized by the target's tokenizer for the row.

The models are built on first use and kept on the runner's pool (`pool.llamacpp`), so runs/decoders.py only
registers DECODERS. A target without a GGUF, or a missing llama-cpp-python, fails in one line naming the fix.
"""

from __future__ import annotations

import atexit
import contextlib
import re
import subprocess
import time

import torch

from reproduce.engine.decoding import Trace, autoregressive_decode
from reproduce.engine.llamacpp_lm import (DEFAULT_CONTEXT, LlamaCppLM, LlamaCppModel, cpu_has_amx, import_llama_cpp,
                                          our_model_params)
from reproduce.engine.models import gguf_file
from reproduce.errors import ReproduceError
from reproduce.runs.plan import SPECULATIVE_TOOL, speculative_tool


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
    """What decoders.PromptCaches prefills through decoding.prefill (reset, then forward of all prompt tokens but the
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


def _tool_numbers(pattern: str, log: str) -> tuple[float, ...]:
    """The numbers `pattern`'s groups match in the tool's log, e.g. "decoded 128 tokens in 9.8 seconds"."""
    match = re.search(pattern, log)
    if match is None:
        raise ReproduceError(f"{SPECULATIVE_TOOL} printed no {pattern!r} line: rebuild it with `make install` "
                             f"(its last output: {log.strip().splitlines()[-1:] or ['none']})")
    return tuple(float(group) for group in match.groups())


def _generated_text(stdout: str, prompt_text: str) -> str:
    """The tool prints two newlines, the prompt's pieces, the output's pieces, then four newlines: the output."""
    body = stdout.removeprefix("\n\n")
    body = body[: -4] if body.endswith("\n\n\n\n") else body
    if not body.startswith(prompt_text):
        raise ReproduceError(f"{SPECULATIVE_TOOL} echoed a prompt other than ours (its tokenizer changed the text?): "
                             "drop llamacpp_draft from the config's methods for this model")
    return body[len(prompt_text):]


def _llamacpp_draft(pool, unit, method, prompt_ids, generator, eos, seed, caches):
    tool = speculative_tool()
    if tool is None:
        raise ReproduceError(f"{SPECULATIVE_TOOL} is not built: run `make install` (it builds llama.cpp's tool from "
                             "llama-cpp-python's sdist) or drop llamacpp_draft from the config's methods")
    params, threads = unit.params, str(torch.get_num_threads())
    tokenizer = pool.target.tokenizer
    prompt_text = tokenizer.decode(prompt_ids)
    # -p, not -f: llama.cpp drops a prompt file's final newline (HumanEval prompts end with one)
    command = [str(tool), "-m", str(gguf_file(pool.target.model)),
               "-md", str(gguf_file(pool.draft_models[method.draft].model)),
               "-p", prompt_text, "-n", str(unit.max_new_tokens), "-c", str(DEFAULT_CONTEXT),
               "-t", threads, "-tb", threads, "-td", threads, "-tbd", threads, "-fa", "on",
               "--spec-type", "draft-simple", "--spec-draft-n-max", str(method.k), "--spec-draft-n-min", "0",
               "--spec-draft-p-min", "0", "--temp", str(params.temperature), "--top-p", str(params.top_p),
               "--top-k", str(params.top_k), "--min-p", "0", "--repeat-penalty", "1", "--seed", str(seed % 0xFFFFFFFF)]
    command += ["--ignore-eos"] if eos is None else []
    command += ["--no-repack"] if cpu_has_amx() else []  # as our_model_params: its AMX path crashed here
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    log = done.stderr
    if done.returncode != 0:
        raise ReproduceError(f"{SPECULATIVE_TOOL} failed (exit {done.returncode}): "
                             f"{(log.strip().splitlines() or ['no output'])[-1][:200]}")
    decoded, decode_s = _tool_numbers(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", log)
    (prefill_s,) = _tool_numbers(r"encoded\s+\d+ tokens in\s+([\d.]+) seconds", log)
    text = _generated_text(done.stdout, prompt_text)
    tokens = tokenizer.encode(text, add_special_tokens=False)
    # the tool's own rate (decoded tokens over its decode time), per token of the text it printed
    trace = Trace(method.kind, list(prompt_ids), tokens=tokens, prefill_ms=prefill_s * 1e3,
                  decode_ms=decode_s * 1e3 * len(tokens) / max(decoded, 1))
    if eos is not None and len(tokens) < unit.max_new_tokens:
        trace.stop_reason = "eos"
    return trace


# registered by decoders.DECODERS
DECODERS = {"llamacpp_ars": _llamacpp_ars, "llamacpp_ngram": _llamacpp_ngram, "llamacpp_draft": _llamacpp_draft}
