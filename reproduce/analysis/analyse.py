"""From an experiment's raw rows to every number the report shows.

`analyse(out_dir)` reads rows.jsonl and manifest.json and returns one nested dict of plain numbers (also
written to summary.json). Nothing here times or generates anything; the report template only formats it.

Pairing: methods are compared on the same unit (block, task, example, mode, seed, sample), so every speedup
and quality difference is a paired per-prompt comparison against the ArS baseline run on that same prompt.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from reproduce import tasks
from reproduce.analysis import metrics, stats, theory
from reproduce.analysis.sandbox import evaluate_completions, isolation_level
from reproduce.catalogue import method_label
from reproduce.errors import ReproduceError
from reproduce.runs.results import MANIFEST_FILE, ROWS_FILE, json_safe, read_rows

UNIT = ["block", "task", "example_id", "mode", "seed", "sample", "sweep_value"]
BOOTSTRAP_SEED = 20230202  # arXiv 2302.01318: every bootstrap in the report uses this fixed seed
# Equivalence margins for "no degradation" (TOST at alpha 0.05). The paper's own ArS-vs-SpS differences
# are 0.001-0.002 ROUGE-2 and 1.9 points of pass@1, within these.
MARGINS = {"rouge2": 0.02, "log_perplexity": 0.10, "pass": 0.10}
K_MAX_THEORY = 8
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
        "statistic": "number of generated tokens",
        "test": "Wilcoxon signed-rank test (two-sided) of the per-unit differences, method minus ArS",
        "assumption": "the method's and ArS's sequences for a unit are independent draws (own seeds) given the "
                      "prompt, so under the null each difference is symmetric about 0, and units are independent.",
    },
}


def load_frame(out_dir: Path) -> pd.DataFrame:
    rows = read_rows(out_dir)
    if not rows:
        raise ReproduceError(f"{out_dir}/{ROWS_FILE} has no rows: run the experiment first")
    frame = pd.DataFrame(rows)
    frame["variant"] = [method_label(m, d, k) for m, d, k in zip(frame["method"], frame["draft"], frame["k"])]
    frame["sweep_value"] = frame["sweep_value"].astype(object).where(frame["sweep_value"].notna(), None)
    return frame



def add_quality(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-row quality: the scored text, ROUGE vs reference and vs the unit's ArS output, perplexity under
    the target, exact match with ArS, HumanEval pass (run in the sandbox subprocess)."""
    frame = frame.copy()
    frame["scored_text"] = [tasks.postprocess_output(t, x) for t, x in zip(frame["task"], frame["text"])]
    frame["perplexity"] = [metrics.perplexity(lp) for lp in frame["target_logprobs"]]
    frame["log_perplexity"] = np.log(frame["perplexity"])
    ars = frame[frame["method"] == "ars"].set_index(UNIT)
    keys = list(zip(*(frame[c] for c in UNIT)))
    ars_text = [ars["scored_text"].get(key) if key in ars.index else None for key in keys]
    ars_ids = [ars["generated_ids"].get(key) if key in ars.index else None for key in keys]
    frame["exact_match_ars"] = [ids == a if a is not None else None for ids, a in zip(frame["generated_ids"], ars_ids)]
    text_tasks = frame["task"] != "humaneval"
    for column in ("rouge1", "rouge2", "rougeL", "rouge2_vs_ars"):
        frame[column] = np.nan
    if text_tasks.any():
        sub = frame[text_tasks]
        scores = metrics.rouge_scores(list(sub["scored_text"]), list(sub["reference"]))
        for name, values in scores.items():
            frame.loc[text_tasks, name] = values
        paired = [(i, a) for i, a in zip(sub.index, np.array(ars_text, dtype=object)[text_tasks.values]) if a is not None]
        if paired:
            vs_ars = metrics.rouge_scores([frame.at[i, "scored_text"] for i, _ in paired], [a for _, a in paired])
            frame.loc[[i for i, _ in paired], "rouge2_vs_ars"] = vs_ars["rouge2"]
    frame["passed"] = np.nan
    code = frame["task"] == "humaneval"
    if code.any():
        problems = {e.example_id: e.extra for e in tasks.load_examples("humaneval", None)}
        sub = frame[code]
        results = evaluate_completions([problems[i] for i in sub["example_id"]], list(sub["scored_text"]))
        frame.loc[code, "passed"] = [float(r["passed"]) for r in results]
    return frame


def _pct(values, q):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.percentile(values, q)) if values else None


