"""From an experiment's raw rows to every number the report shows.

`analyse(out_dir)` reads rows.jsonl and manifest.json and returns one nested dict of plain numbers (also
written to summary.json). Nothing here times or generates anything; the report template only formats it.

Pairing: methods are compared on the same unit (block, task, example, mode, seed, sample), so every speedup
and quality difference is a paired per-prompt comparison against the ArS baseline run on that same prompt.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from reproduce import tasks
from reproduce.analysis import metrics, stats, theory
from reproduce.analysis.sandbox import evaluate_completions, isolation_level
from reproduce.analysis.tidy import write_tidy
from reproduce.catalogue import METHOD_KINDS, method_label
from reproduce.errors import ReproduceError
from reproduce.runs.results import MANIFEST_FILE, ROWS_FILE, json_safe, read_rows

UNIT = ["block", "task", "example_id", "mode", "seed", "sample", "sweep_value"]
PROMPT = ["example_id", "seed", "sample"]  # one prompt (and sample) across the values of a sweep
BOOTSTRAP_SEED = 20230202  # arXiv 2302.01318: every bootstrap in the report derives its seed from this one
# Fallback equivalence margins (TOST at alpha 0.05), used only where the run gives no ArS-vs-ArS spread to set
# one from (no ars_repeat rows, or a greedy mode): fixed by hand, not justified by data, and the report says
# so. The paper's own ArS-vs-SpS differences are 0.001-0.002 ROUGE-2 and 1.9 points of pass@1, within these;
# against a small model's ROUGE-2 of ~0.03 a margin of 0.02 is loose (the report gives it as a share of ArS's mean).
MARGINS = {"rouge2": 0.02, "log_perplexity": 0.10, "pass": 0.10, "correct": 0.10}
# the per-row quality columns that get an equivalence test, and their fallback margin
QUALITY_COLUMNS = {"rouge2": "rouge2", "passed": "pass", "correct": "correct", "log_perplexity": "log_perplexity"}
REFERENCE_TEXT_TASKS = ("xsum",)  # tasks whose reference is a text to score ROUGE against
DECISION_TASKS = ("pubmedqa",)  # tasks whose reference is a yes / no / maybe label (metrics.pubmedqa_decision)
K_MAX_THEORY = 8
# A sampled mode's equivalence margin, in units of the per-prompt ArS-vs-ArS spread (sd of ArS repeat - ArS):
# SpS is "as close to ArS as ArS is to itself" when its mean difference stays within half of what reseeding ArS
# moves a single prompt by. A convention (like Cohen's d = 0.5), stated in the report, not fitted to the data.
SPREAD_MARGIN_FRACTION = 0.5
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


def rng_for(*key) -> np.random.Generator:
    """The random state of one statistic, derived from BOOTSTRAP_SEED and what it describes (an entry's block,
    task, mode, sweep value and variant, and the statistic's name): every interval is reproducible on its own,
    and adding a statistic does not move the others."""
    plain = tuple(x.item() if hasattr(x, "item") else x for x in key)  # np.int64(2) and 2: one seed
    return np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(repr(plain).encode())])


def load_frame(out_dir: Path) -> pd.DataFrame:
    rows = read_rows(out_dir)
    if not rows:
        raise ReproduceError(f"{out_dir}/{ROWS_FILE} has no rows: run the experiment first")
    frame = pd.DataFrame(rows)
    frame["variant"] = [method_label(m, d, k) for m, d, k in zip(frame["method"], frame["draft"], frame["k"])]
    frame["sweep_value"] = frame["sweep_value"].astype(object).where(frame["sweep_value"].notna(), None)
    return frame



def add_quality(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-row quality: the scored text, ROUGE vs the reference summary (XSum) and vs the unit's ArS output,
    perplexity under the target, exact match with ArS, HumanEval pass (run in the sandbox subprocess), and for
    PubMedQA the answer's decision (the first whole word yes / no / maybe) and whether it is the dataset's label
    (the offline file holds only the label, no long answer). ROUGE and perplexity come from the suite's
    `evaluate` modules (metrics.load_metric), as does pass@k in _quality."""
    frame = frame.copy()
    frame["scored_text"] = [tasks.postprocess_output(t, x) for t, x in zip(frame["task"], frame["text"])]
    perplexity = metrics.load_metric("perplexity").compute(logprobs=list(frame["target_logprobs"]))
    frame["perplexity"] = perplexity["perplexities"]
    frame["log_perplexity"] = np.log(frame["perplexity"])
    ars = frame[frame["method"] == "ars"].set_index(UNIT)
    keys = list(zip(*(frame[c] for c in UNIT)))
    ars_text = [ars["scored_text"].get(key) if key in ars.index else None for key in keys]
    ars_ids = [ars["generated_ids"].get(key) if key in ars.index else None for key in keys]
    frame["exact_match_ars"] = [ids == a if a is not None else None for ids, a in zip(frame["generated_ids"], ars_ids)]
    text_tasks = frame["task"] != "humaneval"
    reference_tasks = frame["task"].isin(REFERENCE_TEXT_TASKS)
    for column in ("rouge1", "rouge2", "rougeL", "rouge2_vs_ars", "correct"):
        frame[column] = np.nan
    frame["decision"] = None
    rouge = metrics.load_metric("rouge") if text_tasks.any() else None
    if reference_tasks.any():
        sub = frame[reference_tasks]
        scores = rouge.compute(predictions=list(sub["scored_text"]), references=list(sub["reference"]))
        for name, values in scores.items():
            frame.loc[reference_tasks, name] = values
    decision_tasks = frame["task"].isin(DECISION_TASKS)
    if decision_tasks.any():
        sub = frame[decision_tasks]
        frame.loc[decision_tasks, "decision"] = [metrics.pubmedqa_decision(t) for t in sub["scored_text"]]
        frame.loc[decision_tasks, "correct"] = [metrics.decision_correct(t, label)
                                                for t, label in zip(sub["scored_text"], sub["reference"])]
    if text_tasks.any():
        sub = frame[text_tasks]
        paired = [(i, a) for i, a in zip(sub.index, np.array(ars_text, dtype=object)[text_tasks.values]) if a is not None]
        if paired:
            vs_ars = rouge.compute(predictions=[frame.at[i, "scored_text"] for i, _ in paired],
                                   references=[a for _, a in paired], rouge_types=["rouge2"])
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


def method_table(frame: pd.DataFrame, price_per_hour: float) -> list[dict]:
    """One row per (block, task, mode, variant): speed, acceptance, quality and the paired tests vs ArS.
    The ArS entry of each group also carries the group's equivalence margins (equivalence_margins)."""
    out = []
    for (block, task, mode, sweep_value), group in frame.groupby(["block", "task", "mode", "sweep_value"], dropna=False, sort=False):
        sweep_value = None if pd.isna(sweep_value) else sweep_value
        ars = group[group["method"] == "ars"].set_index(UNIT)
        margins = equivalence_margins(group, rng_for(block, task, mode, sweep_value, "margins"))
        for variant, rows in group.groupby("variant", sort=False):
            first = rows.iloc[0]
            rng = rng_for(block, task, mode, sweep_value, variant)
            ours_drafting = METHOD_KINDS[first["method"]].uses_k and not METHOD_KINDS[first["method"]].hf_peer
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
                # the mean accepted length: drafted tokens accepted per target call (our SpS loops only)
                "accepted_per_call": _ratio(rows["accepted"].sum(), rows["target_calls"].sum()) if ours_drafting else None,
                "acceptance_by_position": metrics.acceptance_by_position(rows["steps"]) if ours_drafting else [],
                # one loop = draft K + verify + bookkeeping; the prefill is not part of any loop
                "loop_ms": _ratio((rows["wall_ms"] - rows["prefill_ms"]).sum(), rows["target_calls"].sum()),
                # Hugging Face's generate() counts no target calls: no loop time (not an infinite one)
                "loop_ms_ci": stats.mean_ci((rows["wall_ms"] - rows["prefill_ms"]) / rows["target_calls"].where(rows["target_calls"] > 0), rng),
                # Chen et al. Figure 1: the mean time to generate max_new_tokens tokens, measured (prefill included)
                "time_full": full_budget_time(rows, rng_for(block, task, mode, sweep_value, variant, "time_full")),
                "acceptance_ci": stats.mean_ci(rows["acceptance_rate"].astype(float), rng),
            }
            drafted = sum(step[0] for steps in rows["steps"] for step in steps)
            if drafted:
                entry["draft_ms_per_drafted_token"] = sum(step[2] for steps in rows["steps"] for step in steps) / drafted
            if entry["k"] and entry["tokens_per_call"]:
                entry["r"] = entry["tokens_per_call"] / (entry["k"] + 1)  # Chen et al.: tokens per loop / (K+1)
            entry["usd_per_million_tokens"] = metrics.cost_per_million_tokens(entry["tokens_per_s_p50"], price_per_hour)
            entry["quality"] = _quality(rows, rng, rng_for(block, task, mode, sweep_value, variant, "proportions"))
            if first["method"] == "ars":
                entry["margins"] = margins
            elif first["method"] == "ars_repeat":  # its spread sets the margins: testing it against them is circular
                entry["vs_ars"] = _paired_vs_ars(rows, ars, rng, margins, equivalence=False)
            else:
                entry["vs_ars"] = _paired_vs_ars(rows, ars, rng, margins)
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


