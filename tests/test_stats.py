"""Tests of the statistics (reproduce/analysis/stats.py) and of the speedup theory (reproduce/analysis/theory.py).

Method: tiny cases computed by hand (an exact Wilcoxon p from counting sign patterns, a t-test p from the
closed form of Student's t with 2 degrees of freedom, a Yates chi-square, Leviathan's formulas), and
synthetic data with fixed seeds whose truth we set: intervals must contain the true value and exclude 1
when there is a real effect, and the negative controls (no effect, a difference far outside the margin,
one distribution against another) must come out the other way. What a test could detect: the 80%-power
difference of a paired t-test against the normal approximation at large n and against a simulation at n = 5.
"""

import math

import numpy as np
import pytest

from reproduce.analysis.stats import (
    min_detectable_difference,
    paired_symmetry_test,
    ratio_of_sums_ci,
    speedup_ci,
    tost_equivalence,
    two_sample_distribution_test,
    wilcoxon_speedup,
)
from reproduce.analysis.theory import (
    leviathan_expected_tokens,
    optimal_k,
    predicted_speedup,
)
from reproduce.errors import ReproduceError

# --- speedup ------------------------------------------------------------------------------------------------


def _latencies(true_speedup: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt SpS ms/token (lognormal over prompts) and ArS = SpS x speedup x lognormal noise."""
    rng = np.random.default_rng(seed)
    sps = rng.lognormal(mean=3.0, sigma=0.3, size=n)
    return sps * true_speedup * rng.lognormal(0.0, 0.2, size=n), sps


def test_speedup_point_is_the_geometric_mean_of_per_prompt_ratios():
    result = speedup_ci([2.0, 8.0], [1.0, 2.0], np.random.default_rng(0), n_boot=1000)
    assert result["point"] == pytest.approx(math.sqrt(2 * 4))  # ratios 2 and 4
    assert result["ratio_of_means"] == pytest.approx(10 / 3)
    assert result["ci"] == pytest.approx((2.0, 4.0))  # two prompts: resamples can only mix ratios 2 and 4


def test_speedup_ci_contains_the_true_speedup_and_excludes_one():
    ars, sps = _latencies(1.5, n=50, seed=0)
    result = speedup_ci(ars, sps, np.random.default_rng(1), n_boot=2000)
    low, high = result["ci"]
    assert low < 1.5 < high and low > 1.0
    assert result["ratio_of_means_ci"][0] > 1.0


def test_speedup_ci_includes_one_when_there_is_no_speedup():  # negative control
    ars, sps = _latencies(1.0, n=50, seed=0)
    low, high = speedup_ci(ars, sps, np.random.default_rng(1), n_boot=2000)["ci"]
    assert low < 1.0 < high


def test_speedup_ci_depends_only_on_the_random_state_passed_in():
    ars, sps = _latencies(1.2, n=20, seed=4)
    first = speedup_ci(ars, sps, np.random.default_rng(7), n_boot=500)
    assert speedup_ci(ars, sps, np.random.default_rng(7), n_boot=500) == first
    assert speedup_ci(ars, sps, np.random.default_rng(8), n_boot=500)["ci"] != first["ci"]


def test_speedup_rejects_unpaired_or_non_positive_latencies():
    with pytest.raises(ReproduceError, match="paired"):
        speedup_ci([1.0, 2.0, 3.0], [1.0, 2.0], np.random.default_rng(0))
    with pytest.raises(ReproduceError, match="positive"):
        wilcoxon_speedup([1.0, 0.0], [1.0, 1.0])


def test_wilcoxon_exact_p_value_by_hand():
    # log-ratios 1, 2, 3, 4, -0.5: |.| ranks 2, 3, 4, 5, 1, so W+ = 14 and W- = 1. Of the 2^5 equally likely sign
    # patterns under H0, W+ >= 14 only for {all +} (15) and {all + but rank 1} (14): two-sided p = 2 x 2/32.
    ars = np.exp([1.0, 2.0, 3.0, 4.0, -0.5])
    result = wilcoxon_speedup(ars, np.ones(5))
    assert result["statistic"] == 1.0
    assert result["p_value"] == pytest.approx(4 / 32)
    # all five faster: the most extreme pattern, p = 2/32 = 0.0625, which is the test's floor at n = 5
    assert wilcoxon_speedup(np.exp([1.0, 2.0, 3.0, 4.0, 0.5]), np.ones(5))["p_value"] == pytest.approx(2 / 32)
    assert wilcoxon_speedup(np.ones(5), np.exp([1.0, 2.0, 3.0, 4.0, 0.5]))["p_value"] == pytest.approx(2 / 32)


# --- equivalence ---------------------------------------------------------------------------------------------


def test_tost_p_value_by_hand():
    # d = (0.1, -0.1, 0): mean 0, sd 0.1, se 0.1/sqrt(3), df 2. Student t with 2 df: P(T > t) =
    # (1 - t / sqrt(t^2 + 2)) / 2. Margin 0.2: t = 2 sqrt(3), p = (1 - sqrt(12/14)) / 2 = 0.0371 -> equivalent.
    result = tost_equivalence([0.1, -0.1, 0.0], [0.0, 0.0, 0.0], margin=0.2)
    assert result["p_value"] == pytest.approx((1 - math.sqrt(12 / 14)) / 2)
    assert result["equivalent"] and result["diff"] == pytest.approx(0.0)
    # Margin 0.1: t = sqrt(3), p = (1 - sqrt(3/5)) / 2 = 0.113 -> not shown equivalent with 3 pairs.
    narrow = tost_equivalence([0.1, -0.1, 0.0], [0.0, 0.0, 0.0], margin=0.1)
    assert narrow["p_value"] == pytest.approx((1 - math.sqrt(3 / 5)) / 2)
    assert not narrow["equivalent"]


def test_tost_equivalent_case_and_its_negative_control():
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0.2, 0.4, size=100)  # e.g. per-prompt ROUGE-2
    same = baseline + rng.normal(0.0, 0.02, size=100)
    shifted = baseline + 0.05 + rng.normal(0.0, 0.02, size=100)
    for paired in (True, False):
        result = tost_equivalence(same, baseline, margin=0.02, paired=paired, rng=np.random.default_rng(1),
                                  n_boot=2000)
        assert result["equivalent"], paired
        assert -0.02 < result["ci"][0] < result["ci"][1] < 0.02  # TOST <=> the 90% interval inside the margin
        low, high = result["bootstrap_ci_95"]
        assert low < 0.0 < high
        control = tost_equivalence(shifted, baseline, margin=0.02, paired=paired)
        assert not control["equivalent"] and control["p_value"] > 0.5
        assert control["diff"] == pytest.approx(0.05, abs=0.01)


def test_tost_identical_outputs_are_exactly_equivalent():
    result = tost_equivalence([0.3, 0.5, 0.1], [0.3, 0.5, 0.1], margin=0.01, rng=np.random.default_rng(0))
    assert result["equivalent"] and result["p_value"] == 0.0 and result["ci"] == (0.0, 0.0)
    offset = tost_equivalence([0.4, 0.6, 0.2], [0.3, 0.5, 0.1], margin=0.01)
    assert not offset["equivalent"] and offset["p_value"] == 1.0
    with pytest.raises(ReproduceError, match="margin"):
        tost_equivalence([1.0, 2.0], [1.0, 2.0], margin=0.0)


def test_tost_records_what_the_data_could_show():
    # d = (0.1, -0.1, 0): mean 0, so the t-test of d = 0 has p = 1; the 90% t interval is ±t(0.95, 2) 0.1 / sqrt(3)
    result = tost_equivalence([0.1, -0.1, 0.0], [0.0, 0.0, 0.0], margin=0.1)
    assert result["p_difference"] == pytest.approx(1.0) and result["n"] == 3
    assert result["smallest_equivalence_margin"] == pytest.approx(2.919986 * 0.1 / math.sqrt(3), rel=1e-5)
    assert result["min_detectable_difference"] == pytest.approx(min_detectable_difference(0.1, 3))
    exact = tost_equivalence([0.3, 0.5], [0.3, 0.5], margin=0.1)  # d known exactly: nothing to detect
    assert exact["p_difference"] is None and exact["min_detectable_difference"] is None


def test_min_detectable_difference_has_the_stated_power():
    # large n: the normal approximation (z_0.975 + z_0.8) sd / sqrt(n) = 2.8016 sd / sqrt(n)
    assert min_detectable_difference(1.0, 400) == pytest.approx(2.8016 / 20, rel=0.01)
    assert min_detectable_difference(0.0, 5) == 0.0 and min_detectable_difference(1.0, 1) is None
    # n = 5: a paired t-test at 5% rejects a true difference of that size in 80% of samples (seeded simulation)
    from scipy import stats as scipy_stats

    delta = min_detectable_difference(1.0, 5)
    draws = np.random.default_rng(11).normal(delta, 1.0, size=(40000, 5))
    rejected = scipy_stats.ttest_1samp(draws, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)


def test_ratio_of_sums_ci_pools_and_resamples_pairs():
    result = ratio_of_sums_ci([10.0, 20.0, 30.0, 40.0], [1, 2, 2, 3], np.random.default_rng(0))
    assert result["value"] == pytest.approx(100 / 8) and result["n"] == 4
    low, high = result["ci"]
    assert low <= 100 / 8 <= high and low >= 10 and high <= 15  # within the per-pair ratios' range
    assert ratio_of_sums_ci([5.0], [2.0], np.random.default_rng(0)) == {"value": 2.5, "ci": None, "n": 1}
    assert ratio_of_sums_ci([5.0, 1.0], [0.0, 0.0], np.random.default_rng(0))["value"] is None


# --- same distribution? --------------------------------------------------------------------------------------


def test_chi_square_by_hand_with_yates_correction():
    # [[30, 10], [10, 30]]: every expected count is 20; Yates: 4 x (|30 - 20| - 0.5)^2 / 20 = 18.05
    result = two_sample_distribution_test(["x"] * 30 + ["y"] * 10, ["x"] * 10 + ["y"] * 30)
    assert result["statistic"] == pytest.approx(18.05)
    assert result["dof"] == 1 and result["p_value"] < 1e-4


def test_rare_categories_are_pooled():
    # c..g (in a) and h..l (in b) each appear once, expected count 0.5 < 5: they pool into one column of 10,
    # whose expected count in each sample is 10 x 85/170 = 5
    a = ["a"] * 40 + ["b"] * 40 + list("cdefg")
    b = ["a"] * 40 + ["b"] * 40 + list("hijkl")
    result = two_sample_distribution_test(a, b)
    assert result["categories"] == ["a", "b", "(pooled)"]
    assert result["dof"] == 2 and result["statistic"] == pytest.approx(0.0)
    # One singleton on each side: the pool of 2 is still too small and joins the smallest category.
    small = two_sample_distribution_test(["a"] * 40 + ["b"] * 30 + ["c"], ["a"] * 40 + ["b"] * 30 + ["d"])
    assert small["categories"] == ["a", "'b'+(pooled)"] and small["dof"] == 1


def test_categorical_same_distribution_passes_and_different_fails():
    rng = np.random.default_rng(0)
    tokens = np.arange(8)
    first = rng.choice(tokens, size=400, p=[0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.04, 0.01])
    second = rng.choice(tokens, size=400, p=[0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.04, 0.01])
    other = rng.choice(tokens, size=400, p=[0.15, 0.2, 0.15, 0.1, 0.1, 0.1, 0.19, 0.01])
    assert two_sample_distribution_test(first.tolist(), second.tolist())["p_value"] > 0.05
    assert two_sample_distribution_test(first.tolist(), other.tolist())["p_value"] < 1e-4


def test_paired_symmetry_test_by_hand():
    # differences 1, 2, 3, 4, -0.5: |.| ranks 2, 3, 4, 5, 1, so W+ = 14 and W- = 1. Of the 2^5 equally likely sign
    # patterns, W+ >= 14 in two (all positive; only the rank-1 difference negative): two-sided p = 2 x 2/32
    result = paired_symmetry_test([1.0, 2.0, 3.0, 4.0, -0.5], [0.0] * 5)
    assert result["statistic"] == 1.0 and result["p_value"] == pytest.approx(0.125)
    assert result["n"] == 5 and result["nonzero"] == 5
    # a zero difference is dropped (an SpS and an ArS sequence of equal length, say)
    assert paired_symmetry_test([1.0, 2.0, 3.0, 4.0, -0.5, 7.0], [0.0] * 5 + [7.0])["nonzero"] == 5
    same = paired_symmetry_test([3.0, 4.0], [3.0, 4.0])
    assert same["p_value"] == 1.0 and same["nonzero"] == 0
    with pytest.raises(ReproduceError, match="paired"):
        paired_symmetry_test([1.0, 2.0], [1.0])


def test_paired_symmetry_test_holds_its_level_when_prompts_differ_and_detects_a_shift():
    """One value per sequence, paired by prompt: prompts differ wildly (means from -60 to -5, spreads 1 to 8),
    and under the null both methods draw from the prompt's own distribution. Over 400 simulated experiments of 50
    prompts the test rejects at 5% about 5% of the time; a shift of 8 (the spreads are 1 to 8) is found."""
    rng = np.random.default_rng(1)
    means, spreads = rng.uniform(-60, -5, size=50), rng.uniform(1, 8, size=50)
    p_values = [paired_symmetry_test(rng.normal(means, spreads), rng.normal(means, spreads))["p_value"]
                for _ in range(400)]
    assert 0.02 < np.mean(np.array(p_values) < 0.05) < 0.09  # binomial(400, 0.05): 95% within 0.03-0.07
    shifted = paired_symmetry_test(rng.normal(means + 8.0, spreads), rng.normal(means, spreads))
    assert shifted["p_value"] < 1e-3


# --- theory (Leviathan et al. 2023) --------------------------------------------------------------------------


def test_expected_tokens_per_call_hand_values():
    assert leviathan_expected_tokens(0.5, 2) == pytest.approx(1.75)  # 1 + 0.5 + 0.25
    assert leviathan_expected_tokens(1.0, 3) == 4.0
    assert leviathan_expected_tokens(0.0, 5) == 1.0
    assert leviathan_expected_tokens(0.8, 0) == 1.0
    with pytest.raises(ReproduceError, match="alpha"):
        leviathan_expected_tokens(1.2, 2)


def test_predicted_speedup_is_theorem_3_8_when_verification_is_flat():
    assert predicted_speedup(0.5, 2, 0.0) == pytest.approx(1.75)
    assert predicted_speedup(0.5, 2, 0.1) == pytest.approx(1.75 / 1.2)
    assert predicted_speedup(0.7, 0, 0.3) == 1.0  # k = 0 is plain decoding
    # A rising verification cost t(3)/t(1) = 1.5 enters the denominator: 1.75 / (0.2 + 1.5)
    assert predicted_speedup(0.5, 2, 0.1, {1: 10.0, 3: 15.0}) == pytest.approx(1.75 / 1.7)
    assert predicted_speedup(0.5, 2, 0.1, lambda n: 1 + 0.25 * (n - 1)) == pytest.approx(1.75 / 1.7)
    with pytest.raises(ReproduceError, match="n=3"):
        predicted_speedup(0.5, 2, 0.1, {1: 10.0, 2: 12.0})


def test_optimal_k_hand_values():
    # alpha 0.8, c 0.1: S(5) = 3.6893/1.5 = 2.4595, S(6) = 3.9514/1.6 = 2.4696, S(7) = 4.1611/1.7 = 2.4477
    k, speedup = optimal_k(0.8, 0.1)
    assert k == 6 and speedup == pytest.approx((1 - 0.8**7) / 0.2 / 1.6)
    assert optimal_k(0.5, 0.5) == (0, 1.0)  # S(1) = 1.5/1.5 ties with k = 0; S(2) = 0.875: do not speculate
    # The measured CPU verification curve (shared notes): S(1) = 1.5/1.18, S(2) = 1.75/1.37, S(3) = 1.875/1.70
    cpu_curve = {1: 59.6, 2: 70.4, 3: 81.4, 4: 101.5, 5: 103.4}
    assert optimal_k(0.5, 0.0, cpu_curve, k_max=4)[0] == 2
    assert optimal_k(0.5, 0.0, k_max=4)[0] == 4  # a flat curve would always draft more


def test_mean_ci_drops_nan_and_covers_the_mean():
    from reproduce.analysis.stats import mean_ci

    result = mean_ci([1.0, 2.0, 3.0, float("nan")], np.random.default_rng(0))
    assert result["mean"] == 2.0 and result["n"] == 3
    assert 1.0 <= result["ci"][0] < 2.0 < result["ci"][1] <= 3.0
    assert mean_ci([0.5, 0.5], np.random.default_rng(0))["ci"] == (0.5, 0.5)
    assert mean_ci([float("nan")], np.random.default_rng(0)) == {"mean": None, "ci": None, "n": 0}


# --- small-n speed ratios (ratios.py) and attainable p-values (attainable.py) ---------------------------------
# Assumption of the t interval and t-test: prompts independent, per-prompt log ratios roughly normal. The
# simulations below draw exactly that (lognormal ms/token), so ~95% coverage is what the method promises.


def test_log_ratio_t_interval_covers_the_true_ratio_95_percent_of_the_time_at_n_5():
    from reproduce.analysis.ratios import log_ratio_interval

    rng = np.random.default_rng(2023)
    covered = []
    for _ in range(2000):
        ars, sps = _latencies(1.3, n=5, seed=int(rng.integers(1 << 31)))
        low, high = log_ratio_interval(ars, sps)["ci"]
        covered.append(low < 1.3 < high)
    assert np.mean(covered) == pytest.approx(0.95, abs=0.015)  # binomial(2000, 0.95): sd 0.005


def test_log_ratio_t_interval_is_wider_than_the_percentile_bootstrap_at_n_4():
    """The issue's complaint: a percentile bootstrap over 4 prompts (35 distinct resamples) is too narrow."""
    from reproduce.analysis.ratios import log_ratio_interval

    ars, sps = _latencies(1.2, n=4, seed=3)
    t_low, t_high = log_ratio_interval(ars, sps)["ci"]
    b_low, b_high = speedup_ci(ars, sps, np.random.default_rng(0), n_boot=2000)["ci"]
    assert t_low < b_low and b_high < t_high


def test_log_ratio_t_interval_excludes_one_for_a_real_speedup_and_not_without_one():  # negative control
    from reproduce.analysis.ratios import log_ratio_interval

    ars, sps = _latencies(1.5, n=20, seed=0)
    shifted = log_ratio_interval(ars, sps, bca_rng=np.random.default_rng(1))
    assert 1.0 < shifted["ci"][0] < 1.5 < shifted["ci"][1]
    assert shifted["bca_ci"][0] > 1.0  # the optional BCa check agrees
    ars, sps = _latencies(1.0, n=20, seed=0)
    low, high = log_ratio_interval(ars, sps)["ci"]
    assert low < 1.0 < high


def test_log_ratio_ttest_by_hand_and_its_level():
    from reproduce.analysis.ratios import log_ratio_ttest

    # log ratios 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = 2 sqrt 3, df 2:
    # two-sided p = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12 / 14)
    result = log_ratio_ttest(np.exp([0.1, 0.2, 0.3]), np.ones(3))
    assert result["statistic"] == pytest.approx(2 * math.sqrt(3))
    assert result["p_value"] == pytest.approx(1 - math.sqrt(12 / 14))
    assert result["usable"] and result["min_p"] == 0.0 and result["df"] == 2
    constant = log_ratio_ttest([2.0, 4.0], [1.0, 2.0])  # every ratio 2: t undefined, no p, not evidence
    assert constant["p_value"] is None and not constant["usable"] and "same ratio" in constant["reason"]
    # under H0 (true ratio 1) it rejects ~5% of 1000 simulated runs of 8 prompts; a 1.5x speedup it finds
    rng = np.random.default_rng(8)
    rejections = [log_ratio_ttest(*_latencies(1.0, 8, int(rng.integers(1 << 31))))["p_value"] < 0.05 for _ in range(1000)]
    assert 0.03 < np.mean(rejections) < 0.07
    assert log_ratio_ttest(*_latencies(1.5, 8, 1))["p_value"] < 0.01


def test_wilcoxon_at_n_5_cannot_reach_significance_and_is_marked_unusable():
    # the most extreme result five prompts can give (all faster) has p = 2/2^5 = 0.0625 > 0.05
    five = wilcoxon_speedup(np.exp([1.0, 2.0, 3.0, 4.0, 5.0]), np.ones(5))
    assert five["p_value"] == pytest.approx(0.0625) == five["min_p"]
    assert five["usable"] is False and "0.0625" in five["reason"]
    six = wilcoxon_speedup(np.exp([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), np.ones(6))  # 2/64 = 0.03125: it can
    assert six["usable"] is True and six["min_p"] == pytest.approx(2 / 64) and six["reason"] is None
    assert six["p_value"] < 0.05
    # the sampled outputs' signed-rank test counts only the nonzero differences: 6 pairs, 2 tied, 4 left
    tied = paired_symmetry_test([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.0, 0.0, 0.0, 0.0, 5.0, 6.0])
    assert tied["nonzero"] == 4 and tied["min_p"] == pytest.approx(2 / 16) and not tied["usable"]


def test_chi_square_usability_follows_what_the_pooled_table_can_show():
    one_column = two_sample_distribution_test(list("abcde"), list("fghij"))  # all pooled: p is always 1
    assert one_column["dof"] == 0 and one_column["usable"] is False and one_column["min_p"] == 1.0
    big = two_sample_distribution_test(["x"] * 30 + ["y"] * 10, ["x"] * 10 + ["y"] * 30)
    assert big["usable"] is True and big["min_p"] < 1e-10 and big["p_value"] < 0.05


def test_attainable_p_bounds():
    from reproduce.analysis import attainable

    assert attainable.wilcoxon_min_p(5) == pytest.approx(0.0625)
    assert attainable.wilcoxon_min_p(5, "greater") == pytest.approx(1 / 32)
    assert attainable.wilcoxon_min_p(0) == 1.0
    assert attainable.t_test_min_p(2) == 0.0 and attainable.t_test_min_p(1) == 1.0
    # a 2 x 2 table of 6 values: chi-square at most 6 with 1 df, p >= 0.0143
    assert attainable.chi_square_min_p(6, 1) == pytest.approx(0.014306, rel=1e-3)
    assert attainable.usability(0.0625, "x")["usable"] is False
    assert attainable.usability(0.01, "x") == {"min_p": 0.01, "usable": True, "reason": None}


def test_aa_check_flags_a_ten_percent_drift_and_passes_a_steady_machine():
    from reproduce.analysis.ratios import aa_check

    rng = np.random.default_rng(4)
    ars = rng.lognormal(3.0, 0.3, size=20)  # ms/token per prompt
    steady = ars * rng.lognormal(0.0, 0.02, size=20)
    held = aa_check(ars, steady)
    assert held["within_tolerance"] and abs(held["drift"]) < 0.02 and held["ratio"]["ci"][0] < 1 < held["ratio"]["ci"][1]
    drifted = aa_check(ars, steady * 1.10)  # the repeat ran 10% slower: ArS / repeat = 1 / 1.1
    assert not drifted["within_tolerance"] and drifted["drift"] == pytest.approx(1 / 1.1 - 1, abs=0.01)
    assert not drifted["ci_within_tolerance"]


def test_best_mode_and_k_trades_speed_against_flatness():
    """Hand values: a fast mode whose verification rises (int4-like) against a slow flat one (bf16-like)."""
    from reproduce.analysis.theory import best_mode_and_k

    fast = {n: 70.0 if n <= 3 else 160.0 for n in range(1, 10)}  # rows in blocks of 4: t(4..) doubles
    flat = {n: 255.0 for n in range(1, 10)}
    # high acceptance, cheap draft: the fast mode at K = 2 (3 rows, 210/E ms) beats the flat mode at any K
    mode, k, ms = best_mode_and_k(0.95, 15.0, {"int4": fast, "bf16": flat})
    assert (mode, k) == ("int4", 2)
    assert ms == pytest.approx((2 * 15 + 70) / (1 + 0.95 + 0.95**2))
    # a draft as dear as the target: plain decoding (k = 0) of the fastest mode
    assert best_mode_and_k(0.5, 70.0, {"int4": fast, "bf16": flat})[:2] == ("int4", 0)
    # only the flat mode offered: the largest K the curve covers pays at acceptance 0.99
    assert best_mode_and_k(0.99, 5.0, {"bf16": flat})[:2] == ("bf16", 8)
    with pytest.raises(ReproduceError):
        best_mode_and_k(0.9, 10.0, {})
