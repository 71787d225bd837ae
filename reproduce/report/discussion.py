"""The report's Discussion and Conclusion, as numbers the template words conditionally: no sentence of them is
hand-written around a number, and no number is hand-written.

Everything comes from the analysis's measured cost model (Leviathan et al., reproduce.analysis.theory): the
acceptance alpha, the draft cost c (one drafted token, in single-token target calls) and the verification cost
curve t(n). From them: per draft, the speedup predicted at the measured alpha, at alpha = 1 (the ceiling: a draft
that costs too much cannot win however well it guesses) and with flat verification (the paper's premise); per
paper setting, the alpha our costs would need to match the paper's speedup; the small target's per-token
verification cost; the peer comparisons (like for like first); the CPU flags the run recorded and, from the
runtime probe (manifest runtime_choices), each linear mode's measured t(1) and t(K+1)/t(1) on that CPU; which
rows the model misses by more than CLOSE, and where it over-predicts; and the best K of a K sweep with its test.
"""

from __future__ import annotations

from reproduce.analysis import theory
from reproduce.report.labels import TASK_LABELS

# t(K+1)/t(1) up to this counts as "about flat" (the paper's premise); above it, verification costs extra tokens
FLAT_ENOUGH = 1.1

# measured / predicted within this of 1: the model accounts for the measured speedup
CLOSE = 0.2

# c below this: drafting is nearly free next to a target call (prompt lookup)
CHEAP_DRAFT = 0.05


def span(values) -> dict | None:
    """{low, high} of the values that are not None (None when there are none): the template prints one number
    when low == high, else the range."""
    values = [v for v in values if v is not None]
    return {"low": min(values), "high": max(values)} if values else None


def _curve(row: dict) -> dict[int, float]:
    """The two points of the cost curve a theory row uses, in single-token calls."""
    return {1: 1.0, row["k"] + 1: row["t_ratio"]}


def alpha_needed(speedup: float, k: int, c: float, curve: dict[int, float] | None) -> float | None:
    """The smallest alpha at which the model predicts `speedup` with K = k, draft cost c and `curve` (None: flat),
    or None when even alpha = 1 falls short. The prediction increases with alpha, so bisection finds it."""
    if theory.predicted_speedup(1.0, k, c, curve) < speedup:
        return None
    low, high = 0.0, 1.0
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if theory.predicted_speedup(mid, k, c, curve) < speedup else (low, mid)
    return high


def draft_costs(theory_rows: list[dict], drafts: dict) -> list[dict]:
    """Per draft (config order), over the main block's SpS rows: alpha, c, t(K+1)/t(1), predicted and measured
    (decode-loop) speedups, and the predictions at alpha = 1 (ceiling) and with flat verification."""
    out = []
    for name, info in drafts.items():
        rows = [t for t in theory_rows if t["draft"] == name]
        if not rows:
            continue
        ceilings = [theory.predicted_speedup(1.0, t["k"], t["c"], _curve(t)) for t in rows]
        out.append({
            "name": name, "label": info["label"], "kind": info["kind"], "settings": len(rows),
            "k": span(t["k"] for t in rows),
            "alpha": span(t["alpha"] for t in rows), "c": span(t["c"] for t in rows),
            "t_ratio": span(t["t_ratio"] for t in rows),
            "predicted": span(t["predicted_speedup"] for t in rows),
            "measured": span(t["measured_speedup"] for t in rows),
            "flat": span(theory.predicted_speedup(t["alpha"], t["k"], t["c"]) for t in rows),
            "ceiling": span(ceilings),
            "predicted_below_one": all(t["predicted_speedup"] < 1 for t in rows),
            "measured_below_one": all(t["measured_speedup"] < 1 for t in rows),
            "measured_above_one": all(t["measured_speedup"] > 1 for t in rows),
            "ceiling_below_one": max(ceilings) < 1,
        })
    return out


