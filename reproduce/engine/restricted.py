"""A draft LM whose head holds only some tokens' rows (a restricted vocabulary).

A 0.5B draft's head has 151,936 rows, 38% of its bytes in int4, and sampling over all of them costs ~10 ms a
token under nucleus shaping (a sort of the whole row). RestrictedFastLM keeps the rows of `kept` tokens (chosen from
data: reproduce.runs.vocabulary) in one GEMM weight, plus a small second head for each prompt's own tokens outside
them (so copied names and numbers stay proposable), and returns logits over those tokens only (`forward_kept`).
`forward` gives full-vocabulary logits, -inf outside the head, for callers that want them (draft-only decoding).

Which tokens a draft can propose changes acceptance, never what SpS emits: the rule is exact for any draft
distribution, zero on some tokens included (tests/test_losslessness.py).
"""

from __future__ import annotations

import torch

from reproduce.engine.fast_lm import FastLlamaLM
from reproduce.engine.linear import make_linear


class RestrictedFastLM(FastLlamaLM):
    """FastLlamaLM with a head over `kept` tokens (+ a prompt's own) and -inf logits for every other token."""

    def restrict(self, kept: torch.Tensor, full_head: torch.Tensor, vocab_size: int,
                 head_mode: str | None = None) -> "RestrictedFastLM":
        """Keep `full_head`'s rows of `kept` (sorted ids) in `head_mode` (default: the body's mode, int4 included:
        the head is now a small share of the bytes; a w3a8 body keeps a w4a8 head, the grid benchmarks/draft_bits.py
        measured its 3 bits beside). `full_head` [vocab, hidden] stays referenced, not copied, for the prompt rows."""
        self.base_kept, self.full_head, self.full_vocab_size = kept, full_head, vocab_size
        self.head_mode = head_mode or ("w4a8" if self.linear_mode == "w3a8" else self.linear_mode)
        self.head = make_linear(full_head[kept], self.head_mode)
        self.extra_head, self.kept = None, kept
        return self

    def set_extra_tokens(self, token_ids: list[int]) -> None:
        """Add the rows of `token_ids` outside the kept vocabulary (a new prompt's), in int8: a few hundred rows,
        quantized per prompt in milliseconds, replacing the previous prompt's."""
        tokens = torch.tensor(sorted(set(token_ids)), dtype=torch.long)
        extra = tokens[~torch.isin(tokens, self.base_kept) & (tokens < self.full_vocab_size)]
        self.extra_head = make_linear(self.full_head[extra], "int8") if len(extra) else None
        self.kept = torch.cat([self.base_kept, extra]) if len(extra) else self.base_kept

    @torch.inference_mode()
    def forward_kept(self, token_ids: list[int], last_only: bool = False) -> torch.Tensor:
        """Append `token_ids` to the cache; logits [n, len(self.kept)] over the head's tokens, in `kept` order."""
        x = self.hidden_states(token_ids, last_only)
        logits = self.head(x)
        return logits if self.extra_head is None else torch.cat([logits, self.extra_head(x)], dim=-1)

    def forward(self, token_ids: list[int], last_only: bool = False) -> torch.Tensor:
        kept_logits = self.forward_kept(token_ids, last_only)
        logits = torch.full((kept_logits.shape[0], self.full_vocab_size), float("-inf"))
        logits[:, self.kept] = kept_logits
        return logits

    def next_kept_logits(self, sequence: list[int]) -> torch.Tensor:
        """Kept-token logits [len(self.kept)] after `sequence`, reusing the cached prefix (CacheSync.next_logits)."""
        return self.forward_kept(self.sync_to(sequence), last_only=True)[-1]


def restricted_lm(model, vocab_size: int, kept: torch.Tensor, linear_mode: str, max_len: int = 1280,
                  head_mode: str | None = None) -> RestrictedFastLM:
    """A Hugging Face Llama/Qwen2 model as a RestrictedFastLM; the full head stays the model's own tensor."""
    lm = RestrictedFastLM.from_hf(model, vocab_size, max_len, linear_mode, head=False)
    return lm.restrict(kept, model.lm_head.weight.detach()[:vocab_size], vocab_size, head_mode)
