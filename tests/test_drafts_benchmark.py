"""The drafts-as-points tables (benchmarks/drafts.py), on a hand-made results directory with known answers.

Method: three XSum greedy prompts with fixed ms/token per method and known trace steps: ArS target calls take
20 ms (t(1)), SpS with the distilled draft at K=2 drafts 2 tokens in 2 ms (c = 1 ms / 20 ms = 0.05) and its target
call scoring 3 tokens takes 30 ms (t(3)/t(1) = 1.5), with alpha 0.7. So the Leviathan prediction is
(1 - 0.7^3) / (0.3 * (2 * 0.05 + 1.5)), and every peer ratio is the geometric mean of the per-prompt ratios of the
fixed ms/token (the analysis's paired t-interval point), the "ours vs HF ms" column a ratio of mean ms/token. Each
number in the tables and each target verdict is checked against its hand value.
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.drafts import benchmark_tables, render_markdown

MS = {  # ms/token per method on the three prompts
    "ars": [20.0, 22.0, 24.0],
    "ars_hf": [50.0, 55.0, 60.0],  # slower than generate(): a target not met
    "hf_generate": [45.0, 50.0, 55.0],
    "sps": [10.0, 11.0, 12.0],  # distilled K=2: 2x
    "sps_ngram": [18.0, 22.0, 26.0],
    "sps_hf": [30.0, 33.0, 36.0],
    "hf_assisted": [40.0, 44.0, 48.0],
}
ALPHA = 0.7


def _row(example: int, method: str, ms: float, steps: list, draft=None, k=None, alpha=None) -> dict:
    proposed, accepted = sum(s[0] for s in steps), sum(s[1] for s in steps)
    return {
        "block": "main", "task": "xsum", "example_id": f"x{example}", "mode": "greedy", "seed": 0, "sample": 0,
        "sweep_value": None, "method": method, "draft": draft, "k": k, "temperature": 0.0, "top_p": 1.0,
        "top_k": 0, "max_new_tokens": 4, "max_prompt_tokens": 100, "prompt_tokens": 10, "num_tokens": 4,
        "stop_reason": "max_new_tokens", "wall_ms": ms * 4, "prefill_ms": 0.0, "ms_per_token": ms,
        "target_calls": len(steps), "proposed": proposed, "accepted": accepted,
        "acceptance_rate": accepted / proposed if proposed else None, "alpha": alpha, "steps": steps,
        "generated_ids": [5, 6, 7, 8], "text": "the cat sat on the mat", "reference": "the cat sat on the mat",
        "target_logprobs": [-1.0] * 4,
    }


@pytest.fixture
def results(tmp_path):
    rows = []
    for i in range(3):
        rows.append(_row(i, "ars", MS["ars"][i], [[0, 0, 0.0, 20.0, None]] * 4))
        rows.append(_row(i, "ars_hf", MS["ars_hf"][i], [[0, 0, 0.0, 50.0, None]] * 4))
        rows.append(_row(i, "hf_generate", MS["hf_generate"][i], []))
        # two loops of K=2 (each: 2 drafted in 2 ms, 1 accepted, a 30 ms target call scoring 3 tokens)
        rows.append(_row(i, "sps", MS["sps"][i], [[2, 1, 2.0, 30.0, ALPHA]] * 2, "distilled", 2, ALPHA))
        rows.append(_row(i, "sps", MS["sps_ngram"][i], [[1, 1, 0.1, 25.0, 1.0]] * 2, "ngram", 1, 1.0))
        rows.append(_row(i, "sps_hf", MS["sps_hf"][i], [[2, 1, 4.0, 60.0, ALPHA]] * 2, "distilled", 2, ALPHA))
        rows.append(_row(i, "hf_assisted", MS["hf_assisted"][i], [], "distilled", 2))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"price_per_hour_usd": 0.1, "tasks": {"xsum": {}}, "modes": {"greedy": {}},
              "drafts": [{"name": "distilled"}, {"name": "ngram"}]}
    (tmp_path / "manifest.json").write_text(json.dumps({
        "config": config, "config_name": "fixture", "sessions": [],
        "models": {"target": {"name": "t", "parameters": 1e8, "runtime": "fast-bf16"}}}))
    return tmp_path


def _ratio(a: str, b: str) -> float:
    """The ratio of mean ms/token."""
    return sum(MS[a]) / sum(MS[b])


def _geometric(a: str, b: str) -> float:
    """The geometric mean of the per-prompt ratios a_i / b_i."""
    return math.exp(sum(math.log(x / y) for x, y in zip(MS[a], MS[b])) / len(MS[a]))


def test_points_hold_measured_numbers_and_the_leviathan_prediction(results):
    tables = benchmark_tables(results)
    assert [(p["draft"], p["k"]) for p in tables["points"]] == [("distilled", 2), ("ngram", 1)]  # config order
    point = tables["points"][0]
    assert point["c"] == pytest.approx(1.0 / 20.0)
    assert point["alpha"] == pytest.approx(ALPHA)
    assert (point["accepted"], point["proposed"]) == (6, 12)
    assert point["tokens_per_call"] == pytest.approx(12 / 6)
    assert point["t_ratio"] == pytest.approx(1.5)  # t(3) / t(1) from the traces; the HF-forward steps stay out
    assert point["speedup"] == pytest.approx(_ratio("ars", "sps"))
    low, high = point["speedup_ci"]
    assert low <= point["speedup"] <= high
    predicted = (1 - ALPHA ** 3) / ((1 - ALPHA) * (2 * 0.05 + 1.5))
    assert point["predicted_speedup"] == pytest.approx(predicted)
    assert point["efficiency"] == pytest.approx(point["speedup"] / predicted)
    assert tables["cost_curves_ms"]["xsum"] == {"1": 20.0, "2": 25.0, "3": 30.0}
    best = {p["draft"]: p["k"] for p in tables["best_k"]}
    assert best == {"distilled": 2, "ngram": 1}


def test_peer_table_pairs_each_hf_peer_with_both_of_our_engines(results):
    peers = {(p["ours"], p["peer"]): p for p in benchmark_tables(results)["peers"]}
    assert set(peers) == {("ArS", "HF generate"), ("ArS (HF forward)", "HF generate"),
                          ("SpS", "HF assisted[distilled,K=2]"), ("SpS (HF forward)", "HF assisted[distilled,K=2]")}
    assert peers[("ArS", "HF generate")]["hf_over_ours"] == pytest.approx(_geometric("hf_generate", "ars"))
    assert peers[("ArS (HF forward)", "HF generate")]["hf_over_ours"] == pytest.approx(_geometric("hf_generate", "ars_hf"))
    sps = peers[("SpS", "HF assisted[distilled,K=2]")]
    assert sps["hf_over_ours"] == pytest.approx(_geometric("hf_assisted", "sps"))
    assert sps["ours_over_hf_ms"] == pytest.approx(_ratio("sps", "hf_assisted"))
    sps_hf = peers[("SpS (HF forward)", "HF assisted[distilled,K=2]")]
    assert sps_hf["hf_over_ours"] == pytest.approx(_geometric("hf_assisted", "sps_hf"))


def test_target_checks_report_met_and_not_met_with_the_numbers(results):
    checks = {c["target"].split(" >=")[0].split(" at")[0]: c for c in benchmark_tables(results)["checks"]}
    acceptance = checks["per-token acceptance of the distilled draft"]
    assert acceptance["met"] is True and "alpha 0.700 at its best K=2" in acceptance["measured"]
    speedup = checks["best speedup"]
    assert speedup["met"] is True and "2.00x [" in speedup["measured"] and "distilled at K=2" in speedup["measured"]
    # 2x measured vs 1.37x predicted: efficiency 1.46, met
    assert checks["efficiency (measured / predicted speedup)"]["met"] is True
    assert checks["our SpS ms/token"]["met"] is True  # 11 vs 44 ms/token
    assert checks["our SpS on the HF forward (like for like) ms/token"]["met"] is True  # 33 vs 44: 0.75 <= 0.9
    assert checks["our ArS no slower than plain generate()"]["met"] is True
    like_for_like = checks["our ArS on the HF forward (like for like) no slower than plain generate()"]
    assert like_for_like["met"] is False and "0/1 pairs met" in like_for_like["measured"]
    assert "ours 55.0 vs HF 50.0 ms/token" in like_for_like["measured"]


def test_markdown_starts_with_the_command(results):
    markdown = render_markdown(benchmark_tables(results), "python -m benchmarks.drafts --out x")
    lines = markdown.splitlines()
    assert lines[0].startswith("# Drafts as points") and lines[2] == "Command: `python -m benchmarks.drafts --out x`"
    assert "| xsum | 0 | distilled | 2 | 3 | 0.050 | 0.700 | 6/12 | 2.00 |" in markdown
