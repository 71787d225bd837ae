"""The main block's settings, one per (task, mode) of the config, as frozen records: every method's row (an
analysis entry with its label, speedups over ArS, quality tests and theory row), the fastest SpS, the paper's
Table 1 row at the same settings, and the speed and quality verdicts.

The primary speedup is the decode loop's (ms/token after the prefill: the paper's "mean sampling time per
token"), the analysis's geometric mean of per-prompt ratios with a t interval on their logs; the end-to-end
speedup (prefill included) is kept beside it. Hugging Face's generate() rows time their own prefill inside their
loop, so they are compared end to end only. The fastest SpS of a setting is the one with the highest primary
speedup among those run on every prompt: a control never is.
"""

from __future__ import annotations

from dataclasses import dataclass

from reproduce.catalogue import METHOD_KINDS
from reproduce.errors import ReproduceError
from reproduce.report import verdicts
from reproduce.report.labels import TASK_LABELS, config_draft_kind, entry_label, mode_label
from reproduce.report.quality import IDENTICAL, Margin, QualityTest, margins, quality_tests
from reproduce.report.records import PaperRow, Share, Speedup, Stat, Verdict
from reproduce.tasks import TASKS, QualityMetric

DECODE, END_TO_END = "decode loop", "end to end"

# the methods whose rows are decoding loops with target calls (tokens per target call means something)
LOOP_METHODS = ("ars", "ars_repeat", "sps", "draft_only", "ars_hf", "sps_hf")


@dataclass(frozen=True)
class TheoryRow:
    """The Leviathan model for one SpS row (analysis: summary["theory"]); `measured` is the decode loop's."""
    label: str
    setting: str
    block: str
    sweep_value: float | None
    draft: str
    k: int
    alpha: float
    acceptance: float | None
    c: float
    t_ratio: float
    predicted: float
    measured: float
    measured_end_to_end: float | None
    efficiency: float | None
    optimal_k: int | None

    @property
    def k_plus_1(self) -> int:
        return self.k + 1


@dataclass(frozen=True)
class PositionCell:
    rate: float
    drafted: int


@dataclass(frozen=True)
class SampledTest:
    """A test of sampled outputs against ArS's (first token, sequence log-prob, length). A test that cannot reach
    p < 0.05 at its n (`usable` false) is no evidence: the report shows that instead of its p."""
    statistic: float
    p_value: float
    usable: bool
    unusable_at: str | None  # why it cannot be evidence, short: "n = 4" (nonzero pairs), "1 category after pooling"


@dataclass(frozen=True)
class MethodRow:
    """One method in one setting (or sweep point): the analysis entry as the tables show it."""
    method: str
    label: str
    draft: str | None
    k: int | None
    n: int
    control: bool
    ms_per_token_mean: float
    ms_per_token_p50: float
    ms_per_token_p95: float
    tokens_per_s_p50: float
    tokens_per_s_p95: float
    acceptance_pooled: float | None
    acceptance_p50: float | None
    acceptance_p95: float | None
    accepted_per_call: float | None
    tokens_per_call: float | None
    prompt_tokens_mean: float
    decode_ms_per_token_mean: float
    usd_per_million_tokens: float | None
    speedup: Speedup | None  # primary: the decode loop (None for rows timed end to end only)
    end_to_end: Speedup | None
    end_to_end_only: bool  # Hugging Face generate(): its prefill runs inside its timed loop
    exact_match_ars: float | None  # greedy rows: the share of prompts with ArS's exact tokens
    mismatched: tuple[str, ...]
    seeds_independent: bool | None
    sampled_tests: tuple[SampledTest | None, ...]  # first token, sequence log-prob, length (T > 0 only)
    theory: TheoryRow | None
    draft_parameters: int | None
    position_cells: tuple[PositionCell | None, ...]
    quality_tests: tuple[QualityTest, ...]  # SpS rows: the task's metric, then log-perplexity
    quality: Verdict | None  # SpS rows: the outcome the tests give together (verdicts.quality_verdict)
    time_full: Stat | None  # sweeps: the wall time of rows that generated the whole budget
    r: float | None  # tokens per loop / (K+1)
    loop_ms: float | None
    loop_ms_ci: tuple[float, float] | None
    ours_vs_hf: Speedup | None  # Hugging Face peers: HF's ms/token over ours (> 1: ours faster)
    ours_hf_forward_vs_hf: Speedup | None
    # llama.cpp peers: the peer's decode ms/token over each of our loops' (> 1: ours faster), keyed by our loop's
    # (method, draft, k)
    ours_vs_llamacpp: tuple[tuple[tuple, Speedup], ...] = ()

    def vs_llamacpp(self, ours: MethodRow) -> Speedup | None:
        """A llama.cpp peer row's decode ms/token over `ours` on the same prompts (> 1: ours faster)."""
        return dict(self.ours_vs_llamacpp).get((ours.method, ours.draft, ours.k))

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode-loop tokens per second: 1000 / the mean decode ms per token over the setting's prompts."""
        return 1000.0 / self.decode_ms_per_token_mean

    @property
    def is_loop(self) -> bool:
        return self.method in LOOP_METHODS