def full_budget_time(rows: pd.DataFrame, rng) -> dict:
    """Mean wall time (ms, prefill included) of the rows that generated their whole budget of max_new_tokens
    tokens, with a bootstrap 95% CI (none from fewer than two rows). Measured, never extrapolated: a row that
    stopped early (EOS) is left out and counted in `excluded`. A sweep with ignore_eos leaves none out."""
    complete = rows["num_tokens"] >= rows["max_new_tokens"]
    times = rows.loc[complete, "wall_ms"].astype(float)
    ci = stats.mean_ci(times, rng) if len(times) else {"mean": None, "ci": None, "n": 0}
    return {"tokens": int(rows["max_new_tokens"].max()), "rows": len(rows), "excluded": int((~complete).sum()),
            "mean": ci["mean"], "ci": ci["ci"] if len(times) >= 2 else None, "n": int(len(times))}


def _ratio(a, b):
    return float(a) / float(b) if b else None


def _quality(rows: pd.DataFrame, rng, proportion_rng) -> dict:
    """Quality of one method's rows: means with 95% intervals over prompts. Shares of 0/1 outcomes (pass@1,
    PubMedQA decision accuracy) get the Wilson interval when each problem has one sample and a bootstrap over
    problems when it has several (stats.proportion_ci); pass@k (k = the samples per problem, when above 1) the
    unbiased estimator per problem with a bootstrap over problems. Perplexity is per sequence, under the target."""
    quality = {"perplexity_median": _pct(rows["perplexity"], 50), "log_perplexity": stats.mean_ci(rows["log_perplexity"], rng)}
    if rows["rouge2"].notna().any():
        quality.update({name: stats.mean_ci(rows[name], rng) for name in ("rouge1", "rouge2", "rougeL")})
    if rows["rouge2_vs_ars"].notna().any():
        quality["rouge2_vs_ars"] = stats.mean_ci(rows["rouge2_vs_ars"], rng)
    if rows["passed"].notna().any():
        checked = rows[rows["passed"].notna()]
        n_min = int(checked.groupby("example_id").size().min())  # samples per problem: pass@k for k up to that
        ks = [1, n_min] if n_min > 1 else [1]
        pass_at = metrics.load_metric("pass_at_k").compute(
            passed=[bool(p) for p in checked["passed"]], problem_ids=[str(i) for i in checked["example_id"]], k=ks)
        for k in ks:
            quality[f"pass_at_{k}"] = pass_at[f"pass@{k}"]
        # pass@1 = the share of samples that pass, with its interval over problems
        quality["pass"] = stats.proportion_ci(checked["passed"], checked["example_id"], proportion_rng)
        if n_min > 1:
            per_problem = pass_at[f"pass@{n_min} per problem"]
            if all(v in (0.0, 1.0) for v in per_problem):  # every problem solved for sure or never: Wilson over problems
                quality["pass_at_k"] = {"k": n_min, "mean": float(np.mean(per_problem)), "n": len(per_problem),
                                        "ci": stats.wilson_ci(int(sum(per_problem)), len(per_problem))}
            else:
                quality["pass_at_k"] = {"k": n_min, **stats.mean_ci(per_problem, proportion_rng)}
    if rows["correct"].notna().any():
        checked = rows[rows["correct"].notna()]
        quality["decision_accuracy"] = stats.proportion_ci(checked["correct"], checked["example_id"], proportion_rng)
        quality["decisions"] = {d: int((checked["decision"] == d).sum()) for d in metrics.PUBMEDQA_DECISIONS}
        quality["decisions"]["none"] = int(checked["decision"].isna().sum())
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


