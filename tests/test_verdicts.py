"""What reproduced and what did not: the verdict levels and the statistics behind them.

Method: every level of reproduce/report/verdicts.py on a hand-made statistic that sits clearly in it (a speedup
t interval reaching the paper's value, one short of it, one reaching 1, a task the paper does not have; TOST
records as the analysis writes them, one per outcome, each passed through as it is, a vacuous one (both score 0)
where the log-perplexity decides, an exactly equal one, and a missing one), and the numbers the verdicts rest on against
values computed by hand: the share of the paper's gain and its interval, the Wilson interval of pass@1 (0 of 12 problems: [0, 0.2425]), the PubMedQA decision
extracted from an answer, acceptance by draft position from a trace's steps, and Figure 1's time for the
whole budget of tokens, measured from the rows that generated all of it, never extrapolated. Statistics with
a bootstrap use fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reproduce.analysis import metrics, speed, stats, summary
from reproduce.analysis.frame import add_timing_columns
from reproduce.errors import ReproduceError
from reproduce.report import verdicts

# --- speed: the paper's magnitude ---------------------------------------------------------------------------


def _speedup(point: float, low: float, high: float) -> dict:
    """The analysis's t-interval record (ratios.log_ratio_interval), the fields the verdict reads."""
    return {"point": point, "ci": (low, high), "n": 30, "interval": "t on per-prompt log ratios"}


def test_share_of_gain_and_its_interval_by_hand():
    share = stats.share_of_gain(1.08, (1.03, 1.15), 1.92)
    assert share["share"] == pytest.approx(0.08 / 0.92)
    assert share["ci"] == pytest.approx((0.03 / 0.92, 0.15 / 0.92))
    assert stats.share_of_gain(1.92, None, 1.92)["share"] == pytest.approx(1.0)  # the paper's whole gain
    assert stats.share_of_gain(0.9, (0.8, 1.0), 2.0)["share"] == pytest.approx(-0.1)  # slower than ArS: below 0
    with pytest.raises(ReproduceError, match="above 1"):
        stats.share_of_gain(1.2, None, 1.0)


def test_speed_reproduced_when_the_interval_reaches_the_papers_value():
    verdict = verdicts.speedup_verdict(_speedup(1.7, 1.4, 2.05), 2.01)
    assert verdict["level"] == "reproduced" and verdict["counted"]
    assert verdict["share"]["ci"][1] > 1  # the interval reaches the paper's whole gain
    assert "reaches the paper's 2.01x" in verdict["text"]


def test_speed_partly_reproduced_when_faster_than_ars_but_short_of_the_paper():
    verdict = verdicts.speedup_verdict(_speedup(1.08, 1.03, 1.15), 1.92)
    assert verdict["level"] == "partly reproduced" and verdict["counted"]
    assert "9% [3%, 16%] of the paper's gain" in verdict["text"]


def test_speed_not_reproduced_when_the_interval_reaches_one():
    verdict = verdicts.speedup_verdict(_speedup(1.07, 0.99, 1.2), 2.46)
    assert verdict["level"] == "not reproduced" and verdict["counted"]
    assert "no speedup shown" in verdict["text"]
    # an interval wide enough to reach both 1 and the paper's value shows no speedup: never "reproduced"
    assert verdicts.speedup_verdict(_speedup(1.5, 0.9, 2.2), 2.01)["level"] == "not reproduced"


def test_a_setting_the_paper_does_not_have_is_reported_but_never_counted():
    faster = verdicts.speedup_verdict(_speedup(1.48, 1.26, 1.8), None)
    assert faster["level"] == "not counted" and not faster["counted"] and faster["share"] is None
    assert faster["text"].startswith("faster than ArS") and "not counted as a reproduction" in faster["text"]
    assert verdicts.speedup_verdict(_speedup(1.07, 1.0, 1.2), None)["text"].startswith("not faster than ArS")
    assert verdicts.speedup_verdict(_speedup(0.8, 0.7, 0.9), None)["text"].startswith("slower than ArS")
    untested = verdicts.speedup_verdict(None, 2.01)
    assert untested["level"] == "not testable" and not untested["counted"]


# --- quality: the analysis's outcome within the config's margin -----------------------------------------------


