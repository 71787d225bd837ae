"""Where the speed comes from: the target's cost curve t(n) from the traces, the Leviathan model's prediction
against the measured speedup, and Figure 1 (speedup by K) from a K sweep, measured."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from reproduce.analysis import ratios, stats, theory
from reproduce.analysis.frame import PROMPT, rng_for
from reproduce.catalogue import COST_CURVE_METHODS, SWEEP_METHODS

K_MAX_THEORY = 8


def cost_curve(frame: pd.DataFrame) -> dict[int, float]:
    """Median ms of one target call by tokens scored, from the traces: ArS steps give t(1), SpS steps
    with d drafted tokens give t(d+1). Only the configured runtime's rows: ars_hf / sps_hf run the target's
    HF forward, another (slower) cost curve."""
    by_n = defaultdict(list)
    for method, steps in zip(frame["method"], frame["steps"]):
        if method in COST_CURVE_METHODS:
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
        # the model describes the decode loop: the primary speedup is the decode loop's (prefills excluded)
        measured = entry["vs_ars"]["speedup"]["point"]
        best_k = None
        covered = [n - 1 for n in curve if n > 1 and all(m in curve for m in range(1, n + 1))]
        if covered:
            best_k, best = theory.optimal_k(alpha, c, curve, k_max=min(max(covered), K_MAX_THEORY))
        out.append({"block": entry["block"], "task": entry["task"], "mode": entry["mode"], "variant": entry["variant"],
                    "draft": entry["draft"], "k": k, "sweep_value": entry["sweep_value"], "alpha": alpha,
                    "acceptance": entry["acceptance_pooled"], "c": c, "t_ratio": curve[k + 1] / curve[1],
                    "predicted_speedup": predicted, "measured_speedup": measured,
                    "measured_speedup_end_to_end": entry["vs_ars"]["speedup_e2e"]["point"],
                    "efficiency": measured / predicted if predicted else None, "optimal_k_predicted": best_k})
    return out


def k_sweep(frame: pd.DataFrame, block: str) -> dict:
    """Figure 1 from a sweep over K, measured: per K, the speedup of SpS over the ArS run beside it on the
    prompts where both generated the whole budget of max_new_tokens (rows that stopped at EOS are left out and
    counted, never extrapolated), on decode-loop ms/token like Table 1's (ratios.log_ratio_interval: t on
    per-prompt log ratios); the best K (the highest speedup) and, per other K, a paired comparison with it: the
    best K's per-prompt speedup over that K's, t interval on the log of that ratio; an interval reaching 1 means
    the two cannot be told apart on these prompts. Each speedup keeps `ratio_of_means_ci` (percentile
    bootstrap) for readers of older summaries only: use `ci`."""
    rows = frame[frame["block"] == block]
    complete = rows["num_tokens"] >= rows["max_new_tokens"]
    kept = rows[complete & rows["method"].isin(SWEEP_METHODS)]
    decode = {}  # K -> DataFrame of ArS and SpS decode ms/token per prompt (complete pairs only)
    points = []
    for k in sorted(rows["sweep_value"].dropna().unique()):
        at_k = kept[kept["sweep_value"] == k]
        pairs = pd.DataFrame({m: at_k[at_k["method"] == m].set_index(PROMPT)["decode_ms_per_token"]
                              for m in SWEEP_METHODS}).dropna()
        decode[k] = pairs
        if len(pairs) >= 2:
            speedup = ratios.log_ratio_interval(pairs["ars"], pairs["sps"])
            speedup["ratio_of_means_ci"] = stats.speedup_ci(pairs["ars"], pairs["sps"], rng_for(block, k, "speedup"))["ratio_of_means_ci"]
        elif len(pairs) == 1:
            single = float(pairs["ars"].iloc[0] / pairs["sps"].iloc[0])
            speedup = {"point": single, "ci": None, "ratio_of_means": single, "ratio_of_means_ci": None, "n": 1}
        else:
            speedup = None
        at_k_all = rows[(rows["sweep_value"] == k) & rows["method"].isin(SWEEP_METHODS)]
        points.append({"k": int(k), "speedup": speedup, "pairs": len(pairs), "prompts": int(at_k_all[PROMPT].drop_duplicates().shape[0])})
    with_speedup = [p for p in points if p["speedup"]]
    best = max(with_speedup, key=lambda p: p["speedup"]["point"], default=None)
    for point in points:
        if best is None or point is best or not point["speedup"]:
            point["vs_best"] = None
            continue
        common = decode[best["k"]].index.intersection(decode[point["k"]].index)
        if len(common) < 2:
            point["vs_best"] = {"n": len(common), "ratio": None, "ci": None, "distinguishable": None}
            continue
        a, b = decode[best["k"]].loc[common], decode[point["k"]].loc[common]
        test = ratios.log_ratio_interval(a["ars"] / a["sps"], b["ars"] / b["sps"])
        point["vs_best"] = {"ratio": test["point"], "ci": test["ci"], "level": test["level"], "n": test["n"],
                            "interval": test["interval"], "distinguishable": test["ci"][0] > 1}
    total = int(rows["method"].isin(SWEEP_METHODS).sum())
    return {"block": block, "tokens": int(rows["max_new_tokens"].max()), "rows": total, "measure": "decode_ms_per_token",
            "excluded": total - int(len(kept)), "points": points, "best_k": best["k"] if best else None,
            "best_speedup": best["speedup"] if best else None,
            "indistinguishable_from_best": [p["k"] for p in points if p["vs_best"] and p["vs_best"]["distinguishable"] is False]}
