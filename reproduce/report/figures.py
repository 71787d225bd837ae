"""The report's figures (matplotlib, headless): speedups, latency and throughput per draft, Figure 1, sweeps,
the cost curve. Colour is the draft, hatching the method (catalogue.METHOD_KINDS).
"""

from __future__ import annotations

import math
from pathlib import Path

from reproduce.catalogue import METHOD_KINDS
from reproduce.report.format import fmt_params, fmt_value, fmt_x
from reproduce.report.labels import short_draft

ARS_COLOR, HF_GENERATE_COLOR = "0.45", "0.75"
# the methods a legend can name, in legend order (catalogue: MethodKind.legend_rank)
LEGEND_METHODS = tuple(sorted((m for m in METHOD_KINDS if METHOD_KINDS[m].legend_rank is not None),
                              key=lambda m: METHOD_KINDS[m].legend_rank))
# the speedup figure: our loops with a draft in the configured runtime (SpS, draft-only)
SPEEDUP_METHODS = tuple(m for m in LEGEND_METHODS if METHOD_KINDS[m].uses_draft and not METHOD_KINDS[m].hf_peer
                        and not METHOD_KINDS[m].hf_forward)
# the peers figure: our SpS and Hugging Face's generate() and assisted generation
PEER_FIGURE_METHODS = tuple(m for m in LEGEND_METHODS if m == "sps" or METHOD_KINDS[m].hf_peer)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True,
                         "legend.fontsize": 8, "figure.dpi": 110})
    return plt


def _draft_colors(settings) -> dict:
    palette = ["tab:blue", "tab:green", "tab:purple", "tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    drafts = dict.fromkeys(r.draft for s in settings for r in s.rows if r.draft)
    return {d: palette[i % len(palette)] for i, d in enumerate(drafts)}


def _style(view, colors: dict) -> dict:
    """One colour per draft (SpS, HF assisted and draft-only of a draft share it; the hatch tells them apart)."""
    kind = METHOD_KINDS[view.method]
    if kind.uses_draft:
        color = colors[view.draft]
    else:  # ArS and its variants grey, HF generate light grey
        color = HF_GENERATE_COLOR if kind.hf_peer else ARS_COLOR
    return {"color": color, "hatch": kind.hatch, "edgecolor": "black", "linewidth": 0.4}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})  # no version stamp: same input, same file
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _ci_error(point: float, interval) -> list[float]:
    """Error bar lengths below and above a point (a percentile interval can sit just off the point: clip at 0)."""
    low, high = interval
    return [max(point - low, 0.0), max(high - point, 0.0)]


