"""Statistics over paired per-prompt measurements, as pure functions: arrays in, (point, interval) out.

In the spirit of rliable: the random state is always passed in (a numpy Generator), nothing is global.
Intervals here are percentile bootstraps over prompts (scipy.stats.bootstrap), kept for means of many values
and for legacy speedup fields; the reported speedups use t intervals on log ratios (ratios.py), which hold at
4-30 prompts. Tests come from scipy.stats, each with its smallest attainable p (attainable.py).
Speedups are computed from per-prompt ms per token: speedup_i = ArS_ms_i / SpS_ms_i (> 1: SpS is faster).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats

from reproduce.analysis import attainable
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


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927): the share of n independent trials that
    succeeded. Unlike the bootstrap it stays informative at 0 or n successes (0 of 12: [0, 0.243])."""
    if not (0 <= successes <= n) or n < 1:
        raise ReproduceError(f"a proportion needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 or n successes the bound is exactly 0 or 1 (the formula gives it up to rounding)
    low = 0.0 if successes == 0 else float(max(0.0, centre - half))
    high = 1.0 if successes == n else float(min(1.0, centre + half))
    return low, high


def proportion_ci(values: Sequence[float], clusters: Sequence | None, rng: np.random.Generator,
                  n_boot: int = 5000, level: float = 0.95) -> dict:
    """Share of 0/1 outcomes (NaN dropped) with a 95% interval over the independent units.

    One outcome per cluster (e.g. one sample per problem), or no clusters given: the Wilson interval.
    Several outcomes per cluster (samples of one problem are not independent): the mean over clusters of
    each cluster's share, with a percentile bootstrap over clusters; where every cluster scores 0 (or 1), whose
    bootstrap would be a point, the Wilson interval with the clusters as trials."""
    values = np.asarray(values, dtype=float)
    keep = ~np.isnan(values)
    values = values[keep]
    if values.size == 0:
        return {"mean": None, "ci": None, "n": 0, "successes": 0, "units": 0, "ci_method": None}
    if clusters is None:
        clusters = np.arange(values.size)
    clusters = np.asarray(clusters, dtype=object)[keep]
    labels, inverse = np.unique(clusters.astype(str), return_inverse=True)
    successes = int(values.sum())
    if len(labels) == values.size:
        return {"mean": float(values.mean()), "ci": wilson_ci(successes, values.size, level), "n": int(values.size),
                "successes": successes, "units": int(values.size), "ci_method": "wilson"}
    shares = np.bincount(inverse, weights=values) / np.bincount(inverse)
    if np.all(shares == 0) or np.all(shares == 1):  # a bootstrap of a constant is a point: Wilson over clusters
        ci = wilson_ci(int(shares.sum()), len(labels), level)
        return {"mean": float(shares.mean()), "ci": ci, "n": int(values.size), "successes": successes,
                "units": len(labels), "ci_method": "wilson over clusters"}
    ci = mean_ci(shares, rng, n_boot, level)
    return {"mean": ci["mean"], "ci": ci["ci"], "n": int(values.size), "successes": successes, "units": len(labels),
            "ci_method": "bootstrap over clusters"}


def share_of_gain(speedup: float, ci: Sequence[float] | None, reference: float) -> dict:
    """The share of a reference speedup's gain that a measured speedup reached: (ours - 1) / (reference - 1),
    with the interval mapped from the speedup's (the map is increasing, so the ends map to the ends).
    1 = the reference's whole gain, 0 = no gain, < 0 = slower than the baseline."""
    if not reference > 1:
        raise ReproduceError(f"a share of the gain needs a reference speedup above 1, got {reference}")
    def share(x):
        return (x - 1.0) / (reference - 1.0)
    return {"share": share(speedup), "ci": None if ci is None else (share(ci[0]), share(ci[1])),
            "reference": reference}


def wilcoxon_speedup(ars_ms: Sequence[float], sps_ms: Sequence[float]) -> dict:
    """Wilcoxon signed-rank test on the paired log-ratios log(ars_i / sps_i), two-sided (SpS may be slower).
    H0: the log-ratios are symmetric about 0 (same speed). statistic is min(W+, W-). Assumes the prompts are
    independent. With usability (attainable.py): at n <= 5 the exact test cannot reach p < 0.05."""
    ars, sps = _paired_positive(ars_ms, sps_ms)
    log_ratios = np.log(ars / sps)
    nonzero = int(np.count_nonzero(log_ratios))
    result = stats.wilcoxon(log_ratios, alternative="two-sided") if nonzero else None
    return {"test": "Wilcoxon signed-rank on log ratios (two-sided)",
            "statistic": float(result.statistic) if result else 0.0, "p_value": float(result.pvalue) if result else 1.0,
            "n": int(ars.size), "nonzero": nonzero,
            **attainable.usability(attainable.wilcoxon_min_p(nonzero),
                                   f"a two-sided Wilcoxon signed-rank test of {nonzero} nonzero pairs")}


def tost_equivalence(a: Sequence[float], b: Sequence[float], margin: float, paired: bool = True,
                     alpha: float = 0.05, rng: np.random.Generator | None = None, n_boot: int = 10000) -> dict:
    """Two one-sided tests (Schuirmann 1987) that the mean difference d = mean(a - b) lies within ±margin.

    H0: d <= -margin or d >= +margin. Reject both one-sided nulls (t-tests; paired, or Welch when unpaired)
    and conclude equivalence when p = max(p_lower, p_upper) < alpha; equivalently, the (1 - 2 alpha) t interval
    of d (90% at alpha 0.05) lies inside (-margin, margin). Also the 95% t interval of d (ci_95: does d differ
    from 0?) and, with `rng`, a 95% percentile-bootstrap interval of d. When every difference is the same (e.g. identical greedy outputs) d is known exactly:
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
        ci_95 = ci
    elif paired:
        p_lower = stats.ttest_1samp(diff, -margin, alternative="greater").pvalue
        p_upper = stats.ttest_1samp(diff, margin, alternative="less").pvalue
        p_value = float(max(p_lower, p_upper))
        ci = tuple(float(x) for x in stats.ttest_1samp(diff, 0).confidence_interval(1 - 2 * alpha))
        ci_95 = tuple(float(x) for x in stats.ttest_1samp(diff, 0).confidence_interval(0.95))
    else:
        p_lower = stats.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue
        p_upper = stats.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue
        p_value = float(max(p_lower, p_upper))
        ci = tuple(float(x) for x in stats.ttest_ind(a, b, equal_var=False).confidence_interval(1 - 2 * alpha))
        ci_95 = tuple(float(x) for x in stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95))
    # what the data could show at this size: the difference test's p (d = 0, two-sided), the smallest difference
    # it detects with 80% power, and the smallest margin within which this TOST would have shown equivalence
    p_difference, detectable = None, None
    if not constant:
        test = stats.ttest_1samp(diff, 0) if paired else stats.ttest_ind(a, b, equal_var=False)
        p_difference = float(test.pvalue)
        sd = float(diff.std(ddof=1)) if paired else None
        detectable = min_detectable_difference(sd, diff.size) if paired else None
    bootstrap_ci = None
    if rng is not None and constant:
        bootstrap_ci = (estimate, estimate)
    elif rng is not None:
        data = (diff,) if paired else (a, b)
        bootstrap_ci = _percentile_bootstrap(data, np.mean if paired else _mean_difference, rng, n_boot, 0.95)
    return {
        "diff": estimate,
        "ci": ci,
        "ci_level": 1 - 2 * alpha,
        "ci_95": ci_95,  # the t interval at 95%: a difference whose interval excludes 0 is significant at 5%
        "p_value": p_value,
        "equivalent": p_value < alpha,
        "margin": margin,
        "bootstrap_ci_95": bootstrap_ci,
        "p_difference": p_difference,  # the paired t-test of d = 0 (two-sided); None when d is known exactly
        "min_detectable_difference": detectable,  # None when d is known exactly (or unpaired)
        # TOST shows equivalence within m exactly when the 90% interval lies inside (-m, m)
        "smallest_equivalence_margin": float(max(abs(ci[0]), abs(ci[1]))),
        "n": int(a.size),
        # t-based: any p is attainable from 2 pairs on (whether the margin can be met is a matter of power:
        # equivalence.n_for_power); a difference known exactly needs no test
        **attainable.usability(0.0 if constant else attainable.t_test_min_p(a.size), f"a TOST of {a.size} pairs"),
    }


def min_detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest true mean difference a two-sided paired t-test at level alpha detects with probability
    `power`, for n pairs whose differences have standard deviation sd (the sample's sd standing in for the true
    one): delta = ncp sd / sqrt(n), where ncp solves P(|T| > t_crit) = power for T noncentral t with n - 1
    degrees of freedom and noncentrality ncp (exact, not the normal approximation (z_a + z_b) sd / sqrt(n)).
    None below 2 pairs; 0 when sd is 0."""
    from scipy.optimize import brentq

    if n < 2 or sd is None or not np.isfinite(sd):
        return None
    if sd == 0:
        return 0.0
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(ncp):
        lower = stats.nct.cdf(-critical, df, ncp)  # the wrong-sign tail, NaN where it underflows
        return stats.nct.sf(critical, df, ncp) + (0.0 if np.isnan(lower) else lower) - power

    upper = 1.0
    while shortfall(upper) < 0:  # bracket the root by doubling (the power rises with ncp; 1 pair of df needs ~16)
        upper *= 2
    return float(brentq(shortfall, 0.0, upper) * sd / math.sqrt(n))


def ratio_of_sums_ci(numerators: Sequence[float], denominators: Sequence[float], rng: np.random.Generator,
                     n_boot: int = 5000, level: float = 0.95) -> dict:
    """sum(numerators) / sum(denominators) (a pooled rate, e.g. ms per loop over every loop of every row) with a
    percentile-bootstrap interval resampling the (numerator, denominator) pairs together; no interval from fewer
    than two pairs, value None when the denominators sum to 0."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if num.shape != den.shape or num.ndim != 1:
        raise ReproduceError(f"need two paired 1-D arrays, got shapes {num.shape} and {den.shape}")
    if num.size == 0 or not den.sum() > 0:
        return {"value": None, "ci": None, "n": int(num.size)}
    value = float(num.sum() / den.sum())
    if num.size < 2 or (_is_constant(num) and _is_constant(den)):
        return {"value": value, "ci": None if num.size < 2 else (value, value), "n": int(num.size)}
    return {"value": value, "ci": _percentile_bootstrap((num, den), _mean_ratio, rng, n_boot, level, paired=True),
            "n": int(num.size)}


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
    what = f"a chi-square test of {int(table.sum())} values in {table.shape[1]} categories (after pooling)"
    if table.shape[1] < 2:  # everything fell into one category: nothing distinguishes the samples
        return {"test": "chi2_contingency", "statistic": 0.0, "p_value": 1.0, "dof": 0, "categories": categories,
                **attainable.usability(1.0, what)}
    result = stats.chi2_contingency(table)
    return {"test": "chi2_contingency", "statistic": float(result.statistic), "p_value": float(result.pvalue),
            "dof": int(result.dof), "categories": categories,
            **attainable.usability(attainable.chi_square_min_p(int(table.sum()), int(result.dof)), what)}


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
    usable = attainable.usability(attainable.wilcoxon_min_p(nonzero),
                                  f"a two-sided Wilcoxon signed-rank test of {nonzero} nonzero pairs")
    if nonzero == 0:
        return {"test": "wilcoxon", "statistic": 0.0, "p_value": 1.0, "n": int(a.size), "nonzero": 0, **usable}
    result = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    return {"test": "wilcoxon", "statistic": float(result.statistic), "p_value": float(result.pvalue),
            "n": int(a.size), "nonzero": nonzero, **usable}


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
