"""Every claim of losslessness in the report: the results of tests/test_losslessness.py, whether they cover this
run, and the run's own greedy exact matches and sampled tests, as one record.

"Lossless" is claimed for a run only when all of these hold, and otherwise each failing condition is a reason:
- the suite's results are attached and none failed;
- they ran on the run's CPU: the model name, identity (vendor, family, model, stepping) and kernel flags that
  conftest.py records with them (provenance.cpu_info) equal those of every session of the run (a CPU with other
  flags gets other GEMM kernels, and the runtimes' numerics are what the tests check);
- at least one test runs the target's runtime (its name, e.g. fast-int8, in the test's parameters) and none of
  those was skipped;
- greedy SpS emitted exactly ArS's tokens on every prompt of the run.
The sampled SpS-vs-ArS tests get a p-value only where every paired row drew from a seed of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reproduce.report.groups import MethodRow, Setting

CPU_KEYS = ("cpu", "cpu_id", "cpu_flags")


@dataclass(frozen=True)
class SuiteTest:
    test: str
    phase: str
    outcome: str
    statistics: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Reason:
    """Why the run is not called lossless: `kind` for tests, `text` for the report."""
    kind: str
    text: str


@dataclass(frozen=True)
class SettingRow:
    """A method row with the setting it belongs to."""
    setting: str
    row: MethodRow


@dataclass(frozen=True)
class SampledRow:
    setting: str
    row: MethodRow
    testable: bool
    why: str | None


@dataclass(frozen=True)
class Losslessness:
    results: tuple[SuiteTest, ...]  # empty: not attached
    passed: int
    failed: tuple[SuiteTest, ...]
    skipped: int
    listed: tuple[SuiteTest, ...]  # those with statistics, or that did not pass
    runtime: str | None
    covering: int
    covering_passed: int
    cpu_status: str  # same / differs / tests_not_recorded / run_not_recorded
    tests_cpu: str | None  # the tests' CPU, described only where it is not the run's
    greedy: tuple[SettingRow, ...]
    sampled: tuple[SampledRow, ...]
    reasons: tuple[Reason, ...]

    @property
    def lossless(self) -> bool:
        return not self.reasons

    @property
    def mismatched(self) -> tuple[SettingRow, ...]:
        """The greedy SpS rows that did not emit ArS's tokens on every prompt."""
        return tuple(g for g in self.greedy if g.row.exact_match_ars < 1)


def runs_runtime(test: str, runtime: str) -> bool:
    """Whether a test (its id after '::') runs `runtime`: the runtime's name among its parameters, e.g.
    'test_x[fast-int8-fast-int8-llama]'; for the Hugging Face forward ('hf'), every test naming no other runtime."""
    parameters = re.search(r"\[(.*)\]$", test)
    parameters = parameters.group(1) if parameters else ""
    if runtime != "hf":
        return bool(re.search(rf"(^|-){re.escape(runtime)}(-|$)", parameters))
    return "fast-" not in parameters and "llama.cpp" not in parameters


def _machine(record: dict) -> dict:
    return {key: record.get(key) for key in CPU_KEYS}


def describe_cpu(machine: dict) -> str:
    """'AMD EPYC (AuthenticAMD family 25 ...), flags avx2, without avx512f' ('flags not recorded')."""
    text = machine.get("cpu") or "unknown CPU"
    if machine.get("cpu_id"):
        text += f" ({machine['cpu_id']})"
    flags = machine.get("cpu_flags")
    if flags is None:
        return text + ", flags not recorded"
    present = [f for f, on in flags.items() if on]
    absent = [f for f, on in flags.items() if not on]
    text += ", flags " + (", ".join(present) if present else "none of those checked")
    return text + (f", without {', '.join(absent)}" if absent else "")


