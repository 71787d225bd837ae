"""Statistics over paired per-prompt measurements, as pure functions: arrays in, (point, interval) out.

In the spirit of rliable: the random state is always passed in (a numpy Generator), nothing is global.
Intervals are percentile bootstraps over prompts (scipy.stats.bootstrap); tests come from scipy.stats.
Speedups are computed from per-prompt ms per token: speedup_i = ArS_ms_i / SpS_ms_i (> 1: SpS is faster).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats

from reproduce.errors import ReproduceError


def _paired_positive(ars_ms: Sequence[float], sps_ms: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    ars, sps = np.asarray(ars_ms, dtype=float), np.asarray(sps_ms, dtype=float)
    if ars.shape != sps.shape or ars.ndim != 1 or ars.size < 2:
        raise ReproduceError(f"need two paired 1-D arrays of >= 2 prompts, got shapes {ars.shape} and {sps.shape}")
    if not (np.all(ars > 0) and np.all(sps > 0)):
        raise ReproduceError("ms per token must be positive for every prompt")
    return ars, sps


def _percentile_bootstrap(data: tuple, statistic, rng: np.random.Generator, n_boot: int, level: float,
                          paired: bool = False) -> tuple[float, float]:
    result = stats.bootstrap(data, statistic, n_resamples=n_boot, confidence_level=level, method="percentile",
                             paired=paired, vectorized=True, rng=rng)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean_ratio(a, b, axis=-1):
    return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def _mean_difference(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def speedup_ci(ars_ms: Sequence[float], sps_ms: Sequence[float], rng: np.random.Generator,
               n_boot: int = 10000, level: float = 0.95) -> dict:
    """Speedup of SpS over ArS from paired per-prompt latencies.

    point    = exp(mean_i log(ars_i / sps_i)): the geometric mean of per-prompt speedups
    ci       = exp of the percentile-bootstrap interval of that mean log-ratio, resampling prompts
    ratio_of_means = mean(ars) / mean(sps) (long prompts weigh more), with its paired bootstrap interval
    """
    ars, sps = _paired_positive(ars_ms, sps_ms)
    log_ratios = np.log(ars / sps)
    low, high = _percentile_bootstrap((log_ratios,), np.mean, rng, n_boot, level)
    rom_low, rom_high = _percentile_bootstrap((ars, sps), _mean_ratio, rng, n_boot, level, paired=True)
    return {
        "point": float(np.exp(log_ratios.mean())),
        "ci": (float(np.exp(low)), float(np.exp(high))),
        "ratio_of_means": float(ars.mean() / sps.mean()),
        "ratio_of_means_ci": (rom_low, rom_high),
        "level": level,
        "n": int(ars.size),
    }


def mean_ci(values: Sequence[float], rng: np.random.Generator, n_boot: int = 5000, level: float = 0.95) -> dict:
    """Mean over prompts with a percentile-bootstrap interval; NaNs (metric not defined for a row) dropped.
    A constant sample has a degenerate interval at its value; an empty one gives mean None."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"mean": None, "ci": None, "n": 0}
    mean = float(values.mean())
    if values.size < 2 or _is_constant(values):
        return {"mean": mean, "ci": (mean, mean), "n": int(values.size)}
    return {"mean": mean, "ci": _percentile_bootstrap((values,), np.mean, rng, n_boot, level), "n": int(values.size)}


def wilcoxon_speedup(ars_ms: Sequence[float], sps_ms: Sequence[float]) -> dict:
    """Wilcoxon signed-rank test on the paired log-ratios log(ars_i / sps_i), one-sided.
    H0: the log-ratios are symmetric about 0 (no speedup); H1: shifted above 0 (SpS faster).
    statistic is W+, the sum of the ranks of |log-ratio| over the positive log-ratios."""
    ars, sps = _paired_positive(ars_ms, sps_ms)
    result = stats.wilcoxon(np.log(ars / sps), alternative="greater")
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue), "n": int(ars.size)}