def paper_gaps(groups: list[dict]) -> list[dict]:
    """For each setting with a paper row and a theory row for its fastest SpS: the alpha our measured costs (c,
    t(K+1)/t(1) at the same K) would need to give the paper's speedup, on our curve and with flat verification."""
    out = []
    for g in groups:
        t = g["best"]["theory"] if g["best"] else None
        if not g["paper"] or not t:
            continue
        out.append({"title": g["title"], "label": t["label"], "k": t["k"], "k_plus_1": t["k"] + 1,
                    "paper_speedup": g["paper"]["speedup"],
                    "alpha": t["alpha"], "c": t["c"], "t_ratio": t["t_ratio"],
                    "ceiling": theory.predicted_speedup(1.0, t["k"], t["c"], _curve(t)),
                    "alpha_needed": alpha_needed(g["paper"]["speedup"], t["k"], t["c"], _curve(t)),
                    "alpha_needed_flat": alpha_needed(g["paper"]["speedup"], t["k"], t["c"], None)})
    return out


def target_costs(cost_curve: list[dict]) -> dict | None:
    """The target's verification cost from the per-task curves: t(1) in ms, the largest n measured and its
    t(n)/t(1), and the mean extra cost of each token beyond the first, in single-token calls."""
    tasks = [c for c in cost_curve if len(c["points"]) > 1]
    if not tasks:
        return None
    per_task = [{"label": c["label"], "t1_ms": c["points"][0]["ms"], "n": c["points"][-1]["n"],
                 "ratio": c["points"][-1]["ratio"],
                 "per_token": (c["points"][-1]["ratio"] - 1) / (c["points"][-1]["n"] - 1)} for c in tasks]
    per_token = span(t["per_token"] for t in per_task)
    return {"tasks": per_task, "t1_ms": span(t["t1_ms"] for t in per_task), "per_token": per_token,
            "ratio": span(t["ratio"] for t in per_task),
            # each further token costs under half a single-token call: most of a call is its fixed part
            "fixed_part_dominates": per_token["high"] < 0.5}


def peer_spans(peers: dict) -> dict:
    """Ours over HF (ratio of mean ms/token, HF over ours: > 1 ours faster), as ranges over settings: like for
    like (our loops on HF's forward) and stacks (our loops in the fast runtime), for generate() and assisted."""
    def ratios(pairs, kind):
        return span(p["ours_over_hf"]["ratio_of_means"] for p in pairs
                    if p["hf"]["method"] == kind and p["ours_over_hf"])

    return {f"{which}_{kind}": ratios(peers[which], f"hf_{kind}")
            for which in ("like_for_like", "stack") for kind in ("generate", "assisted")}


def hardware(setup: dict) -> dict:
    """The last session's CPU: its flags (None when not recorded), which are present, and native bf16; and the
    target's runtime probe on it (None when the manifest has none): per usable mode, t(1) and t(K+1)/t(1) and
    batch invariance, the flattest batch-invariant mode and the chosen one."""
    machine = setup["hardware"][-1]
    flags = machine["cpu_flags"]
    choice = next((m for m in setup.get("runtime_choices", {}).get("models", []) if m["role"] == "target"), None)
    probe = None
    if choice and choice["k"]:
        modes = [p for p in choice["probes"] if p["ok"] and p["ratio"] is not None]
        invariant = [p for p in modes if p["batch_invariant"]]
        probe = {"k": choice["k"], "k_plus_1": choice["k"] + 1, "runtime": choice["runtime"], "reason": choice["reason"],
                 "modes": [{"runtime": p["runtime"], "t1": p["ms"][0], "ratio": p["ratio"],
                            "batch_invariant": p["batch_invariant"]} for p in modes],
                 "flattest": min(invariant, key=lambda p: p["ratio"])["runtime"] if invariant else None}
    return {"cpu": machine["cpu"], "cpu_id": machine["cpu_id"], "flags_recorded": flags is not None,
            "present": [f["name"] for f in flags if f["present"]] if flags else [],
            "absent": [f["name"] for f in flags if not f["present"]] if flags else [],
            "native_bf16": machine["cpu_native_bf16"], "runtime": setup["target"]["runtime"], "probe": probe}


def model_misses(theory_rows: list[dict]) -> dict:
    """The rows whose measured speedup is more than CLOSE off the prediction: those the model over-predicts
    (measured / predicted below 1 - CLOSE) and under-predicts, each with its setting, label and ratio."""
    rows = [{"setting": f"{TASK_LABELS.get(t['task'], t['task'])} {t['mode']}", "label": t["label"],
             "efficiency": t["efficiency"], "predicted": t["predicted_speedup"], "measured": t["measured_speedup"]}
            for t in theory_rows if t["efficiency"] is not None and abs(t["efficiency"] - 1) > CLOSE]
    return {"rows": rows, "over": [r for r in rows if r["efficiency"] < 1], "under": [r for r in rows if r["efficiency"] > 1]}


