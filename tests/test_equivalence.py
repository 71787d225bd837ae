"""Quality equivalence within margins fixed in the config before the run (reproduce/analysis/equivalence.py and
the `quality_margins` field of reproduce/runs/config.py).

Method: the config field is resolved from experiments/base.yaml, overridden key by key, and misspelt keys fail
with a did-you-mean. The TOST outcomes are checked on seeded synthetic per-prompt scores whose true difference we
set: equal scores come out "equivalent", a shift of 2.5 margins "not equivalent" (the negative control), a noisy
small sample "inconclusive" with "margin cannot be reached at this n". The n for 80% power is checked against a
seeded simulation of the TOST itself. Assumption of every TOST here (and in the analysis): prompts independent,
the mean per-prompt difference roughly normal; the power calculation assumes a true difference of 0.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from reproduce.analysis import equivalence
from reproduce.errors import ReproduceError
from reproduce.runs.config import (
    EXPERIMENTS_DIR,
    QualityMargin,
    base_quality_margins,
    load_config,
    read_config_data,
    resolve_config,
)

# --- the config field ---------------------------------------------------------------------------------------


def test_every_profile_gets_the_base_margins_with_reasons():
    margins = load_config("default").quality_margins
    assert {m: v.margin for m, v in margins.items()} == {"rouge2": 0.02, "pass": 0.10, "decision_accuracy": 0.10,
                                                         "log_perplexity": 0.05}
    assert all(len(v.reason) > 40 for v in margins.values())  # a reason, not a placeholder
    assert margins == base_quality_margins()


def test_a_profile_overrides_one_margin_and_keeps_the_others(tmp_path):
    (tmp_path / "base.yaml").write_text((EXPERIMENTS_DIR / "base.yaml").read_text())
    (tmp_path / "mine.yaml").write_text("include: base.yaml\nname: mine\n"
                                        "quality_margins: {rouge2: {margin: 0.03, reason: a looser one}}\n")
    margins = load_config(tmp_path / "mine.yaml").quality_margins
    assert margins["rouge2"] == QualityMargin(0.03, "a looser one")
    assert margins["pass"] == base_quality_margins()["pass"]


def test_a_config_without_the_include_gets_the_base_margins():
    data, _ = read_config_data("default")
    data = {k: v for k, v in data.items() if k != "quality_margins"}
    assert resolve_config(data, "x.yaml").quality_margins == base_quality_margins()


@pytest.mark.parametrize("margins, message", [
    ({"rouge-2": {"margin": 0.1, "reason": "r"}}, "unknown metric 'rouge-2'; did you mean 'rouge2'?"),
    ({"rouge2": {"margn": 0.1, "reason": "r"}}, "unknown key 'margn'; did you mean 'margin'?"),
    ({"pass": {"margin": 0.0, "reason": "r"}}, "needs a margin > 0 and a reason"),
    ({"pass": {"margin": 0.1, "reason": " "}}, "needs a margin > 0 and a reason"),
])
def test_bad_margins_fail_with_one_line(margins, message):
    data, _ = read_config_data("default")
    with pytest.raises(ReproduceError, match=message.replace("?", r"\?")):
        resolve_config({**data, "quality_margins": margins}, "x.yaml")


def test_a_run_saved_before_margins_existed_is_judged_by_the_base_margins():
    margins, source = equivalence.run_margins({"name": "old"})
    assert margins["rouge2"]["margin"] == 0.02 and "predates" in source
    margins, source = equivalence.run_margins({"quality_margins": {"rouge2": {"margin": 0.5, "reason": "r"}}})
    assert margins == {"rouge2": {"margin": 0.5, "reason": "r"}} and source == "config"


# --- power ----------------------------------------------------------------------------------------------------


def _simulated_tost_power(sd: float, n: int, margin: float, rng) -> float:
    differences = rng.normal(0.0, sd, size=(20000, n))
    mean, se = differences.mean(1), differences.std(1, ddof=1) / np.sqrt(n)
    critical = scipy_stats.t.ppf(0.95, n - 1)
    return float(((mean - critical * se > -margin) & (mean + critical * se < margin)).mean())


@pytest.mark.parametrize("sd, margin", [(1.0, 0.5), (0.055, 0.02), (1.0, 1.5)])
def test_n_for_power_gives_80_percent_power_by_simulation(sd, margin):
    n = equivalence.n_for_power(sd, margin)
    rng = np.random.default_rng(12)
    assert _simulated_tost_power(sd, n, margin, rng) >= 0.79  # 20000 draws: sd of the estimate 0.003
    assert _simulated_tost_power(sd, n - 1, margin, rng) < 0.80
    assert equivalence.tost_power(sd, n, margin) == pytest.approx(_simulated_tost_power(sd, n, margin, rng), abs=0.01)


def test_n_for_power_edge_cases():
    assert equivalence.n_for_power(0.0, 0.1) == 2
    assert equivalence.n_for_power(None, 0.1) is None
    assert equivalence.n_for_power(1.0, 1e-4) is None  # beyond a million prompts


# --- outcomes -------------------------------------------------------------------------------------------------


def _frames(mine_scores, ars_scores, same_tokens=False):
    n = len(ars_scores)
    ars = pd.DataFrame({"rouge2": ars_scores, "generated_ids": [[i] for i in range(n)]})
    mine = pd.DataFrame({"rouge2": mine_scores,
                         "generated_ids": [[i] if same_tokens else [i, 99] for i in range(n)]})
    return mine, ars


MARGIN = {"margin": 0.02, "reason": "r"}


def test_equivalent_not_equivalent_and_inconclusive():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.05, 0.15, size=40)
    same = equivalence.equivalence_test(*_frames(base + rng.normal(0, 0.01, 40), base), "rouge2", MARGIN)
    assert same["outcome"] == "equivalent" and same["equivalent"] and not same["exactly_equal"]
    assert same["n_for_80_power"] <= 40
    # negative control: a true shift of 0.05 (2.5 margins) is shown to exceed the margin
    shifted = equivalence.equivalence_test(*_frames(base + 0.05 + rng.normal(0, 0.01, 40), base), "rouge2", MARGIN)
    assert shifted["outcome"] == "not equivalent" and shifted["ci"][0] > 0.02
    # five noisy prompts: the interval straddles the margin, and 80% power would need far more prompts
    noisy = equivalence.equivalence_test(*_frames(base[:5] + rng.normal(0, 0.05, 5), base[:5]), "rouge2", MARGIN)
    assert noisy["outcome"] == "inconclusive" and noisy["n_for_80_power"] > 5
    assert noisy["note"].startswith(equivalence.CANNOT_REACH) and noisy["margin_reachable"] is False
    assert same["margin_reachable"] is True
    assert set(equivalence.OUTCOMES) == {"equivalent", "not equivalent", "inconclusive"}


def test_identical_tokens_are_exactly_equal_and_no_test_runs():
    scores = [0.1, 0.2, 0.05]
    result = equivalence.equivalence_test(*_frames(scores, scores, same_tokens=True), "rouge2", MARGIN)
    assert result["exactly_equal"] and result["outcome"] == "equivalent" and result["p_value"] is None
    assert result["diff"] == 0.0 and "exactly 0" in result["note"]
    # the same scores from different tokens are a measured (constant) difference: TOST's exact path, not this one
    other = equivalence.equivalence_test(*_frames(scores, scores), "rouge2", MARGIN)
    assert not other["exactly_equal"] and other["p_value"] == 0.0 and other["outcome"] == "equivalent"


def test_fewer_than_two_scored_prompts_give_no_test():
    assert equivalence.equivalence_test(*_frames([0.1, np.nan], [0.1, 0.2]), "rouge2", MARGIN) is None


def test_no_outcome_or_note_says_failed():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.05, 0.15, size=6)
    records = [equivalence.equivalence_test(*_frames(base + shift + rng.normal(0, noise, 6), base), "rouge2", MARGIN)
               for shift, noise in ((0, 0.001), (0.1, 0.001), (0, 0.05), (0.02, 0.03))]
    assert {r["outcome"] for r in records} == set(equivalence.OUTCOMES)
    assert "fail" not in json.dumps(records, default=str).lower()