def method_table(frame: pd.DataFrame, price_per_hour: float, rng) -> list[dict]:
    """One row per (block, task, mode, variant): speed, acceptance, quality and the paired tests vs ArS."""
    out = []
    for (block, task, mode, sweep_value), group in frame.groupby(["block", "task", "mode", "sweep_value"], dropna=False, sort=False):
        sweep_value = None if pd.isna(sweep_value) else sweep_value
        ars = group[group["method"] == "ars"].set_index(UNIT)
        for variant, rows in group.groupby("variant", sort=False):
            first = rows.iloc[0]
            entry = {
                "block": block, "task": task, "mode": mode, "sweep_value": sweep_value, "variant": variant,
                "method": first["method"], "draft": first["draft"], "k": None if pd.isna(first["k"]) else int(first["k"]),
                "temperature": float(first["temperature"]), "top_p": float(first["top_p"]),
                "max_new_tokens": int(first["max_new_tokens"]), "max_prompt_tokens": int(first["max_prompt_tokens"]),
                "n": len(rows), "tokens_mean": float(rows["num_tokens"].mean()),
                "prompt_tokens_mean": float(rows["prompt_tokens"].mean()),
                **metrics.latency_summary(rows["ms_per_token"].tolist()),
                "acceptance_p50": _pct(rows["acceptance_rate"], 50), "acceptance_p95": _pct(rows["acceptance_rate"], 95),
                "acceptance_pooled": _ratio(rows["accepted"].sum(), rows["proposed"].sum()),
                "alpha": _pct(rows["alpha"], 50) if rows["alpha"].notna().any() else None,
                "alpha_mean": float(rows["alpha"].mean()) if rows["alpha"].notna().any() else None,
                "tokens_per_call": _ratio(rows["num_tokens"].sum(), rows["target_calls"].sum()),
                # one loop = draft K + verify + bookkeeping; the prefill is not part of any loop
                "loop_ms": _ratio((rows["wall_ms"] - rows["prefill_ms"]).sum(), rows["target_calls"].sum()),
                "loop_ms_ci": stats.mean_ci((rows["wall_ms"] - rows["prefill_ms"]) / rows["target_calls"], rng),
                # Chen et al. Figure 1: mean time to sample 128 tokens, from the measured ms/token (prefill included)
                "time_128_tokens_ms": float(rows["ms_per_token"].mean() * 128),
                "time_128_tokens_ms_ci": _scaled(stats.mean_ci(rows["ms_per_token"], rng), 128),
                "acceptance_ci": stats.mean_ci(rows["acceptance_rate"].astype(float), rng),
            }
            drafted = sum(step[0] for steps in rows["steps"] for step in steps)
            if drafted:
                entry["draft_ms_per_drafted_token"] = sum(step[2] for steps in rows["steps"] for step in steps) / drafted
            if entry["k"] and entry["tokens_per_call"]:
                entry["r"] = entry["tokens_per_call"] / (entry["k"] + 1)  # Chen et al.: tokens per loop / (K+1)
            entry["usd_per_million_tokens"] = metrics.cost_per_million_tokens(entry["tokens_per_s_p50"], price_per_hour)
            entry["quality"] = _quality(rows, rng)
            if first["method"] != "ars":
                entry["vs_ars"] = _paired_vs_ars(rows, ars, rng)
            if first["method"] in ("hf_assisted", "hf_generate"):
                entry.update(_ours_vs_hf(rows, group, rng))
            out.append(entry)
    return out


def _ours_vs_hf(hf_rows: pd.DataFrame, group: pd.DataFrame, rng) -> dict:
    """A Hugging Face peer's rows against ours on the same prompts (> 1: ours is faster): `ours_vs_hf` for our
    loop in the configured runtime (ArS vs generate, SpS vs assisted at the same draft and K), and, when run,
    `ours_hf_forward_vs_hf` for our loop over the same HF forward (ars_hf, sps_hf), the like-for-like engines."""
    first = hf_rows.iloc[0]
    if first["method"] == "hf_generate":
        ours, ours_hf_forward = group["method"] == "ars", group["method"] == "ars_hf"
    else:
        same_setting = (group["draft"] == first["draft"]) & (group["k"] == first["k"])
        ours, ours_hf_forward = (group["method"] == "sps") & same_setting, (group["method"] == "sps_hf") & same_setting
    out = {"ours_vs_hf": _paired_speedup(hf_rows, group[ours], rng)}
    if ours_hf_forward.any():  # only when those rows were run, so other profiles' summaries stay as they were
        out["ours_hf_forward_vs_hf"] = _paired_speedup(hf_rows, group[ours_hf_forward], rng)
    return out


