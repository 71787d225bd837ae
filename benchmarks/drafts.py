"""Drafts as points (issue #3, item 4): every draft at every K, T = 0 and 1, and the Hugging Face peers.

Runs an experiment config (default experiments/drafts.yaml) through the experiment runner (interleaved per
prompt in a rotating order, warm-up, resumable rows.jsonl), analyses it with reproduce.analysis.summary, and prints and
writes <out>/benchmark.md and <out>/benchmark.json:
1. per (task, T, draft, K): draft cost c, per-token acceptance alpha (and accepted / proposed), tokens per
   target call, decode-loop ms/token, speedup over ArS with its 95% t-interval, the Leviathan prediction from
   the measured alpha, c and cost curve, and efficiency = measured / predicted;
2. the best K per draft;
3. the peers on the same pair and prompts: our ArS and SpS against HF generate() and assisted generation,
   both in the configured runtime and on the same HF forward (ars_hf, sps_hf);
4. the issue's targets, each met or not met with the measured numbers.

    python -m benchmarks.drafts [--config experiments/drafts.yaml] [--out results/drafts] [--analyse-only]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reproduce.analysis.frame import load_frame
from reproduce.analysis.summary import analyse
from reproduce.errors import ReproduceError
from reproduce.runs.config import load_config
from reproduce.runs.results import MANIFEST_FILE, json_safe
from reproduce.runs.runner import run_experiment

DEFAULT_CONFIG = "experiments/drafts.yaml"
DEFAULT_OUT = "results/drafts"
# The targets
MIN_DISTILLED_ALPHA = 0.6  # per-token acceptance of the distilled draft at T = 0 on XSum
MIN_BEST_SPEEDUP = 1.3  # best SpS at T = 0 on XSum, with its 95% CI above 1
MIN_EFFICIENCY = 0.95  # measured / predicted speedup at that best point
MAX_SPS_VS_HF_ASSISTED = 0.90  # our SpS ms/token at most 90% of HF assisted's (at least 10% below)
MAX_ARS_VS_GENERATE = 1.0  # our ArS no slower than plain generate()


# ---- tables ---------------------------------------------------------------------------------------------------


def benchmark_tables(out_dir: Path) -> dict:
    """Every table of the benchmark from a results directory's rows (analysis.summary.analyse writes summary.json too)."""
    out_dir = Path(out_dir)
    if not (out_dir / MANIFEST_FILE).exists():
        raise ReproduceError(f"{out_dir} holds no results: run the benchmark without --analyse-only first")
    summary = analyse(out_dir)
    frame = load_frame(out_dir)
    frame = frame[frame["block"] == "main"]
    entries = [e for e in summary["methods"] if e["block"] == "main"]
    # the per-task cost curves and Leviathan predictions exactly as analyse computed them for the report
    curves = {task: {int(n): ms for n, ms in curve.items()} for task, curve in summary["cost_curves_ms"].items()}
    theory = {(row["task"], row["mode"], row["variant"]): row for row in summary["theory"] if row["block"] == "main"}
    order = _config_order(summary["manifest"]["config"])
    points = sorted(draft_points(entries, theory, curves, acceptance_counts(frame)), key=order)
    peers = sorted(peer_table(entries), key=order)
    return {
        "config_name": summary["manifest"]["config_name"],
        "models": summary["manifest"].get("models", {}),
        "sessions": summary["manifest"]["sessions"],
        "cost_curves_ms": {task: {str(n): ms for n, ms in curve.items()} for task, curve in curves.items()},
        "points": points,
        "best_k": best_k_table(points),
        "peers": peers,
        "checks": target_checks(points, peers),
    }


def _config_order(config: dict):
    """Sort key: task, mode and draft in the config's order, then K (rows arrive in rotating method order)."""
    tasks = list(config["tasks"])
    modes = list(config["modes"])
    drafts = [d["name"] for d in config["drafts"]]

    def key(row: dict) -> tuple:
        return (tasks.index(row["task"]) if row["task"] in tasks else len(tasks),
                modes.index(row["mode"]) if row["mode"] in modes else len(modes),
                drafts.index(row["draft"]) + 1 if row["draft"] in drafts else 0, row["k"] or 0,
                row.get("ours_method", ""))
    return key


def acceptance_counts(frame) -> dict:
    """Accepted and proposed drafted tokens summed over prompts, per (task, mode, variant)."""
    sums = frame.groupby(["task", "mode", "variant"])[["accepted", "proposed"]].sum()
    return {key: (int(row["accepted"]), int(row["proposed"])) for key, row in sums.iterrows()}