@dataclass(frozen=True)
class Setting:
    """One task and sampling mode of the main block."""
    task: str
    task_label: str
    mode: str
    mode_label: str
    title: str  # "XSum, nucleus (T=1, top-p=0.8)"
    short: str  # "XSum nucleus"
    greedy: bool
    prompts: int
    metric: QualityMetric
    rows: tuple[MethodRow, ...]
    ars: MethodRow
    sps: tuple[MethodRow, ...]
    best: MethodRow | None
    paper: PaperRow | None
    speed: Verdict
    quality: Verdict  # level: an outcome of quality.OUTCOMES (or IDENTICAL), note: what qualifies it
    ars_quality: Stat | None
    best_quality: Stat | None
    margins: tuple[Margin, ...]
    position_columns: tuple[int, ...]

    @property
    def tested(self) -> tuple[MethodRow, ...]:
        """The SpS rows run on every prompt whose outputs are not ArS's by construction: their tests say something."""
        return tuple(r for r in self.sps if not r.control and not self.identical(r))

    def identical(self, row: MethodRow) -> bool:
        return bool(row.quality_tests) and row.quality_tests[0].outcome == IDENTICAL

    @property
    def identical_rows(self) -> tuple[MethodRow, ...]:
        """Greedy SpS rows run on every prompt that emitted ArS's exact tokens: their quality is ArS's."""
        return tuple(r for r in self.sps if not r.control and self.identical(r))

    @property
    def paper_metric_differs(self) -> bool:
        """The paper scored another metric than ours (e.g. pass@100 against our pass@1)."""
        return bool(self.paper) and self.paper.metric.replace("-", "").lower() != self.metric.name.replace("-", "").lower()

    @property
    def controls(self) -> tuple[MethodRow, ...]:
        return tuple(r for r in self.rows if r.control)

    @property
    def llamacpp_rows(self) -> tuple[MethodRow, ...]:
        """llama.cpp's peer rows run on every prompt (runs.llamacpp_peer)."""
        return tuple(r for r in self.rows if METHOD_KINDS[r.method].llamacpp_peer and not r.control)

    @property
    def llamacpp_plain(self) -> MethodRow | None:
        """llama.cpp's plain decoding (llamacpp_ars), or None where it did not run."""
        return next((r for r in self.llamacpp_rows if not METHOD_KINDS[r.method].uses_draft), None)


def _theory_row(t: dict, control: bool, config: dict) -> TheoryRow:
    mode = config["modes"].get(t["mode"])
    words = mode_label(mode["temperature"], mode["top_p"]).split(" (")[0] if mode else t["mode"]
    return TheoryRow(entry_label(t) + (" (control)" if control else ""),
                     f"{TASK_LABELS.get(t['task'], t['task'])} {words}", t["block"], t["sweep_value"],
                     t["draft"], t["k"], t["alpha"], t.get("acceptance"), t["c"], t["t_ratio"], t["predicted_speedup"],
                     t["measured_speedup"], t.get("measured_speedup_end_to_end"), t["efficiency"],
                     t["optimal_k_predicted"])


def theory_rows(summary: dict, config: dict) -> dict[tuple, TheoryRow]:
    """Every theory row by its entry's key (block, task, mode, variant, sweep_value)."""
    return {(t["block"], t["task"], t["mode"], t["variant"], t["sweep_value"]):
            _theory_row(t, is_control({**t, "method": "sps"}, config), config) for t in summary["theory"]}


def is_control(entry: dict, config: dict) -> bool:
    """A row of the config's controls (runs.plan.is_control): its method kind or draft is listed under
    `controls`, so it ran on the first `controls.prompts` prompts of the main block only."""
    controls = config.get("controls")
    return bool(entry["block"] == "main" and controls
                and (entry["method"] in controls["methods"] or entry["draft"] in controls["drafts"]))