def _tost(outcome: str, diff: float, ci: tuple, note: str, constant: bool = False, ars_mean=0.03,
          exactly_equal: bool = False) -> dict:
    """A TOST record with the fields reproduce.analysis.equivalence.equivalence_test writes."""
    return {"diff": diff, "ci": ci, "ci_95": ci, "p_value": None if exactly_equal else 0.2, "equivalent": outcome == "equivalent",
            "margin": 0.02, "n": 20, "outcome": outcome, "note": note, "exactly_equal": exactly_equal,
            "constant": constant, "mine_mean": ars_mean + diff, "ars_mean": ars_mean, "n_for_80_power": 34,
            "margin_reachable": False, "margin_source": "config", "usable": True}


def test_each_outcome_is_the_analysis_s_as_it_is():
    cases = {"equivalent": (0.001, (-0.004, 0.006), "the 90% interval lies inside ±0.02"),
             "not equivalent": (-0.05, (-0.07, -0.03), "the 90% interval lies outside ±0.02: a difference larger than the margin"),
             "inconclusive": (0.002, (-0.03, 0.034), "margin cannot be reached at this n (80% power needs n = 34, the run has 20)")}
    for outcome, (diff, ci, note) in cases.items():
        verdict = verdicts.metric_verdict(_tost(outcome, diff, ci, note), "ROUGE-2")
        assert verdict["outcome"] == outcome and not verdict["vacuous"]
        assert verdict["text"].startswith(f"ROUGE-2: {outcome}, SpS - ArS = ") and verdict["text"].endswith(note)
        assert "margin ±0.0200" in verdict["text"] and "90% CI" in verdict["text"]
        assert "failed" not in verdict["text"] and "reproduced" not in verdict["text"]
    missing = verdicts.metric_verdict(None, "ROUGE-2")
    assert missing["outcome"] is None and "fewer than 2 paired values" in missing["text"]


def test_the_margin_is_stated_against_arss_mean():
    assert verdicts.margin_description(0.02, 0.03) == "±0.020 (67% of ArS's mean 0.030)"
    assert verdicts.margin_description(0.1, None, 1, True) == "±10.0 points"
    assert verdicts.margin_description(0.05, 1.2, log_scale=True) == "±0.050 (perplexity within x0.95 to x1.05)"


def test_vacuous_comparisons_are_named_and_perplexity_decides():
    nobody = verdicts.metric_verdict(_tost("equivalent", 0.0, (0.0, 0.0), "the score difference is 0 on every prompt",
                                           constant=True, ars_mean=0.0), "pass@1", 1, True)
    assert nobody["outcome"] == "equivalent" and nobody["vacuous"] == "neither method solves any problem"
    assert nobody["text"] == "pass@1: equivalent but vacuous, neither method solves any problem"
    perplexity = verdicts.metric_verdict(_tost("inconclusive", -0.2, (-0.4, 0.02), "margin cannot be reached at this n",
                                               ars_mean=1.0), "log-perplexity")
    combined = verdicts.quality_verdict(nobody, perplexity, greedy_identical=False)
    assert combined["outcome"] == "inconclusive" and combined["decided_by"] == "log-perplexity"
    assert combined["text"].startswith("pass@1: equivalent but vacuous") and "log-perplexity: inconclusive" in combined["text"]
    greedy = verdicts.quality_verdict(nobody, perplexity, greedy_identical=True)
    assert greedy["outcome"] == verdicts.IDENTICAL and greedy["text"].startswith("identical by construction")
    # a metric that says something decides, whatever the log-perplexity says
    rouge = verdicts.metric_verdict(_tost("inconclusive", 0.002, (-0.03, 0.034), "n"), "ROUGE-2")
    equivalent = verdicts.metric_verdict(_tost("equivalent", 0.0, (-0.01, 0.01), "inside", ars_mean=1.0), "log-perplexity")
    assert verdicts.quality_verdict(rouge, equivalent, False)["outcome"] == "inconclusive"
    assert verdicts.quality_verdict(rouge, equivalent, False)["decided_by"] == "metric"
    # nothing tested at all, or a vacuous metric with no log-perplexity to decide: inconclusive, never "failed",
    # and a vacuous "equivalent" is never the setting's outcome
    none = verdicts.metric_verdict(None, "ROUGE-2")
    assert verdicts.quality_verdict(none, None, False)["outcome"] == "inconclusive"
    alone = verdicts.quality_verdict(nobody, None, False)
    assert (alone["outcome"], alone["decided_by"]) == ("inconclusive", None)