def cpu_status(tests: dict | None, sessions: list[dict]) -> tuple[str, list[dict]]:
    """The tests' CPU against the run's sessions': ("same" | "differs" | "tests_not_recorded" |
    "run_not_recorded", the run's distinct machines)."""
    run = []
    for session in sessions:
        if _machine(session) not in run:
            run.append(_machine(session))
    machine = _machine(tests or {})
    if tests is None or machine["cpu_id"] is None or machine["cpu_flags"] is None:
        return "tests_not_recorded", run
    if any(m["cpu_id"] is None or m["cpu_flags"] is None for m in run):
        return "run_not_recorded", run
    return ("same" if all(m == machine for m in run) else "differs"), run


def _sampled(setting: str, row: MethodRow) -> SampledRow:
    why = None
    if row.seeds_independent is None:
        why = ("rows written before seed_used was recorded: SpS and ArS on a prompt drew from one shared seed, so "
               "the pairs are not independent draws and a p-value would not mean what it says")
    elif not row.seeds_independent:
        why = "SpS and ArS rows of some prompt recorded the same seed_used: not independent draws, so no p-value"
    return SampledRow(setting, row, bool(row.seeds_independent), why)


def losslessness(settings: tuple[Setting, ...], results: list[dict] | None, provenance: dict | None = None,
                 sessions: list[dict] | None = None, runtime: str | None = None) -> Losslessness:
    """Everything the report says about losslessness. `results`: render.load_losslessness's rows (None: not
    attached); `provenance`: their commit, times and CPU; `sessions`: the run's (manifest)."""
    tests = tuple(SuiteTest(r["test"], r.get("phase", "call"), r["outcome"],
                            tuple((s["name"], s["value"]) for s in r["statistics"])) for r in results or [])
    greedy = tuple(SettingRow(s.short, r) for s in settings for r in s.sps if r.exact_match_ars is not None)
    sampled = tuple(_sampled(s.short, r) for s in settings if not s.greedy for r in s.sps if any(r.sampled_tests))
    covering = [t for t in tests if runtime and runs_runtime(t.test, runtime)]
    failed = tuple(t for t in tests if t.outcome == "failed")
    status, run = cpu_status(provenance, sessions or [])
    reasons = []
    if not tests:
        reasons.append(Reason("no_results", "the results of `tests/test_losslessness.py` are not attached to this "
                                            "render (`--losslessness FILE`)"))
    if failed:
        reasons.append(Reason("failed", f"{len(failed)} of {len(tests)} tests of `tests/test_losslessness.py` FAILED"))
    if tests:
        if status == "differs":
            reasons.append(Reason("cpu_differs", f"the tests ran on another CPU, {describe_cpu(provenance)}, than the "
                                                 f"run, {'; '.join(describe_cpu(m) for m in run)}"))
        elif status == "tests_not_recorded":
            reasons.append(Reason("cpu_" + status, "the tests' results do not record their CPU, so they cannot be shown to "
                                          "have run on this run's CPU"))
        elif status == "run_not_recorded":
            reasons.append(Reason("cpu_" + status, "this run's manifest does not record its CPU's identity and flags, so the "
                                          "tests' CPU cannot be compared with it"))
        if runtime and not covering:
            reasons.append(Reason("not_covered", f"no test in the attached results runs the target's runtime {runtime}"))
        skipped = [t for t in covering if t.outcome == "skipped"]
        if skipped:
            reasons.append(Reason("covering_skipped", f"{len(skipped)} of the {len(covering)} tests that run the "
                                                      f"target's runtime {runtime} were skipped"))
    mismatched = [g for g in greedy if g.row.exact_match_ars < 1]  # (the record's `mismatched`)
    if mismatched:
        reasons.append(Reason("greedy_mismatch", f"greedy SpS emitted other tokens than greedy ArS in "
                                                 f"{len(mismatched)} of the {len(greedy)} greedy SpS rows"))
    return Losslessness(
        results=tests, passed=sum(t.outcome == "passed" for t in tests), failed=failed,
        skipped=sum(t.outcome == "skipped" for t in tests),
        listed=tuple(t for t in tests if t.statistics or t.outcome != "passed"), runtime=runtime,
        covering=len(covering), covering_passed=sum(t.outcome == "passed" for t in covering), cpu_status=status,
        tests_cpu=describe_cpu(provenance) if status == "differs" else None, greedy=greedy, sampled=sampled,
        reasons=tuple(reasons))
