"""The sampling rule, as pure functions over probability tensors.

Nothing here knows about models or caches. Names follow the conventions file: the papers disagree on which
of p and q is the target (Leviathan: p = target; Chen: q = target), so we say `target_probs` and `draft_probs`.

Shapes are written `# [K, V]`: K drafted tokens, V vocabulary entries.
"""

from __future__ import annotations

import torch

from reproduce.engine.params import SamplingParams


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, top-k and nucleus shaping, then softmax, row-wise over the last dimension.

    Greedy is the temperature -> 0 limit: a one-hot at the argmax (ties to the lowest index). With one-hot
    target and draft rows, `verify` accepts a drafted token iff it is the target's argmax, and otherwise
    emits the target's argmax, so greedy needs no special case in the rule.
    """
    logits = logits.float()  # [..., V]
    if params.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if params.top_p < 1.0:
        logits = _nucleus_mask(logits, params.top_p)
    return torch.softmax(logits, dim=-1)


def _nucleus_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (Holtzman et al. 2020); the token
    that crosses the threshold is kept, so at least one token always survives."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of strictly more likely tokens
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def sample(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One draw from a single distribution [V] by inverse CDF with a uniform from `generator`.

    Exact (a zero-probability token can never be drawn) and ~3x cheaper than torch.multinomial on a 49k
    vocabulary on this CPU. Works on unnormalised non-negative weights too.
    """
    cdf = torch.cumsum(probs.double(), dim=-1)  # [V]
    u = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1]
    return min(int(torch.searchsorted(cdf, u, right=True)), probs.shape[-1] - 1)


def acceptance_probability(target_prob: torch.Tensor, draft_prob: torch.Tensor) -> torch.Tensor:
    """min(1, target(x) / draft(x)) for drafted tokens x (Chen et al. Algorithm 2; Leviathan et al. Sec. 2.3).

    A drafted token always has draft(x) > 0 because it was drawn from the draft."""
    return torch.clamp(target_prob / draft_prob, max=1.0)


def residual_distribution(target_probs: torch.Tensor, draft_probs: torch.Tensor) -> torch.Tensor:
    """norm(max(0, target - draft)), the distribution to sample from after a rejection (Chen et al. eq. 1).

    A rejection of x implies target(x) < draft(x), so the residual mass is positive in exact arithmetic:
    no clamp to a tiny value (which would drift the distribution). Inputs are normalised in float64 first so
    rounding in the softmax cannot cancel a small but real residual.
    """
    target = target_probs.double() / target_probs.double().sum()  # [V]
    draft = draft_probs.double() / draft_probs.double().sum()  # [V]
    return (target - draft).clamp_min(0.0)


def verify(
    draft_tokens: torch.Tensor,  # [K] long
    draft_probs: torch.Tensor,  # [K, V], row i is the draft distribution draft_tokens[i] was drawn from
    target_probs: torch.Tensor,  # [K+1, V], row i is the target distribution at the position of draft_tokens[i]; row K is for the bonus token
    generator: torch.Generator,
) -> tuple[int, int]:
    """Modified rejection sampling, Chen et al. 2023 Algorithm 2.

    For i = 1..K accept x_i with probability min(1, target(x_i)/draft(x_i)); at the first rejection emit a draw
    from norm(max(0, target - draft)) at that position; if all K are accepted emit a bonus draw from
    target_probs[K]. Returns (number of drafted tokens accepted, the token the target adds), so every call
    emits num_accepted + 1 tokens whose joint distribution is the target's.
    """
    k = draft_tokens.shape[0]
    if k:
        rows = torch.arange(k)
        target_at_drafted = target_probs[rows, draft_tokens].double() / target_probs[:k].double().sum(-1)  # [K]
        draft_at_drafted = draft_probs[rows, draft_tokens].double() / draft_probs.double().sum(-1)  # [K]
        accept_prob = acceptance_probability(target_at_drafted, draft_at_drafted)  # [K]
        uniforms = torch.rand(k, generator=generator, dtype=torch.float64)  # [K]
        rejected = (uniforms >= accept_prob).nonzero()
        if len(rejected):
            n = int(rejected[0, 0])
            residual = residual_distribution(target_probs[n], draft_probs[n])
            if not residual.sum() > 0:
                # Reachable only when target and draft agree to float64 rounding, so the rejection itself had
                # probability ~1e-15; the residual is then pure rounding noise and we fall back to the target.
                residual = target_probs[n]
            return n, sample(residual, generator)
    return k, sample(target_probs[k], generator)
