"""Each method against ArS on the same prompts: the paired speedup of the decode loop (and end to end), the
speed tests, the equivalence of quality within the config's margins (equivalence.py), the tests of sampled
outputs, and the Hugging Face peers against ours. Every test carries {"min_p", "usable", "reason"}
(attainable.py): one that cannot reach p < 0.05 at the run's n is marked, never offered as evidence."""

from __future__ import annotations

import pandas as pd

from reproduce.analysis import ratios, stats
from reproduce.analysis.equivalence import QUALITY_COLUMNS, equivalence_test
from reproduce.analysis.frame import UNIT
from reproduce.catalogue import METHOD_KINDS, hf_compared

# The tests of sampled outputs against sampled ArS on the same units, each on ONE statistic per sequence: the
# tokens of a sequence depend on each other (pooling them would count dependent values as independent draws),
# the sequences of different rows do not. Each test's assumption is stated here once and copied to summary.json.
SAMPLED_TESTS = {
    "first_token_test": {
        "statistic": "first generated token",
        "test": "chi-square test of homogeneity (tokens with expected count < 5 pooled)",
        "assumption": "every sequence is an independent draw (distinct prompts or samples, and every row its own "
                      "seed), and with one draw per prompt and method the test is conservative, not invalid, "
                      "when the prompts' distributions differ.",
    },
    "sequence_logprob_test": {
        "statistic": "log-probability of the whole sequence under the unshaped target (sum of its target_logprobs)",
        "test": "Wilcoxon signed-rank test (two-sided) of the per-unit differences, method minus ArS",
        "assumption": "the method's and ArS's sequences for a unit are independent draws (own seeds) given the "
                      "prompt, so under the null each difference is symmetric about 0, and units are independent.",
    },
    "length_test": {
        "statistic": "number of tokens kept for quality (quality_tokens: cut at EOS or the task's stop sequences; "
                     "rows from before timing ignored EOS: every generated token)",
        "test": "Wilcoxon signed-rank test (two-sided) of the per-unit differences, method minus ArS",
        "assumption": "the method's and ArS's sequences for a unit are independent draws (own seeds) given the "
                      "prompt, so under the null each difference is symmetric about 0, and units are independent.",
    },
}


def paired_speedup(slow: pd.DataFrame, fast: pd.DataFrame) -> dict | None:
    """slow ms/token over fast ms/token, paired per unit, end to end (ms_per_token: a Hugging Face peer's rows
    have no decode-loop time of their own): ratios.log_ratio_interval. None with fewer than two pairs."""
    slow = slow.set_index(UNIT) if "block" in slow.columns else slow
    fast = fast.set_index(UNIT) if "block" in fast.columns else fast
    common = slow.index.intersection(fast.index)
    if len(common) < 2:
        return None
    return ratios.log_ratio_interval(slow.loc[common, "ms_per_token"], fast.loc[common, "ms_per_token"])


def speed_vs_ars(mine: pd.DataFrame, base: pd.DataFrame, rng) -> dict:
    """The speed of paired rows against ArS. `speedup` (primary): ArS decode ms/token over the method's, t
    interval on log ratios; `speedup_e2e`: the same end to end (ms_per_token, every prefill included); `ttest`:
    the paired t-test of the decode log ratios (the speed test); `wilcoxon`: the signed-rank test of the same,
    marked unusable at n <= 5. `speedup` also keeps `ratio_of_means_ci` (a percentile bootstrap of the ratio of
    mean decode ms/token), for readers of older summaries only: too narrow at n < ~10, use `ci`."""
    decode = ratios.log_ratio_interval(base["decode_ms_per_token"], mine["decode_ms_per_token"])
    legacy = stats.speedup_ci(base["decode_ms_per_token"], mine["decode_ms_per_token"], rng)
    decode.update(measure="decode_ms_per_token", ratio_of_means_ci=legacy["ratio_of_means_ci"])
    end_to_end = ratios.log_ratio_interval(base["ms_per_token"], mine["ms_per_token"])
    end_to_end["measure"] = "ms_per_token"
    return {"speedup": decode, "speedup_e2e": end_to_end,
            "ttest": ratios.log_ratio_ttest(base["decode_ms_per_token"], mine["decode_ms_per_token"]),
            "wilcoxon": stats.wilcoxon_speedup(base["decode_ms_per_token"], mine["decode_ms_per_token"])}