def draft_points(entries: list[dict], theory: dict, curves: dict, counts: dict) -> list[dict]:
    """One row per SpS (task, mode, draft, K): the measured numbers and the Leviathan prediction from them."""
    # the decode loop's ms/token, as the speedup (old summaries without it: end to end)
    loop_ms = lambda e: e.get("decode_ms_per_token_mean", e["ms_per_token_mean"])  # noqa: E731
    ars_ms = {(e["task"], e["mode"]): loop_ms(e) for e in entries if e["method"] == "ars"}
    points = []
    for entry in entries:
        if entry["method"] != "sps":
            continue
        key = (entry["task"], entry["mode"], entry["variant"])
        predicted = theory.get(key, {})
        t1 = curves[entry["task"]].get(1)
        draft_ms = entry.get("draft_ms_per_drafted_token")
        speedup = entry.get("vs_ars", {}).get("speedup")
        accepted, proposed = counts.get(key, (0, 0))
        points.append({
            "task": entry["task"], "mode": entry["mode"], "temperature": entry["temperature"],
            "draft": entry["draft"], "k": entry["k"], "n": entry["n"],
            "c": draft_ms / t1 if draft_ms is not None and t1 else None,
            "alpha": entry["alpha_mean"], "accepted": accepted, "proposed": proposed,
            "acceptance": entry["acceptance_pooled"], "tokens_per_call": entry["tokens_per_call"],
            "ms_per_token": loop_ms(entry), "ars_ms_per_token": ars_ms.get((entry["task"], entry["mode"])),
            # the decode loop's speedup (geometric mean of per-prompt ratios, t-interval); end to end beside it
            "speedup": speedup["point"] if speedup else None,
            "speedup_ci": list(speedup["ci"]) if speedup else None,
            "speedup_e2e": entry["vs_ars"]["speedup_e2e"]["point"] if speedup else None,
            "decode_speedup": predicted.get("measured_speedup"),
            "t_ratio": predicted.get("t_ratio"), "predicted_speedup": predicted.get("predicted_speedup"),
            "efficiency": predicted.get("efficiency"), "optimal_k_predicted": predicted.get("optimal_k_predicted"),
        })
    return points


def _draft_name(draft) -> str | None:
    """Rows without a draft (ArS, generate) carry pandas' NaN there."""
    return draft if isinstance(draft, str) else None


def best_k_table(points: list[dict]) -> list[dict]:
    """Per (task, mode, draft): the K with the highest measured speedup."""
    best = {}
    for point in points:
        key = (point["task"], point["mode"], point["draft"])
        if point["speedup"] is not None and (key not in best or point["speedup"] > best[key]["speedup"]):
            best[key] = point
    return list(best.values())


def peer_table(entries: list[dict]) -> list[dict]:
    """Ours against Hugging Face on the same prompts: ratio = HF ms/token / ours (> 1: ours is faster)."""
    by_variant = {(e["task"], e["mode"], e["variant"]): e for e in entries}
    rows = []
    for entry in entries:
        if entry["method"] == "hf_generate":
            pairs = (("ArS", "ArS", "ours_vs_hf"), ("ArS (HF forward)", "ArS (HF forward)", "ours_hf_forward_vs_hf"))
        elif entry["method"] == "hf_assisted":
            setting = f"[{entry['draft']},K={entry['k']}]"
            pairs = (("SpS", f"SpS{setting}", "ours_vs_hf"),
                     ("SpS (HF forward)", f"SpS (HF forward){setting}", "ours_hf_forward_vs_hf"))
        else:
            continue
        for ours_label, ours_variant, key in pairs:
            ours = by_variant.get((entry["task"], entry["mode"], ours_variant))
            if ours is None:
                continue
            ratio = entry.get(key)
            rows.append({
                "task": entry["task"], "mode": entry["mode"], "temperature": entry["temperature"],
                "peer": entry["variant"], "ours": ours_label, "ours_method": ours["method"],
                "hf_method": entry["method"], "draft": _draft_name(entry["draft"]), "k": entry["k"],
                "ours_ms_per_token": ours["ms_per_token_mean"], "hf_ms_per_token": entry["ms_per_token_mean"],
                "ours_over_hf_ms": ours["ms_per_token_mean"] / entry["ms_per_token_mean"],
                "hf_over_ours": ratio["point"] if ratio else None,
                "hf_over_ours_ci": list(ratio["ci"]) if ratio else None,
            })
    return rows


# ---- the targets --------------------------------------------------------------------------------------


def _check(target: str, met: bool | None, measured: str) -> dict:
    return {"target": target, "met": met, "measured": measured}


