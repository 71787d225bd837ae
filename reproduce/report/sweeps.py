"""The sweeps (one setting varied on a few prompts) and Figure 1 read from a K sweep, as records."""

from __future__ import annotations

from dataclasses import dataclass

from reproduce.catalogue import SWEEPABLE
from reproduce.report.groups import DECODE, MethodRow, method_row
from reproduce.report.labels import TASK_LABELS, short_draft
from reproduce.report.records import Speedup


@dataclass(frozen=True)
class SweepPoint:
    value: float
    ars: MethodRow | None
    sps: MethodRow | None


@dataclass(frozen=True)
class Sweep:
    name: str
    vary: str
    axis: str
    title: str
    task_label: str
    rows: tuple[int, int]
    k: int | None  # the fixed K (None when K is what varies)
    points: tuple[SweepPoint, ...]
    ignore_eos: bool
    mode: str = ""
    target_runtime: str | None = None  # the block's own target runtime, as resolved (a regime); None: the run's

    @property
    def ran(self) -> bool:
        return bool(self.points)


@dataclass(frozen=True)
class Figure1Point:
    value: float
    sps: MethodRow
    ars: MethodRow | None
    pairs: int  # prompts where both methods generated the whole budget
    prompts: int | None
    speedup: Speedup | None  # decode loop, ArS over SpS, on the prompts where both generated the whole budget
    vs_best: Speedup | None  # the best K's speedup over this K's (None: not testable, or the best itself)
    distinguishable: bool | None
    best: bool


@dataclass(frozen=True)
class Figure1:
    """Our reading of a K sweep in the terms of the paper's Figure 1 (analysis: summary["k_sweeps"])."""
    name: str
    title: str
    tokens: int
    rows: int
    excluded: int
    ignore_eos: bool
    points: tuple[Figure1Point, ...]
    best_k: float | None
    best_speedup: Speedup | None
    confident: bool  # a best K is named only with an interval (two or more prompts with the whole budget)

    @property
    def best(self) -> Figure1Point | None:
        return next((p for p in self.points if p.best), None)


def sweeps(summary: dict, config: dict, models: dict, theory: dict) -> tuple[Sweep, ...]:
    """Each configured sweep: per value, its ArS and SpS rows (a sweep with no rows has no points)."""
    out = []
    for name, spec in config["sweeps"].items():
        entries = [e for e in summary["methods"] if e["block"] == name]
        points = []
        for value in sorted({e["sweep_value"] for e in entries}):
            at_value = {e["method"]: method_row(e, theory, config, models) for e in entries if e["sweep_value"] == value}
            points.append(SweepPoint(value, at_value.get("ars"), at_value.get("sps")))
        axis = SWEEPABLE[spec["vary"]]
        out.append(Sweep(name, spec["vary"], axis.axis,
                         f"{axis.name} on {TASK_LABELS[spec['task']]} {spec['mode']}, draft {short_draft(spec['draft'])}",
                         TASK_LABELS[spec["task"]], tuple(spec["rows"]), spec.get("k") if spec["vary"] != "k" else None,
                         tuple(points), bool(spec.get("ignore_eos")), spec["mode"],
                         models.get(f"target@{name}", {}).get("runtime") if spec.get("target_runtime") else None))
    return tuple(out)


def _vs_best(record: dict | None) -> Speedup | None:
    if not record or record.get("ci") is None:
        return None
    return Speedup(record["ratio"], tuple(record["ci"]), record["n"], DECODE)


def figure1(sweep: Sweep, measured: dict) -> Figure1:
    by_k = {p["k"]: p for p in measured["points"]}
    points = []
    for p in sweep.points:
        if not p.sps:
            continue
        m = by_k.get(int(p.value)) or {}
        vs_best = m.get("vs_best") or {}
        points.append(Figure1Point(p.value, p.sps, p.ars, m.get("pairs", 0), m.get("prompts"),
                                   Speedup.read(m.get("speedup"), DECODE), _vs_best(vs_best),
                                   vs_best.get("distinguishable"), p.value == measured["best_k"]))
    best_speedup = Speedup.read(measured["best_speedup"], DECODE)
    return Figure1(sweep.name, sweep.title, measured["tokens"], measured["rows"], measured["excluded"], sweep.ignore_eos,
                   tuple(points), measured["best_k"], best_speedup, bool(best_speedup and best_speedup.ci))


def figure1_views(all_sweeps: tuple[Sweep, ...], summary: dict) -> tuple[Figure1, ...]:
    measured = summary.get("k_sweeps", {})
    return tuple(figure1(s, measured[s.name]) for s in all_sweeps
                 if s.vary == "k" and any(p.sps for p in s.points) and s.name in measured)