def _panel_grid(groups, pick, draw, xlabel: str, title: str, path: Path, legend: list,
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
        ax.set_title(f"{group.title} (n={group.prompts})", fontsize=9, loc="left")
        ax.set_yticks(range(len(views)), [v.label for v in views])
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
            bars = [ax.barh(i - 0.2, getattr(view, low_key), height=0.38, **style),
                    ax.barh(i + 0.2, getattr(view, high_key), height=0.38, alpha=0.45, **style)]
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


def _method_legend(methods):
    from matplotlib.patches import Patch

    return [Patch(facecolor="white", edgecolor="black", hatch=METHOD_KINDS[m].hatch, label=METHOD_KINDS[m].legend)
            for m in methods]


def _present(groups, methods, pick=None) -> tuple[str, ...]:
    """The methods among `methods` that have a bar in some panel (`pick` chooses a panel's views): a legend
    names only what the figure shows."""
    shown = {v.method for g in groups for v in (pick(g) if pick else g.rows)}
    return tuple(m for m in methods if m in shown)


def draw_speedups(groups, colors: dict, path: Path, pick, title: str, methods, show_paper: bool,
                  measure: str = "speedup", basis: str = "decode loop") -> Path | None:
    """One bar per view with its 95% CI; `measure`: the MethodRow field drawn ("speedup": decode loop, or
    "end_to_end"), named by `basis`."""
    from matplotlib.lines import Line2D

    def draw(ax, group, views):
        for i, view in enumerate(views):
            speedup = getattr(view, measure)
            ax.barh(i, speedup.ratio, height=0.6, xerr=[[e] for e in _ci_error(speedup.ratio, speedup.ci)],
                    capsize=3, error_kw={"elinewidth": 1}, **_style(view, colors))
        ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
        right = max(max(getattr(v, measure).ci[1], getattr(v, measure).ratio) for v in views)
        if show_paper and group.paper:
            ax.axvline(group.paper.speedup, color="tab:red", linewidth=1.2, linestyle=":")
            ax.annotate(f"paper {fmt_x(group.paper.speedup)}", (group.paper.speedup, -0.5),
                        textcoords="offset points", xytext=(3, -10), fontsize=7, color="tab:red")
            right = max(right, group.paper.speedup)
        ax.set_xlim(0, max(right, 1.0) * 1.15)

    legend = _method_legend(methods) + [Line2D([], [], color="black", linestyle="--", label="ArS (1x)")]
    if show_paper:
        legend.append(Line2D([], [], color="tab:red", linestyle=":", label="paper, same task and mode"))
    return _panel_grid(groups, pick, draw, f"speedup over ArS, {basis} (geometric mean over prompts; bars: 95% CI)",
                       title, path, legend)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def draw_scatter(groups, colors: dict, path: Path) -> Path | None:
    """Speedup vs acceptance, one point per (task/mode, SpS draft): colour = task and mode, marker = draft, both
    named in the legend beside the axes, so no label is written on the plot (where points crowd, labels overlap)."""
    views = [(g, v) for g in groups for v in g.sps if v.speedup and v.acceptance_pooled is not None]
    if not views:
        return None
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    group_colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    drafts = list(dict.fromkeys(v.draft for _, v in views))
    markers = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(drafts)}
    shown = [g for g in groups if any(gg is g for gg, _ in views)]
    for index, group in enumerate(shown):
        color = group_colors[index % len(group_colors)]
        for view in (v for g, v in views if g is group):
            x, speedup = view.acceptance_pooled, view.speedup
            ax.errorbar(x, speedup.ratio, capsize=3, fmt="none", ecolor=color, elinewidth=0.8,
                        yerr=[[e] for e in _ci_error(speedup.ratio, speedup.ci)])
            ax.scatter(x, speedup.ratio, s=60, marker=markers[view.draft], color=color, alpha=0.8,
                       edgecolor="black", linewidth=0.5)
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    parameters = {v.draft: v.draft_parameters for _, v in views}
    handles = ([Line2D([], [], linestyle="none", marker="o", color=group_colors[i % len(group_colors)],
                       markeredgecolor="black", label=g.title) for i, g in enumerate(shown)]
               + [Line2D([], [], linestyle="none", marker=markers[d], color="0.75", markeredgecolor="black",
                         label=f"{short_draft(d)} ({fmt_params(parameters[d])} parameters)") for d in drafts]
               + [Line2D([], [], color="black", linestyle="--", label="ArS (1x)")])
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("acceptance rate (accepted / drafted tokens, pooled over prompts)")
    ax.set_ylabel("speedup over ArS, decode loop (geometric mean over prompts)")
    ax.set_title("Drafts: speedup (bars: 95% CI) vs acceptance; colour = task and mode, marker = draft",
                 fontsize=9, loc="left")
    fig.legend(handles=handles, loc="outside right upper", framealpha=0.9, labelspacing=1.0)
    return _save(fig, path)


