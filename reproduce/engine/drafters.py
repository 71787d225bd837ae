"""Drafters: whatever proposes K tokens and the distributions they were drawn from.

Drafts by name (`build_drafter`): "ngram" (prompt lookup), "target" (the target drafting for itself),
"distilled" (the draft `python -m reproduce distill` built for this target), "ngram+<draft>" (prompt lookup where
the sequence repeats itself, <draft> elsewhere), or any model name `load_model` takes.

The interface (in the spirit of transformers' candidate generators; `Drafter` gives the defaults):
  prefill(prompt_ids, target)                a new prompt: fill the draft's own cache with it; returns its ms
  start(prompt_ids, target)                  a decode of that prompt begins (prefilled earlier, maybe shared by
                                             several decodes); the target's cache holds the prompt
  propose(sequence, k, params, generator)    -> (tokens: list[int] of length <= k, probs: Tensor [len(tokens), V])
A drafter may propose fewer than k tokens (even none); the speculative loop then verifies what it got.
`probs[i]` must be the exact distribution tokens[i] was drawn from, shaped by the same SamplingParams as the
target: that is all the rule needs to stay lossless, whatever the drafter is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from reproduce.catalogue import HYBRID_PREFIX, parse_draft
from reproduce.engine import (
    models,  # models.load_model looked up at call time (tests replace it)
)
from reproduce.engine.decoding import prefill
from reproduce.engine.distilled import distilled_draft_dir, load_distilled
from reproduce.engine.lm import CachedLM
from reproduce.engine.restricted import restricted_lm
from reproduce.engine.runtime import build_lm, resolve_choice, resolve_runtime
from reproduce.engine.sampling import SamplingParams, logits_to_probs, sample
from reproduce.errors import ReproduceError


class Drafter:
    """What a drafter without a cache of its own does at a new prompt: nothing."""

    def reset(self) -> None:
        pass

    def prefill(self, prompt_ids: list[int], target) -> float:
        return 0.0

    def start(self, prompt_ids: list[int], target) -> None:
        pass


class ModelDrafter(Drafter):
    """A small causal LM sharing the target's vocabulary, with its own KV cache.

    Each call re-syncs the cache to the sequence (crop to the common prefix, feed the rest), so tokens the
    target accepted are never recomputed and rejected ones are dropped, and a decode that starts over on the
    prompt just prefilled rolls back to it.
    """

    def __init__(self, model, vocab_size: int | None = None, name: str = "model", stop_below: float = 0.0):
        """`model`: a Hugging Face model (wrapped in a CachedLM cut to `vocab_size`), or a ready cached LM
        such as reproduce.engine.runtime.build_lm's. `stop_below`: an adaptive draft length, see `_stops`."""
        if not 0.0 <= stop_below < 1.0:
            raise ReproduceError(f"stop_below must lie in [0, 1) (0: always draft K tokens), got {stop_below!r}")
        self.lm = CachedLM(model, vocab_size) if isinstance(model, torch.nn.Module) else model
        self.name = name
        self.stop_below = stop_below

    def _stops(self, logits: torch.Tensor, index: int) -> bool:
        """Stop drafting after a token (`index` into `logits`, the position's scores) that the draft itself gave a
        probability under stop_below (its softmax at temperature 1, before any shaping, since greedy shaping makes
        every chosen token's probability 1), as transformers' assistant_confidence_threshold does: an unsure draft
        is likely rejected there, so tokens drafted after it would be wasted calls. Lossless: whether position
        i+1 is drafted depends only on the tokens up to i, all in the prefix the rule accepted before it reaches
        i+1 (the rule is exact for any number of drafted tokens)."""
        if self.stop_below <= 0:
            return False
        return float(torch.log_softmax(logits.detach().float(), -1)[index].exp()) < self.stop_below

    def reset(self) -> None:
        self.lm.reset()

    def _shares_target_weights(self, target) -> bool:
        return hasattr(self.lm, "shares_weights_with") and self.lm.shares_weights_with(target)

    def prefill(self, prompt_ids: list[int], target) -> float:
        """The prompt into the draft's own cache, as the target's is prefilled (decoding.prefill). A drafter over
        the target's own weights prefills nothing: `start` copies the target's cache."""
        if self._shares_target_weights(target):
            self.lm.reset()
            return 0.0
        return prefill(self.lm, prompt_ids)

    def start(self, prompt_ids: list[int], target) -> None:
        """The target drafting for itself starts from the target's prefilled cache, bitwise what its own prefill
        would compute (reproduce.engine.fast_lm.FastLlamaLM.adopt_cache), for the price of a memory copy."""
        if self._shares_target_weights(target):
            self.lm.adopt_cache(target)

    def propose(self, sequence: list[int], k: int, params: SamplingParams, generator: torch.Generator):
        tokens: list[int] = []
        probs = []
        if k == 0:
            return tokens, torch.empty(0, self.lm.vocab_size)
        logits = self.lm.next_logits(sequence)  # [V]
        for i in range(k):
            dist = logits_to_probs(logits, params)  # [V]
            token = sample(dist, generator)
            tokens.append(token)
            probs.append(dist)
            if i + 1 == k or self._stops(logits, token):
                break
            logits = self.lm.forward([token])[-1]
        return tokens, torch.stack(probs)  # [k'], [k', V] with k' <= k


