"""The report's context: one frozen record (Report) holding every view the templates show, built once from
summary.json (whose "manifest" is the run's manifest.json) and the paper's numbers (reports/paper.yaml,
transcribed from Table 1 of arXiv 2302.01318).

The views only pick rows (which SpS is fastest, which sweep varies K), attach labels, the paper's numbers and
verdicts; every statistic comes from reproduce.analysis. Module by module: groups.py (the settings, their rows,
verdicts), answer.py (the first screen), discussion.py (the cost model: why), sweeps.py (sweeps, Figure 1),
setup.py (the appendix's provenance), peers.py, lossless.py (every claim of losslessness).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import yaml

from reproduce.errors import ReproduceError
from reproduce.report.answer import Answer, answer
from reproduce.report.discussion import CostModel, cost_model
from reproduce.report.groups import Setting, main_settings, theory_rows
from reproduce.report.labels import config_draft_kind, short_draft
from reproduce.report.lossless import Losslessness, losslessness
from reproduce.report.peers import Peers, peers
from reproduce.report.records import Commit, Speedup
from reproduce.report.setup import Setup, portable, setup_view
from reproduce.report.sweeps import Figure1, Sweep, figure1_views, sweeps

# the A/A check (ArS against ArS again on its own seeds, decode loop) should read within this of 1 (issue 22)
AA_TOLERANCE = 0.05


@dataclass(frozen=True)
class PaperSetup:
    """The paper's setting and its Figure 1 reading (reports/paper.yaml)."""
    title: str
    arxiv: str
    target: str
    target_parameters: float
    draft: str
    draft_parameters: float
    hardware: str
    k: int
    premise: str
    figure1: tuple[tuple[str, str], ...]

    @classmethod
    def read(cls, paper: dict) -> PaperSetup:
        s = paper["setup"]
        f = paper["figure1"]
        return cls(paper["paper"], paper["arxiv"], s["target"], s["target_parameters"], s["draft"],
                   s["draft_parameters"], s["hardware"], s["k"], s["premise"],
                   (("time for 128 tokens", f["time_128_tokens"]), ("acceptance", f["acceptance"]),
                    ("loop time", f["loop_time"])))


@dataclass(frozen=True)
class AACheck:
    """ArS again on the same prompts with its own seeds, against ArS: the decode loop's ratio should be 1.
    `within` is judged here against AA_TOLERANCE; once the analysis writes the check itself, build_report reads
    it into these fields instead."""
    setting: str
    speedup: Speedup | None  # decode loop
    end_to_end: Speedup | None
    tolerance: float = AA_TOLERANCE

    @property
    def within(self) -> bool:
        return self.speedup is not None and abs(self.speedup.ratio - 1) <= self.tolerance

    @property
    def drift(self) -> float | None:
        """How far the ratio lies from 1 (a share: 0.2 = 20%)."""
        return None if self.speedup is None else abs(self.speedup.ratio - 1)


@dataclass(frozen=True)
class LosslessRun:
    commit: Commit
    started: str | None
    finished: str | None


@dataclass(frozen=True)
class Rerun:
    """How to run the experiment again: `make` when experiments/<profile>.yaml still resolves to the run's config;
    otherwise the stored config (`config`, relative to the results directory), or neither."""
    profile: str | None
    make: str | None
    changed_profile: str | None
    config: str | None


@dataclass(frozen=True)
class Links:
    """The files the report links, relative to it (render.py writes or copies each one)."""
    appendix: str
    main: str
    rows_csv: str | None


@dataclass(frozen=True)
class Report:
    config_name: str
    description: str
    paper: PaperSetup
    settings: tuple[Setting, ...]
    not_run: tuple[str, ...]
    paper_not_run: tuple[str, ...]  # the paper's rows this run has no setting for
    answer: Answer
    sweeps: tuple[Sweep, ...]
    k_sweeps: tuple[Figure1, ...]
    model: CostModel
    setup: Setup
    losslessness: Losslessness
    losslessness_run: LosslessRun | None
    peers: Peers
    aa: tuple[AACheck, ...]
    fixed_margins: tuple[tuple[str, float], ...]
    spread_margin_fraction: float | None
    sampled_tests: tuple[tuple[str, str, str], ...]  # statistic, test, assumption
    price_per_hour: float
    config_yaml: str
    rendered_by: Commit | None = None
    figures: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # name -> relative path
    links: Links | None = None
    rerun: Rerun | None = None

    @property
    def paper_settings(self) -> tuple[Setting, ...]:
        return tuple(s for s in self.settings if s.paper)


def build_report(summary: dict, manifest: dict, paper: dict, losslessness_results: list[dict] | None = None,
                 losslessness_provenance: dict | None = None) -> Report:
    """Every view the templates show (figures, links, rerun commands and the rendering commit are added by
    render.render_report). `losslessness_results`: render.load_losslessness's rows (None: not attached)."""
    config, models = manifest["config"], manifest["models"]
    theory = theory_rows(summary, config)
    settings, not_run = main_settings(summary, config, models, paper, theory)
    if not settings:
        raise ReproduceError("the results hold no main-block rows: run the experiment before the report")
    matched = {s.paper.benchmark + s.paper.mode for s in settings if s.paper}
    all_sweeps = sweeps(summary, config, models, theory)
    k_sweeps = figure1_views(all_sweeps, summary)
    drafts = {d["name"]: (config_draft_kind(config, d["name"]), short_draft(d["name"])) for d in config["drafts"]}
    provenance = losslessness_provenance
    return Report(
        config_name=manifest["config_name"], description=portable(config["description"]),
        paper=PaperSetup.read(paper), settings=settings, not_run=not_run,
        paper_not_run=tuple(f"{r['benchmark']} {r['mode']}" for r in paper["table1"]
                            if r["benchmark"] + r["mode"] not in matched),
        answer=answer(settings), sweeps=all_sweeps, k_sweeps=k_sweeps,
        model=cost_model(settings, theory, summary, drafts, k_sweeps), setup=setup_view(manifest, summary),
        losslessness=losslessness(settings, losslessness_results, provenance, manifest["sessions"],
                                  models["target"]["runtime"]),
        losslessness_run=None if provenance is None else LosslessRun(Commit.read(provenance), provenance.get("started"),
                                                                     provenance.get("finished")),
        peers=peers(settings),
        aa=tuple(AACheck(s.short, s.repeat.speedup, s.repeat.end_to_end) for s in settings if s.repeat),
        fixed_margins=tuple(summary["margins"].items()), spread_margin_fraction=summary.get("spread_margin_fraction"),
        sampled_tests=tuple((t["statistic"], t["test"], t["assumption"]) for t in summary["sampled_tests"].values()),
        price_per_hour=config["price_per_hour_usd"],
        config_yaml=portable(yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=110).rstrip()))
