"""Paired speed ratios that hold at 4-30 prompts: a t-interval on per-prompt log ratios, the paired t-test on
them, and the ArS-vs-ArS (A/A) check of the decode loop.

For prompt i, r_i = log(slow_i / fast_i) with slow and fast in ms per token (ArS over the method: > 0 when the
method is faster). point = exp(mean r), interval = exp(mean r ± t_{n-1, 0.975} sd(r) / sqrt(n)): a geometric
mean of per-prompt speedups with a Student t interval, paired by prompt. A percentile bootstrap over 4-5
prompts has only 35-126 distinct resamples and comes out too narrow; the t interval widens with small n as it
should. Its assumption, LOG_RATIO_ASSUMPTION, is copied to summary.json.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from reproduce.analysis import attainable
from reproduce.analysis.stats import _is_constant, _paired_positive

LOG_RATIO_ASSUMPTION = ("prompts are independent, and the per-prompt log ratios log(ArS ms/token / method "
                        "ms/token) are roughly normal (a t interval on their mean, exponentiated)")
# The A/A check holds when ArS over its own repeat reads within this fraction of 1 (issue 22: within 5%)
AA_TOLERANCE = 0.05


def log_ratio_interval(slow_ms: Sequence[float], fast_ms: Sequence[float], level: float = 0.95,
                       bca_rng: np.random.Generator | None = None) -> dict:
    """slow / fast from paired per-prompt ms per token: {"point", "ci", "level", "n", "df", "log_ratio_mean",
    "log_ratio_sd", "interval", "ratio_of_means"} (ratio_of_means = mean(slow) / mean(fast), descriptive, no
    interval). With `bca_rng`, also "bca_ci": a BCa bootstrap of the mean log ratio, exponentiated (a check on the
    normality assumption; the t interval is the one reported). Every ratio equal: the interval is that point."""
    slow, fast = _paired_positive(slow_ms, fast_ms)
    logs = np.log(slow / fast)
    mean = float(logs.mean())
    if _is_constant(logs):
        low = high = mean
    else:
        low, high = stats.ttest_1samp(logs, 0.0).confidence_interval(level)
    out = {"point": float(np.exp(mean)), "ci": (float(np.exp(low)), float(np.exp(high))), "level": level,
           "n": int(logs.size), "df": int(logs.size - 1), "log_ratio_mean": mean,
           "log_ratio_sd": float(logs.std(ddof=1)), "interval": "t on per-prompt log ratios",
           "ratio_of_means": float(slow.mean() / fast.mean())}
    if bca_rng is not None and not _is_constant(logs):
        bca = stats.bootstrap((logs,), np.mean, confidence_level=level, method="BCa", rng=bca_rng).confidence_interval
        out["bca_ci"] = (float(np.exp(bca.low)), float(np.exp(bca.high)))
    return out


def log_ratio_ttest(slow_ms: Sequence[float], fast_ms: Sequence[float]) -> dict:
    """The paired t-test of the same log ratios against 0 (two-sided: same speed), the speed test offered as
    evidence. Assumes LOG_RATIO_ASSUMPTION. Every ratio equal: t is undefined, no p."""
    slow, fast = _paired_positive(slow_ms, fast_ms)
    logs = np.log(slow / fast)
    what = f"a paired t-test of {logs.size} log ratios"
    if _is_constant(logs):
        return {"test": "paired t-test on log ratios (two-sided)", "statistic": None, "p_value": None,
                "df": int(logs.size - 1), "n": int(logs.size), "min_p": None, "usable": False,
                "reason": f"{what} is undefined: every prompt has the same ratio"}
    result = stats.ttest_1samp(logs, 0.0)
    return {"test": "paired t-test on log ratios (two-sided)", "statistic": float(result.statistic),
            "p_value": float(result.pvalue), "df": int(result.df), "n": int(logs.size),
            **attainable.usability(attainable.t_test_min_p(logs.size), what)}


def aa_check(ars_ms: Sequence[float], repeat_ms: Sequence[float], tolerance: float = AA_TOLERANCE) -> dict:
    """ArS against ArS run again on the same prompts (ars_repeat): ArS ms/token over the repeat's, with its t
    interval. The machine held still when the point lies within `tolerance` of 1 (`within_tolerance`); otherwise
    `drift` (point - 1, e.g. -0.08: the repeat ran 8% slower) is by how much it moved between the two runs, and
    every speedup of that setting carries that much doubt."""
    ratio = log_ratio_interval(ars_ms, repeat_ms)
    return {"ratio": ratio, "tolerance": tolerance, "drift": ratio["point"] - 1.0,
            "within_tolerance": bool(abs(ratio["point"] - 1.0) <= tolerance),
            "ci_within_tolerance": bool(1 - tolerance <= ratio["ci"][0] and ratio["ci"][1] <= 1 + tolerance)}
