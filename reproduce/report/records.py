"""The report's leaf records: the analysis's statistics as the templates read them, typed and frozen.

Every view the templates get is a frozen dataclass (these and the ones built on them in groups.py, answer.py,
setup.py, ...): built once from summary.json, never mutated, so a template that reads a field no record has
fails the render (Jinja's StrictUndefined) instead of printing a blank. Reading the analysis's dicts happens
here and in the builders, in one place per statistic: when the analysis renames or adds a key, the change is
the `read` of one record.
"""

from __future__ import annotations

from dataclasses import dataclass

from reproduce.analysis.stats import share_of_gain


def _pair(values) -> tuple[float, float] | None:
    return None if values is None else (float(values[0]), float(values[1]))


@dataclass(frozen=True)
class Speedup:
    """ArS's ms per token over a method's on the same prompts with its 95% CI (None from fewer than 2 prompts):
    the analysis's t-interval record (reproduce.analysis.ratios.log_ratio_interval), whose point is the geometric
    mean of the per-prompt ratios and whose interval is a t interval on their logs, paired by prompt. `basis`:
    what was timed, "decode loop" (after the prefill) or "end to end"."""
    ratio: float
    ci: tuple[float, float] | None
    n: int
    basis: str

    @classmethod
    def read(cls, record: dict | None, basis: str) -> Speedup | None:
        if not record or record.get("point") is None:
            return None
        return cls(float(record["point"]), _pair(record.get("ci")), int(record["n"]), basis)

    def as_analysis(self) -> dict:
        """The analysis's form, for verdicts.speedup_verdict."""
        return {"point": self.ratio, "ci": self.ci, "n": self.n}

    @property
    def faster(self) -> bool:
        """The CI lies above 1."""
        return self.ci is not None and self.ci[0] > 1

    @property
    def slower(self) -> bool:
        return self.ci is not None and self.ci[1] < 1


@dataclass(frozen=True)
class Stat:
    """A mean with its 95% CI from the analysis's {mean, ci, n} (a share of problems: also its successes)."""
    mean: float | None
    ci: tuple[float, float] | None
    n: int | None
    successes: int | None = None

    @classmethod
    def read(cls, record) -> Stat | None:
        if record is None:
            return None
        if not isinstance(record, dict):  # a bare number
            return cls(float(record), None, None)
        return cls(record.get("mean"), _pair(record.get("ci")), record.get("n"), record.get("successes"))


@dataclass(frozen=True)
class Share:
    """The share of the paper's speedup gain reached, (ours - 1) / (paper - 1), with its CI."""
    share: float
    ci: tuple[float, float] | None

    @classmethod
    def of(cls, speedup: Speedup, paper_speedup: float) -> Share:
        record = share_of_gain(speedup.ratio, speedup.ci, paper_speedup)
        return cls(record["share"], _pair(record["ci"]))


@dataclass(frozen=True)
class Span:
    """The range of some values (the template prints one number when low == high)."""
    low: float
    high: float

    @classmethod
    def of(cls, values) -> Span | None:
        values = [v for v in values if v is not None]
        return cls(min(values), max(values)) if values else None


@dataclass(frozen=True)
class Verdict:
    """A verdict (verdicts.py's levels, or a quality outcome) with its sentence and, for speed against a paper row,
    the share of the gain."""
    level: str
    text: str
    counted: bool = False
    share: Share | None = None
    note: str | None = None  # quality: what qualifies the outcome (decided by the log-perplexity; n too small)


@dataclass(frozen=True)
class PaperRow:
    """The paper's Table 1 row at the same task and sampling settings (reports/paper.yaml)."""
    benchmark: str
    metric: str
    mode: str
    speedup: float
    ars_result: float
    sps_result: float
    ars_ms: float
    sps_ms: float

    @classmethod
    def read(cls, row: dict | None) -> PaperRow | None:
        if row is None:
            return None
        return cls(row["benchmark"], row["metric"], row["mode"], row["speedup"], row["ars"]["result"],
                   row["sps"]["result"], row["ars"]["ms_per_token"], row["sps"]["ms_per_token"])


@dataclass(frozen=True)
class Commit:
    git_hash: str | None
    git_dirty: bool

    @classmethod
    def read(cls, record: dict | None) -> Commit | None:
        return None if record is None else cls(record.get("git_hash"), bool(record.get("git_dirty")))


@dataclass(frozen=True)
class SpeedupMethod:
    """How the speedups were computed (summary: speedup_method, decode_timing): the report says it once."""
    interval: str  # e.g. "t on per-prompt log ratios, paired by prompt, exponentiated"
    level: float
    assumption: str
    decode_timing: str  # "measured", or how older rows derive it ("derived: decode_ms = wall_ms - prefill_ms ...")

    @classmethod
    def read(cls, summary: dict) -> SpeedupMethod:
        method = summary["speedup_method"]
        return cls(method["interval"], method["level"], method["assumption"], summary["decode_timing"])

    @property
    def decode_measured(self) -> bool:
        return self.decode_timing == "measured"
