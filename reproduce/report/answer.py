"""The report's first screen: per Table 1 setting the fastest SpS's speedup against the paper's (flagged where the
A/A check says the machine drifted), whether greedy SpS matched ArS on every prompt, the quality outcomes, and one
line on why (the cost model's alpha, c and t(K+1)/t(1)
of the fastest drafts). Every number is one the tables below show, taken from the same records."""

from __future__ import annotations

from dataclasses import dataclass

from reproduce.report.groups import MethodRow, Setting, fastest_on_every_prompt
from reproduce.report.records import Span, Speedup, Verdict
from reproduce.report.sweeps import Sweep


@dataclass(frozen=True)
class HeadlineRow:
    setting: str
    draft: str | None  # the fastest SpS's label; None when the setting ran no SpS on every prompt
    speedup: Speedup | None  # decode loop (primary)
    end_to_end: Speedup | None
    paper: float | None
    verdict: Verdict
    drift: float | None  # the setting's A/A check, where it lies outside its tolerance: point - 1
    regime: str | None = None  # "paper": ArS and SpS at the flattest-verifying target runtime; None: Table 1's
    # The practical regime's baseline is the fastest ArS measured in the setting. Where that is llama.cpp's forward
    # (llamacpp_ars: our ArS loop over the GGUF, its own numerics) rather than our ArS, the fastest SpS against it,
    # paired by prompt; `speedup` stays against our ArS, the same numerics as SpS (the paper's measure).
    fastest_ars: MethodRow | None = None
    over_fastest_ars: Speedup | None = None
    llamacpp_ran: bool = False  # llama.cpp's plain decoding has rows in the setting (else only our ArS was measured)


@dataclass(frozen=True)
class GreedyCheck:
    """Greedy SpS against greedy ArS token for token, over every greedy SpS row (controls included)."""
    rows: int
    prompts: int
    matched: int

    @property
    def held(self) -> bool:
        return self.matched == self.prompts


@dataclass(frozen=True)
class OutcomeGroup:
    """The settings whose fastest SpS got one quality outcome (the analysis's, or identical), with its note."""
    outcome: str
    note: str | None  # e.g. "margin cannot be reached at this n", "by log-perplexity; pass@1 vacuous"
    settings: tuple[str, ...]


@dataclass(frozen=True)
class Why:
    """The cost model's inputs over the fastest SpS of each setting (their theory rows); where a fastest SpS has none
    (an adaptive draft, which Leviathan's formula does not model), over the setting's fastest SpS that has one."""
    drafts: tuple[str, ...]
    k: Span
    alpha: Span
    c: Span
    t_ratio: Span
    predicted: Span
    measured: Span
    unmodelled: tuple[str, ...] = ()  # the fastest SpS labels without a theory row, stood in for as above


@dataclass(frozen=True)
class Answer:
    rows: tuple[HeadlineRow, ...]
    greedy: GreedyCheck | None
    quality: tuple[OutcomeGroup, ...]
    why: Why | None


def _greedy(settings: tuple[Setting, ...]) -> GreedyCheck | None:
    rows = [r for s in settings if s.greedy for r in s.sps if r.exact_match_ars is not None]
    if not rows:
        return None
    return GreedyCheck(len(rows), sum(r.n for r in rows), sum(round(r.exact_match_ars * r.n) for r in rows))


def _explained(setting: Setting) -> MethodRow | None:
    """The SpS row whose cost model explains a setting: its fastest SpS, else (that one has no theory row) the
    fastest SpS run on every prompt that has one."""
    if setting.best is None or setting.best.theory:
        return setting.best
    return fastest_on_every_prompt(r for r in setting.sps if r.theory)


def _why(settings: tuple[Setting, ...]) -> Why | None:
    explained = [row for row in map(_explained, settings) if row]
    if not explained:
        return None
    theory = [row.theory for row in explained]
    unmodelled = tuple(dict.fromkeys(s.best.label for s in settings if s.best and not s.best.theory))
    return Why(tuple(dict.fromkeys(row.draft for row in explained)), Span.of(t.k for t in theory),
               Span.of(t.alpha for t in theory), Span.of(t.c for t in theory), Span.of(t.t_ratio for t in theory),
               Span.of(t.predicted for t in theory), Span.of(t.measured for t in theory), unmodelled)


REGIME_VERDICT = Verdict("not counted", "the paper's regime: no paper row at these settings, so not counted")


def regime_rows(all_sweeps: tuple[Sweep, ...]) -> tuple[HeadlineRow, ...]:
    """The paper's regime (a sweep block with a target runtime of its own, e.g. auto-flattest): each SpS point
    against ArS at that same runtime, labelled with the runtime, beside Table 1's practical regime."""
    rows = []
    for sweep in all_sweeps:
        if sweep.target_runtime is None:
            continue
        for point in sweep.points:
            if point.sps is not None:
                rows.append(HeadlineRow(f"{sweep.task_label} {sweep.mode}, the paper's regime ({sweep.target_runtime})",
                                        point.sps.label, point.sps.speedup, point.sps.end_to_end, None,
                                        REGIME_VERDICT, None, "paper"))
    return tuple(rows)


def faster_ars(setting: Setting) -> MethodRow | None:
    """llama.cpp's plain decoding where its mean decode ms/token is below our ArS's: then it, not ours, is the
    fastest ArS measured. llama.cpp counts as a batch-invariant runtime (the probe finds its multi-row calls equal
    to single-token calls up to a few rows, reproduce.engine.llamacpp_probe), so it is a baseline the practical
    regime must beat. None where our ArS is the fastest measured or llama.cpp did not run."""
    plain = setting.llamacpp_plain
    if plain is None or plain.decode_ms_per_token_mean >= setting.ars.decode_ms_per_token_mean:
        return None
    return plain


def _headline(s: Setting, drift: float | None) -> HeadlineRow:
    fastest = faster_ars(s)
    return HeadlineRow(s.short, s.best.label if s.best else None, s.best.speedup if s.best else None,
                       s.best.end_to_end if s.best else None, s.paper.speedup if s.paper else None, s.speed, drift,
                       fastest_ars=fastest,
                       over_fastest_ars=fastest.vs_llamacpp(s.best) if fastest is not None and s.best else None,
                       llamacpp_ran=s.llamacpp_plain is not None)


def answer(settings: tuple[Setting, ...], drifts: dict[str, float], all_sweeps: tuple[Sweep, ...] = ()) -> Answer:
    """`drifts`: by setting, the A/A check's drift where it lies outside its tolerance. `all_sweeps`: the paper's
    regime rows come from the sweeps that run a target runtime of their own."""
    rows = tuple(_headline(s, drifts.get(s.short)) for s in settings) + regime_rows(all_sweeps)
    outcomes: dict[tuple[str, str | None], list[str]] = {}
    for s in settings:
        if s.best:
            outcomes.setdefault((s.quality.level, s.quality.note), []).append(s.short)
    return Answer(rows, _greedy(settings), tuple(OutcomeGroup(o, note, tuple(v)) for (o, note), v in outcomes.items()),
                  _why(settings))
