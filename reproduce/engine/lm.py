"""The cached-LM interface the decoding loops call, and the Hugging Face runtime behind it.

Every cached LM (CachedLM here, the fast CPU runtime in fast_lm.py, the restricted-head draft in distilled.py) has
`reset()`, `forward(token_ids, last_only)`, `rollback(length)`, `next_logits(sequence)`, `cache_tokens` and
`vocab_size`. reproduce.engine.runtime.build_lm picks one by runtime name.
"""

from __future__ import annotations

import copy

import torch

from reproduce.errors import ReproduceError


class CacheSync:
    """What every cached LM shares (CachedLM here, FastLlamaLM in fast_lm.py): given `cache_tokens`,
    `rollback(length)` and `forward(token_ids, last_only)`, get the next-token logits after any sequence."""

    cache_tokens: list[int]

    def rewind_to_prompt(self, prompt_ids: list[int]) -> None:
        """Roll back to every prompt token but the last, which a caller's prefill (decoding.prefill) put there:
        the loops and the scorer only append past the prompt, so this restores bitwise that cache."""
        if self.cache_tokens[: len(prompt_ids) - 1] != prompt_ids[:-1]:
            raise ReproduceError("prefilled=True, but the cache does not hold this prompt: call prefill() first")
        self.rollback(len(prompt_ids) - 1)

    def sync_to(self, sequence: list[int]) -> list[int]:
        """Roll the cache back to its longest common prefix with `sequence` and feed all but what is left of the
        last token(s): returns the tokens (at least one) whose forward gives the logits after `sequence`."""
        keep = 0
        limit = min(len(self.cache_tokens), len(sequence) - 1)  # feed at least one token to get logits
        while keep < limit and self.cache_tokens[keep] == sequence[keep]:
            keep += 1
        self.rollback(keep)
        pending = sequence[keep:]
        if len(pending) > 2:
            # A prefill: split it as the target's loops do (all but the last token, then the last one), so a
            # model drafting for itself builds bitwise the target's cache even where a long multi-row call
            # rounds differently from short ones (FastLlamaLM in bf16).
            self.forward(pending[:-1], last_only=True)
            pending = pending[-1:]
        return pending

    def next_logits(self, sequence: list[int]) -> torch.Tensor:
        """Logits [vocab_size] for the token after `sequence`, reusing the cached common prefix."""
        return self.forward(self.sync_to(sequence), last_only=True)[-1]

    def fresh(self):
        """Another LM over the same weights with an empty cache of its own (for draft-only decoding, or the target
        drafting for itself): no second copy of the weights, which for a 1.5B target is 3.5 GB."""
        clone = copy.copy(self)
        clone.new_cache()
        return clone


class CachedLM(CacheSync):
    """A Hugging Face causal LM, its KV cache, and the token ids that cache holds.

    `vocab_size` cuts the logits to the vocabulary shared with the other model (e.g. gpt2's 50257 rows of
    gpt-j's 50400, whose extra rows are padding); the same cut is applied to the ArS baseline.
    """

    def __init__(self, model, vocab_size: int | None = None):
        self.model = model
        self.vocab_size = vocab_size or model.config.vocab_size
        self.device = next(model.parameters()).device
        self.cache = None
        self.cache_tokens: list[int] = []

    def new_cache(self) -> None:
        self.cache, self.cache_tokens = None, []

    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        self.cache_tokens = []

    def forward(self, token_ids: list[int], last_only: bool = False) -> torch.Tensor:
        """Append `token_ids` to the cache; return float32 logits [n, vocab_size] (or [1, vocab_size])."""
        input_ids = torch.tensor([token_ids], device=self.device)
        out = self.model(
            input_ids=input_ids, cache=self.cache, use_cache=True, logits_to_keep=1 if last_only else 0
        )
        self.cache_tokens.extend(token_ids)
        return out.logits[0, :, : self.vocab_size].float()

    def rollback(self, length: int) -> None:
        """Crop the cache to its first `length` tokens (rejected drafts leave the cache this way)."""
        surplus = len(self.cache_tokens) - length
        if surplus > 0:
            self.cache.crop(-surplus)  # transformers 5.x: a negative count of tokens to drop
            del self.cache_tokens[length:]
