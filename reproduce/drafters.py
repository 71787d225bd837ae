"""Drafters: whatever proposes K tokens and the distributions they were drawn from.

The interface is two methods (in the spirit of transformers' candidate generators):
  reset()                                    a new sequence starts
  propose(sequence, k, params, generator)    -> (tokens: list[int] of length <= k, probs: Tensor [len(tokens), V])
A drafter may propose fewer than k tokens (even none); the speculative loop then verifies what it got.
`probs[i]` must be the exact distribution tokens[i] was drawn from, shaped by the same SamplingParams as the
target: that is all the rule needs to stay lossless, whatever the drafter is.
"""

from __future__ import annotations

import torch

from reproduce.decoding import CachedLM
from reproduce.errors import ReproduceError
from reproduce.sampling import SamplingParams, logits_to_probs, sample


class ModelDrafter:
    """A small causal LM sharing the target's vocabulary, with its own KV cache.

    Each call re-syncs the cache to the sequence (crop to the common prefix, feed the rest), so tokens the
    target accepted are never recomputed and rejected ones are dropped.
    """

    def __init__(self, model, vocab_size: int | None = None, name: str = "model"):
        """`model`: a Hugging Face model (wrapped in a CachedLM cut to `vocab_size`), or a ready cached LM
        such as reproduce.fast_target.build_lm's."""
        self.lm = CachedLM(model, vocab_size) if isinstance(model, torch.nn.Module) else model
        self.name = name

    def reset(self) -> None:
        self.lm.reset()

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
            if i + 1 < k:
                logits = self.lm.forward([token])[-1]
        return tokens, torch.stack(probs)  # [k], [k, V]


class NgramDrafter:
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

    def reset(self) -> None:
        pass  # stateless: the sequence itself is the draft model

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
