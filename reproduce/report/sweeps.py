"""The sweeps (one setting varied on a few prompts), Figure 1 read from a K sweep, and the cost curve t(n)."""

from __future__ import annotations

from reproduce.catalogue import SWEEPABLE
from reproduce.report.groups import entry_view
from reproduce.report.labels import TASK_LABELS, short_draft


def sweep_views(summary: dict, config: dict, theory: dict) -> list[dict]:
    """Each configured sweep: per value, its ArS and SpS entries (sweeps with no rows are listed as not run)."""
    sweeps = []
    for name, spec in config["sweeps"].items():
        entries = [e for e in summary["methods"] if e["block"] == name]
        points = []
        for value in sorted({e["sweep_value"] for e in entries}):
            at_value = [entry_view(e, theory) for e in entries if e["sweep_value"] == value]
            ars = next((v for v in at_value if v["method"] == "ars"), None)
            sps = next((v for v in at_value if v["method"] == "sps"), None)
            points.append({"value": value, "ars": ars, "sps": sps})
        sweeps.append({
            "name": name, "spec": spec, "vary": spec["vary"], "axis": SWEEPABLE[spec["vary"]].axis,
            "title": f"{SWEEPABLE[spec['vary']].name} on {TASK_LABELS[spec['task']]} {spec['mode']}, draft "
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


def cost_curve_view(summary: dict) -> list[dict]:
    """Per task, t(n) and t(n)/t(1) (tasks whose run has no single-token call are left out)."""
    views = []
    for task, curve_ms in summary["cost_curves_ms"].items():
        curve = {int(n): ms for n, ms in curve_ms.items()}
        if 1 in curve:
            views.append({"task": task, "label": TASK_LABELS.get(task, task),
                          "points": [{"n": n, "ms": ms, "ratio": ms / curve[1]} for n, ms in sorted(curve.items())]})
    return views
