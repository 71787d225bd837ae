"""Two processes filling the same cache entry take turns (reproduce.offline.cache_lock): the test suite runs in two
workers (`make test`), and a user may run the suite beside a run. Without the lock, two first-time conversions of a
model wrote into one temporary directory, and two GGUF assemblies into one temporary file."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
import time

import pytest

from reproduce.engine import models
from reproduce.offline import cache_dir, cache_lock, write_atomically

HOLD = """
import sys, time
from reproduce.offline import cache_lock
with cache_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def lock_is_free(name: str) -> bool:
    with open(cache_dir() / "locks" / f"{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_a_lock_held_by_another_process_blocks_until_it_ends(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "entry", "1.5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert not lock_is_free("entry")
    assert lock_is_free("another-entry")  # locks are per entry
    started = time.perf_counter()
    with cache_lock("entry"):
        waited = time.perf_counter() - started
    holder.wait(timeout=30)
    assert waited > 0.5, "the second process did not wait for the first"
    assert lock_is_free("entry")  # released when the with-block ends (and when a holder dies)


def test_a_model_converted_by_another_process_meanwhile_is_not_converted_again(tmp_path, monkeypatch):
    """The converted copy is checked for again inside the lock: the process that waited loads the other's copy.
    Negative control: with the lock free and no copy there, it converts."""
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path))
    converted, loaded = [], []
    monkeypatch.setattr(models, "_convert", lambda alias, *args: converted.append(alias))
    monkeypatch.setattr(models, "_load_pretrained", lambda path, *args: loaded.append(path) or models.LoadedModel(
        name="", model=type("Model", (), {})(), tokenizer=None, source=path))
    alias = "smollm2-135m-instruct"
    copy = tmp_path / "models" / alias
    with cache_lock(f"model-{alias}"):  # another process, converting
        waiting = threading.Thread(target=models._load_offline_alias, args=(alias, None))
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive() and loaded == []  # blocked on the lock
        copy.mkdir(parents=True)
        (copy / "config.json").write_text("{}")
    waiting.join(timeout=30)
    assert converted == [] and loaded == [str(copy)]
    (copy / "config.json").unlink()
    models._load_offline_alias(alias, None)
    assert converted == [alias]


def test_an_atomic_write_leaves_the_whole_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "probes" / "x.json"
    write_atomically(path, b"first")
    write_atomically(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]
    (path.parent / "a-directory").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomically(path.parent / "a-directory", b"x")  # a failed write leaves no temporary file either
    assert sorted(p.name for p in path.parent.iterdir()) == ["a-directory", "x.json"]
