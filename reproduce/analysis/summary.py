"""The summary of a run: from its raw rows to every number the report shows.

`analyse(out_dir)` reads rows.jsonl and manifest.json and returns one nested dict of plain numbers, written to
summary.json (with the manifest inside it: the report reads nothing else) and, flat per row, to rows.csv.
Nothing here times or generates anything; the report only picks and formats. The pieces: frame.py (rows and
pairing keys, the decode-loop timing of old rows), quality.py (scores), paired.py (each method against ArS),
ratios.py (speedups: t intervals on per-prompt log ratios, the A/A check), equivalence.py (quality within the
config's margins), attainable.py (whether a test can reach p < 0.05 at all), speed.py (cost curve, theory,
Figure 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from reproduce import tasks
from reproduce.analysis import attainable, equivalence, metrics, ratios, stats
from reproduce.analysis.frame import BOOTSTRAP_SEED, UNIT, load_frame, pct, ratio, rng_for
from reproduce.analysis.paired import SAMPLED_TESTS, ours_vs_hf, ours_vs_llamacpp, paired_vs_ars
from reproduce.analysis.quality import add_quality, quality_summary
from reproduce.analysis.sandbox import isolation_level
from reproduce.analysis.speed import cost_curve, k_sweep, theory_table
from reproduce.analysis.tidy import write_tidy
from reproduce.catalogue import METHOD_KINDS
from reproduce.runs.results import MANIFEST_FILE, SUMMARY_FILE, json_safe, require_results


def method_table(frame: pd.DataFrame, price_per_hour: float, margins: dict) -> list[dict]:
    """One row per (block, task, mode, variant): speed, acceptance, quality and the paired tests vs ArS (ArS's
    repeat included: the A/A check, at the same margins). The ArS entry of each group also carries the group's
    margins with the n 80% power needs (equivalence.group_margins)."""
    out = []
    for (block, task, mode, sweep_value), group in frame.groupby(["block", "task", "mode", "sweep_value"], dropna=False, sort=False):
        sweep_value = None if pd.isna(sweep_value) else sweep_value
        ars = group[group["method"] == "ars"].set_index(UNIT)
        for variant, rows in group.groupby("variant", sort=False):
            first = rows.iloc[0]
            rng = rng_for(block, task, mode, sweep_value, variant)
            ours_drafting = METHOD_KINDS[first["method"]].ours_drafting
            entry = {
                "block": block, "task": task, "mode": mode, "sweep_value": sweep_value, "variant": variant,
                "method": first["method"], "draft": first["draft"], "k": None if pd.isna(first["k"]) else int(first["k"]),
                "temperature": float(first["temperature"]), "top_p": float(first["top_p"]),
                "max_new_tokens": int(first["max_new_tokens"]), "max_prompt_tokens": int(first["max_prompt_tokens"]),
                "n": len(rows), "tokens_mean": float(rows["num_tokens"].mean()),
                "prompt_tokens_mean": float(rows["prompt_tokens"].mean()),
                **metrics.latency_summary(rows["ms_per_token"].tolist()),
                # the decode loop alone (the primary speed measure) and the prefills it excludes
                "decode_ms_per_token_mean": float(rows["decode_ms_per_token"].mean()),
                "decode_ms_per_token_p50": pct(rows["decode_ms_per_token"], 50),
                "prefill_ms_mean": float(rows["prefill_ms"].mean()),
                "draft_prefill_ms_mean": float(rows["draft_prefill_ms"].mean()),
                "quality_tokens_mean": float(rows["quality_tokens"].mean()),
                "acceptance_p50": pct(rows["acceptance_rate"], 50), "acceptance_p95": pct(rows["acceptance_rate"], 95),
                "acceptance_pooled": ratio(rows["accepted"].sum(), rows["proposed"].sum()),
                "alpha": pct(rows["alpha"], 50) if rows["alpha"].notna().any() else None,
                "alpha_mean": float(rows["alpha"].mean()) if rows["alpha"].notna().any() else None,
                "tokens_per_call": ratio(rows["num_tokens"].sum(), rows["target_calls"].sum()),
                # the mean accepted length: drafted tokens accepted per target call (our SpS loops only)
                "accepted_per_call": ratio(rows["accepted"].sum(), rows["target_calls"].sum()) if ours_drafting else None,
                "acceptance_by_position": metrics.acceptance_by_position(rows["steps"]) if ours_drafting else [],
                # one loop = draft K + verify + bookkeeping; the prefill is not part of any loop
                "loop_ms": ratio(rows["decode_ms"].sum(), rows["target_calls"].sum()),
                # loop_ms with its interval over rows (pairs resampled): what Figure 1 plots beside the table's value;
                # Hugging Face's generate() counts no target calls: no loop time (not an infinite one)
                "loop_ms_pooled": stats.ratio_of_sums_ci(rows["decode_ms"], rows["target_calls"],
                                                         rng_for(block, task, mode, sweep_value, variant, "loop_ms")),
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
            entry["quality"] = quality_summary(rows, rng, rng_for(block, task, mode, sweep_value, variant, "proportions"))
            if first["method"] == "ars":
                entry["margins"] = equivalence.group_margins(group, margins, UNIT)
            else:
                entry["vs_ars"] = paired_vs_ars(rows, ars, rng, margins)
            if METHOD_KINDS[first["method"]].hf_peer:
                entry.update(ours_vs_hf(rows, group))
            if METHOD_KINDS[first["method"]].llamacpp_peer:
                entry.update(ours_vs_llamacpp(rows, group))
            out.append(entry)
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

def aa_checks(frame: pd.DataFrame, table: list[dict]) -> list[dict]:
    """The ArS-vs-ArS check of every setting with ars_repeat rows: ArS decode ms/token over the repeat's, paired by
    prompt (ratios.aa_check: within 5% of 1, or the machine drifted by `drift`), the same end to end, and the
    repeat's quality TOST outcomes at the config's margins (from its method entry)."""
    out = []
    for (block, task, mode, sweep_value), group in frame.groupby(["block", "task", "mode", "sweep_value"], dropna=False, sort=False):
        ars = group[group["method"] == "ars"].set_index(UNIT)
        repeat = group[group["method"] == "ars_repeat"].set_index(UNIT)
        common = ars.index.intersection(repeat.index)
        if len(common) < 2:
            continue
        sweep_value = None if pd.isna(sweep_value) else sweep_value
        check = ratios.aa_check(ars.loc[common, "decode_ms_per_token"], repeat.loc[common, "decode_ms_per_token"])
        entry = next(e for e in table if e["method"] == "ars_repeat" and
                     (e["block"], e["task"], e["mode"], e["sweep_value"]) == (block, task, mode, sweep_value))
        quality = {column: {key: test[key] for key in ("outcome", "note", "diff", "ci", "margin", "n", "n_for_80_power")}
                   for column, test in entry["vs_ars"].get("equivalence", {}).items()}
        out.append({"block": block, "task": task, "mode": mode, "sweep_value": sweep_value, "n": len(common), **check,
                    "ratio_e2e": ratios.log_ratio_interval(ars.loc[common, "ms_per_token"], repeat.loc[common, "ms_per_token"]),
                    "quality": quality})
    return out


def decode_timing(frame: pd.DataFrame) -> str:
    """Whether the rows timed their decode loop, or it is derived (wall_ms - prefill_ms) for older rows."""
    measured = frame["decode_measured"].astype(bool)
    if measured.all():
        return "measured"
    return "derived: decode_ms = wall_ms - prefill_ms (rows written before decode_ms was recorded)" \
        if not measured.any() else "mixed: some rows measured decode_ms, older ones derive it as wall_ms - prefill_ms"


def analyse(out_dir: Path, write: bool = True) -> dict:
    out_dir = Path(out_dir)
    require_results(out_dir)
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    frame = add_quality(load_frame(out_dir))
    price = manifest["config"]["price_per_hour_usd"]
    margins, margins_source = equivalence.run_margins(manifest["config"])
    table = method_table(frame, price, margins)
    # Figure 1 reads K sweeps at the experiment's target runtime; a sweep with a runtime of its own is a regime
    k_sweeps = {name: k_sweep(frame, name) for name, spec in manifest["config"].get("sweeps", {}).items()
                if spec.get("vary") == "k" and not spec.get("target_runtime") and (frame["block"] == name).any()}
    # one cost curve per task: t(n) depends on the context length, and XSum prompts are longer than HumanEval's;
    # a block with a target runtime of its own (the paper's regime) has its own curve and theory rows, "<task>@<block>"
    own_runtime = [name for name, spec in manifest["config"].get("sweeps", {}).items() if spec.get("target_runtime")]
    scopes = {task: (frame["task"] == task) & ~frame["block"].isin(own_runtime) for task in frame["task"].unique()}
    scopes.update({f"{task}@{block}": (frame["task"] == task) & (frame["block"] == block)
                   for block in own_runtime for task in frame.loc[frame["block"] == block, "task"].unique()})
    curves = {scope: cost_curve(frame[rows]) for scope, rows in scopes.items()}

    # Leviathan's formula assumes K drafted tokens a call: a draft with an adaptive length (stop_below) has no row
    adaptive = {d["name"] for d in manifest["config"].get("drafts", []) if d.get("stop_below")}

    def in_scope(entry: dict, scope: str) -> bool:
        task, _, block = scope.partition("@")
        return entry["task"] == task and entry.get("draft") not in adaptive and (
            entry["block"] == block if block else entry["block"] not in own_runtime)
    summary = {
        "manifest": manifest,
        "rows": len(frame),
        "methods": table,
        "cost_curves_ms": {task: {str(n): ms for n, ms in curve.items()} for task, curve in curves.items()},
        "theory": [row for scope, curve in curves.items()
                   for row in theory_table([e for e in table if in_scope(e, scope)], curve)],
        # how speed is compared: the primary speedup and its interval, and what they assume
        "speedup_method": {"measure": "decode_ms_per_token", "measure_e2e": "ms_per_token",
                           "interval": "t on per-prompt log ratios, paired by prompt, exponentiated",
                           "level": 0.95, "assumption": ratios.LOG_RATIO_ASSUMPTION,
                           "test": "paired t-test on the log ratios (two-sided)"},
        "decode_timing": decode_timing(frame),
        # a test whose smallest attainable p is not below this is marked usable: false and is no evidence
        "significance": attainable.SIGNIFICANCE,
        "aa_checks": aa_checks(frame, table),
        "aa_tolerance": ratios.AA_TOLERANCE,
        # the config's quality margins ({metric: {margin, reason}}); each group's, with n for 80% power, are on
        # its ArS entry ("margins")
        "margins": margins,
        "margins_source": margins_source,
        "equivalence": {"outcomes": list(equivalence.OUTCOMES), "alpha": equivalence.ALPHA,
                        "power": equivalence.POWER, "assumption": equivalence.TOST_ASSUMPTION,
                        "cannot_reach": equivalence.CANNOT_REACH},
        "k_sweeps": k_sweeps,
        "sampled_tests": SAMPLED_TESTS,
        "bootstrap_seed": BOOTSTRAP_SEED,
        # rows written since runs.plan.row_seed record their own seed; older rows shared one seed per prompt
        "seed_per_row": bool("seed_used" in frame.columns and frame["seed_used"].notna().all()),
        # the HumanEval checks ran here, in the analysis: the isolation level is this machine's, recorded with them
        "sandbox": isolation_level() if frame["task"].isin(tasks.tasks_scored_by("code")).any() else None,
    }
    if write:
        (out_dir / SUMMARY_FILE).write_text(json.dumps(json_safe(summary), indent=1, default=str))
        write_tidy(frame, out_dir)  # rows.csv: the same per-row numbers, flat, for pandas
    return summary
