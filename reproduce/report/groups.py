"""The main block's groups, one per (task, mode) of the config: its methods as views (an analysis entry with its
label, comparison with ArS and theory row), the fastest SpS, the paper's Table 1 row at the same settings, and
the speed and quality verdicts; then the counts of verdicts and which drafts the speedups came from."""

from __future__ import annotations

import dataclasses

from reproduce.catalogue import DRAFT_KINDS, METHOD_KINDS
from reproduce.errors import ReproduceError
from reproduce.report import verdicts
from reproduce.report.labels import TASK_LABELS, config_draft_kind, entry_label, mode_label, short_draft
from reproduce.tasks import PERPLEXITY, TASKS

# The quality number each task is judged by (tasks.TASKS[task].quality) and the equivalence test (TOST, from the
# analysis) behind its verdict; every task also gets the log-perplexity of its outputs (tasks.PERPLEXITY).
PERPLEXITY_METRIC = dataclasses.asdict(PERPLEXITY)


def task_metric(task: str) -> dict:
    return dataclasses.asdict(TASKS[task].quality)


def _draft_parameters(draft: str, models: dict, config: dict) -> int:
    """Parameters a draft adds: 0 for the n-gram table, the target's own count when it drafts for itself."""
    kind = config_draft_kind(config, draft)
    if kind == "ngram":
        return 0
    if kind == "target":
        return models["target"]["parameters"]
    return models[draft]["parameters"]


def is_control(entry: dict, config: dict) -> bool:
    """A row of the config's controls (runs.plan.is_control): its method kind or draft is listed under
    `controls`, so it ran on the first `controls.prompts` prompts of the main block only."""
    controls = config.get("controls")
    return bool(entry["block"] == "main" and controls
                and (entry["method"] in controls["methods"] or entry["draft"] in controls["drafts"]))


def entry_view(entry: dict, theory: dict, config: dict | None = None) -> dict:
    """An analysis entry plus its display label (a control's says so, with its prompt count), its (optional)
    paired comparison with ArS, and its theory row."""
    vs_ars = entry.get("vs_ars", {})
    control = is_control(entry, config or {})
    label = entry_label(entry)
    return {
        **entry,
        "control": control,
        "label": f"{label} (control, {entry['n']} prompt{'s' if entry['n'] != 1 else ''})" if control else label,
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


def paper_row(task: str, temperature: float, top_p: float, paper: dict) -> dict | None:
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


def _quality_rows(ars: dict, view: dict, metric: dict) -> list[dict]:
    """The quality table's rows of one SpS row: the task's metric, then log-perplexity; each with ArS's and SpS's
    value, the paired test, its margin and verdict (vacuous throughout where greedy SpS matched ArS exactly)."""
    margins = ars.get("margins", {})
    rows = []
    for m in (metric, PERPLEXITY_METRIC):
        test = view["equivalence"].get(m["tost_key"])
        verdict = verdicts.metric_verdict(test, m["name"], margins.get(m["tost_key"]), m["digits"], m["percent"],
                                          m["log_scale"])
        if _greedy_identical(view):
            verdict = {**verdict, "level": verdicts.VACUOUS, "text": f"{m['name']}: identical by construction"}
        rows.append({"metric": m, "ars": ars["quality"].get(m["quality_key"]), "sps": view["quality"].get(m["quality_key"]),
                     "test": test, "verdict": verdict, "view": view})
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
            views = sorted((entry_view(e, theory, config) for e in entries), key=lambda v: _order(v, draft_order))
            ars = [v for v in views if v["method"] == "ars"]
            if not ars:
                raise ReproduceError(f"{task}/{mode} has no ArS rows, and every comparison is against ArS: "
                                     "keep 'ars' in the config's methods")
            ars = ars[0]
            sps = [v for v in views if v["method"] == "sps"]
            # same prompts for every non-control method, so the lowest mean ms/token is also the highest
            # ratio-of-means speedup; a control ran on a subset of the prompts and is never the best
            full = [v for v in sps if not v["control"]]
            best = min(full, key=lambda v: v["ms_per_token_mean"]) if full else None
            metric = task_metric(task)
            paper_match = paper_row(task, ars["temperature"], ars["top_p"], paper)
            quality_rows = _quality_rows(ars, best, metric) if best else []
            for view in sps:  # every SpS row's quality, the fastest's (which decides the verdict) included
                view["quality_rows"] = quality_rows if view is best else _quality_rows(ars, view, metric)
            for view in sps + [v for v in views if v["method"] == "draft_only"]:
                view["draft_parameters"] = _draft_parameters(view["draft"], models, config)
            positions = max((len(v.get("acceptance_by_position") or []) for v in sps), default=0)
            for view in sps:  # acceptance by draft position, one cell per column (None where K is smaller)
                by_position = {c["position"]: c for c in view.get("acceptance_by_position") or []}
                view["position_cells"] = [by_position.get(i) for i in range(1, positions + 1)]
            hf_assisted = {(v["draft"], v["k"]): v for v in views if v["method"] == "hf_assisted"}
            groups.append({
                "task": task, "task_label": TASK_LABELS[task], "mode": mode,
                "mode_label": mode_label(ars["temperature"], ars["top_p"]),
                "title": f"{TASK_LABELS[task]}, {mode_label(ars['temperature'], ars['top_p'])}",
                "metric": metric, "views": views, "ars": ars, "sps": sps, "best": best,
                "draft_only": [v for v in views if v["method"] == "draft_only"],
                "hf_generate": next((v for v in views if v["method"] == "hf_generate"), None),
                "peer_pairs": [{"ours": v, "hf": hf_assisted[(v["draft"], v["k"])]} for v in sps
                               if (v["draft"], v["k"]) in hf_assisted],
                "ars_quality": ars["quality"].get(metric["quality_key"]),
                "best_quality": best["quality"].get(metric["quality_key"]) if best else None,
                "paper": paper_match,
                "speedup_verdict": _speedup_verdict(best, paper_match),
                "quality_rows": quality_rows,
                "quality_verdict": _quality_verdict(ars, best, quality_rows),
                # why a fixed margin stood in for the ArS-vs-ArS spread, once per group
                "position_columns": list(range(1, positions + 1)),
                "margin_reasons": sorted({m["reason"] for m in ars.get("margins", {}).values() if m.get("reason")}),
                "prompts": ars["n"],
            })
    return groups, not_run


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
        kind = config_draft_kind(config, name)
        best_per_group = []
        for group in groups:
            mine = [v for v in group["sps"] if v["draft"] == name and v["speedup"]]
            if mine:
                best_per_group.append((group, max(mine, key=lambda v: v["speedup"]["ratio_of_means"])))
        if not best_per_group:
            continue
        ratios = [v["speedup"]["ratio_of_means"] for _, v in best_per_group]
        drafts.append({
            "name": short_draft(name), "kind": kind, "role": DRAFT_KINDS[kind].role, "copying": DRAFT_KINDS[kind].copying,
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
        "model_drafts": [d for d in drafts if not d["copying"]],
        "model_drafts_never_faster": all(d["faster"] == 0 for d in drafts if not d["copying"]),
        # a draft of the paper's kind: a separate, smaller model (the target drafting for itself is not one)
        "paper_kind_draft": any(DRAFT_KINDS[d["kind"]].separate_model for d in drafts),
    }
