"""Verdicts: what reproduced and what did not, from the analysis's statistics, in three levels.

Speed, against the paper's Table 1 speedup P, from our speedup's 95% CI [lo, hi] (ratio of mean ms/token; the
report passes the decode loop's, the paper's mean sampling time per token):
  reproduced          hi >= P: the interval reaches the paper's value
  partly reproduced   lo > 1 and hi < P: faster than ArS, but short of the paper (the share of its gain says how far)
  not reproduced      lo <= 1: no speedup shown
A task and mode the paper does not have is reported (faster / not faster than ArS) and never counted.

Quality, SpS against ArS on the same prompts (paired), from the equivalence test (TOST) and the 95% paired t
interval of the difference:
  reproduced          TOST equivalent within a margin justified by the ArS-vs-ArS spread (ars_repeat)
  partly reproduced   equivalent only within a fixed margin no spread justifies
  not reproduced      the difference's 95% interval excludes 0 and equivalence is not shown
  not testable        at this size: no difference detected, but the interval is wider than the margin (the text
                      gives the smallest difference the test detects with 80% power and the smallest margin the
                      data could have shown equivalence within); or fewer than 2 paired values
  vacuous             nothing could differ: greedy SpS emits ArS's tokens by construction, or both methods score
                      one constant (e.g. neither solves any problem); never counted either way
Pure functions of plain dicts, so each level is tested on its own (tests/test_verdicts.py).
"""

from __future__ import annotations

from reproduce.analysis.stats import share_of_gain

REPRODUCED, PARTLY, NOT, VACUOUS, NOT_COUNTED, UNTESTED = (
    "reproduced", "partly reproduced", "not reproduced", "vacuous", "not counted", "not testable")


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def speedup_verdict(speedup: dict | None, paper_speedup: float | None) -> dict:
    """The speed verdict of one task and mode: {"level", "counted", "text", "share"} (share of the paper's gain,
    with its CI, where the paper has the row). `speedup` is the analysis's speedup record (ratio_of_means and
    ratio_of_means_ci)."""
    if speedup is None or speedup.get("ratio_of_means_ci") is None:
        return {"level": UNTESTED, "counted": False, "share": None,
                "text": "not testable (fewer than 2 paired prompts)"}
    low, high = speedup["ratio_of_means_ci"]
    if paper_speedup is None:
        if low > 1:
            text = "faster than ArS (95% CI above 1)"
        elif high < 1:
            text = "slower than ArS (95% CI below 1)"
        else:
            text = "not faster than ArS (95% CI reaches 1)"
        return {"level": NOT_COUNTED, "counted": False, "share": None,
                "text": f"{text}; the paper has no such row, so it is not counted as a reproduction"}
    share = share_of_gain(speedup["ratio_of_means"], (low, high), paper_speedup)
    reached = f"{_pct(share['share'])} [{_pct(share['ci'][0])}, {_pct(share['ci'][1])}] of the paper's gain"
    if low > 1 and high >= paper_speedup:  # a speedup shown, and the paper's value not excluded
        level, text = REPRODUCED, f"reproduced: the 95% CI reaches the paper's {_x(paper_speedup)} ({reached})"
    elif low > 1:
        level, text = PARTLY, f"partly reproduced: faster than ArS but short of the paper, {reached}"
    else:
        level, text = NOT, f"not reproduced: the 95% CI reaches 1, no speedup shown ({reached})"
    return {"level": level, "counted": True, "share": share, "text": text}


def _number(value: float, digits: int, percent: bool, difference: bool = False) -> str:
    """A metric value: 0.0312, or a share as 25.0% (a difference of shares in points: 8.3 points)."""
    if percent:
        return f"{100 * value:.{digits}f}" + (" points" if difference else "%")
    return f"{value:.{digits}f}"