def _scaled(ci: dict, factor: float) -> dict:
    scale = (lambda v: None if v is None else v * factor)
    return {"mean": scale(ci["mean"]), "ci": None if ci["ci"] is None else tuple(v * factor for v in ci["ci"]), "n": ci["n"]}


def _ratio(a, b):
    return float(a) / float(b) if b else None


def _quality(rows: pd.DataFrame, rng) -> dict:
    quality = {"perplexity_median": _pct(rows["perplexity"], 50), "log_perplexity": stats.mean_ci(rows["log_perplexity"], rng)}
    if rows["rouge2"].notna().any():
        quality.update({name: stats.mean_ci(rows[name], rng) for name in ("rouge1", "rouge2", "rougeL")})
    if rows["rouge2_vs_ars"].notna().any():
        quality["rouge2_vs_ars"] = stats.mean_ci(rows["rouge2_vs_ars"], rng)
    if rows["passed"].notna().any():
        per_problem = rows.groupby("example_id")["passed"].agg(["sum", "count"])
        quality["pass_at_1"] = float(np.mean([metrics.pass_at_k(int(n), int(c), 1)
                                              for c, n in zip(per_problem["sum"], per_problem["count"])]))
        n_min = int(per_problem["count"].min())
        if n_min > 1:
            quality[f"pass_at_{n_min}"] = float(np.mean([metrics.pass_at_k(int(n), int(c), n_min)
                                                         for c, n in zip(per_problem["sum"], per_problem["count"])]))
        quality["pass"] = stats.mean_ci(rows["passed"], rng)
    if rows["exact_match_ars"].notna().any():
        matches = rows["exact_match_ars"].dropna().astype(bool)
        quality["exact_match_ars"] = float(matches.mean())
        quality["mismatched_examples"] = sorted(rows.loc[matches.index[~matches.values], "example_id"].astype(str))
    return quality


def _decode_ms_per_token(rows: pd.DataFrame) -> pd.Series:
    """ms per generated token after the prefill (the prefill is the same for ArS and SpS and no loop's work)."""
    return (rows["wall_ms"] - rows["prefill_ms"]) / rows["num_tokens"].clip(lower=1)


def _paired_speedup(slow: pd.DataFrame, fast: pd.DataFrame, rng) -> dict | None:
    """slow ms/token over fast ms/token, paired per unit (None with fewer than two pairs)."""
    slow = slow.set_index(UNIT) if "block" in slow.columns else slow
    fast = fast.set_index(UNIT) if "block" in fast.columns else fast
    common = slow.index.intersection(fast.index)
    if len(common) < 2:
        return None
    return stats.speedup_ci(slow.loc[common, "ms_per_token"], fast.loc[common, "ms_per_token"], rng)


def _paired_vs_ars(rows: pd.DataFrame, ars: pd.DataFrame, rng) -> dict:
    """Speedup (bootstrap CI, Wilcoxon), TOST on quality, and at T > 0 the SAMPLED_TESTS, each paired with ArS."""
    rows = rows.set_index(UNIT)
    common = rows.index.intersection(ars.index)
    if len(common) < 2:
        return {"n": len(common)}
    mine, base = rows.loc[common], ars.loc[common]
    result = {"n": len(common),
              "speedup": stats.speedup_ci(base["ms_per_token"], mine["ms_per_token"], rng),
              # the decode loop alone (prefill excluded): what the Leviathan model predicts
              "decode_speedup": stats.speedup_ci(_decode_ms_per_token(base), _decode_ms_per_token(mine), rng),
              "wilcoxon": stats.wilcoxon_speedup(base["ms_per_token"], mine["ms_per_token"])}
    equivalence = {}
    for column, margin in (("rouge2", MARGINS["rouge2"]), ("log_perplexity", MARGINS["log_perplexity"]),
                           ("passed", MARGINS["pass"])):
        a, b = mine[column].to_numpy(float), base[column].to_numpy(float)
        keep = ~(np.isnan(a) | np.isnan(b))
        if keep.sum() >= 2:
            equivalence[column] = stats.tost_equivalence(a[keep], b[keep], margin, rng=rng)
    result["equivalence"] = equivalence
    if mine["temperature"].iloc[0] > 0:  # SAMPLED_TESTS
        result["seeds_independent"] = _seeds_independent(mine, base)
        result["first_token_test"] = stats.two_sample_distribution_test(
            [ids[0] for ids in mine["generated_ids"] if ids], [ids[0] for ids in base["generated_ids"] if ids])
        result["sequence_logprob_test"] = stats.paired_symmetry_test(
            [sum(lp) for lp in mine["target_logprobs"]], [sum(lp) for lp in base["target_logprobs"]])
        result["length_test"] = stats.paired_symmetry_test(mine["num_tokens"], base["num_tokens"])
    return result


