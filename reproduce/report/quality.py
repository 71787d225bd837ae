"""Quality against ArS as the report shows it: each metric's paired TOST at the margin fixed in the config, read
from the analysis's records (outcome, note, n for 80% power, exactly equal) as they are, and the margins with
their reasons."""

from __future__ import annotations

from dataclasses import dataclass

from reproduce.report import verdicts
from reproduce.report.records import Stat, Verdict
from reproduce.tasks import PERPLEXITY, QualityMetric

# what a quality comparison concluded (never "failed"): the analysis's outcomes, and identical by construction
OUTCOMES = (verdicts.EQUIVALENT, verdicts.NOT_EQUIVALENT, verdicts.INCONCLUSIVE)
IDENTICAL = verdicts.IDENTICAL
CANNOT_REACH = "margin cannot be reached at this n"  # the analysis's words (summary: equivalence.cannot_reach)


@dataclass(frozen=True)
class QualityTest:
    """An SpS row's paired TOST against ArS on one metric at the config's margin (analysis:
    vs_ars.equivalence[column]): its numbers, outcome and note as the analysis wrote them."""
    metric: QualityMetric
    ars: Stat | None
    sps: Stat | None
    tested: bool  # a paired test exists (2 or more paired values)
    diff: float | None
    ci: tuple[float, float] | None  # the 90% t interval of the difference, the one the TOST judges
    tost_p: float | None
    margin: float | None
    outcome: str  # equivalent / not equivalent / inconclusive (the analysis's), or identical (greedy)
    note: str | None  # the analysis's note, or why the outcome says nothing (vacuous: e.g. both score 0)
    vacuous: bool
    n: int | None
    n_for_80_power: int | None  # the n a paired TOST needs for 80% power at the observed sd
    margin_reachable: bool | None  # n >= n_for_80_power
    exactly_equal: bool  # identical tokens on every prompt: the difference is exactly 0, no test
    text: str  # the verdict's sentence

    @property
    def constant_difference(self) -> bool:
        """Every prompt's difference the same (its interval a point): no spread to size an n for power from."""
        return self.ci is not None and self.ci[0] == self.ci[1]


@dataclass(frozen=True)
class Margin:
    """A quality metric's margin in one setting, fixed in the config with its reason, and the n a paired TOST
    needs for 80% power at the spread this setting showed (analysis: the ArS entry's margins[column])."""
    metric: QualityMetric
    margin: float
    reason: str
    ars_mean: float | None
    n_for_80_power: int | None  # None: no spread to size it from (every paired difference constant)
    sd_source: str


def _greedy_identical(entry: dict) -> bool:
    return entry["temperature"] == 0 and entry["quality"].get("exact_match_ars") == 1.0


def quality_test(metric: QualityMetric, test: dict | None, ars: dict, entry: dict, identical: bool) -> QualityTest:
    """One metric's TOST record as the tables show it (`identical`: greedy SpS with ArS's exact tokens)."""
    verdict = verdicts.metric_verdict(test, metric.name, metric.digits, metric.percent)
    if identical:
        outcome, note = IDENTICAL, None
    elif test is None:
        outcome, note = verdicts.INCONCLUSIVE, "fewer than 2 paired values: no test"
    else:
        outcome, note = test["outcome"], (f"vacuous: {verdict['vacuous']}" if verdict["vacuous"] else test["note"])
    return QualityTest(
        metric=metric, ars=Stat.read(ars["quality"].get(metric.quality_key)),
        sps=Stat.read(entry["quality"].get(metric.quality_key)), tested=test is not None,
        diff=test["diff"] if test else None, ci=tuple(test["ci"]) if test else None,
        tost_p=test["p_value"] if test else None, margin=test["margin"] if test else None, outcome=outcome, note=note,
        vacuous=bool(verdict["vacuous"]), n=test["n"] if test else None,
        n_for_80_power=test["n_for_80_power"] if test else None,
        margin_reachable=test["margin_reachable"] if test else None,
        exactly_equal=bool(test and test["exactly_equal"]),
        text=f"{metric.name}: identical by construction" if identical else verdict["text"])


def quality_tests(ars: dict, entry: dict, metric: QualityMetric) -> tuple[tuple[QualityTest, ...], Verdict]:
    """An entry's tests against ArS (the task's metric, then log-perplexity) and the outcome they give together
    (verdicts.quality_verdict: the log-perplexity decides where the metric is vacuous or untested), which is the
    setting's when the entry is its fastest SpS. The outcome's note says when the log-perplexity decided, and
    when an inconclusive test is below the n that 80% power needs (the margin cannot be reached at this n)."""
    equivalence = entry.get("vs_ars", {}).get("equivalence", {})
    identical = _greedy_identical(entry)
    tests = tuple(quality_test(m, equivalence.get(m.tost_key), ars, entry, identical) for m in (metric, PERPLEXITY))
    primary, perplexity = (verdicts.metric_verdict(equivalence.get(m.tost_key), m.name, m.digits, m.percent)
                           for m in (metric, PERPLEXITY))
    record = verdicts.quality_verdict(primary, perplexity, identical)
    notes = []
    if record["decided_by"] == "log-perplexity":
        notes.append(f"by log-perplexity; {metric.name} " + ("vacuous" if primary["vacuous"] else "untested"))
    elif record["decided_by"] is None and primary["vacuous"]:
        notes.append(f"{metric.name} vacuous, log-perplexity untested or vacuous")
    deciding = tests[1] if record["decided_by"] == "log-perplexity" else tests[0]
    if record["outcome"] == verdicts.INCONCLUSIVE and deciding.tested and not deciding.margin_reachable:
        notes.append(CANNOT_REACH)
    return tests, Verdict(record["outcome"], record["text"], note="; ".join(notes) or None)


def margins(ars: dict, metric: QualityMetric) -> tuple[Margin, ...]:
    """The setting's margins for its metric and the log-perplexity (the ArS entry's margins[column])."""
    out = []
    for m in (metric, PERPLEXITY):
        record = ars.get("margins", {}).get(m.tost_key)
        if record:
            out.append(Margin(m, record["margin"], record["reason"], record.get("ars_mean"), record["n_for_80_power"],
                              record["sd_source"]))
    return tuple(out)


@dataclass(frozen=True)
class PowerNeed:
    setting: str
    n: int  # the prompts the setting has
    needed: int | None  # for 80% power at the setting's spread; None: no spread to size it from
    sd_source: str


@dataclass(frozen=True)
class MetricMargin:
    """One metric's margin, fixed in the config with its reason, and per setting that scores it the n a paired
    TOST needs for 80% power (the report states each margin once)."""
    metric: QualityMetric
    margin: float
    reason: str
    power: tuple[PowerNeed, ...]

    @property
    def description(self) -> str:
        """'±0.020', '±10.0 points', '±0.050 (perplexity within x0.95 to x1.05)'."""
        m = self.metric
        return verdicts.margin_description(self.margin, None, m.digits, m.percent, m.log_scale)


def metric_margins(config_margins: dict, settings) -> tuple[MetricMargin, ...]:
    """The config's margins (summary: margins, {metric: {margin, reason}}) of the metrics some setting scores."""
    out = []
    for key, record in config_margins.items():
        scored = [(s, m) for s in settings for m in s.margins if m.metric.quality_key == key]
        if scored:
            out.append(MetricMargin(scored[0][1].metric, record["margin"], record["reason"],
                                    tuple(PowerNeed(s.short, s.prompts, m.n_for_80_power, m.sd_source) for s, m in scored)))
    return tuple(out)