def metric_verdict(test: dict | None, name: str, margin: dict | None, digits: int = 3, percent: bool = False,
                   log_scale: bool = False) -> dict:
    """The quality verdict of one metric from its paired TOST record (analysis: tost_equivalence plus
    margin_source, constant, mine_mean, ars_mean) and its margin record (equivalence_margins); `log_scale` for a
    log-perplexity, whose margin reads as a perplexity ratio. {"level", "text", "test", "margin_text"}."""
    if test is None:
        return {"level": UNTESTED, "text": f"{name}: not testable (fewer than 2 paired values)", "test": None,
                "margin_text": None}
    margin_text = margin_description(test["margin"], test["margin_source"], margin, digits, percent, log_scale)
    if test.get("constant"):
        if name.startswith("pass") and test["ars_mean"] == 0:
            what = "neither method solves any problem"
        elif name.startswith("pass") and test["ars_mean"] == 1:
            what = "both methods solve every problem"
        else:
            what = f"both methods score {_number(test['ars_mean'], digits, percent)} on every prompt"
        return {"level": VACUOUS, "text": f"{name}: vacuous, {what}", "test": test, "margin_text": margin_text}
    low, high = test.get("ci_95") or test["bootstrap_ci_95"]  # the paired t interval, as the TOST's own t-tests
    digits_diff = digits if percent else digits + 1
    diff = (f"SpS - ArS = {_number(test['diff'], digits_diff, percent, True)} (95% CI "
            f"[{_number(low, digits_diff, percent, True)}, {_number(high, digits_diff, percent, True)}])")
    if test["equivalent"] and test["margin_source"] == "ars_repeat":
        level, text = REPRODUCED, f"{name}: reproduced, equivalent within the ArS-vs-ArS spread {margin_text}; {diff}"
    elif test["equivalent"]:
        level, text = PARTLY, (f"{name}: partly reproduced, equivalent only within a fixed margin {margin_text} "
                               f"that no ArS-vs-ArS spread justifies; {diff}")
    elif low > 0 or high < 0:
        level, text = NOT, f"{name}: not reproduced, SpS differs from ArS; {diff}"
    else:
        level, text = UNTESTED, (f"{name}: not testable at this size, no difference detected but not shown "
                                 f"equivalent within {margin_text}; {diff}; {detectable_text(test, digits, percent)}")
    return {"level": level, "text": text, "test": test, "margin_text": margin_text,
            "detectable": detectable_text(test, digits, percent)}


def detectable_text(test: dict, digits: int = 3, percent: bool = False) -> str:
    """What a paired test of n values could show: 'with n = 5 pairs the test detects a difference of 0.0412 or
    more with 80% power, and shows equivalence only within ±0.0655 or wider'."""
    digits_diff = digits if percent else digits + 1
    parts = [f"with n = {test['n']} pairs"] if test.get("n") else []
    if test.get("min_detectable_difference") is not None:
        parts.append(f"the test detects a difference of "
                     f"{_number(test['min_detectable_difference'], digits_diff, percent, True)} or more with 80% power")
    if test.get("smallest_equivalence_margin") is not None:
        parts.append(f"{'and ' if len(parts) > 1 else ''}shows equivalence only within "
                     f"±{_number(test['smallest_equivalence_margin'], digits_diff, percent, True)} or wider")
    return ", ".join(parts) if len(parts) > 1 else "the summary predates the detectable difference"


def margin_description(value: float, source: str, margin: dict | None, digits: int = 3, percent: bool = False,
                       log_scale: bool = False) -> str:
    """How big a margin is and where it came from: '±0.020 (fixed; 67% of ArS's mean 0.030)',
    '±0.012 (ArS-vs-ArS spread; 40% of ArS's mean 0.030)', '±0.100 (fixed; perplexity within x0.90 to x1.11)'.
    The reason a fixed margin was used is the margin record's `reason` (the report states it once per group)."""
    import math

    text = f"±{_number(value, digits, percent, True)}"
    parts = ["ArS-vs-ArS spread" if source == "ars_repeat" else "fixed"]
    if log_scale:
        parts.append(f"perplexity within x{math.exp(-value):.2f} to x{math.exp(value):.2f}")
    elif margin and margin.get("ars_mean"):
        parts.append(f"{_pct(value / abs(margin['ars_mean']))} of ArS's mean {_number(margin['ars_mean'], digits, percent)}")
    return f"{text} ({'; '.join(parts)})"


def quality_verdict(primary: dict, perplexity: dict | None, greedy_identical: bool) -> dict:
    """The quality verdict of one task and mode: the primary metric's, unless greedy SpS matched ArS token for
    token (identical by construction) or the primary metric is vacuous or not testable (at this size, or from
    fewer than 2 values), when the log-perplexity under the target decides (the primary metric's text is still
    said). {"level", "text", "primary", "perplexity"}."""
    if greedy_identical:
        return {"level": VACUOUS, "primary": primary, "perplexity": perplexity,
                "text": "identical by construction (greedy SpS emitted ArS's exact tokens on every prompt)"}
    # the perplexity decides when it was tested (from 2 or more values), whatever its level
    if primary["level"] in (VACUOUS, UNTESTED) and perplexity is not None and perplexity["test"] is not None:
        return {"level": perplexity["level"], "primary": primary, "perplexity": perplexity,
                "text": f"{primary['text']}; {perplexity['text']}"}
    return {"level": primary["level"], "primary": primary, "perplexity": perplexity, "text": primary["text"]}
