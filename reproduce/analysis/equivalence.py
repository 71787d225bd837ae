"""Quality equivalence of each method to ArS within margins fixed in the config before the run.

The margins are the config's `quality_margins` (runs.config.QualityMargin: experiments/base.yaml by default),
used as they are: a margin derived from the run's own spread would move with the data it judges. Each metric's
paired TOST (stats.tost_equivalence) ends in exactly one of three OUTCOMES:

  equivalent      the 90% t interval of the mean difference (method - ArS) lies inside (-margin, +margin)
  not equivalent  it lies wholly outside: a difference larger than the margin was shown
  inconclusive    neither: the data cannot tell at this n (never called "failed")

Beside each margin and each test: the number of prompts a paired TOST needs for 80% power at the observed sd
of the per-prompt differences (n_for_power); an inconclusive test below that n says "margin cannot be reached at
this n". Where the method emitted ArS's exact tokens on every prompt the difference is exactly 0: no test runs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from reproduce import tasks
from reproduce.analysis import stats
from reproduce.runs.config import base_quality_margins

OUTCOMES = ("equivalent", "not equivalent", "inconclusive")
POWER = 0.8
ALPHA = 0.05
# the per-row quality column each margin applies to (tasks: QualityMetric.tost_key -> quality_key)
QUALITY_COLUMNS = {m.tost_key: m.quality_key for m in [t.quality for t in tasks.TASKS.values()] + [tasks.PERPLEXITY]}
TOST_ASSUMPTION = ("prompts are independent and the mean of the per-prompt differences (method - ArS) is roughly "
                   "normal (paired t); the n for 80% power assumes a true difference of 0 and the observed sd")
CANNOT_REACH = "margin cannot be reached at this n"


def run_margins(config: dict) -> tuple[dict, str]:
    """The margins a run is judged by, {metric: {"margin", "reason"}}, and where they came from: the run's saved
    config, or base.yaml's for a run whose config predates quality_margins."""
    saved = config.get("quality_margins")
    if saved:
        return {m: {"margin": float(v["margin"]), "reason": v["reason"]} for m, v in saved.items()}, "config"
    base = {m: {"margin": v.margin, "reason": v.reason} for m, v in base_quality_margins().items()}
    return base, "experiments/base.yaml (the run's saved config predates quality_margins)"


def tost_power(sd: float, n: int, margin: float, alpha: float = ALPHA) -> float:
    """Power of a paired TOST of n pairs at level alpha when the true difference is 0 and the differences have
    standard deviation sd: each one-sided t statistic is noncentral t with n - 1 df and noncentrality
    margin sqrt(n) / sd, and P(both reject) >= 1 - P(one fails) - P(other fails) = 1 - 2 nct.cdf(t_crit), the
    usual bound (Chow, Shao and Wang), tight when the power is high."""
    if n < 2:
        return 0.0
    if sd == 0:
        return 1.0
    df = n - 1
    critical = scipy_stats.t.ppf(1 - alpha, df)
    return float(max(0.0, 1.0 - 2.0 * scipy_stats.nct.cdf(critical, df, margin * math.sqrt(n) / sd)))


def n_for_power(sd: float | None, margin: float, power: float = POWER, alpha: float = ALPHA,
                n_max: int = 1_000_000) -> int | None:
    """The smallest n whose paired TOST reaches `power` (tost_power), by doubling then bisection (power rises with
    n). None without an sd or beyond n_max; 2 when sd is 0 (every difference the same)."""
    if sd is None or not np.isfinite(sd):
        return None
    low, high = 1, 2
    while tost_power(sd, high, margin, alpha) < power:
        low, high = high, high * 2
        if high > n_max:
            return None
    while high - low > 1:  # invariant: power(low) < power <= power(high)
        middle = (low + high) // 2
        low, high = (middle, high) if tost_power(sd, middle, margin, alpha) < power else (low, middle)
    return high


def outcome(test: dict) -> str:
    """One of OUTCOMES from a TOST record: its (1 - 2 alpha) interval inside, wholly outside, or across the margin."""
    low, high = test["ci"]
    if test["equivalent"]:
        return "equivalent"
    if low >= test["margin"] or high <= -test["margin"]:
        return "not equivalent"
    return "inconclusive"


