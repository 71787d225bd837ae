"""The smallest p-value a test can reach at a run's size, and whether the test may be offered as evidence.

A test that cannot reach p < 0.05 at the run's n says the same whatever the data: an exact two-sided Wilcoxon
signed-rank test of 5 pairs cannot go below 2/2^5 = 0.0625, so "no difference, p = 0.0625" from it is no finding.
Every test the analysis reports carries {"min_p", "usable", "reason"}; a consumer drops tests with usable false.
"""

from __future__ import annotations

from scipy import stats

SIGNIFICANCE = 0.05


def usability(min_p: float, what: str, alpha: float = SIGNIFICANCE) -> dict:
    """{"min_p", "usable": min_p < alpha, "reason"}: the reason says why a test cannot be evidence (None if it can).
    `what` names the test and its size, e.g. 'a two-sided Wilcoxon signed-rank test of 5 nonzero pairs'."""
    usable = bool(min_p < alpha)
    reason = None if usable else f"{what} cannot reach p < {alpha}: its smallest attainable p is {min_p:.3g}"
    return {"min_p": float(min_p), "usable": usable, "reason": reason}


def wilcoxon_min_p(n_nonzero: int, alternative: str = "two-sided") -> float:
    """The exact signed-rank test's smallest p: every one of the n nonzero differences of one sign is 1 of the 2^n
    equally likely sign patterns under H0 (zero differences are dropped, zero_method="wilcox"), doubled two-sided."""
    if n_nonzero < 1:
        return 1.0
    return min(1.0, (2.0 if alternative == "two-sided" else 1.0) / 2.0 ** n_nonzero)


def t_test_min_p(n: int) -> float:
    """A t statistic is unbounded from n = 2 on (a small enough spread makes any mean difference significant)."""
    return 0.0 if n >= 2 else 1.0


def chi_square_min_p(total: int, dof: int) -> float:
    """A lower bound on the smallest p of a chi-square test of homogeneity on a 2 x C table of `total` counts: the
    statistic cannot exceed total x (min(2, C) - 1) = total (Cramer's V at most 1). No degrees of freedom (every
    value pooled into one category): p is always 1."""
    if dof < 1 or total < 1:
        return 1.0
    return float(stats.chi2.sf(total, dof))