def _seeds_independent(mine: pd.DataFrame, base: pd.DataFrame) -> bool | None:
    """True when every paired row drew from a seed of its own (rows record seed_used, see runs.plan.row_seed), as
    SAMPLED_TESTS assume. None for rows written before they recorded it, when a unit's methods shared one seed."""
    if "seed_used" not in mine.columns or mine["seed_used"].isna().any() or base["seed_used"].isna().any():
        return None
    return bool((mine["seed_used"].to_numpy() != base["seed_used"].to_numpy()).all())


def cost_curve(frame: pd.DataFrame) -> dict[int, float]:
    """Median ms of one target call by tokens scored, from the traces: ArS steps give t(1), SpS steps
    with d drafted tokens give t(d+1). Only the configured runtime's rows: ars_hf / sps_hf run the target's
    HF forward, another (slower) cost curve."""
    by_n = defaultdict(list)
    for method, steps in zip(frame["method"], frame["steps"]):
        if method in ("ars", "sps"):
            for drafted, _, _, target_ms, _ in steps:
                by_n[drafted + 1].append(target_ms)
    return {n: float(np.median(v)) for n, v in sorted(by_n.items()) if len(v) >= 3}


def theory_table(table: list[dict], curve: dict[int, float]) -> list[dict]:
    """Leviathan-model prediction from measured alpha, draft cost c and the target's cost curve, vs measured.
    SpS in the configured runtime only: the curve is that runtime's (see cost_curve)."""
    if 1 not in curve:
        return []
    out = []
    for entry in table:
        if entry["method"] != "sps" or "vs_ars" not in entry or "speedup" not in entry["vs_ars"]:
            continue
        c = entry.get("draft_ms_per_drafted_token", 0.0) / curve[1]
        alpha = entry["alpha_mean"]
        k = entry["k"]
        if alpha is None or k + 1 not in curve:
            continue
        alpha = min(max(alpha, 0.0), 1.0)
        predicted = theory.predicted_speedup(alpha, k, c, curve)
        # the model describes the decode loop: compare with the speedup without the (shared) prefill
        measured = entry["vs_ars"].get("decode_speedup", entry["vs_ars"]["speedup"])["ratio_of_means"]
        best_k = None
        covered = [n - 1 for n in curve if n > 1 and all(m in curve for m in range(1, n + 1))]
        if covered:
            best_k, best = theory.optimal_k(alpha, c, curve, k_max=min(max(covered), K_MAX_THEORY))
        out.append({"block": entry["block"], "task": entry["task"], "mode": entry["mode"], "variant": entry["variant"],
                    "draft": entry["draft"], "k": k, "sweep_value": entry["sweep_value"], "alpha": alpha,
                    "acceptance": entry["acceptance_pooled"], "c": c, "t_ratio": curve[k + 1] / curve[1],
                    "predicted_speedup": predicted, "measured_speedup": measured,
                    "measured_speedup_end_to_end": entry["vs_ars"]["speedup"]["ratio_of_means"],
                    "efficiency": measured / predicted if predicted else None, "optimal_k_predicted": best_k})
    return out


def analyse(out_dir: Path, write: bool = True) -> dict:
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    frame = add_quality(load_frame(out_dir))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    price = manifest["config"]["price_per_hour_usd"]
    table = method_table(frame, price, rng)
    # one cost curve per task: t(n) depends on the context length, and XSum prompts are longer than HumanEval's
    curves = {task: cost_curve(frame[frame["task"] == task]) for task in frame["task"].unique()}
    summary = {
        "manifest": manifest,
        "rows": len(frame),
        "methods": table,
        "cost_curves_ms": {task: {str(n): ms for n, ms in curve.items()} for task, curve in curves.items()},
        "theory": [row for task, curve in curves.items()
                   for row in theory_table([e for e in table if e["task"] == task], curve)],
        "margins": MARGINS,
        "sampled_tests": SAMPLED_TESTS,
        "bootstrap_seed": BOOTSTRAP_SEED,
        # the HumanEval checks ran here, in the analysis: the isolation level is this machine's, recorded with them
        "sandbox": isolation_level() if (frame["task"] == "humaneval").any() else None,
    }
    if write:
        (out_dir / "summary.json").write_text(json.dumps(json_safe(summary), indent=1, default=str))
    return summary

