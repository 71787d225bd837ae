"""The report's context: one frozen record (Report) holding every view the templates show, built once from
summary.json (whose "manifest" is the run's manifest.json) and the paper's numbers (reports/paper.yaml,
transcribed from Table 1 of arXiv 2302.01318).

The views only pick rows (which SpS is fastest, which sweep varies K), attach labels, the paper's numbers and
verdicts; every statistic comes from reproduce.analysis. Module by module: groups.py (the settings, their rows,
verdicts), quality.py (the quality tests and margins), answer.py (the first screen), discussion.py (the cost
model: why), sweeps.py (sweeps, Figure 1), setup.py (the appendix's provenance), peers.py, lossless.py (every
claim of losslessness); the A/A check is read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import yaml

from reproduce.errors import ReproduceError
from reproduce.report import verdicts
from reproduce.report.answer import Answer, answer
from reproduce.report.discussion import CostModel, cost_model
from reproduce.report.groups import DECODE, END_TO_END, Setting, main_settings, theory_rows
from reproduce.report.labels import config_draft_kind, short_draft
from reproduce.report.lossless import Losslessness, losslessness
from reproduce.report.peers import LlamaCppPeer, Peers, llamacpp_note, llamacpp_peers, peers
from reproduce.report.quality import QualityTest, MetricMargin, metric_margins
from reproduce.report.records import Commit, Speedup, SpeedupMethod
from reproduce.report.setup import Setup, portable, setup_view
from reproduce.report.sweeps import Figure1, Sweep, figure1_views, sweeps
from reproduce.tasks import PERPLEXITY, QualityMetric


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
class AAQuality:
    """ArS's repeat against ArS on one metric at the config's margin (analysis: aa_checks[].quality[column])."""
    metric: QualityMetric
    outcome: str
    note: str
    diff: float
    ci: tuple[float, float]  # the TOST's 90% interval
    margin: float
    n: int
    n_for_80_power: int | None

    @property
    def constant_difference(self) -> bool:
        return self.ci[0] == self.ci[1]


@dataclass(frozen=True)
class AACheck:
    """ArS again on the same prompts with its own seeds, against ArS (analysis: aa_checks[]): the decode loop's
    ratio, ArS ms/token over the repeat's, should read within `tolerance` of 1; where it does not, the machine
    drifted between the two runs by `drift` (point - 1), and every speedup of the setting carries that doubt.
    The repeat's quality against ArS at the same margins as SpS's."""
    setting: str
    n: int
    speedup: Speedup  # decode loop
    end_to_end: Speedup
    tolerance: float
    drift: float
    within: bool  # the point within tolerance of 1
    ci_within: bool  # the whole interval within it
    quality: tuple[AAQuality, ...]

    @classmethod
    def read(cls, setting: str, check: dict, metrics: tuple[QualityMetric, ...], repeat: dict | None) -> AACheck:
        """`repeat`: the ArS-repeat method entry, whose full TOST records say whether both runs scored one
        constant (vacuous: the note says so instead of the analysis's)."""
        by_column = {m.tost_key: m for m in metrics}
        records = (repeat or {}).get("vs_ars", {}).get("equivalence", {})
        quality = []
        for column, q in check["quality"].items():
            if column not in by_column:
                continue
            metric = by_column[column]
            vacuous = records.get(column) and verdicts.vacuous_reason(records[column], metric.name, metric.digits,
                                                                      metric.percent)
            quality.append(AAQuality(metric, q["outcome"], f"vacuous: {vacuous}" if vacuous else q["note"], q["diff"],
                                     tuple(q["ci"]), q["margin"], q["n"], q["n_for_80_power"]))
        return cls(setting, check["n"], Speedup.read(check["ratio"], DECODE), Speedup.read(check["ratio_e2e"], END_TO_END),
                   check["tolerance"], check["drift"], check["within_tolerance"], check["ci_within_tolerance"],
                   tuple(quality))


def aa_checks(settings: tuple[Setting, ...], summary: dict) -> tuple[AACheck, ...]:
    """The main block's A/A checks, in the settings' order."""
    checks = {(c["task"], c["mode"]): c for c in summary["aa_checks"] if c["block"] == "main"}
    repeats = {(e["task"], e["mode"]): e for e in summary["methods"] if e["block"] == "main" and e["method"] == "ars_repeat"}
    return tuple(AACheck.read(s.short, checks[(s.task, s.mode)], (s.metric, PERPLEXITY), repeats.get((s.task, s.mode)))
                 for s in settings if (s.task, s.mode) in checks)


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
    llamacpp: str  # the llama.cpp peers: where their rows are, or why there are none (report.peers.llamacpp_note)
    llamacpp_peers: tuple[LlamaCppPeer, ...]  # tokens/s, ours beside llama.cpp's, per setting with its rows
    aa: tuple[AACheck, ...]
    aa_missing: tuple[str, ...]  # the settings without ArS-repeat rows
    speedup_method: SpeedupMethod
    margins: tuple[MetricMargin, ...]
    margins_source: str  # "config", or a sentence saying where they came from
    equivalence_assumption: str
    cannot_reach: str  # the analysis's words for an inconclusive test below the n 80% power needs
    significance: float
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

    @property
    def quality_tests_run(self) -> tuple[QualityTest, ...]:
        """Every SpS-vs-ArS equivalence test that ran (not identical by construction, not vacuous)."""
        return tuple(t for s in self.settings for row in s.sps for t in row.quality_tests
                     if t.tested and not t.exactly_equal and not t.vacuous)

    @property
    def quality_not_equivalent(self) -> tuple[QualityTest, ...]:
        return tuple(t for t in self.quality_tests_run if t.outcome == "not equivalent")


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
    aa = aa_checks(settings, summary)
    return Report(
        config_name=manifest["config_name"], description=portable(config["description"]),
        paper=PaperSetup.read(paper), settings=settings, not_run=not_run,
        paper_not_run=tuple(f"{r['benchmark']} {r['mode']}" for r in paper["table1"]
                            if r["benchmark"] + r["mode"] not in matched),
        answer=answer(settings, {c.setting: c.drift for c in aa if not c.within}, all_sweeps), sweeps=all_sweeps,
        k_sweeps=k_sweeps,
        model=cost_model(settings, theory, summary, drafts, k_sweeps), setup=setup_view(manifest, summary),
        losslessness=losslessness(settings, losslessness_results, provenance, manifest["sessions"],
                                  models["target"]["runtime"]),
        losslessness_run=None if provenance is None else LosslessRun(Commit.read(provenance), provenance.get("started"),
                                                                     provenance.get("finished")),
        peers=peers(settings), llamacpp=llamacpp_note(settings, config, manifest),
        llamacpp_peers=llamacpp_peers(settings),
        aa=aa, aa_missing=tuple(s.short for s in settings if s.short not in {c.setting for c in aa}),
        speedup_method=SpeedupMethod.read(summary), margins=metric_margins(summary["margins"], settings),
        margins_source=summary["margins_source"], equivalence_assumption=summary["equivalence"]["assumption"],
        cannot_reach=summary["equivalence"]["cannot_reach"], significance=summary["significance"],
        sampled_tests=tuple((t["statistic"], t["test"], t["assumption"]) for t in summary["sampled_tests"].values()),
        price_per_hour=config["price_per_hour_usd"],
        config_yaml=portable(yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=110).rstrip()))