def draft_parameters(draft: str | None, models: dict, config: dict) -> int | None:
    """Parameters a draft adds: 0 for the n-gram table, the target's own count when it drafts for itself."""
    if draft is None:
        return None
    kind = config_draft_kind(config, draft)
    if kind == "ngram":
        return 0
    return models["target" if kind == "target" else draft]["parameters"]


def _sampled(vs_ars: dict) -> tuple[SampledTest | None, ...]:
    tests = [vs_ars.get(key) for key in ("first_token_test", "sequence_logprob_test", "length_test")]
    return tuple(SampledTest(t["statistic"], t["p_value"], t["usable"], None if t["usable"] else _unusable_at(t)) if t
                 else None for t in tests)


def _unusable_at(test: dict) -> str:
    """What keeps a test from p < 0.05, short: a signed-rank test's nonzero pairs, a chi-square test's categories."""
    if "nonzero" in test:
        return f"n = {test['nonzero']} nonzero pairs"
    categories = len(test["categories"])
    return f"{categories} categor{'y' if categories == 1 else 'ies'} after pooling"


def method_row(entry: dict, theory: dict, config: dict, models: dict, positions: int = 0,
               tested: tuple[tuple[QualityTest, ...], Verdict | None] = ((), None)) -> MethodRow:
    """An analysis entry as a MethodRow (a control's label says so, with its prompt count); `tested`: an SpS
    row's quality tests and their outcome (quality_tests)."""
    vs_ars = entry.get("vs_ars", {})
    control = is_control(entry, config)
    label = entry_label(entry)
    if control:
        label += f" (control, {entry['n']} prompt{'s' if entry['n'] != 1 else ''})"
    by_position = {c["position"]: c for c in entry.get("acceptance_by_position") or []}
    cells = tuple(PositionCell(by_position[i]["rate"], by_position[i]["drafted"]) if i in by_position else None
                  for i in range(1, positions + 1))
    quality = entry.get("quality", {})
    pooled = entry.get("loop_ms_pooled") or {}
    end_to_end_only = METHOD_KINDS[entry["method"]].hf_peer
    return MethodRow(
        method=entry["method"], label=label, draft=entry["draft"], k=entry["k"], n=entry["n"], control=control,
        ms_per_token_mean=entry["ms_per_token_mean"], ms_per_token_p50=entry["ms_per_token_p50"],
        ms_per_token_p95=entry["ms_per_token_p95"], tokens_per_s_p50=entry["tokens_per_s_p50"],
        tokens_per_s_p95=entry["tokens_per_s_p95"], acceptance_pooled=entry.get("acceptance_pooled"),
        acceptance_p50=entry.get("acceptance_p50"), acceptance_p95=entry.get("acceptance_p95"),
        accepted_per_call=entry.get("accepted_per_call"), tokens_per_call=entry.get("tokens_per_call"),
        prompt_tokens_mean=entry["prompt_tokens_mean"], decode_ms_per_token_mean=entry["decode_ms_per_token_mean"],
        usd_per_million_tokens=entry.get("usd_per_million_tokens"),
        speedup=None if end_to_end_only else Speedup.read(vs_ars.get("speedup"), DECODE),
        end_to_end=Speedup.read(vs_ars.get("speedup_e2e"), END_TO_END), end_to_end_only=end_to_end_only,
        exact_match_ars=quality.get("exact_match_ars") if entry["temperature"] == 0 else None,
        mismatched=tuple(quality.get("mismatched_examples") or ()),
        seeds_independent=vs_ars.get("seeds_independent"), sampled_tests=_sampled(vs_ars),
        theory=theory.get((entry["block"], entry["task"], entry["mode"], entry["variant"], entry["sweep_value"])),
        draft_parameters=draft_parameters(entry["draft"], models, config), position_cells=cells,
        quality_tests=tested[0], quality=tested[1], time_full=Stat.read(entry.get("time_full")), r=entry.get("r"),
        loop_ms=entry.get("loop_ms"), loop_ms_ci=pooled.get("ci") and tuple(pooled["ci"]),
        ours_vs_hf=Speedup.read(entry.get("ours_vs_hf"), END_TO_END),
        ours_hf_forward_vs_hf=Speedup.read(entry.get("ours_hf_forward_vs_hf"), END_TO_END),
        ours_vs_llamacpp=tuple(((r["method"], r["draft"], r["k"]), speedup) for r in entry.get("ours_vs_llamacpp") or ()
                               if (speedup := Speedup.read(r, DECODE)) is not None))