class NgramDrafter(Drafter):
    """Prompt lookup (Saxena 2023; transformers' `prompt_lookup_num_tokens`): find the latest earlier occurrence
    of the sequence's last n tokens (n from max_ngram down to min_ngram) and propose what followed it.

    Its distribution is a point mass on each proposed token (one-hot rows), which the rule handles losslessly:
    a token is accepted with probability target(x), and a rejection samples the target with x removed.
    """

    name = "ngram"

    def __init__(self, vocab_size: int, max_ngram: int = 3, min_ngram: int = 1):
        if not 1 <= min_ngram <= max_ngram:
            raise ReproduceError(f"n-gram sizes need 1 <= min_ngram <= max_ngram, got {min_ngram} and {max_ngram}")
        self.vocab_size = vocab_size
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram

    def lookup(self, sequence: list[int], k: int) -> list[int]:
        for n in range(min(self.max_ngram, len(sequence) - 1), self.min_ngram - 1, -1):
            tail = sequence[-n:]
            # latest start whose match ends before the last position, so a continuation exists
            for start in range(len(sequence) - n - 1, -1, -1):
                if sequence[start : start + n] == tail:
                    return sequence[start + n : start + n + k]
        return []

    def propose(self, sequence: list[int], k: int, params: SamplingParams, generator: torch.Generator):
        tokens = self.lookup(sequence, k) if k else []
        probs = torch.nn.functional.one_hot(torch.tensor(tokens, dtype=torch.long), self.vocab_size).float()
        return tokens, probs.reshape(len(tokens), self.vocab_size)  # [k'], [k', V]


class HybridDrafter(Drafter):
    """Prompt lookup where the sequence repeats an earlier n-gram (free and often right when copying from the
    prompt), a model drafter elsewhere. Which one proposes depends on the sequence only, so each proposal is
    still drawn from the distribution it reports: lossless like either drafter alone."""

    def __init__(self, lookup: NgramDrafter, model: ModelDrafter):
        self.lookup, self.model = lookup, model
        self.name = f"{HYBRID_PREFIX}{model.name}"

    def reset(self) -> None:
        self.lookup.reset()
        self.model.reset()

    def prefill(self, prompt_ids: list[int], target) -> float:
        return self.model.prefill(prompt_ids, target)

    def start(self, prompt_ids: list[int], target) -> None:
        self.model.start(prompt_ids, target)

    def propose(self, sequence: list[int], k: int, params: SamplingParams, generator: torch.Generator):
        tokens, probs = self.lookup.propose(sequence, k, params, generator)
        if tokens:
            return tokens, probs
        return self.model.propose(sequence, k, params, generator)


class RestrictedDrafter(ModelDrafter):
    """A model drafter over a restricted-vocabulary LM (reproduce.engine.restricted.RestrictedFastLM): it shapes and
    samples over the head's tokens only (a nucleus sort of ~30k entries, not 151,936) and reports each proposal's
    distribution over the whole vocabulary, zero outside the head. Each prompt's own tokens join the head when the
    prompt is prefilled, so copied names and numbers stay proposable."""

    def prefill(self, prompt_ids: list[int], target) -> float:
        if not hasattr(self.lm, "set_extra_tokens"):  # runtime hf: the full head
            return super().prefill(prompt_ids, target)
        start = time.perf_counter()
        self._set_prompt(prompt_ids)
        return (time.perf_counter() - start) * 1e3 + super().prefill(prompt_ids, target)

    def start(self, prompt_ids: list[int], target) -> None:
        super().start(prompt_ids, target)
        if hasattr(self.lm, "set_extra_tokens") and getattr(self, "prompt", None) != prompt_ids:
            self._set_prompt(prompt_ids)  # a caller that prefilled the draft some other way

    def _set_prompt(self, prompt_ids: list[int]) -> None:
        self.lm.set_extra_tokens(prompt_ids)
        self.prompt = list(prompt_ids)

    def propose(self, sequence: list[int], k: int, params: SamplingParams, generator: torch.Generator):
        if not hasattr(self.lm, "next_kept_logits"):
            return super().propose(sequence, k, params, generator)
        kept = self.lm.kept
        tokens: list[int] = []
        probs = torch.zeros(k, self.lm.full_vocab_size)  # [k, V], zero outside the head
        logits = self.lm.next_kept_logits(sequence) if k else None  # [len(kept)]
        for i in range(k):
            dist = logits_to_probs(logits, params)  # [len(kept)]: shaping over the head = over V with -inf elsewhere
            index = sample(dist, generator)
            tokens.append(int(kept[index]))
            probs[i, kept] = dist
            if i + 1 == k or self._stops(logits, index):
                break
            logits = self.lm.forward_kept([tokens[-1]])[-1]
        return tokens, probs[: len(tokens)]  # [k'], [k', V] with k' <= k


