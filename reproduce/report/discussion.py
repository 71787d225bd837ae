"""Why the speedups are what they are: the Leviathan et al. cost model (reproduce.analysis.theory) with this run's
measured numbers, as records the one "Why" section words conditionally (no number is hand-written).

From the acceptance alpha, the draft cost c (one drafted token, in single-token target calls) and the
verification cost curve t(n): per draft, the speedup predicted at the measured alpha, at alpha = 1 (the ceiling:
a draft that costs too much cannot win however well it guesses) and with flat verification (the paper's premise);
per paper setting, the alpha our costs would need to match the paper's speedup; the target's per-token
verification cost; which rows the model misses by more than CLOSE; and the best K of a K sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

from reproduce.analysis import theory
from reproduce.report.groups import Setting, TheoryRow
from reproduce.report.labels import TASK_LABELS
from reproduce.report.records import Span, Speedup

# t(K+1)/t(1) up to this counts as "about flat" (the paper's premise); above it, verification costs extra tokens
FLAT_ENOUGH = 1.1

# measured / predicted within this of 1: the model accounts for the measured speedup
CLOSE = 0.2

# c below this: drafting is nearly free next to a target call (prompt lookup)
CHEAP_DRAFT = 0.05


@dataclass(frozen=True)
class CurvePoint:
    n: int
    ms: float
    ratio: float


@dataclass(frozen=True)
class Curve:
    """A task's verification cost curve: t(n) in ms (median over target calls) and t(n)/t(1)."""
    label: str
    points: tuple[CurvePoint, ...]

    @property
    def last(self) -> CurvePoint:
        return self.points[-1]


@dataclass(frozen=True)
class DraftCost:
    """One draft over the main settings' SpS rows."""
    label: str
    kind: str
    k: Span
    alpha: Span
    c: Span
    t_ratio: Span
    predicted: Span
    measured: Span
    flat: Span  # predicted with flat verification
    ceiling: Span  # predicted at alpha = 1
    predicted_below_one: bool
    measured_above_one: bool
    measured_below_one: bool
    cheap: bool  # c below CHEAP_DRAFT everywhere


@dataclass(frozen=True)
class PaperGap:
    setting: str
    label: str
    k_plus_1: int
    paper_speedup: float
    alpha: float
    c: float
    t_ratio: float
    ceiling: float
    alpha_needed: float | None  # None: out of reach at any alpha
    alpha_needed_flat: float | None


@dataclass(frozen=True)
class Miss:
    setting: str
    label: str
    predicted: float
    measured: float


@dataclass(frozen=True)
class BestK:
    name: str
    title: str
    best: float | None
    confident: bool  # a best K is named only with an interval
    speedup: Speedup | None
    tokens: int
    indistinguishable: tuple[float, ...]


@dataclass(frozen=True)
class CostModel:
    curves: tuple[Curve, ...]
    rows: tuple[TheoryRow, ...]  # the main block's
    sweep_rows: tuple[TheoryRow, ...]
    drafts: tuple[DraftCost, ...]
    gaps: tuple[PaperGap, ...]
    efficiency: Span | None
    close_rows: int
    over: tuple[Miss, ...]
    under: tuple[Miss, ...]
    verification: Span | None  # t(K+1)/t(1) at the K values run
    verification_flat: bool
    per_token: Span | None  # each token beyond the first, in single-token calls
    t1_ms: Span | None
    best_k: tuple[BestK, ...]
    close: float = CLOSE
    flat_enough: float = FLAT_ENOUGH
    cheap_draft: float = CHEAP_DRAFT


def _curve(row: TheoryRow) -> dict[int, float]:
    """The two points of the cost curve a theory row uses, in single-token calls."""
    return {1: 1.0, row.k + 1: row.t_ratio}


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


def cost_curves(summary: dict) -> tuple[Curve, ...]:
    """Per task, t(n) and t(n)/t(1) (tasks whose run has no single-token call are left out)."""
    curves = []
    for task, curve_ms in summary["cost_curves_ms"].items():
        curve = {int(n): ms for n, ms in curve_ms.items()}
        if 1 in curve:
            name, _, block = task.partition("@")  # "<task>@<block>": a block with its own target runtime
            curves.append(Curve(TASK_LABELS.get(name, name) + (f" ({block.replace('_', ' ')})" if block else ""),
                                tuple(CurvePoint(n, ms, ms / curve[1]) for n, ms in sorted(curve.items()))))
    return tuple(curves)