def paper_row(task: str, temperature: float, top_p: float, paper: dict) -> dict | None:
    """The paper's Table 1 row run with the same task and sampling settings, if any."""
    for row in paper["table1"]:
        if row["task"] != task:
            continue
        if (row["mode"] == "greedy" and temperature == 0) or (
                row["mode"] != "greedy" and temperature == row["temperature"] and top_p == row["top_p"]):
            return row
    return None


def _speed_verdict(best: MethodRow | None, paper: PaperRow | None) -> Verdict:
    if best is None:
        return Verdict(verdicts.UNTESTED, "no SpS run")
    record = verdicts.speedup_verdict(best.speedup.as_analysis() if best.speedup else None,
                                      paper.speedup if paper else None)
    share = Share.of(best.speedup, paper.speedup) if record["share"] else None
    return Verdict(record["level"], record["text"], record["counted"], share)


def _order(entry: dict, draft_order: list[str]) -> tuple:
    draft_rank = draft_order.index(entry["draft"]) if entry["draft"] in draft_order else len(draft_order)
    return METHOD_KINDS[entry["method"]].order, draft_rank, entry["k"] or 0


def fastest_on_every_prompt(rows) -> MethodRow | None:
    """The fastest of `rows` run on every prompt (controls and rows without a speedup left out); None: none is."""
    return max((r for r in rows if not r.control and r.speedup), key=lambda r: r.speedup.ratio, default=None)


def setting(task: str, mode: str, entries: list[dict], config: dict, models: dict, paper: dict,
            theory: dict) -> Setting:
    """One Setting from the main block's entries of a task and mode."""
    draft_order = [d["name"] for d in config["drafts"]]
    entries = sorted(entries, key=lambda e: _order(e, draft_order))
    ars = next((e for e in entries if e["method"] == "ars"), None)
    if ars is None:
        raise ReproduceError(f"{task}/{mode} has no ArS rows, and every comparison is against ArS: "
                             "keep 'ars' in the config's methods")
    metric = TASKS[task].quality
    positions = max((len(e.get("acceptance_by_position") or []) for e in entries if e["method"] == "sps"), default=0)
    rows = [method_row(e, theory, config, models, positions, quality_tests(ars, e, metric)) if e["method"] == "sps"
            else method_row(e, theory, config, models) for e in entries]
    sps = tuple(r for r in rows if r.method == "sps")
    best = fastest_on_every_prompt(sps)
    paper_match = PaperRow.read(paper_row(task, ars["temperature"], ars["top_p"], paper))
    ars_row = next(r for r in rows if r.method == "ars")
    mode_words = mode_label(ars["temperature"], ars["top_p"])
    return Setting(
        task=task, task_label=TASK_LABELS[task], mode=mode, mode_label=mode_words,
        title=f"{TASK_LABELS[task]}, {mode_words}", short=f"{TASK_LABELS[task]} {mode_words.split(' (')[0]}",
        greedy=ars["temperature"] == 0, prompts=ars["n"], metric=metric, rows=tuple(rows), ars=ars_row, sps=sps,
        best=best, paper=paper_match,
        speed=_speed_verdict(best, paper_match),
        quality=best.quality if best else Verdict("inconclusive", "no SpS run on every prompt"),
        ars_quality=Stat.read(ars["quality"].get(metric.quality_key)),
        best_quality=best.quality_tests[0].sps if best else None,
        margins=margins(ars, metric),
        position_columns=tuple(range(1, positions + 1)))


def main_settings(summary: dict, config: dict, models: dict, paper: dict,
                  theory: dict) -> tuple[tuple[Setting, ...], tuple[str, ...]]:
    """One Setting per (task, mode) of the main block, in config order, and the titles of those with no rows."""
    settings, not_run = [], []
    for task, task_spec in config["tasks"].items():
        for mode in task_spec["modes"]:
            entries = [e for e in summary["methods"] if e["block"] == "main" and e["task"] == task and e["mode"] == mode]
            if entries:
                settings.append(setting(task, mode, entries, config, models, paper, theory))
            else:
                not_run.append(f"{TASK_LABELS[task]} {mode}")
    return tuple(settings), tuple(not_run)

