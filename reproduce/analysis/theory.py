"""What speculative decoding should gain, from the acceptance rate and the costs (Leviathan et al. 2023, §3).

Model: each drafted token is accepted independently with probability alpha (Leviathan's assumption; alpha is
E[beta], the expected per-token acceptance). One loop drafts k tokens and makes one target call that scores
k+1 positions. Costs are relative to one target call scoring one token:
  c      = cost of one draft call / cost of one single-token target call
  t(n)   = cost of one target call scoring n tokens; flat (t(n) = t(1)) in the paper, rising on CPUs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from reproduce.errors import ReproduceError

CostCurve = Mapping[int, float] | Callable[[int], float]  # n tokens scored -> cost of that target call (any unit)


def _check(alpha: float, k: int) -> None:
    if not 0 <= alpha <= 1:
        raise ReproduceError(f"acceptance rate alpha must lie in [0, 1], got {alpha}")
    if not (isinstance(k, int) and k >= 0):
        raise ReproduceError(f"k (drafted tokens per loop) must be an integer >= 0, got {k!r}")


def leviathan_expected_tokens(alpha: float, k: int) -> float:
    """Expected tokens emitted per target call (Leviathan et al. 2023, eq. 1):
    E = 1 + alpha + ... + alpha^k = (1 - alpha^(k+1)) / (1 - alpha), and k + 1 when alpha = 1."""
    _check(alpha, k)
    if alpha == 1:
        return float(k + 1)
    return (1 - alpha ** (k + 1)) / (1 - alpha)


def relative_verify_cost(curve: CostCurve | None, n: int) -> float:
    """t(n) / t(1): the cost of scoring n tokens in one target call, in single-token calls (1 when flat)."""
    if curve is None:
        return 1.0
    if callable(curve):
        return curve(n) / curve(1)
    missing = [m for m in (1, n) if m not in curve]
    if missing:
        raise ReproduceError(f"the verification cost curve has no entry for n={missing[0]}: measure it")
    return curve[n] / curve[1]


def predicted_speedup(
    alpha: float, k: int, draft_cost_ratio: float, verify_cost_curve: CostCurve | None = None
) -> float:
    """Expected speedup over autoregressive decoding = expected tokens per loop / cost of a loop:

        S = [(1 - alpha^(k+1)) / (1 - alpha)] / (k c + t(k+1)/t(1))

    With a flat curve this is Leviathan et al. 2023, Theorem 3.8: (1 - alpha^(k+1)) / ((1 - alpha)(k c + 1)).
    k = 0 is plain decoding: S = 1.
    """
    if draft_cost_ratio < 0:
        raise ReproduceError(f"draft cost ratio c must be >= 0, got {draft_cost_ratio}")
    loop_cost = k * draft_cost_ratio + relative_verify_cost(verify_cost_curve, k + 1)
    return leviathan_expected_tokens(alpha, k) / loop_cost


def optimal_k(
    alpha: float, draft_cost_ratio: float, verify_cost_curve: CostCurve | None = None, k_max: int = 10
) -> tuple[int, float]:
    """The k in 0..k_max with the highest predicted speedup, and that speedup (the smallest k on ties).
    k = 0 (speedup 1) means speculation does not pay at this alpha and these costs.
    A measured curve must cover n = 1..k_max+1."""
    speedups = [predicted_speedup(alpha, k, draft_cost_ratio, verify_cost_curve) for k in range(k_max + 1)]
    best = max(range(k_max + 1), key=lambda k: (speedups[k], -k))
    return best, speedups[best]


def best_mode_and_k(
    alpha: float, draft_ms: float, curves_ms: Mapping[str, Mapping[int, float]], k_max: int = 8
) -> tuple[str, int, float]:
    """The target mode and k (0..k_max) with the least expected time per emitted token, and that time in ms:

        ms(mode, k) = (k * draft_ms + t_mode(k+1)) / E(alpha, k)

    `curves_ms`: per candidate mode (batch-invariant ones only: the caller's filter), t(n) in ms for n = 1..k_max+1,
    e.g. the probe's. k = 0 is that mode's plain decoding, so the answer is never slower than the fastest ArS.
    Unlike a flatness bound, this trades a mode's single-token speed against its verification cost."""
    if draft_ms < 0:
        raise ReproduceError(f"draft cost must be >= 0 ms, got {draft_ms}")
    options = []
    for mode, curve in curves_ms.items():
        for k in range(k_max + 1):
            if k + 1 not in curve:
                break
            options.append(((k * draft_ms + curve[k + 1]) / leviathan_expected_tokens(alpha, k), k, mode))
    if not options:
        raise ReproduceError("no verification cost curve to choose from: probe the target's modes first")
    ms, k, mode = min(options)
    return mode, k, ms