@dataclass
class Draft:
    """A draft as an experiment needs it: the drafter, the loaded model behind it (for Hugging Face assisted
    generation; None for ngram), and a factory of fresh cached LMs for draft-only decoding (None: not a model)."""

    name: str
    drafter: object
    model: object | None = None  # reproduce.engine.models.LoadedModel
    runtime: str | None = None
    new_lm: Callable[[], object] | None = None
    choice: object | None = None  # reproduce.engine.probe.Choice, where runtime auto chose the model draft's runtime


def draft_lm(model, vocab_size: int, runtime: str, kept: torch.Tensor | None = None):
    """A model draft's cached LM: with a head over `kept` tokens only (RestrictedFastLM) where a fast runtime
    serves it, else runtime.build_lm's."""
    if kept is not None and runtime == "llama.cpp":
        raise ReproduceError("a draft with a restricted head runs in a fast runtime (fast-int4, ...) or hf, not "
                             "llama.cpp: set the draft's runtime")
    if kept is None or not runtime.startswith("fast-"):
        return build_lm(model, vocab_size, runtime)
    return restricted_lm(model, vocab_size, kept, runtime.removeprefix("fast-"))


def model_draft_runtime(loaded, runtime: str, vocab_size: int, kept: torch.Tensor | None):
    """(runtime, the probe's Choice or None) of a model draft (a LoadedModel), resolved on the head it runs: a
    restricted draft's cost, not the full vocabulary's, is the probe's c."""
    if kept is not None:  # auto leaves llama.cpp out for it (runtime.llamacpp_eligible), here and in the manifest
        loaded.model.restricted_head = True
    head_rows = vocab_size if kept is None else len(kept)
    return resolve_choice(runtime, loaded.model, "draft", vocab_size=head_rows, name=loaded.name)


def build_drafter(name: str, target, target_runtime: str = "auto", draft_runtime: str = "auto",
                  ngram_size: int = 3, dtype: torch.dtype = torch.float32, target_lm=None, load_model=None,
                  make_lm=None, kept: torch.Tensor | None = None, stop_below: float = 0.0) -> Draft:
    """The draft called `name` (catalogue.parse_draft) for `target` (a LoadedModel). The "target" draft runs in
    `target_runtime` (the runtime is part of the target's definition), over `target_lm`'s weights when given;
    model drafts in `draft_runtime`, loaded by `load_model` (default models.load_model) and built into an LM by
    `make_lm(model, vocab, runtime, kept)` (default draft_lm; `kept`: the restricted head's tokens, or None). A caller building several drafts over one model
    passes caching versions of both, so e.g. `qwen-int8` and `ngram+qwen-int8` share one int8 copy. `stop_below`:
    a model drafter's adaptive draft length (ModelDrafter._stops; 0 drafts K tokens always)."""
    draft = parse_draft(name)
    vocab = target.vocab_size
    if draft.kind == "ngram":
        return Draft(name, NgramDrafter(vocab, max_ngram=ngram_size))
    if draft.kind == "hybrid":
        inner = build_drafter(draft.inner.name, target, target_runtime, draft_runtime, ngram_size, dtype, target_lm,
                              load_model, make_lm, kept, stop_below)
        return Draft(name, HybridDrafter(NgramDrafter(vocab, max_ngram=ngram_size), inner.drafter), inner.model,
                     inner.runtime, inner.new_lm, inner.choice)
    if draft.kind == "target":  # the target's weights and runtime, its own KV cache
        runtime = resolve_runtime(target_runtime, target.model)
        lm = target_lm.fresh() if target_lm is not None else build_lm(target.model, vocab, runtime)
        return Draft(name, ModelDrafter(lm, name="target", stop_below=stop_below), target, runtime, lm.fresh)
    if draft.kind == "distilled":
        model, runtime, new_lm = load_distilled(distilled_draft_dir(target.name), vocab, draft_runtime)
        return Draft(name, RestrictedDrafter(new_lm(), name="distilled", stop_below=stop_below), model, runtime, new_lm)
    loaded = (load_model or models.load_model)(name, dtype)
    models.shared_vocab_size(target, loaded)
    runtime, choice = model_draft_runtime(loaded, draft_runtime, vocab, kept)
    lm = (make_lm or draft_lm)(loaded.model, vocab, runtime, kept)
    drafter = (RestrictedDrafter if kept is not None else ModelDrafter)(lm, name=name, stop_below=stop_below)
    return Draft(name, drafter, loaded, runtime, lm.fresh, choice)
