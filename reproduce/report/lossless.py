"""Section 9 and every claim of losslessness in the report: the results of tests/test_losslessness.py, whether
they cover this run, and the run's own greedy exact matches and sampled tests.

"Lossless" is claimed for a run only when all of these hold, and otherwise each failing condition is listed:
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

from reproduce.report.labels import TASK_LABELS

CPU_KEYS = ("cpu", "cpu_id", "cpu_flags")


def runs_runtime(test: str, runtime: str) -> bool:
    """Whether a test (its id after '::') runs `runtime`: the runtime's name among its parameters, e.g.
    'test_x[fast-int8-fast-int8-llama]'; for the Hugging Face forward ('hf'), every test naming no fast runtime."""
    parameters = re.search(r"\[(.*)\]$", test)
    parameters = parameters.group(1) if parameters else ""
    if runtime.startswith("fast-"):
        return bool(re.search(rf"(^|-){re.escape(runtime)}(-|$)", parameters))
    return "fast-" not in parameters


def _machine(record: dict) -> dict:
    return {key: record.get(key) for key in CPU_KEYS}


def describe_cpu(machine: dict) -> dict:
    """A CPU for the text: name, identity and the flags present / absent (None where not recorded)."""
    flags = machine.get("cpu_flags")
    return {"cpu": machine.get("cpu") or "unknown CPU", "cpu_id": machine.get("cpu_id"),
            "present": [f for f, on in flags.items() if on] if flags else None,
            "absent": [f for f, on in flags.items() if not on] if flags else None}


def cpu_comparison(tests: dict | None, sessions: list[dict]) -> dict:
    """The tests' CPU against the run's sessions': {"status": "same" | "differs" | "tests_not_recorded" |
    "run_not_recorded", "tests": description, "run": [descriptions of the run's distinct CPUs]}."""
    run = []
    for session in sessions:
        machine = _machine(session)
        if machine not in run:
            run.append(machine)
    tests_machine = _machine(tests or {})
    if tests is None or tests_machine["cpu_id"] is None or tests_machine["cpu_flags"] is None:
        status = "tests_not_recorded"
    elif any(m["cpu_id"] is None or m["cpu_flags"] is None for m in run):
        status = "run_not_recorded"
    else:
        status = "same" if all(m == tests_machine for m in run) else "differs"
    return {"status": status, "tests": describe_cpu(tests_machine), "run": [describe_cpu(m) for m in run]}


def losslessness_view(groups: list[dict], results: list[dict] | None, provenance: dict | None = None,
                      sessions: list[dict] | None = None, runtime: str | None = None) -> dict:
    """Everything the report says about losslessness: the suite's results (`results`, from
    render.load_losslessness; `provenance`: their commit, times and CPU), this run's greedy exact matches and
    sampled tests, and whether the run may be called lossless (`lossless`) with the reasons it may not
    (`reasons`, each {"kind", ...}, worded by the template)."""
    results = results or []
    greedy = [v for g in groups for v in g["sps"] if v["temperature"] == 0 and "exact_match_ars" in v["quality"]]
    sampled = [v for g in groups for v in g["sps"] if v["temperature"] > 0 and v["first_token_test"]]
    covering = [r for r in results if runtime and runs_runtime(r["test"], runtime)]
    reasons = []
    if not results:
        reasons.append({"kind": "no_results"})
    failed = [r for r in results if r["outcome"] == "failed"]
    if failed:
        reasons.append({"kind": "failed", "tests": failed})
    cpu = cpu_comparison(provenance, sessions or [])
    if results:
        if cpu["status"] != "same":
            reasons.append({"kind": "cpu_" + cpu["status"], "cpu": cpu})
        if runtime and not covering:
            reasons.append({"kind": "not_covered", "runtime": runtime})
        skipped = [r for r in covering if r["outcome"] == "skipped"]
        if skipped:
            reasons.append({"kind": "covering_skipped", "runtime": runtime, "tests": skipped, "of": len(covering)})
    mismatched = [v for v in greedy if v["quality"]["exact_match_ars"] < 1]
    if mismatched:
        prompts = sum(len(v["quality"].get("mismatched_examples") or []) for v in mismatched)
        reasons.append({"kind": "greedy_mismatch", "rows": len(mismatched), "of_rows": len(greedy),
                        "prompts": prompts, "of_prompts": sum(v["n"] for v in greedy),
                        "lowest": min(v["quality"]["exact_match_ars"] for v in mismatched)})
    return {
        "results": results or None,
        "failed": failed,
        "passed": [r for r in results if r["outcome"] == "passed"],
        "skipped": [r for r in results if r["outcome"] == "skipped"],
        # the table lists what carries a number or went wrong; the rest are counted
        "listed": [r for r in results if r["statistics"] or r["outcome"] != "passed"],
        "runtime": runtime,
        "covering": covering,
        "covering_passed": [r for r in covering if r["outcome"] == "passed"],
        "cpu": cpu,
        "greedy": greedy,
        "greedy_min_exact": min((v["quality"]["exact_match_ars"] for v in greedy), default=None),
        "sampled": [sampled_view(v) for v in sampled],
        "lossless": not reasons,
        "reasons": reasons,
    }


def sampled_view(view: dict) -> dict:
    """A sampled SpS row's tests against ArS, with `testable` only where every pair of rows drew from seeds of
    their own (the tests assume independent draws); otherwise `why` there is no p-value."""
    independent = view["seeds_independent"]
    why = None
    if independent is None:
        why = ("rows written before seed_used was recorded: SpS and ArS on a prompt drew from one shared seed, so "
               "the pairs are not independent draws and a p-value would not mean what it says")
    elif not independent:
        why = ("SpS and ArS rows of some prompt recorded the same seed_used: not independent draws, so no p-value "
               "is given")
    return {"view": view, "task_label": TASK_LABELS[view["task"]], "testable": bool(independent), "why": why}
