"""Per-check cost of the HumanEval sandbox's isolation: median wall time of one check, three ways.

- plain: the program in a bare `python -I` subprocess (what a check cost before bubblewrap and the guard;
  the rlimits the old runner also set cost microseconds);
- guard+rlimits: reproduce.analysis.sandbox as where bwrap cannot run (the fallback);
- bubblewrap+guard+rlimits: reproduce.analysis.sandbox as it runs here (skipped where bwrap cannot run).

Each check is HumanEval/0 with its canonical solution (it passes). The ways take turns check by check,
because timings drift on shared machines.

    python -m benchmarks.sandbox_overhead [--checks 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from reproduce.analysis import sandbox
from reproduce.tasks import load_examples

PLAIN, FALLBACK, BWRAP = "plain subprocess", "guard+rlimits", "bubblewrap+guard+rlimits"


def plain_check(problem: dict, completion: str) -> bool:
    sentinel = f"DONE-{secrets.token_hex(8)}"
    with tempfile.TemporaryDirectory(prefix="humaneval-") as workdir:
        program = Path(workdir, "program.py")
        program.write_text(sandbox.humaneval_program(problem, completion, sentinel))
        run = subprocess.run([sys.executable, "-I", str(program)], cwd=workdir, capture_output=True, text=True,
                             timeout=10)
    return run.returncode == 0 and sentinel in run.stdout.splitlines()


def check(way: str, problem: dict, completion: str) -> bool:
    if way == PLAIN:
        return plain_check(problem, completion)
    # The fallback is the same code without bwrap; patching the probe's answer keeps probes out of the timing.
    no_bwrap = mock.patch.object(sandbox, "_bubblewrap", return_value=None)
    with no_bwrap if way == FALLBACK else contextlib.nullcontext():
        return sandbox.run_humaneval_check(problem, completion)["passed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20, help="checks per way (default 20)")
    args = parser.parse_args()

    problem = load_examples("humaneval", [0])[0].extra
    ways = [PLAIN, FALLBACK] + ([BWRAP] if sandbox.isolation_level() == BWRAP else [])
    if BWRAP not in ways:
        print("bwrap cannot run here: measuring the plain subprocess and the fallback only")
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(args.checks):
        for way in ways:
            start = time.perf_counter()
            passed = check(way, problem, problem["canonical_solution"])
            times[way].append(time.perf_counter() - start)
            if not passed:
                raise SystemExit(f"{way}: the check did not pass")

    plain = statistics.median(times[PLAIN]) * 1000
    print(f"median wall time of {args.checks} checks of a correct HumanEval/0 completion, {os.cpu_count()} CPUs")
    print(f"{'isolation':<26} {'median ms':>9} {'overhead ms':>11}")
    for way in ways:
        median = statistics.median(times[way]) * 1000
        print(f"{way:<26} {median:>9.1f} {median - plain:>+11.1f}")


if __name__ == "__main__":
    main()