def _legend_below(ax, rows: int = 1) -> None:
    """The legend under the axes, outside them, so it never hides a point or an error bar."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=max(1, math.ceil(len(handles) / rows)),
                  fontsize=7, framealpha=0.9)


def draw_figure1(view, path: Path) -> Path:
    """Chen et al. Figure 1 from a K sweep (sweeps.Figure1): the measured mean time for the budget of tokens (rows
    that stopped early left out, never extrapolated), the acceptance and the loop time, each against K."""
    plt = _pyplot()
    points = view.points
    ks = [p.value for p in points]
    tokens = view.tokens
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.8))
    for method, color, fmt, label in (("sps", "tab:blue", "o-", "SpS"), ("ars", ARS_COLOR, "s--", "ArS (same prompts)")):
        timed = [p for p in points if getattr(p, method) and getattr(p, method).time_full.mean is not None]
        if not timed:
            continue
        times = [getattr(p, method).time_full for p in timed]
        means = [t.mean / 1000 for t in times]
        errors = list(zip(*[_ci_error(t.mean, t.ci) if t.ci else [0.0, 0.0] for t in times]))
        left.errorbar([p.value for p in timed], means, yerr=[[e / 1000 for e in errors[0]], [e / 1000 for e in errors[1]]],
                      fmt=fmt, color=color, capsize=3, label=label)
    if view.best is not None:
        label = (f"best K = {fmt_value(view.best.value)} (highest measured speedup)" if view.confident else
                 f"highest speedup at K = {fmt_value(view.best.value)} (n={view.best_speedup.n}: no best K named)")
        left.axvline(view.best.value, color="tab:red", linestyle=":", linewidth=1.2, label=label)
    left.set_ylabel(f"mean time for {tokens} tokens (s), measured")
    left.set_ylim(bottom=0)
    pairs = sorted({p.pairs for p in points})
    per_k = f"{pairs[0]}" if len(pairs) == 1 else f"{pairs[0]}-{pairs[-1]}"
    excluded = (f"{view.excluded} of {view.rows} rows stopped at EOS before {tokens} tokens: left out; "
                f"prompts per K: {per_k}" if view.excluded else f"every row generated {tokens} tokens; prompts per K: {per_k}")
    left.set_title(excluded, fontsize=8, loc="left")
    middle.plot(ks, [p.sps.r for p in points], "o-", color="tab:blue", label="tokens per loop / (K+1) (paper's measure)")
    middle.plot(ks, [p.sps.acceptance_pooled for p in points], "^--", color="tab:orange",
                label="acceptance rate (accepted / drafted)")
    middle.set_ylabel("acceptance")
    middle.set_ylim(0, 1.05)
    # the pooled loop time the table gives (all decode time over all loops), with its bootstrap interval over rows
    right.errorbar(ks, [p.sps.loop_ms for p in points], fmt="o-", color="tab:blue", capsize=3,
                   yerr=list(zip(*[_ci_error(p.sps.loop_ms, p.sps.loop_ms_ci) if p.sps.loop_ms_ci else [0.0, 0.0]
                                   for p in points])),
                   label="SpS loop (draft K + verify), pooled")
    right.set_ylabel("mean time per loop (ms)")
    right.set_ylim(bottom=0)
    for ax in (left, middle, right):
        ax.set_xlabel("K (tokens drafted per loop)")
        ax.set_xticks(ks, [fmt_value(k) for k in ks])
        _legend_below(ax, rows=2)
    fig.suptitle(f"Figure 1 reproduced, sweep {view.name}: {view.title} "
                 "(error bars: 95% bootstrap CIs of the mean over prompts; none from a single prompt)",
                 fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)


def draw_sweep(sweep, path: Path) -> Path:
    plt = _pyplot()
    points = [p for p in sweep.points if p.ars and p.sps]
    values = [p.value for p in points]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.4))
    for method, color, marker in (("ars", ARS_COLOR, "s"), ("sps", "tab:blue", "o")):
        name = "ArS" if method == "ars" else "SpS"
        left.plot(values, [getattr(p, method).ms_per_token_mean for p in points], f"{marker}-", color=color,
                  label=f"{name} mean")
        left.plot(values, [getattr(p, method).ms_per_token_p95 for p in points], f"{marker}:", color=color,
                  label=f"{name} p95")
    left.set_ylabel("ms per token (end to end)")
    left.set_ylim(bottom=0)
    middle.plot(values, [p.sps.acceptance_pooled for p in points], "o-", color="tab:blue", label="SpS")
    middle.set_ylabel("acceptance rate\n(accepted / drafted)")
    middle.set_ylim(0, 1.05)
    with_ci = [p for p in points if p.sps.speedup and p.sps.speedup.ci]
    if with_ci:
        speedups = [p.sps.speedup for p in with_ci]
        right.errorbar([p.value for p in with_ci], [s.ratio for s in speedups], capsize=3, fmt="o-",
                       color="tab:blue", label="SpS, decode loop (bars: 95% CI)",
                       yerr=list(zip(*[_ci_error(s.ratio, s.ci) for s in speedups])))
    right.axhline(1.0, color="black", linewidth=1, linestyle="--", label="ArS (1x)")
    right.set_ylabel("speedup over ArS")
    for ax in (left, middle, right):
        ax.set_xlabel(sweep.axis)
        ax.set_xticks(values, [fmt_value(v) for v in values])
        _legend_below(ax, rows=2)
    fig.suptitle(f"Sweep {sweep.name}: {sweep.title}", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)


def draw_cost_curve(curves, path: Path) -> Path:
    """One line per task: t(n) (median over target calls) and t(n)/t(1)."""
    plt = _pyplot()
    ns = sorted({c.n for curve in curves for c in curve.points})
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for curve, color in zip(curves, ("tab:blue", "tab:green", "tab:purple", "tab:brown")):
        left.plot([c.n for c in curve.points], [c.ms for c in curve.points], "o-", color=color, label=curve.label)
        right.plot([c.n for c in curve.points], [c.ratio for c in curve.points], "o-", color=color,
                   label=f"{curve.label}: t(n) / t(1)")
    left.set_ylabel("target call time t(n) (ms, median)")
    left.set_ylim(bottom=0)
    right.plot(ns, [1.0] * len(ns), "--", color="tab:red", label="paper's premise: flat (TPU, 70B)")
    right.plot(ns, ns, ":", color="black", label="linear: n separate calls")
    right.set_ylabel("t(n) / t(1)")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.set_xlabel("tokens scored in one target call (n = K+1)")
        ax.set_xticks(ns)
        _legend_below(ax, rows=2)
    fig.suptitle("Verification cost curve of the target", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)


def draw_figures(report, figures_dir: Path) -> dict[str, Path]:
    """Every figure the templates show, by name (report: context.Report)."""
    groups = report.settings
    colors = _draft_colors(groups)
    # a legend names only the methods its figure has bars of (no "draft only" without draft-only rows)
    all_methods = _present(groups, LEGEND_METHODS)
    speedup_methods = _present(groups, SPEEDUP_METHODS, _speedup_views)
    draft_only_note = "; draft only = the draft alone" if "draft_only" in all_methods else ""
    figures = {}
    for view in report.k_sweeps:
        figures[f"figure1_{view.name}"] = draw_figure1(view, figures_dir / f"figure1_{view.name}.png")
    figures["drafts_latency"] = _panel_grid(
        groups, _all_views, _p50_p95_panel("ms_per_token_p50", "ms_per_token_p95", colors),
        "ms per token, end to end (lower is better)", "Latency per method; colour = draft, hatching = method",
        figures_dir / "drafts_latency.png", _p50_p95_legend() + _method_legend(all_methods), bars_per_row=2)
    figures["drafts_throughput"] = _panel_grid(
        groups, _all_views, _p50_p95_panel("tokens_per_s_p50", "tokens_per_s_p95", colors),
        "tokens per second, end to end (higher is better)",
        "Throughput per method" + (draft_only_note and "; draft only = the draft's own speed, the ceiling of SpS with it"),
        figures_dir / "drafts_throughput.png", _p50_p95_legend() + _method_legend(all_methods), bars_per_row=2)
    figures["drafts_speedup"] = draw_speedups(
        groups, colors, figures_dir / "drafts_speedup.png", _speedup_views,
        "Speedup over ArS per draft (decode loop)" + (draft_only_note and draft_only_note + ", an upper limit"),
        speedup_methods, show_paper=True)
    figures["drafts_acceptance"] = _panel_grid(
        groups, _acceptance_views, _p50_p95_panel("acceptance_p50", "acceptance_p95", colors, value_labels=True),
        "acceptance rate per prompt (accepted / drafted tokens)", "Acceptance per draft (SpS)",
        figures_dir / "drafts_acceptance.png", _p50_p95_legend(), bars_per_row=2)
    figures["drafts_scatter"] = draw_scatter(groups, colors, figures_dir / "drafts_scatter.png")
    figure1_sweeps = {view.name for view in report.k_sweeps}
    for sweep in report.sweeps:  # a sweep over K is drawn once, as Figure 1
        if sweep.name not in figure1_sweeps and any(p.ars and p.sps for p in sweep.points):
            figures[f"sweep_{sweep.name}"] = draw_sweep(sweep, figures_dir / f"sweep_{sweep.name}.png")
    if report.model.curves:
        figures["cost_curve"] = draw_cost_curve(report.model.curves, figures_dir / "cost_curve.png")
    if any(v.method != "sps" for g in groups for v in _peer_views(g)):
        figures["peers"] = draw_speedups(groups, colors, figures_dir / "peers.png", _peer_views,
                                         "Ours vs Hugging Face: speedup over our ArS on the same prompts (end to end: "
                                         "generate() times its prefill inside its loop)",
                                         _present(groups, PEER_FIGURE_METHODS, _peer_views),
                                         show_paper=False, measure="end_to_end", basis="end to end")
    return {name: path for name, path in figures.items() if path is not None}


def _all_views(group) -> tuple:
    return group.rows


def _speedup_views(group) -> list:
    return [v for v in group.rows if v.method in SPEEDUP_METHODS and v.speedup]


def _acceptance_views(group) -> list:
    return [v for v in group.sps if v.acceptance_p50 is not None]


def _peer_views(group) -> list:
    return [v for v in group.rows if v.method in PEER_FIGURE_METHODS and v.end_to_end and v.end_to_end.ci]