def equivalence_test(mine: pd.DataFrame, base: pd.DataFrame, column: str, margin: dict) -> dict | None:
    """The TOST of one quality column, method rows against ArS rows on the same units (both indexed by unit, in
    the same order), at the config's margin: stats.tost_equivalence plus "outcome", "note", "exactly_equal",
    "n_for_80_power", "margin_reachable" (n >= n_for_80_power), "margin_reason", "margin_source" ("config"), "constant", "mine_mean", "ars_mean".
    None with fewer than 2 prompts scored by both."""
    a, b = mine[column].to_numpy(float), base[column].to_numpy(float)
    keep = ~(np.isnan(a) | np.isnan(b))
    if keep.sum() < 2:
        return None
    a, b = a[keep], b[keep]
    same_tokens = [x == y for x, y in zip(mine["generated_ids"].to_numpy()[keep], base["generated_ids"].to_numpy()[keep])]
    common = {"margin_source": "config", "margin_reason": margin["reason"], "mine_mean": float(a.mean()),
              "ars_mean": float(b.mean()), "constant": bool(np.ptp(a) == 0 and np.ptp(b) == 0 and a[0] == b[0])}
    if all(same_tokens) and np.array_equal(a, b):  # identical outputs: the difference is known, not estimated
        return {"diff": 0.0, "ci": (0.0, 0.0), "ci_level": 1 - 2 * ALPHA, "ci_95": (0.0, 0.0), "p_value": None,
                "equivalent": True, "margin": margin["margin"], "n": int(a.size), "p_difference": None,
                "min_detectable_difference": None, "smallest_equivalence_margin": 0.0, "bootstrap_ci_95": None,
                "min_p": None, "usable": True, "reason": None, **common, "outcome": "equivalent",
                "exactly_equal": True, "n_for_80_power": None, "margin_reachable": True,
                "note": "identical tokens on every prompt: the difference is exactly 0 (no test run)"}
    test = stats.tost_equivalence(a, b, margin["margin"], alpha=ALPHA)
    sd = float(np.std(a - b, ddof=1))
    needed = n_for_power(sd, margin["margin"])
    result = {**test, **common, "outcome": outcome(test), "exactly_equal": False, "n_for_80_power": needed,
              # whether this n gives the TOST 80% power at the observed sd (below it, inconclusive is expected)
              "margin_reachable": needed is not None and test["n"] >= needed}
    result["note"] = _note(result)
    return result


def _note(test: dict) -> str:
    if test["outcome"] == "equivalent":
        if test["ci"][0] == test["ci"][1]:  # every prompt's difference the same: known exactly, no t-test
            return f"the score difference is {test['diff']:g} on every prompt, inside ±{test['margin']:g}"
        return f"the 90% interval lies inside ±{test['margin']:g}"
    if test["outcome"] == "not equivalent":
        return f"the 90% interval lies outside ±{test['margin']:g}: a difference larger than the margin"
    needed = test["n_for_80_power"]
    if needed is None or test["n"] < needed:
        return CANNOT_REACH + (f" (80% power needs n = {needed}, the run has {test['n']})" if needed else "")
    return f"inconclusive although n = {test['n']} gives 80% power: the difference lies near the margin"


def group_margins(group: pd.DataFrame, margins: dict, unit: list[str]) -> dict:
    """The margins of one (block, task, mode, sweep value) group, keyed by quality column: {"metric", "margin",
    "reason", "source": "config", "ars_mean", "sd", "sd_source", "n_for_80_power"}. The sd that sizes n is that of
    the ArS-repeat-minus-ArS differences where they vary (what reseeding ArS alone moves), else the largest over
    the group's SpS variants (the most demanding), else none (every paired difference 0)."""
    ars = group[group["method"] == "ars"].set_index(unit)
    out = {}
    for column, metric in QUALITY_COLUMNS.items():
        if column not in ars.columns or not ars[column].notna().any() or metric not in margins:
            continue
        sds = {}
        for (method, variant), rows in group[group["method"].isin(["ars_repeat", "sps"])].groupby(["method", "variant"]):
            rows = rows.set_index(unit)
            common = rows.index.intersection(ars.index)
            differences = (rows.loc[common, column] - ars.loc[common, column]).dropna().to_numpy(float)
            if differences.size >= 2 and np.ptp(differences) > 0:
                sds[(method, variant)] = float(np.std(differences, ddof=1))
        repeat = {k: v for k, v in sds.items() if k[0] == "ars_repeat"}
        source, sd = (("ArS repeat - ArS", max(repeat.values())) if repeat else
                      (f"largest over SpS - ArS ({max(sds, key=sds.get)[1]})", max(sds.values())) if sds else
                      ("every paired difference is constant: no spread to size n from", None))
        out[column] = {"metric": metric, **margins[metric], "source": "config", "ars_mean": float(ars[column].mean()),
                       "sd": sd, "sd_source": source, "n_for_80_power": n_for_power(sd, margins[metric]["margin"])}
    return out