def target_checks(points: list[dict], peers: list[dict]) -> list[dict]:
    """The issue's targets, each with what was measured; met None when the run has no rows to judge it."""
    greedy_xsum = [p for p in points if p["task"] == "xsum" and p["temperature"] == 0 and p["speedup"] is not None]
    checks = [_distilled_acceptance_check([p for p in greedy_xsum if p["draft"] == "distilled"])]
    best = max(greedy_xsum, key=lambda p: p["speedup"], default=None)
    target = f"best speedup >= {MIN_BEST_SPEEDUP}x at T=0 on XSum, 95% CI excluding 1"
    if best is None:
        checks.append(_check(target, None, "no SpS rows at T=0 on XSum"))
    else:
        low, high = best["speedup_ci"]
        checks.append(_check(target, best["speedup"] >= MIN_BEST_SPEEDUP and low > 1,
                             f"{best['speedup']:.2f}x [{low:.2f}, {high:.2f}] with {best['draft']} at K={best['k']} "
                             f"(best of {len(greedy_xsum)} draft/K points on {best['n']} prompts)"))
    target = f"efficiency (measured / predicted speedup) >= {MIN_EFFICIENCY} at that best point"
    if best is None or best["efficiency"] is None:
        checks.append(_check(target, None, "no prediction (no best point, or the cost curve lacks its K+1)"))
    else:
        checks.append(_check(target, best["efficiency"] >= MIN_EFFICIENCY,
                             f"{best['efficiency']:.2f} = {best['decode_speedup']:.2f}x (decode loop) / "
                             f"{best['predicted_speedup']:.2f}x"))
    for ours, hf, limit, what in (
            ("SpS", "hf_assisted", MAX_SPS_VS_HF_ASSISTED, "our SpS ms/token at least 10% below HF assisted"),
            ("SpS (HF forward)", "hf_assisted", MAX_SPS_VS_HF_ASSISTED,
             "our SpS on the HF forward (like for like) ms/token at least 10% below HF assisted"),
            ("ArS", "hf_generate", MAX_ARS_VS_GENERATE, "our ArS no slower than plain generate()"),
            ("ArS (HF forward)", "hf_generate", MAX_ARS_VS_GENERATE,
             "our ArS on the HF forward (like for like) no slower than plain generate()")):
        checks.append(_peer_check(what, [p for p in peers if p["ours"] == ours and p["hf_method"] == hf], limit))
    return checks


def _distilled_acceptance_check(distilled: list[dict]) -> dict:
    target = f"per-token acceptance of the distilled draft >= {MIN_DISTILLED_ALPHA} at T=0 on XSum"
    distilled = [p for p in distilled if p["alpha"] is not None]
    if not distilled:
        return _check(target, None, "no distilled-draft rows at T=0 on XSum")
    best = max(distilled, key=lambda p: p["speedup"])  # judged where the draft is used: its best K
    alphas = [p["alpha"] for p in distilled]
    return _check(target, best["alpha"] >= MIN_DISTILLED_ALPHA,
                  f"alpha {best['alpha']:.3f} at its best K={best['k']} (accepted {best['accepted']}/"
                  f"{best['proposed']}; alpha over K {min(alphas):.3f}-{max(alphas):.3f})")


def _peer_check(target: str, pairs: list[dict], limit: float) -> dict:
    """Met when ours / HF mean ms/token <= limit for every pair (task, T, draft, K) that ran."""
    if not pairs:
        return _check(target, None, "not run")
    worst = max(pairs, key=lambda p: p["ours_over_hf_ms"])
    failing = [p for p in pairs if p["ours_over_hf_ms"] > limit]
    return _check(target, not failing,
                  f"{len(pairs) - len(failing)}/{len(pairs)} pairs met; worst {_pair_label(worst)}: "
                  f"ours {worst['ours_ms_per_token']:.1f} vs HF {worst['hf_ms_per_token']:.1f} ms/token "
                  f"(ours/HF {worst['ours_over_hf_ms']:.2f}, limit {limit:.2f})")


def _pair_label(pair: dict) -> str:
    setting = f" {pair['draft']} K={pair['k']}" if pair["draft"] else ""
    return f"{pair['task']} T={_t(pair['temperature'])}{setting}"


# ---- formatting -----------------------------------------------------------------------------------------------


def _t(temperature: float) -> str:
    return f"{temperature:g}"


