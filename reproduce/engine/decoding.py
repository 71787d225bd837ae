"""Autoregressive (ArS) and speculative (SpS) decoding loops over a KV-cached causal LM, producing a trace.

The cache invariant used by both loops: the target's cache holds every token of the sequence but the last one,
so each target call feeds [last token, *drafted tokens] and gets back K+1 distributions (one per drafted token
plus the bonus position). After verification the cache is cropped to the accepted prefix: nothing that was
accepted is ever recomputed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from reproduce.engine.lm import CachedLM
from reproduce.engine.sampling import SamplingParams, logits_to_probs, sample, verify
from reproduce.errors import ReproduceError


@dataclass
class Step:
    """One target call: what the drafter proposed, how many the rule accepted, and the times spent."""

    proposed: list[int]
    num_accepted: int
    emitted: list[int]  # tokens this step appended to the output (after cutting at EOS)
    draft_ms: float
    target_ms: float
    # sum_x min(target(x), draft(x)) at each drafted position: the expected acceptance probability there, whose
    # mean is the paper's alpha (Leviathan et al. Definition 3.1)
    overlap: list[float] = field(default_factory=list)


@dataclass
class Trace:
    """Everything one decode did. Statistics are derived from the raw steps, not kept alongside them."""

    method: str  # "ArS" or "SpS"
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    prefill_ms: float = 0.0  # the target's prefill, a target call outside the steps (see `prefill`)
    draft_prefill_ms: float = 0.0  # the draft's own prefill, charged to SpS (see `Drafter.prefill`)
    decode_ms: float = 0.0  # the decode loop alone: every step after the prefills
    prefill_inside_decode: bool = False  # Hugging Face generate(): one timing, its own prefill included
    stop_reason: str = "max_new_tokens"

    @property
    def wall_ms(self) -> float:
        """End to end: the prefills plus the decode loop."""
        return self.prefill_ms + self.draft_prefill_ms + self.decode_ms

    @property
    def target_calls(self) -> int:
        return len(self.steps)

    @property
    def proposed(self) -> int:
        return sum(len(s.proposed) for s in self.steps)

    @property
    def accepted(self) -> int:
        return sum(s.num_accepted for s in self.steps)

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafted tokens / proposed drafted tokens (NaN when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else float("nan")

    @property
    def ms_per_token(self) -> float:
        """End to end, prefills included."""
        return self.wall_ms / max(len(self.tokens), 1)

    @property
    def decode_ms_per_token(self) -> float:
        """The decode loop's time per token: the paper's "mean sampling time per token"."""
        return self.decode_ms / max(len(self.tokens), 1)

    @property
    def alpha(self) -> float:
        """Mean expected acceptance over drafted positions, sum_x min(target, draft) (NaN when none)."""
        overlaps = [o for s in self.steps for o in s.overlap]
        return sum(overlaps) / len(overlaps) if overlaps else float("nan")

    @property
    def tokens_per_target_call(self) -> float:
        return len(self.tokens) / max(self.target_calls, 1)

    @property
    def draft_ms(self) -> float:
        return sum(s.draft_ms for s in self.steps)

    @property
    def target_ms(self) -> float:
        """The target's calls inside the decode loop."""
        return sum(s.target_ms for s in self.steps)

    @property
    def overhead_share(self) -> float:
        """Share of the decode loop spent outside draft and target forward calls (sampling, verification, Python)."""
        return (self.decode_ms - self.draft_ms - self.target_ms) / self.decode_ms if self.decode_ms else float("nan")

    def summary(self) -> dict:
        return {
            "method": self.method,
            "num_tokens": len(self.tokens),
            "stop_reason": self.stop_reason,
            "wall_ms": self.wall_ms,
            "ms_per_token": self.ms_per_token,
            "decode_ms": self.decode_ms,
            "decode_ms_per_token": self.decode_ms_per_token,
            "target_calls": self.target_calls,
            "proposed": self.proposed,
            "accepted": self.accepted,
            "acceptance_rate": self.acceptance_rate,
            "alpha": self.alpha,
            "tokens_per_target_call": self.tokens_per_target_call,
            "draft_ms": self.draft_ms,
            "target_ms": self.target_ms,
            "prefill_ms": self.prefill_ms,
            "draft_prefill_ms": self.draft_prefill_ms,
            "prefill_inside_decode": self.prefill_inside_decode,
            "overhead_share": self.overhead_share,
            "accepted_per_step": [s.num_accepted for s in self.steps],
        }


def _check_inputs(prompt_ids: list[int], max_new_tokens: int, vocab_size: int) -> None:
    if not prompt_ids:
        raise ReproduceError("the prompt is empty: give at least one token (a non-empty --prompt)")
    if max_new_tokens < 1:
        raise ReproduceError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if max(prompt_ids) >= vocab_size or min(prompt_ids) < 0:
        raise ReproduceError(f"prompt token ids must lie in [0, {vocab_size}): was it tokenized for another model?")


def prefill(lm, prompt_ids: list[int]) -> float:
    """Fill `lm`'s cache with every prompt token but the last (the cache invariant above); returns its ms.

    A caller decoding one prompt with several methods prefills once and passes `prefilled=True` to each loop:
    the loops only append past the prompt, so rolling back to the prompt restores bitwise this cache."""
    lm.reset()
    if len(prompt_ids) < 2:
        return 0.0
    start = time.perf_counter()
    lm.forward(prompt_ids[:-1], last_only=True)
    return (time.perf_counter() - start) * 1e3