def test_identical_outputs_are_equivalent_exactly_not_vacuous():
    same = _tost("equivalent", 0.0, (0.0, 0.0), "identical tokens on every prompt: the difference is exactly 0 (no test run)",
                 constant=True, exactly_equal=True)
    verdict = verdicts.metric_verdict(same, "ROUGE-2")
    assert verdict["outcome"] == "equivalent" and not verdict["vacuous"]
    assert verdict["text"] == ("ROUGE-2: equivalent, identical tokens on every prompt: the difference is exactly 0 "
                               "(no test run)")


# --- the numbers behind them --------------------------------------------------------------------------------


def test_pass_at_1_wilson_interval_by_hand():
    assert stats.wilson_ci(0, 12) == (0.0, pytest.approx(1.96 ** 2 / (12 + 1.96 ** 2), abs=1e-4))  # 0.2425
    low, high = stats.wilson_ci(6, 12)
    centre, half = 0.5, 1.959964 / (1 + 1.959964 ** 2 / 12) * math.sqrt(0.25 / 12 + 1.959964 ** 2 / (4 * 144))
    assert (low, high) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert stats.wilson_ci(12, 12)[1] == 1.0
    one_each = stats.proportion_ci([0.0] * 12, list(range(12)), np.random.default_rng(0))
    assert one_each["ci_method"] == "wilson" and one_each["ci"][1] == pytest.approx(0.2425, abs=1e-4)
    with pytest.raises(ReproduceError):
        stats.wilson_ci(3, 2)