def best_k(k_sweeps: list[dict], k_values: list[int]) -> list[dict]:
    """Per K sweep (sweeps.figure1_view), its best K with its speedup, the K values that cannot be told apart from
    it, and the paired test of the best K against the K the main block ran (when the sweep has that K)."""
    out = []
    for f in k_sweeps:
        main = [p for p in f["points"] if int(p["value"]) in k_values and p is not f["best"]]
        out.append({"name": f["sweep"]["name"], "title": f["sweep"]["title"], "confident": f["confident"],
                    "best": f["best"]["value"] if f["best"] else None,
                    "speedup": f["measured"]["best_speedup"], "tokens": f["measured"]["tokens"],
                    "indistinguishable": [p["value"] for p in f["indistinguishable"]],
                    "main_k": k_values, "best_is_main": bool(f["best"]) and int(f["best"]["value"]) in k_values,
                    "vs_main": [{"k": p["value"], "test": p["measured"]["vs_best"]} for p in main
                                if p["measured"] and p["measured"]["vs_best"] and p["measured"]["vs_best"]["ci"]]})
    return out


def discussion_view(groups: list[dict], theory_rows: list[dict], cost_curve: list[dict], setup: dict, peers: dict,
                    paper: dict, drafts: dict, k_sweeps: list[dict] | None = None) -> dict:
    costs = draft_costs(theory_rows, drafts)
    target = target_costs(cost_curve)
    # the conclusion sets ours beside the paper's: only the settings both ran (rows the paper lacks are not counted)
    compared = [g for g in groups if g.get("paper") and g["best"] and g["best"]["speedup"]]
    best = span(g["best"]["speedup"]["ratio_of_means"] for g in compared)
    paper_speedups = span(g["paper"]["speedup"] for g in compared)
    efficiency = span(t["efficiency"] for t in theory_rows)
    close = sum(1 for t in theory_rows if t["efficiency"] and abs(t["efficiency"] - 1) <= CLOSE)
    verification = span(t["t_ratio"] for t in theory_rows)  # t(K+1)/t(1) at the K values run
    return {
        "drafts": costs,
        "winners": [d for d in costs if d["measured_above_one"]],
        "losers": [d for d in costs if d["measured_below_one"]],
        "model_drafts": [d for d in costs if d["kind"] in ("model", "distilled", "hybrid")],
        "target_draft": next((d for d in costs if d["kind"] == "target"), None),
        "ngram_draft": next((d for d in costs if d["kind"] == "ngram"), None),
        "has_model_draft": any(info["kind"] in ("model", "distilled", "hybrid") for info in drafts.values()),
        "paper_gaps": paper_gaps(groups),
        "efficiency": efficiency,
        # measured / predicted within CLOSE of 1: the model accounts for that measurement
        "efficiency_close": close,
        "efficiency_rows": len(theory_rows),
        # "all": the model accounts for every row; "most": for at least half; "few": for fewer
        "efficiency_fit": "all" if close == len(theory_rows) else "most" if 2 * close >= len(theory_rows) else "few",
        "efficiency_short": efficiency is not None and efficiency["low"] < 1 - CLOSE,
        "misses": model_misses(theory_rows),
        "best_k": best_k(k_sweeps or [], sorted({t["k"] for t in theory_rows}) or []),
        "close": CLOSE, "close_low": 1 - CLOSE, "close_high": 1 + CLOSE,
        "target": target,
        "verification": verification,
        "verification_flat": verification is not None and verification["high"] <= FLAT_ENOUGH,
        "flat_enough": FLAT_ENOUGH,
        "cheap_draft": CHEAP_DRAFT,
        "peers": peer_spans(peers),
        "hardware": hardware(setup),
        "best_speedups": best,
        "paper_speedups": paper_speedups,
        "below_paper": best is not None and paper_speedups is not None and best["high"] < paper_speedups["low"],
    }