def _start(target, prompt_ids: list[int], trace: Trace, prefilled: bool) -> None:
    """Bring the target's cache to the prompt: prefill it (timed into the trace), or reuse the caller's prefill."""
    if prefilled:
        target.rewind_to_prompt(prompt_ids)
    else:
        trace.prefill_ms = prefill(target, prompt_ids)


def _cut_at_eos(tokens: list[int], eos_token_id: int | None) -> list[int]:
    """Keep tokens up to and including the first EOS: ArS would have stopped there."""
    if eos_token_id is not None and eos_token_id in tokens:
        return tokens[: tokens.index(eos_token_id) + 1]
    return tokens


def _append_step(trace: Trace, step: Step, eos_token_id: int | None) -> bool:
    """Record a step and its tokens. Returns True when the output ended with EOS."""
    trace.steps.append(step)
    trace.tokens.extend(step.emitted)
    if eos_token_id is not None and step.emitted[-1] == eos_token_id:
        trace.stop_reason = "eos"
        return True
    return False


@torch.inference_mode()
def autoregressive_decode(
    target: CachedLM,
    prompt_ids: list[int],
    max_new_tokens: int,
    params: SamplingParams,
    generator: torch.Generator,
    eos_token_id: int | None = None,
    prefilled: bool = False,
) -> Trace:
    """The baseline: one target call per token. `prefilled`: the target's cache already holds the prompt
    (`prefill`), so the trace times the decode loop only."""
    _check_inputs(prompt_ids, max_new_tokens, target.vocab_size)
    trace = Trace("ArS", list(prompt_ids))
    _start(target, prompt_ids, trace, prefilled)
    start = time.perf_counter()
    sequence = list(prompt_ids)
    while len(trace.tokens) < max_new_tokens:
        t0 = time.perf_counter()
        logits = target.forward(sequence[-1:])[-1]  # [V]
        t1 = time.perf_counter()
        token = sample(logits_to_probs(logits, params), generator)
        sequence.append(token)
        if _append_step(trace, Step([], 0, [token], 0.0, (t1 - t0) * 1e3), eos_token_id):
            break
    trace.decode_ms = (time.perf_counter() - start) * 1e3
    return trace


@torch.inference_mode()
def speculative_decode(
    target: CachedLM,
    drafter,
    prompt_ids: list[int],
    k: int,
    max_new_tokens: int,
    params: SamplingParams,
    generator: torch.Generator,
    eos_token_id: int | None = None,
    rule=verify,
    prefilled: bool = False,
) -> Trace:
    """Speculative sampling (Chen et al. 2023 Algorithm 2) with K drafted tokens per target call.

    Near the end K is cut to the tokens left minus the one the target always adds; the rule is lossless for
    any K per step, so this changes speed, not the distribution. `rule` is the verification function; the
    tests pass deliberately wrong rules through it to show the statistical checks can fail. `prefilled`: the
    target's cache already holds the prompt and the drafter's holds what its `prefill` put there, so the trace
    times the decode loop only; otherwise both prefills run here, timed apart from the loop.
    """
    if not (isinstance(k, int) and k >= 1):
        raise ReproduceError(f"K (tokens drafted per target call) must be an integer >= 1, got {k!r}")
    _check_inputs(prompt_ids, max_new_tokens, target.vocab_size)
    trace = Trace("SpS", list(prompt_ids))
    _start(target, prompt_ids, trace, prefilled)
    if not prefilled:
        trace.draft_prefill_ms = drafter.prefill(prompt_ids, target)
    start = time.perf_counter()
    drafter.start(prompt_ids, target)  # the target drafting for itself copies the target's prefilled cache here
    sequence = list(prompt_ids)
    while len(trace.tokens) < max_new_tokens:
        k_step = min(k, max_new_tokens - len(trace.tokens) - 1)
        t0 = time.perf_counter()
        draft_tokens, draft_probs = drafter.propose(sequence, k_step, params, generator)  # [k'], [k', V]
        t1 = time.perf_counter()
        target_logits = target.forward(sequence[-1:] + draft_tokens)  # [k'+1, V]
        t2 = time.perf_counter()
        target_probs = logits_to_probs(target_logits, params)  # [k'+1, V]
        overlap = torch.minimum(target_probs[:-1], draft_probs).sum(-1).tolist() if draft_tokens else []
        num_accepted, next_token = rule(
            torch.tensor(draft_tokens, dtype=torch.long), draft_probs, target_probs, generator
        )
        new_tokens = _cut_at_eos(draft_tokens[:num_accepted] + [next_token], eos_token_id)
        target.rollback(len(sequence) + len(new_tokens) - 1)  # keep [.., last token, accepted drafts]
        sequence.extend(new_tokens)
        # alpha counts positions up to the first rejection: later ones sit on a prefix the target refused
        step = Step(list(draft_tokens), num_accepted, new_tokens, (t1 - t0) * 1e3, (t2 - t1) * 1e3,
                    overlap[: num_accepted + 1])
        if _append_step(trace, step, eos_token_id):
            break
    trace.decode_ms = (time.perf_counter() - start) * 1e3
    return trace
