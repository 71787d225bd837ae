"""Compile one of reproduce/engine/kernels/*.cpp with torch's C++ extension loader, cached by its source and flags.

Both of the fast runtime's C++ files (the w4a8 GEMM, the layer ops) are built here, on first use: g++ and ninja,
~20-50 s a build, kept in $REPRODUCE_CACHE/kernels/ under a name holding the digest of the source, the headers beside
it (kernels/*.h), the flags and torch's version, so an edited file or a new torch is a new build and never
a stale one. A finished build is loaded as it is, from any checkout: torch's loader alone would rebuild it wherever
the source's path or mtime differs (every fresh clone, every worktree). A build is the module or the
ReproduceError saying why there is none (`module` and `build_id` read either).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import torch

from reproduce.errors import ReproduceError
from reproduce.offline import cache_dir

KERNELS = Path(__file__).parent / "kernels"
# the build every kernel has (AVX2 + FMA, OpenMP threads), and /proc/cpuinfo's names of what it lets the compiler use
AVX2_CFLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp")
AVX2_NEEDS = ("avx2", "fma")


def source_digest(source: Path, cflags) -> str:
    """What a build is named by: the source, every header beside it (what the sources #include), the flags, torch."""
    headers = b"".join(path.read_bytes() for path in sorted(source.parent.glob("*.h")))
    return hashlib.sha256(source.read_bytes() + headers + " ".join(cflags).encode()
                          + torch.__version__.encode()).hexdigest()


def _finished(build: Path, module_name: str):
    """The module a finished build in `build` holds (its .so loaded as torch's loader loads it), or None where
    there is none for this Python: the marker, naming the Python, is written only after a build loaded, so a killed
    build is redone."""
    library, marker = build / f"{module_name}.so", build / "finished"
    if not library.exists() or not marker.exists() or marker.read_text().split()[:1] != [sys.implementation.cache_tag]:
        return None
    spec = importlib.util.spec_from_file_location(module_name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_extension(stem: str, variant: str, cflags, fallback: str):
    """The module built from kernels/<stem>.cpp with `cflags` (named <stem>-<variant>_<digest>), or a one-line
    ReproduceError saying why it could not be built and what to do instead (`fallback`)."""
    from torch.utils.cpp_extension import load

    source = KERNELS / f"{stem}.cpp"
    venv_bin = Path(sys.executable).parent
    if shutil.which("ninja") is None and (venv_bin / "ninja").exists():
        # the ninja wheel (a dependency) puts it beside this Python; torch's loader looks for it on PATH only. For
        # the rest of this process, as a venv's activation would.
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    name = f"{variant}_{source_digest(source, cflags)[:12]}"
    build = cache_dir() / "kernels" / f"{stem}-{name}"
    build.mkdir(parents=True, exist_ok=True)
    module_name = f"reproduce_{stem}_{name}"
    try:
        module = _finished(build, module_name)
        if module is None:
            # named by the digest: torch renames a module rebuilt under one name with other flags (name_v1, ...)
            module = load(module_name, [str(source)], extra_cflags=list(cflags), extra_ldflags=["-fopenmp"],
                          build_directory=str(build), verbose=False)
            (build / "finished").write_text(f"{sys.implementation.cache_tag} {source.name} {' '.join(cflags)}\n")
        return module
    except Exception as exc:  # noqa: BLE001 - a compiler or ninja missing, or a failed build: one line, the fix
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        # the compiler's own message where there is one ("...: error: ..."), else the loader's last line
        reason = next((line.strip() for line in lines if ": error" in line or ": fatal error" in line), lines[-1])[:160]
        return ReproduceError(f"could not compile the {stem} kernel ({reason}): it needs g++ and ninja (make install "
                              f"installs ninja); {fallback}")


def build_for_cpu(stem: str, variant: str, cflags, needs: tuple[str, ...], flags: set[str], what: str,
                  fallback: str, try_unknown: bool = True):
    """compile_extension's module or error, after a one-line ReproduceError where `flags` (the CPU's, /proc/cpuinfo's)
    lack one of `needs`: "<what> needs ..., which this CPU lacks: <fallback>". Where the flags cannot be read (empty),
    the build is tried if `try_unknown` (the compiler or the probe tells), else refused."""
    missing = [flag for flag in needs if (flags or not try_unknown) and flag not in flags]
    if missing:
        return ReproduceError(f"{what} needs {', '.join(missing)}, which this CPU lacks: {fallback}")
    return compile_extension(stem, variant, cflags, fallback)


def module(built):
    """The compiled module a build holds; its one-line ReproduceError raised where it holds that instead."""
    if isinstance(built, ReproduceError):
        raise built
    return built


def build_id(built, stem: str) -> str | None:
    """What a probe's cache key holds of a build: its variant and digest, None where it failed."""
    return None if isinstance(built, ReproduceError) else built.__name__.removeprefix(f"reproduce_{stem}_")
