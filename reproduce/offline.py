"""Offline files, torch-free: the cache directory, and files shipped inside installed wheels (found with
importlib.metadata; the packages are never imported)."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import os
from pathlib import Path

from reproduce.errors import ReproduceError


def cache_dir() -> Path:
    """Where converted models and distilled drafts live (outside the repository)."""
    return Path(os.environ.get("REPRODUCE_CACHE", Path.home() / ".cache" / "reproduce"))


@contextlib.contextmanager
def cache_lock(name: str):
    """Hold an exclusive lock on cache_dir()/locks/<name>.lock (flock: the kernel drops it when the process dies).
    Two processes that would fill the same cache entry (the test suite's two workers, a run beside the tests) take
    turns, and the second finds the entry made: check for it again inside the lock."""
    path = cache_dir() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file of this process beside it and a rename: a reader never sees
    a partial file, and two writers never share a temporary one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def find_package_file(distribution: str, suffix: str) -> Path:
    """Path of a file shipped inside an installed distribution, without importing it."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ReproduceError(
            f"package {distribution!r} is not installed: run `make install` (it installs it with pip --no-deps)"
        ) from None
    for file in dist.files or []:
        if str(file).endswith(suffix):
            path = Path(dist.locate_file(file))
            if path.exists():
                return path
    raise ReproduceError(f"no file ending in {suffix!r} inside package {distribution!r}: reinstall it (make install)")
