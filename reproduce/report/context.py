"""The report's context: every value the templates show, as plain dicts built from summary.json (whose
"manifest" is the run's manifest.json) and the paper's numbers (reports/paper.yaml, transcribed from Table 1 of
arXiv 2302.01318).

The views only pick rows (which SpS is best, which sweep varies K), attach labels, the paper's numbers and
verdicts; every statistic comes from reproduce.analysis. Section by section: groups.py (Table 1, verdicts,
drafts), sweeps.py (sweeps, Figure 1, cost curve), setup.py, peers.py, lossless.py (section 9 and every claim of
losslessness), quality.py (every SpS row's quality tests, the failed ones), discussion.py.
"""

from __future__ import annotations

import yaml

from reproduce.errors import ReproduceError
from reproduce.report.discussion import discussion_view
from reproduce.report.groups import draft_sources, is_control, main_groups, verdict_counts
from reproduce.report.labels import TASK_LABELS, config_draft_kind, entry_label, mode_label, short_draft
from reproduce.report.lossless import losslessness_view
from reproduce.report.quality import quality_failures
from reproduce.report.peers import peers_view
from reproduce.report.setup import setup_view
from reproduce.report.sweeps import cost_curve_view, figure1_view, sweep_views


def build_context(summary: dict, manifest: dict, paper: dict, losslessness: list[dict] | None = None,
                  losslessness_run: dict | None = None) -> dict:
    """Every value the templates show. `losslessness`: render.load_losslessness's rows (None: not attached);
    `losslessness_run`: when, at which commit and on which CPU they ran (render.losslessness_provenance)."""
    config = manifest["config"]
    # a control's theory row says so (its rows ran on the first controls.prompts prompts only)
    theory_rows = [{**t, "label": entry_label(t) + (" (control)" if is_control({**t, "method": "sps"}, config) else ""),
                    "k_plus_1": t["k"] + 1} for t in summary["theory"]]
    theory = {(t["block"], t["task"], t["mode"], t["variant"], t["sweep_value"]): t for t in theory_rows}
    groups, not_run = main_groups(summary, config, manifest["models"], paper, theory)
    if not groups:
        raise ReproduceError("the results hold no main-block rows: run the experiment before the report")
    matched = [g["paper"]["task"] + g["paper"]["mode"] for g in groups if g["paper"]]
    paper_settings = [f"{TASK_LABELS[r['task']]} {mode_label(r['temperature'], r['top_p'])}" for r in paper["table1"]]
    sweeps = sweep_views(summary, config, theory)
    measured = summary.get("k_sweeps", {})
    k_sweeps = [figure1_view(s, measured[s["name"]]) for s in sweeps
                if s["vary"] == "k" and any(p["sps"] for p in s["points"]) and s["name"] in measured]
    curve = cost_curve_view(summary)
    main_theory = [t for t in theory_rows if t["block"] == "main"]
    sweep_theory = [t for t in theory_rows if t["block"] != "main"]
    setup = setup_view(manifest, summary)
    peers = peers_view(groups)
    lossless = losslessness_view(groups, losslessness, losslessness_run, manifest["sessions"],
                                 manifest["models"]["target"]["runtime"])
    failures = quality_failures(groups, lossless)
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
        "rerun": {"profile": None, "make": None, "changed_profile": None, "config": None, "results_dir": None},
        "sweeps": sweeps,
        "k_sweeps": k_sweeps,
        "cost_curve": curve,
        "largest_n": [{"label": c["label"], **c["points"][-1]} for c in curve],
        "theory_main": main_theory,
        "theory_sweeps": sweep_theory,
        "losslessness": lossless,
        "quality_failures": failures,
        "margins": summary["margins"],
        "sampled_tests": summary["sampled_tests"],
        "bootstrap_seed": summary["bootstrap_seed"],
        "spread_margin_fraction": summary.get("spread_margin_fraction"),
        "seed_per_row": summary.get("seed_per_row", False),  # summaries written before it: rows without seed_used
        "price_per_hour": config["price_per_hour_usd"],
        # ArS again on the same prompts against ArS: how much the timing alone moves a speedup
        "aa_checks": [{"title": g["title"], "speedup": v["speedup"]} for g in groups for v in g["views"]
                      if v["method"] == "ars_repeat" and v["speedup"]],
        "verdicts": verdict_counts(groups),
        "draft_sources": draft_sources(groups, config),
        "task_labels": TASK_LABELS,
        # provenance, peers and the discussion (set by render_report: the commit rendering the report, and when and
        # at which commit the losslessness tests ran)
        "rendered_by": None,
        "losslessness_run": losslessness_run,
        "peers": peers,
        "discussion": discussion_view(groups, main_theory, curve, setup, peers, paper,
                                      {d["name"]: {"kind": config_draft_kind(config, d["name"]), "label": short_draft(d["name"])}
                                       for d in config["drafts"]}, k_sweeps),
    }