def equivalence_margins(group: pd.DataFrame, rng) -> dict:
    """The equivalence margin of each quality column of one (block, task, mode, sweep value) group.

    Where the group has ars_repeat rows (ArS again on the same prompts, on its own seed stream) in a sampled
    mode, the margin is SPREAD_MARGIN_FRACTION x the ArS-vs-ArS spread: the standard deviation over prompts of
    (ArS repeat - ArS), how far merely reseeding ArS moves one prompt's score. A per-prompt spread does not shrink
    with the number of prompts (a margin from the mean's CI would, turning TOST into "no significant difference",
    and would pass about half the time under exact equality). Elsewhere the fixed MARGINS, with the reason. Each
    column: {"margin", "source": "ars_repeat" | "fixed", "reason" (fixed only), "spread" (ars_repeat only:
    mean, sd, n of the differences), "ars_mean"}."""
    ars = group[group["method"] == "ars"].set_index(UNIT)
    repeat = group[group["method"] == "ars_repeat"].set_index(UNIT)
    sampled = bool(len(ars)) and float(ars["temperature"].iloc[0]) > 0
    out = {}
    for column, fallback in QUALITY_COLUMNS.items():
        if column not in ars.columns or not ars[column].notna().any():
            continue
        base = {"ars_mean": float(ars[column].mean()), "fixed": MARGINS[fallback]}
        common = repeat.index.intersection(ars.index)
        if not sampled:
            reason = "greedy decoding is deterministic: ArS repeated is ArS, so there is no ArS-vs-ArS spread"
        elif repeat.empty:
            reason = "this run has no ars_repeat rows (list ars_repeat in the config's methods)"
        else:
            a, b = repeat.loc[common, column].to_numpy(float), ars.loc[common, column].to_numpy(float)
            keep = ~(np.isnan(a) | np.isnan(b))
            same = all(x == y for x, y in zip(repeat.loc[common, "generated_ids"], ars.loc[common, "generated_ids"]))
            differences = a[keep] - b[keep]
            spread = {"mean": float(differences.mean()), "sd": float(differences.std(ddof=1)),
                      "n": int(keep.sum())} if keep.sum() >= 2 else None
            margin = SPREAD_MARGIN_FRACTION * spread["sd"] if spread else 0.0
            if keep.sum() < 2:
                reason = "fewer than 2 prompts with both ArS runs"
            elif same:
                reason = "ars_repeat emitted ArS's exact tokens on every prompt (the same seed stream): no spread"
            elif not margin > 0:
                reason = "the two ArS runs score the same on every prompt: no spread to set a margin from"
            else:
                out[column] = {"margin": margin, "source": "ars_repeat", "spread": spread, **base}
                continue
        out[column] = {"margin": MARGINS[fallback], "source": "fixed", "reason": reason, **base}
    return out


