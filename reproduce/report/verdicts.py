"""Verdicts: what reproduced and what did not, from the analysis's statistics.

Speed, against the paper's Table 1 speedup P, from our speedup's 95% CI [lo, hi] (the analysis's t interval on
per-prompt log ratios; the report passes the decode loop's, the paper's mean sampling time per token):
  reproduced          lo > 1 and hi >= P: the interval reaches the paper's value
  partly reproduced   lo > 1 and hi < P: faster than ArS, but short of the paper (the share of its gain says how far)
  not reproduced      lo <= 1: no speedup shown
A task and mode the paper does not have is reported (faster / not faster than ArS) and never counted.

Quality, SpS against ArS on the same prompts (paired), is the analysis's TOST outcome within the margin fixed in
the config (reproduce.analysis.equivalence), used as it is:
  equivalent          the 90% t interval of the difference lies inside the margin
  not equivalent      it lies wholly outside: a difference larger than the margin
  inconclusive        neither (never "failed"); below the n that 80% power needs, the margin cannot be reached
Two readings are the report's own: an outcome is *vacuous* where both methods score one constant on every prompt
(e.g. neither solves any problem: "equivalent" says nothing then), and a setting whose greedy SpS emitted ArS's
exact tokens on every prompt is *identical* by construction. Where the task's metric is vacuous or untested, the
log-perplexity under the target decides the setting's outcome.
Pure functions of plain dicts, so each case is tested on its own (tests/test_verdicts.py).
"""

from __future__ import annotations

from reproduce.analysis.stats import share_of_gain

REPRODUCED, PARTLY, NOT, NOT_COUNTED, UNTESTED = (
    "reproduced", "partly reproduced", "not reproduced", "not counted", "not testable")
# quality outcomes: the analysis's three (reproduce.analysis.equivalence.OUTCOMES) and the report's "identical"
EQUIVALENT, NOT_EQUIVALENT, INCONCLUSIVE = "equivalent", "not equivalent", "inconclusive"
IDENTICAL = "identical (greedy)"


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def speedup_verdict(speedup: dict | None, paper_speedup: float | None) -> dict:
    """The speed verdict of one task and mode: {"level", "counted", "text", "share"} (share of the paper's gain,
    with its CI, where the paper has the row). `speedup` is the analysis's t-interval record (point and ci)."""
    if speedup is None or speedup.get("ci") is None:
        return {"level": UNTESTED, "counted": False, "share": None,
                "text": "not testable (fewer than 2 paired prompts)"}
    low, high = speedup["ci"]
    if paper_speedup is None:
        if low > 1:
            text = "faster than ArS (95% CI above 1)"
        elif high < 1:
            text = "slower than ArS (95% CI below 1)"
        else:
            text = "not faster than ArS (95% CI reaches 1)"
        return {"level": NOT_COUNTED, "counted": False, "share": None,
                "text": f"{text}; the paper has no such row, so it is not counted as a reproduction"}
    share = share_of_gain(speedup["point"], (low, high), paper_speedup)
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


def vacuous_reason(test: dict, name: str, digits: int = 3, percent: bool = False) -> str | None:
    """Why a TOST record says nothing (None if it does): both methods score one constant on every prompt."""
    if not test.get("constant") or test.get("exactly_equal"):
        return None
    if name.startswith("pass") and test["ars_mean"] == 0:
        return "neither method solves any problem"
    if name.startswith("pass") and test["ars_mean"] == 1:
        return "both methods solve every problem"
    return f"both methods score {_number(test['ars_mean'], digits, percent)} on every prompt"


def metric_verdict(test: dict | None, name: str, digits: int = 3, percent: bool = False) -> dict:
    """The quality outcome of one metric from its paired TOST record (analysis: equivalence.equivalence_test, with
    outcome, note, n_for_80_power, exactly_equal, constant): {"outcome", "vacuous" (why it says nothing, or None),
    "text"}. The outcome is the analysis's; None when there is no test (fewer than 2 paired values)."""
    if test is None:
        return {"outcome": None, "vacuous": None, "text": f"{name}: no test (fewer than 2 paired values)"}
    vacuous = vacuous_reason(test, name, digits, percent)
    if test["exactly_equal"]:
        return {"outcome": test["outcome"], "vacuous": None, "text": f"{name}: {test['outcome']}, {test['note']}"}
    if vacuous:
        return {"outcome": test["outcome"], "vacuous": vacuous, "text": f"{name}: {test['outcome']} but vacuous, {vacuous}"}
    digits_diff = digits if percent else digits + 1
    low, high = test["ci"]
    diff = (f"SpS - ArS = {_number(test['diff'], digits_diff, percent, True)} (90% CI "
            f"[{_number(low, digits_diff, percent, True)}, {_number(high, digits_diff, percent, True)}], "
            f"margin ±{_number(test['margin'], digits_diff, percent, True)})")
    return {"outcome": test["outcome"], "vacuous": None, "text": f"{name}: {test['outcome']}, {diff}: {test['note']}"}


def margin_description(value: float, ars_mean: float | None, digits: int = 3, percent: bool = False,
                       log_scale: bool = False) -> str:
    """How big a margin is: '±0.020 (67% of ArS's mean 0.030)', '±0.050 (perplexity within x0.95 to x1.05)'."""
    import math

    text = f"±{_number(value, digits, percent, True)}"
    if log_scale:
        return f"{text} (perplexity within x{math.exp(-value):.2f} to x{math.exp(value):.2f})"
    if ars_mean:
        return f"{text} ({_pct(value / abs(ars_mean))} of ArS's mean {_number(ars_mean, digits, percent)})"
    return text


def quality_verdict(primary: dict, perplexity: dict | None, greedy_identical: bool) -> dict:
    """The quality outcome of one task and mode: "identical" where greedy SpS matched ArS token for token
    (identical by construction); otherwise the task's metric's outcome, unless it is vacuous or untested, when the
    log-perplexity under the target decides (the metric's text is still said); inconclusive when neither says
    anything (a vacuous "equivalent" is never the setting's outcome). {"outcome", "decided_by", "text"}
    (decided_by: "metric", "log-perplexity", or None where nothing decided)."""
    if greedy_identical:
        return {"outcome": IDENTICAL, "decided_by": None,
                "text": "identical by construction (greedy SpS emitted ArS's exact tokens on every prompt)"}
    if (primary["vacuous"] or primary["outcome"] is None) and perplexity and perplexity["outcome"] is not None \
            and not perplexity["vacuous"]:
        return {"outcome": perplexity["outcome"], "decided_by": "log-perplexity",
                "text": f"{primary['text']}; {perplexity['text']}"}
    if primary["outcome"] is None or primary["vacuous"]:
        return {"outcome": INCONCLUSIVE, "decided_by": None, "text": primary["text"]}
    return {"outcome": primary["outcome"], "decided_by": "metric", "text": primary["text"]}