def draft_costs(rows: tuple[TheoryRow, ...], drafts: dict[str, tuple[str, str]]) -> tuple[DraftCost, ...]:
    """Per draft (config order; `drafts`: name -> (kind, label)), over its main-block SpS rows."""
    out = []
    for name, (kind, label) in drafts.items():
        mine = [t for t in rows if t.draft == name]
        if not mine:
            continue
        ceilings = [theory.predicted_speedup(1.0, t.k, t.c, _curve(t)) for t in mine]
        out.append(DraftCost(
            label=label, kind=kind, k=Span.of(t.k for t in mine), alpha=Span.of(t.alpha for t in mine),
            c=Span.of(t.c for t in mine), t_ratio=Span.of(t.t_ratio for t in mine),
            predicted=Span.of(t.predicted for t in mine), measured=Span.of(t.measured for t in mine),
            flat=Span.of(theory.predicted_speedup(t.alpha, t.k, t.c) for t in mine), ceiling=Span.of(ceilings),
            predicted_below_one=all(t.predicted < 1 for t in mine),
            measured_above_one=all(t.measured > 1 for t in mine), measured_below_one=all(t.measured < 1 for t in mine),
            cheap=all(t.c < CHEAP_DRAFT for t in mine)))
    return tuple(out)


def paper_gaps(settings: tuple[Setting, ...]) -> tuple[PaperGap, ...]:
    """For each setting with a paper row and a theory row for its fastest SpS: the alpha our measured costs (c,
    t(K+1)/t(1) at the same K) would need to give the paper's speedup, on our curve and with flat verification."""
    out = []
    for s in settings:
        t = s.best.theory if s.best else None
        if not s.paper or not t:
            continue
        out.append(PaperGap(s.short, t.label, t.k_plus_1, s.paper.speedup, t.alpha, t.c, t.t_ratio,
                            theory.predicted_speedup(1.0, t.k, t.c, _curve(t)),
                            alpha_needed(s.paper.speedup, t.k, t.c, _curve(t)),
                            alpha_needed(s.paper.speedup, t.k, t.c, None)))
    return tuple(out)


def best_k(k_sweeps) -> tuple[BestK, ...]:
    """Per K sweep (sweeps.Figure1), its best K with its speedup and the K values that cannot be told apart."""
    return tuple(BestK(f.name, f.title, f.best_k, f.confident, f.best_speedup, f.tokens,
                       tuple(p.value for p in f.points if p.distinguishable is False)) for f in k_sweeps)


def cost_model(settings: tuple[Setting, ...], theory_rows: dict[tuple, TheoryRow], summary: dict,
               drafts: dict[str, tuple[str, str]], k_sweeps) -> CostModel:
    rows = tuple(t for t in theory_rows.values() if t.block == "main")
    curves = cost_curves(summary)
    misses = [Miss(t.setting, t.label, t.predicted, t.measured) for t in rows
              if t.efficiency is not None and abs(t.efficiency - 1) > CLOSE]
    multi = [c for c in curves if len(c.points) > 1]
    verification = Span.of(t.t_ratio for t in rows)
    return CostModel(
        curves=curves, rows=rows, sweep_rows=tuple(t for t in theory_rows.values() if t.block != "main"),
        drafts=draft_costs(rows, drafts), gaps=paper_gaps(settings),
        efficiency=Span.of(t.efficiency for t in rows),
        close_rows=sum(1 for t in rows if t.efficiency is not None and abs(t.efficiency - 1) <= CLOSE),
        over=tuple(m for m in misses if m.measured < m.predicted),
        under=tuple(m for m in misses if m.measured > m.predicted),
        verification=verification, verification_flat=verification is not None and verification.high <= FLAT_ENOUGH,
        per_token=Span.of((c.last.ratio - 1) / (c.last.n - 1) for c in multi),
        t1_ms=Span.of(c.points[0].ms for c in multi), best_k=best_k(k_sweeps))