def paired_vs_ars(rows: pd.DataFrame, ars: pd.DataFrame, rng, margins: dict) -> dict:
    """Speed (speed_vs_ars), quality equivalence per column at the config's `margins` ({metric: {"margin",
    "reason"}}: equivalence.equivalence_test), and at T > 0 the SAMPLED_TESTS, each paired with ArS by unit."""
    rows = rows.set_index(UNIT)
    common = rows.index.intersection(ars.index)
    if len(common) < 2:
        return {"n": len(common)}
    mine, base = rows.loc[common], ars.loc[common]
    result = {"n": len(common), **speed_vs_ars(mine, base, rng)}
    tests = {}
    for column, metric in QUALITY_COLUMNS.items():
        if column in mine.columns and metric in margins:
            test = equivalence_test(mine, base, column, margins[metric])
            if test is not None:
                tests[column] = test
    result["equivalence"] = tests
    if mine["temperature"].iloc[0] > 0:  # SAMPLED_TESTS
        result["seeds_independent"] = seeds_independent(mine, base)
        result["first_token_test"] = stats.two_sample_distribution_test(
            [ids[0] for ids in mine["generated_ids"] if ids], [ids[0] for ids in base["generated_ids"] if ids])
        result["sequence_logprob_test"] = stats.paired_symmetry_test(
            [sum(lp) for lp in mine["target_logprobs"]], [sum(lp) for lp in base["target_logprobs"]])
        result["length_test"] = stats.paired_symmetry_test(mine["quality_tokens"], base["quality_tokens"])
    return result


def seeds_independent(mine: pd.DataFrame, base: pd.DataFrame) -> bool | None:
    """True when every paired row drew from a seed of its own (rows record seed_used, see runs.plan.row_seed), as
    SAMPLED_TESTS assume. None for rows written before they recorded it, when a unit's methods shared one seed."""
    if "seed_used" not in mine.columns or mine["seed_used"].isna().any() or base["seed_used"].isna().any():
        return None
    return bool((mine["seed_used"].to_numpy() != base["seed_used"].to_numpy()).all())

def ours_vs_hf(hf_rows: pd.DataFrame, group: pd.DataFrame) -> dict:
    """A Hugging Face peer's rows against ours on the same prompts (> 1: ours is faster): `ours_vs_hf` for our
    loop in the configured runtime (ArS vs generate, SpS vs assisted at the same draft and K), and, when run,
    `ours_hf_forward_vs_hf` for our loop over the same HF forward (ars_hf, sps_hf), the like-for-like engines."""
    first = hf_rows.iloc[0]
    ours_kind, hf_forward_kind = hf_compared(first["method"])  # ars / ars_hf for generate, sps / sps_hf for assisted
    same_setting = True
    if METHOD_KINDS[first["method"]].uses_draft:  # assisted: the same draft and K
        same_setting = (group["draft"] == first["draft"]) & (group["k"] == first["k"])
    ours, ours_hf_forward = (group["method"] == ours_kind) & same_setting, (group["method"] == hf_forward_kind) & same_setting
    out = {"ours_vs_hf": paired_speedup(hf_rows, group[ours])}
    if ours_hf_forward.any():  # only when those rows were run, so other profiles' summaries stay as they were
        out["ours_hf_forward_vs_hf"] = paired_speedup(hf_rows, group[ours_hf_forward])
    return out


# Our loops a llama.cpp peer is set beside: ArS and our SpS (not the repeat, the HF-forward loops or the draft alone)
OURS_BESIDE_LLAMACPP = ("ars", "sps")


def ours_vs_llamacpp(peer_rows: pd.DataFrame, group: pd.DataFrame) -> dict:
    """A llama.cpp peer's rows (runs.llamacpp_peer) against each of our loops in the setting on the same prompts,
    on the decode loop like every speedup here: the peer's decode ms/token over ours (> 1: ours faster),
    ratios.log_ratio_interval, one record per our variant (with its method, draft and K). A variant with fewer
    than two prompts in common is left out."""
    peer = peer_rows.set_index(UNIT)
    out = []
    for variant, rows in group[group["method"].isin(OURS_BESIDE_LLAMACPP)].groupby("variant", sort=False):
        first = rows.iloc[0]
        rows = rows.set_index(UNIT)
        common = peer.index.intersection(rows.index)
        if len(common) >= 2:
            out.append({"variant": variant, "method": first["method"], "draft": first["draft"],
                        "k": None if pd.isna(first["k"]) else int(first["k"]),
                        **ratios.log_ratio_interval(peer.loc[common, "decode_ms_per_token"],
                                                    rows.loc[common, "decode_ms_per_token"])})
    return {"ours_vs_llamacpp": out}