def tost_equivalence(a: Sequence[float], b: Sequence[float], margin: float, paired: bool = True,
                     alpha: float = 0.05, rng: np.random.Generator | None = None, n_boot: int = 10000) -> dict:
    """Two one-sided tests (Schuirmann 1987) that the mean difference d = mean(a - b) lies within ±margin.

    H0: d <= -margin or d >= +margin. Reject both one-sided nulls (t-tests; paired, or Welch when unpaired)
    and conclude equivalence when p = max(p_lower, p_upper) < alpha; equivalently, the (1 - 2 alpha) t interval
    of d (90% at alpha 0.05) lies inside (-margin, margin). With `rng`, also a 95% percentile-bootstrap
    interval of d. When every difference is the same (e.g. identical greedy outputs) d is known exactly:
    p is 0 inside the margin and 1 outside.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not margin > 0:
        raise ReproduceError(f"the equivalence margin must be > 0, got {margin}")
    if a.size < 2 or b.size < 2 or (paired and a.shape != b.shape):
        raise ReproduceError(f"TOST needs >= 2 values per group (paired: equal lengths), got {a.size} and {b.size}")
    diff = a - b if paired else None
    estimate = float(diff.mean() if paired else a.mean() - b.mean())
    constant = _is_constant(diff) if paired else (_is_constant(a) and _is_constant(b))
    if constant:
        p_value, ci = (0.0 if abs(estimate) < margin else 1.0), (estimate, estimate)
    elif paired:
        p_lower = stats.ttest_1samp(diff, -margin, alternative="greater").pvalue
        p_upper = stats.ttest_1samp(diff, margin, alternative="less").pvalue
        p_value = float(max(p_lower, p_upper))
        ci = tuple(float(x) for x in stats.ttest_1samp(diff, 0).confidence_interval(1 - 2 * alpha))
    else:
        p_lower = stats.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue
        p_upper = stats.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue
        p_value = float(max(p_lower, p_upper))
        ci = tuple(float(x) for x in stats.ttest_ind(a, b, equal_var=False).confidence_interval(1 - 2 * alpha))
    bootstrap_ci = None
    if rng is not None:
        data = (diff,) if paired else (a, b)
        bootstrap_ci = _percentile_bootstrap(data, np.mean if paired else _mean_difference, rng, n_boot, 0.95)
    return {
        "diff": estimate,
        "ci": ci,
        "ci_level": 1 - 2 * alpha,
        "p_value": p_value,
        "equivalent": p_value < alpha,
        "margin": margin,
        "bootstrap_ci_95": bootstrap_ci,
    }


def _is_constant(values: np.ndarray) -> bool:
    """Equal up to float rounding (0.4 - 0.3 and 0.6 - 0.5 differ in the last bit): a t-test is undefined."""
    return bool(np.ptp(values) <= 1e-12 * max(1.0, float(np.abs(values).max())))


def two_sample_distribution_test(samples_a: Sequence, samples_b: Sequence, min_expected: float = 5.0) -> dict:
    """Were two samples of categories (e.g. one first token per sequence) drawn from the same distribution?

    Chi-square test of homogeneity on the 2 x C contingency table (chi2_contingency). Categories whose expected
    count in the smaller sample is below `min_expected` are pooled into one column (the chi-square approximation
    needs expected counts >= ~5); if that pool is still too small it joins the least frequent common category.
    The test assumes independent draws: give it one value per sequence, never the tokens of a sequence.
    """
    if len(samples_a) == 0 or len(samples_b) == 0:
        raise ReproduceError("distribution test needs at least one value in each sample")
    table, categories = _pooled_table(Counter(samples_a), Counter(samples_b), min_expected)
    if table.shape[1] < 2:  # everything fell into one category: nothing distinguishes the samples
        return {"test": "chi2_contingency", "statistic": 0.0, "p_value": 1.0, "dof": 0, "categories": categories}
    result = stats.chi2_contingency(table)
    return {"test": "chi2_contingency", "statistic": float(result.statistic), "p_value": float(result.pvalue),
            "dof": int(result.dof), "categories": categories}


def paired_symmetry_test(values_a: Sequence[float], values_b: Sequence[float]) -> dict:
    """Were paired values (a_i, b_i) drawn from the same distribution, pair by pair? (e.g. a statistic of the SpS
    and of the ArS sequence generated for prompt i)

    If a_i and b_i are independent draws from one distribution (which may differ from pair to pair), the pair is
    exchangeable and d_i = a_i - b_i is symmetric about 0: two-sided Wilcoxon signed-rank test on the d_i. Zero
    differences are dropped (zero_method="wilcox"; equal lengths at the token cap are common); with no nonzero
    difference nothing distinguishes the samples and p = 1. statistic is min(W+, W-).
    """
    a, b = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ReproduceError(f"need two paired 1-D arrays of >= 1 value, got shapes {a.shape} and {b.shape}")
    nonzero = int(np.count_nonzero(a - b))
    if nonzero == 0:
        return {"test": "wilcoxon", "statistic": 0.0, "p_value": 1.0, "n": int(a.size), "nonzero": 0}
    result = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    return {"test": "wilcoxon", "statistic": float(result.statistic), "p_value": float(result.pvalue),
            "n": int(a.size), "nonzero": nonzero}


def _pooled_table(counts_a: Counter, counts_b: Counter, min_expected: float) -> tuple[np.ndarray, list]:
    """2 x C table of counts; rare categories pooled into a final "(pooled)" column as described above."""
    n_a, n_b = sum(counts_a.values()), sum(counts_b.values())
    smaller_share = min(n_a, n_b) / (n_a + n_b)  # expected count in the smaller row = column total * share
    categories = sorted(set(counts_a) | set(counts_b), key=repr)  # deterministic column order
    common = [c for c in categories if (counts_a[c] + counts_b[c]) * smaller_share >= min_expected]
    rare = [c for c in categories if c not in common]
    columns = [[counts_a[c], counts_b[c]] for c in common]
    labels = list(common)
    if rare:
        pooled = [sum(counts_a[c] for c in rare), sum(counts_b[c] for c in rare)]
        if sum(pooled) * smaller_share < min_expected and columns:
            smallest = min(range(len(columns)), key=lambda i: sum(columns[i]))
            columns[smallest] = [columns[smallest][0] + pooled[0], columns[smallest][1] + pooled[1]]
            labels[smallest] = f"{labels[smallest]!r}+(pooled)"
        else:
            columns.append(pooled)
            labels.append("(pooled)")
    return np.array(columns, dtype=float).T, labels