def test_several_samples_per_problem_bootstrap_over_problems():
    passed = [1, 1, 0, 0, 1, 0]  # problems a (2/2), b (0/2), c (1/2)
    result = stats.proportion_ci(passed, ["a", "a", "b", "b", "c", "c"], np.random.default_rng(7))
    assert result["ci_method"] == "bootstrap over clusters" and result["units"] == 3
    assert result["mean"] == pytest.approx(0.5)
    low, high = result["ci"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0
    again = stats.proportion_ci(passed, ["a", "a", "b", "b", "c", "c"], np.random.default_rng(7))
    assert again["ci"] == result["ci"]  # the seed fixes the interval
    nobody = stats.proportion_ci([0] * 6, ["a", "a", "b", "b", "c", "c"], np.random.default_rng(7))
    assert nobody["ci"] == stats.wilson_ci(0, 3)  # no problem solved: not a point at 0, Wilson over 3 problems


@pytest.mark.parametrize("text, decision", [
    ("Yes, the ratio is a prognostic factor.", "yes"),
    ("The answer is: No.", "no"),
    ("The answer to this question is no.", "no"),
    ("Maybe; the evidence is mixed, but yes in some cases.", "maybe"),
    ("Lumbar drainage is not effective in all patients.", None),  # "not" is not "no"
    ("I do not know.", None),  # nor is "know"
    ("c-kit-dependent growth of uveal melanoma cells?", None),
])
def test_pubmedqa_decision_is_the_first_whole_yes_no_or_maybe(text, decision):
    assert metrics.pubmedqa_decision(text) == decision


def test_pubmedqa_correct_against_the_datasets_label():
    assert metrics.decision_correct("Yes, it is.", "yes") == 1.0
    assert metrics.decision_correct("No.", "Yes") == 0.0
    assert metrics.decision_correct("It depends.", "maybe") == 0.0  # no decision stated: wrong
    with pytest.raises(ReproduceError, match="label"):
        metrics.decision_correct("yes", "probably")


def test_acceptance_by_draft_position_from_the_steps():
    steps = [[[2, 1, 0.1, 5.0, 0.5], [2, 2, 0.1, 5.0, 1.0], [0, 0, 0.1, 4.0, None]],  # one row
             [[3, 0, 0.1, 6.0, 0.0], [1, 1, 0.1, 4.0, 1.0]]]  # another: K reached 3 once
    assert metrics.acceptance_by_position(steps) == [
        {"position": 1, "drafted": 4, "accepted": 3, "rate": 0.75},
        {"position": 2, "drafted": 3, "accepted": 1, "rate": pytest.approx(1 / 3)},
        {"position": 3, "drafted": 1, "accepted": 0, "rate": 0.0},
    ]
    assert metrics.acceptance_by_position([[[0, 0, 0.0, 5.0, None]]]) == []  # ArS: nothing drafted
    with pytest.raises(ReproduceError):
        metrics.acceptance_by_position([[[1, 2, 0.0, 5.0, None]]])


# --- Figure 1: the time for the whole budget, measured ------------------------------------------------------


def _sweep_row(k: int, example: int, method: str, wall_ms: float, tokens: int = 128) -> dict:
    return {"block": "k", "task": "xsum", "example_id": f"x{example}", "mode": "greedy", "seed": 0, "sample": 0,
            "sweep_value": k, "method": method, "max_new_tokens": 128, "num_tokens": tokens, "wall_ms": wall_ms,
            "prefill_ms": 0.0}


def test_time_for_the_budget_is_the_mean_wall_time_of_complete_rows_only():
    rows = pd.DataFrame([_sweep_row(2, 0, "sps", 2000.0), _sweep_row(2, 1, "sps", 2400.0),
                         _sweep_row(2, 2, "sps", 500.0, tokens=30)])  # stopped at EOS after 30 tokens
    time = summary.full_budget_time(rows, np.random.default_rng(0))
    assert time["tokens"] == 128 and time["n"] == 2 and time["excluded"] == 1 and time["rows"] == 3
    assert time["mean"] == pytest.approx(2200.0)  # not 500 / 30 * 128 for the early stop, not included at all
    low, high = time["ci"]
    assert 2000.0 <= low <= 2200.0 <= high <= 2400.0
    alone = summary.full_budget_time(rows.iloc[[0, 2]], np.random.default_rng(0))
    assert alone["mean"] == 2000.0 and alone["ci"] is None  # one complete row: a value, no interval


def test_k_sweep_names_the_best_k_and_tests_its_neighbours():
    rows = []
    ars = [1000.0, 1100.0, 1050.0, 980.0]
    noise = {1: [1.01, 0.99, 1.01, 0.99], 2: [1.0] * 4, 3: [1.06, 0.94, 1.05, 0.96]}  # per prompt
    for example, base in enumerate(ars):
        for k, speedup in ((1, 1.20), (2, 1.50), (3, 1.48)):
            rows += [_sweep_row(k, example, "ars", base),
                     _sweep_row(k, example, "sps", base / (speedup * noise[k][example]))]
    rows.append(_sweep_row(3, 9, "ars", 300.0, tokens=40))  # an early stop: left out, counted
    rows.append(_sweep_row(3, 9, "sps", 250.0, tokens=40))
    result = speed.k_sweep(add_timing_columns(pd.DataFrame(rows)), "k")  # decode ms/token = wall / 128 here
    assert result["tokens"] == 128 and result["excluded"] == 2 and result["rows"] == len(rows)
    assert result["best_k"] == 2
    points = {p["k"]: p for p in result["points"]}
    assert points[2]["vs_best"] is None and points[3]["pairs"] == 4 and points[3]["prompts"] == 5
    assert points[1]["vs_best"]["distinguishable"]  # 1.5 / 1.2: clearly slower
    assert points[1]["vs_best"]["ratio"] == pytest.approx(1.25, rel=0.01)
    assert not points[3]["vs_best"]["distinguishable"]  # 1.50 vs 1.48: cannot be told apart
    assert result["indistinguishable_from_best"] == [3]


def test_tost_reports_the_95_percent_t_interval_of_the_difference():
    result = stats.tost_equivalence([1.0, 2.0, 4.0], [0.0, 0.0, 0.0], 10.0)
    # d = 1, 2, 4: mean 7/3, sd sqrt(7/3), t(0.975, 2 df) = 4.302653
    half = 4.302653 * math.sqrt(7 / 3) / math.sqrt(3)
    assert result["ci_95"] == (pytest.approx(7 / 3 - half), pytest.approx(7 / 3 + half))


# --- ars_repeat is planned in sampled modes only ------------------------------------------------------------


def test_ars_repeat_runs_in_every_listed_mode(tmp_path):
    """ars_repeat is the A/A check of timing drift: greedy modes get it too (its tokens are ArS's there)."""
    from reproduce.runs.config import EXPERIMENTS_DIR, load_config
    from reproduce.runs.plan import main_methods, plan_units

    path = tmp_path / "repeat.yaml"
    path.write_text(f"include: {EXPERIMENTS_DIR / 'base.yaml'}\nname: repeat\nmethods: [ars, ars_repeat, sps]\n"
                    "tasks: {xsum: {rows: [0, 1], modes: [greedy, xsum_nucleus]}}\n")
    config = load_config(path)
    kinds = {unit.mode: [m.kind for m in unit.methods] for unit in plan_units(config)}
    assert kinds == {"greedy": ["ars", "ars_repeat", "sps"], "xsum_nucleus": ["ars", "ars_repeat", "sps"]}
    assert "ars_repeat" not in [m.kind for m in main_methods(load_config("quick"))]  # only when listed
