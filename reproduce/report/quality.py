"""The quality tests that failed, for the Discussion: every SpS row's paired tests against ArS (groups.py puts them
on each SpS view as `quality_rows`), and the sampled SpS-vs-ArS distribution tests of section 9.

A quality test fails when the difference from ArS is significant (the paired t-test of d = 0, p < SIGNIFICANCE)
or the equivalence test (TOST within the margin) does not show equivalence. Vacuous comparisons (greedy SpS that
emitted ArS's tokens, or both methods scoring one constant) and tests from fewer than 2 pairs are not tests.
A sampled distribution test fails at p < SIGNIFICANCE, and counts only where the rows drew from seeds of their own
(lossless.sampled_view): elsewhere it has no p-value at all.
"""

from __future__ import annotations

from reproduce.report import verdicts

SIGNIFICANCE = 0.05

# the sampled tests of section 9 (analysis.paired.SAMPLED_TESTS), as the Discussion names them
SAMPLED_NAMES = {"first_token_test": "first token (chi-square)",
                 "sequence_logprob_test": "sequence log-probability (Wilcoxon)",
                 "length_test": "length (Wilcoxon)"}


def _differs(test: dict) -> bool:
    """Significant at SIGNIFICANCE: the t-test's p where the summary has it, else its 95% interval excluding 0."""
    if test.get("p_difference") is not None:
        return test["p_difference"] < SIGNIFICANCE
    low, high = test.get("ci_95") or test["bootstrap_ci_95"]
    return low > 0 or high < 0


def quality_failures(groups: list[dict], lossless: dict) -> dict:
    """{"tested", "failed": [{"title", "view", "row", "differs", "not_equivalent", "exact_match"}], "differ",
    "not_equivalent", "sampled_tested", "sampled_failed": [{"view", "name", "test"}]}, in report order."""
    tested, failed = 0, []
    for group in groups:
        for view in group["sps"]:
            for row in view.get("quality_rows", []):
                test = row["test"]
                if test is None or test.get("constant") or row["verdict"]["level"] == verdicts.VACUOUS:
                    continue
                tested += 1
                differs, not_equivalent = _differs(test), not test["equivalent"]
                if differs or not_equivalent:
                    detectable = test.get("min_detectable_difference")
                    failed.append({"title": group["title"], "view": view, "row": row, "differs": differs,
                                   "not_equivalent": not_equivalent,
                                   # the difference the test detects with 80% power, in margins
                                   "detectable_margins": detectable / test["margin"] if detectable is not None else None,
                                   # greedy only: where SpS emitted ArS's tokens the two outputs are the same
                                   "exact_match": view["quality"].get("exact_match_ars") if view["temperature"] == 0 else None})
    sampled = [s for s in lossless["sampled"] if s["testable"]]
    sampled_failed = [{"view": s["view"], "task_label": s["task_label"], "name": name, "test": s["view"][key]}
                      for s in sampled for key, name in SAMPLED_NAMES.items()
                      if s["view"][key] and s["view"][key]["p_value"] < SIGNIFICANCE]
    untestable = [f for f in failed if f["not_equivalent"] and not f["differs"]]
    ratios = [f["detectable_margins"] for f in untestable if f["detectable_margins"] is not None]
    return {"tested": tested, "failed": failed, "differ": [f for f in failed if f["differs"]],
            "not_equivalent": untestable,
            "detectable_margins": {"low": min(ratios), "high": max(ratios)} if ratios else None,
            # how many differences identical methods would show at SIGNIFICANCE, on average (tests not independent)
            "differ_by_chance": SIGNIFICANCE * tested,
            "sampled_tested": len(sampled) * len(SAMPLED_NAMES), "sampled_failed": sampled_failed,
            # how many of them identical distributions would put below SIGNIFICANCE by chance, on average
            "sampled_by_chance": SIGNIFICANCE * len(sampled) * len(SAMPLED_NAMES),
            "significance": SIGNIFICANCE}