def _paired_vs_ars(rows: pd.DataFrame, ars: pd.DataFrame, rng, margins: dict | None = None,
                   equivalence: bool = True) -> dict:
    """Speedup (bootstrap CI, Wilcoxon), TOST on quality, and at T > 0 the SAMPLED_TESTS, each paired with ArS.
    TOST margins from equivalence_margins (default: the fixed MARGINS)."""
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
    tests = {}
    for column, fallback in (QUALITY_COLUMNS.items() if equivalence else ()):
        margin = (margins or {}).get(column, {"margin": MARGINS[fallback], "source": "fixed"})
        a, b = mine[column].to_numpy(float), base[column].to_numpy(float)
        keep = ~(np.isnan(a) | np.isnan(b))
        if keep.sum() >= 2:
            tests[column] = {**stats.tost_equivalence(a[keep], b[keep], margin["margin"], rng=rng),
                                   "margin_source": margin["source"],
                                   # both methods score one constant on every prompt (e.g. no problem solved)
                                   "constant": bool(np.ptp(a[keep]) == 0 and np.ptp(b[keep]) == 0 and a[keep][0] == b[keep][0]),
                                   "mine_mean": float(a[keep].mean()), "ars_mean": float(b[keep].mean())}
    result["equivalence"] = tests
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