def _num(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _x(value, ci=None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}x" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(tables: dict, command: str) -> str:
    runtime = tables["models"].get("target", {}).get("runtime", "?")
    parts = [
        f"# Drafts as points ({tables['config_name']})",
        f"Command: `{command}`",
        _run_line(tables["sessions"], tables["models"]),
        "Speedup = ArS decode-loop ms/token / SpS decode-loop ms/token (prefills apart), the geometric mean over "
        "the same prompts with a 95% t-interval on the per-prompt log ratios (ms/token columns: the decode loop). "
        "c = draft ms per drafted token / t(1), t(n) = median target call scoring "
        "n tokens in this run's ArS and SpS traces, per task. alpha = expected per-token acceptance up to the "
        "first rejection (Leviathan et al.); predicted = (1 - alpha^(K+1)) / ((1 - alpha)(K c + t(K+1)/t(1))); "
        "efficiency = speedup / predicted.",
        "## Targets",
        _markdown_table(["target", "status", "measured"],
                        [[c["target"], {True: "met", False: "NOT MET", None: "n/a"}[c["met"]], c["measured"]]
                         for c in tables["checks"]]),
        "## Every draft and K",
        _markdown_table(
            ["task", "T", "draft", "K", "n", "c", "alpha", "accepted/proposed", "tokens/call", "ms/token",
             "ArS ms/token", "speedup [95% CI]", "decode speedup", "t(K+1)/t(1)", "predicted", "efficiency"],
            [[p["task"], _t(p["temperature"]), p["draft"], str(p["k"]), str(p["n"]), _num(p["c"], 3),
              _num(p["alpha"], 3), f"{p['accepted']}/{p['proposed']}", _num(p["tokens_per_call"]),
              _num(p["ms_per_token"], 1), _num(p["ars_ms_per_token"], 1), _x(p["speedup"], p["speedup_ci"]),
              _x(p["decode_speedup"]), _num(p["t_ratio"]), _x(p["predicted_speedup"]), _num(p["efficiency"])] for p in tables["points"]]),
        "## Best K per draft",
        _markdown_table(
            ["task", "T", "draft", "best K", "speedup [95% CI]", "alpha", "c", "predicted", "efficiency",
             "predicted best K"],
            [[p["task"], _t(p["temperature"]), p["draft"], str(p["k"]), _x(p["speedup"], p["speedup_ci"]),
              _num(p["alpha"], 3), _num(p["c"], 3), _x(p["predicted_speedup"]), _num(p["efficiency"]),
              "n/a" if p["optimal_k_predicted"] is None else str(p["optimal_k_predicted"])]
             for p in tables["best_k"]]),
        "## Ours vs Hugging Face (same target, draft and prompts)",
        f"ArS and SpS run the target in runtime {runtime}; the HF-forward rows run our loops on the fp32 model "
        "generate() runs. HF/ours > 1: ours is faster (ratio of mean ms/token, paired-bootstrap 95% CI).",
        _markdown_table(
            ["task", "T", "ours", "HF peer", "ours ms/token", "HF ms/token", "HF/ours [95% CI]", "ours vs HF ms"],
            [[p["task"], _t(p["temperature"]), p["ours"], p["peer"], _num(p["ours_ms_per_token"], 1),
              _num(p["hf_ms_per_token"], 1), _x(p["hf_over_ours"], p["hf_over_ours_ci"]),
              f"{100 * (p['ours_over_hf_ms'] - 1):+.0f}%"] for p in tables["peers"]]),
        "## Cost curves t(n) (ms, median over this run's target calls)",
        _markdown_table(["task"] + [f"t({n})" for n in range(1, 1 + max((len(c) for c in tables["cost_curves_ms"].values()), default=0))],
                        [[task] + [_num(ms, 1) for ms in curve.values()] for task, curve in tables["cost_curves_ms"].items()]),
    ]
    return "\n\n".join(parts) + "\n"


def _run_line(sessions: list[dict], models: dict) -> str:
    if not sessions:
        return "Run: no session recorded."
    last = sessions[-1]
    model_text = "; ".join(f"{name}: {m['name']}, {m['parameters'] / 1e6:.0f}M parameters, runtime {m['runtime']}"
                           for name, m in models.items())
    return (f"Run: {len(sessions)} session(s) from {sessions[0]['start']} to {last['end']}; git "
            f"{(last.get('git_hash') or '?')[:12]}{' (dirty tree)' if last.get('git_dirty') else ''}; "
            f"{last.get('cpu')}, {last.get('threads')} threads. Models: {model_text}.")


def write_outputs(tables: dict, out_dir: Path, command: str) -> str:
    markdown = render_markdown(tables, command)
    (Path(out_dir) / "benchmark.md").write_text(markdown)
    # analysis's own JSON cleaning: NaN becomes null, numpy numbers plain ones, so the file is strict JSON
    (Path(out_dir) / "benchmark.json").write_text(json.dumps(json_safe({"command": command, **tables}), indent=1,
                                                             default=str))
    return markdown


# ---- command line ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})")
    parser.add_argument("--analyse-only", action="store_true", help="tabulate the rows already in --out, run nothing")
    args = parser.parse_args(argv)
    # the command that produced the rows: --analyse-only only re-tabulates them
    command = f"python -m benchmarks.drafts --config {args.config} --out {args.out}"
    try:
        if not args.analyse_only:
            run_experiment(load_config(args.config), Path(args.out))
        tables = benchmark_tables(Path(args.out))
    except ReproduceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(write_outputs(tables, Path(args.out), command))
    print(f"written to {args.out}/benchmark.md and {args.out}/benchmark.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