def k_sweep(frame: pd.DataFrame, block: str) -> dict:
    """Figure 1 from a sweep over K, measured: per K, the speedup of SpS over the ArS run beside it on the
    prompts where both generated the whole budget (the ratio of their mean wall times for max_new_tokens
    tokens, prefill included; rows that stopped at EOS are left out and counted, never extrapolated); the best
    K (the highest such speedup) and, per other K, a paired test against it: the best K's speedup over that
    K's on the prompts both have (stats.ratio_of_speedups_ci); an interval reaching 1 means the two cannot be
    told apart on these prompts."""
    rows = frame[frame["block"] == block]
    complete = rows["num_tokens"] >= rows["max_new_tokens"]
    kept = rows[complete & rows["method"].isin(["ars", "sps"])]
    wall = {}  # K -> DataFrame of ArS and SpS wall ms per prompt (complete pairs only)
    points = []
    for k in sorted(rows["sweep_value"].dropna().unique()):
        at_k = kept[kept["sweep_value"] == k]
        pairs = pd.DataFrame({m: at_k[at_k["method"] == m].set_index(PROMPT)["wall_ms"] for m in ("ars", "sps")}).dropna()
        wall[k] = pairs
        if len(pairs) >= 2:
            speedup = stats.speedup_ci(pairs["ars"], pairs["sps"], rng_for(block, k, "speedup"))
        elif len(pairs) == 1:
            speedup = {"ratio_of_means": float(pairs["ars"].iloc[0] / pairs["sps"].iloc[0]), "ratio_of_means_ci": None, "n": 1}
        else:
            speedup = None
        at_k_all = rows[(rows["sweep_value"] == k) & rows["method"].isin(["ars", "sps"])]
        points.append({"k": int(k), "speedup": speedup, "pairs": len(pairs), "prompts": int(at_k_all[PROMPT].drop_duplicates().shape[0])})
    with_speedup = [p for p in points if p["speedup"]]
    best = max(with_speedup, key=lambda p: p["speedup"]["ratio_of_means"], default=None)
    for point in points:
        if best is None or point is best or not point["speedup"]:
            point["vs_best"] = None
            continue
        common = wall[best["k"]].index.intersection(wall[point["k"]].index)
        if len(common) < 2:
            point["vs_best"] = {"n": len(common), "ratio": None, "ci": None, "distinguishable": None}
            continue
        a, b = wall[best["k"]].loc[common], wall[point["k"]].loc[common]
        test = stats.ratio_of_speedups_ci(a["ars"], a["sps"], b["ars"], b["sps"], rng_for(block, point["k"], "vs_best"))
        point["vs_best"] = {**test, "distinguishable": test["ci"][0] > 1}
    total = int(rows["method"].isin(["ars", "sps"]).sum())
    return {"block": block, "tokens": int(rows["max_new_tokens"].max()), "rows": total,
            "excluded": total - int(len(kept)), "points": points, "best_k": best["k"] if best else None,
            "best_speedup": best["speedup"] if best else None,
            "indistinguishable_from_best": [p["k"] for p in points if p["vs_best"] and p["vs_best"]["distinguishable"] is False]}


def analyse(out_dir: Path, write: bool = True) -> dict:
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    frame = add_quality(load_frame(out_dir))
    price = manifest["config"]["price_per_hour_usd"]
    table = method_table(frame, price)
    k_sweeps = {name: k_sweep(frame, name) for name, spec in manifest["config"].get("sweeps", {}).items()
                if spec.get("vary") == "k" and (frame["block"] == name).any()}
    # one cost curve per task: t(n) depends on the context length, and XSum prompts are longer than HumanEval's
    curves = {task: cost_curve(frame[frame["task"] == task]) for task in frame["task"].unique()}
    summary = {
        "manifest": manifest,
        "rows": len(frame),
        "methods": table,
        "cost_curves_ms": {task: {str(n): ms for n, ms in curve.items()} for task, curve in curves.items()},
        "theory": [row for task, curve in curves.items()
                   for row in theory_table([e for e in table if e["task"] == task], curve)],
        "margins": MARGINS,  # the fixed fallbacks; each group's own are on its ArS entry ("margins")
        "spread_margin_fraction": SPREAD_MARGIN_FRACTION,
        "k_sweeps": k_sweeps,
        "sampled_tests": SAMPLED_TESTS,
        "bootstrap_seed": BOOTSTRAP_SEED,
        # rows written since runs.plan.row_seed record their own seed; older rows shared one seed per prompt
        "seed_per_row": bool("seed_used" in frame.columns and frame["seed_used"].notna().all()),
        # the HumanEval checks ran here, in the analysis: the isolation level is this machine's, recorded with them
        "sandbox": isolation_level() if (frame["task"] == "humaneval").any() else None,
    }
    if write:
        (out_dir / "summary.json").write_text(json.dumps(json_safe(summary), indent=1, default=str))
        write_tidy(frame, out_dir)  # rows.csv: the same per-row numbers, flat, for pandas
    return summary

