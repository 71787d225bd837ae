"""Provenance of a run, a test run or a report, torch-free: the git commit, the CPU's identity and the flags that
decide its kernels, how long our threads waited for a CPU (another process's load: the engine's probe reads it),
and the sha256 of model and data files. Shared by runs (what a session ran on), the report
(the commit rendering it) and the losslessness tests (the commit they ran at); it imports nothing above it.

File hashes are cached in cache_dir()/sha256/ (one small JSON per file, keyed by its resolved path) together with
the file's size and mtime: a rerun rehashes only a file that changed, not gigabytes of unchanged weights. The cache
lives in the suite's own cache directory, not beside the file, because model and data files also live in places
that are not ours to write (an installed wheel's directory, the Hugging Face hub cache, a user's model directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

from reproduce.offline import cache_dir, write_atomically

REPO = Path(__file__).resolve().parents[1]

# The flags that decide which kernels a CPU forward gets: AVX2 (the baseline of every x86 path), AVX-512, native
# bf16 dot products (avx512_bf16, AMX: what makes the fast-bf16 runtime's verification nearly flat) and the int8
# dot products of VNNI (the fast-int8 drafts).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")

HASH_CHUNK = 1 << 20

CACHE_MIN_BYTES = 1 << 20  # smaller files are hashed in a blink: caching them would only litter the cache


def git_commit(cwd: Path = REPO) -> dict:
    """{"git_hash": HEAD, "git_dirty": whether tracked files differ from it}, both None outside a git checkout."""
    try:
        git_hash = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd,
                                  check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, cwd=cwd).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        git_hash, dirty = None, None
    return {"git_hash": git_hash, "git_dirty": dirty}


def _first_processor(text: str) -> dict[str, str]:
    """The fields of /proc/cpuinfo's first processor block."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the end of the first processor's block
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def parse_cpuinfo(text: str) -> dict:
    """The first processor's model name, its identity (vendor, family, model, stepping: the model name alone is
    often generic, e.g. 'AMD EPYC' on a VM) and which of CPU_FLAGS it has, from /proc/cpuinfo's text."""
    fields = _first_processor(text)
    flags = set(fields.get("flags", "").split())
    ident = [fields.get("vendor_id")] + [f"{name} {fields[key]}" for name, key in
                                         (("family", "cpu family"), ("model", "model"), ("stepping", "stepping"))
                                         if key in fields]
    return {"cpu": fields.get("model name") or platform.processor() or None,
            "cpu_id": " ".join(part for part in ident if part) or None,
            "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS} if "flags" in fields else None}


def _cpuinfo_text(path: str = "/proc/cpuinfo") -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """parse_cpuinfo of this machine ({"cpu": platform.processor(), ...: None} where /proc/cpuinfo is missing)."""
    return parse_cpuinfo(_cpuinfo_text(path) or "")


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """Every flag of the first processor (empty where /proc/cpuinfo is missing): the one reader of the flags the
    runtimes decide on (native bf16, AMX), the probe cache's key and provenance."""
    return set(_first_processor(_cpuinfo_text(path) or "").get("flags", "").split())


def aten_held_to_avx2(capability: str | None = None) -> bool:
    """Whether torch is held to its AVX2 (or plain) kernels: ATEN_CPU_CAPABILITY (`capability`, default the
    environment's) avx2 or default, as a run standing in for an AVX2 CPU on an AVX-512 one sets it."""
    if capability is None:
        capability = os.environ.get("ATEN_CPU_CAPABILITY", "")
    return capability.lower() in ("default", "avx2")


def cpu_key(path: str = "/proc/cpuinfo") -> str:
    """What identifies this CPU's kernels for a cache of timings: its model name and flags lines, as written
    ("unknown" where the file cannot be read)."""
    text = _cpuinfo_text(path)
    if text is None:
        return "unknown"
    return "\n".join([line for line in text.splitlines() if line.startswith(("model name", "flags"))][:2])


def runqueue_wait_seconds(task_dir: str = "/proc/self/task") -> float | None:
    """Seconds this process's live threads have spent runnable but waiting for a CPU (Linux schedstat's second
    field, summed): time taken by another process, or by more of our threads than CPUs. None where the kernel does
    not say (no such files, or sched_info off: every thread's on-CPU time reads 0)."""
    waited = ran = 0
    try:
        tasks = os.listdir(task_dir)
    except OSError:
        return None
    for task in tasks:
        try:
            fields = Path(task_dir, task, "schedstat").read_text().split()
            ran, waited = ran + int(fields[0]), waited + int(fields[1])
        except (OSError, IndexError, ValueError):  # a thread that just exited, or no schedstat in this kernel
            continue
    return waited / 1e9 if ran else None


def _cache_entry(path: Path) -> Path:
    return cache_dir() / "sha256" / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")


def sha256_file(path) -> str:
    """The file's sha256, from the cache when its size and mtime are those it was hashed at (files of
    CACHE_MIN_BYTES or more)."""
    path = Path(path).resolve()
    stat = path.stat()
    if stat.st_size < CACHE_MIN_BYTES:
        return _digest(path)
    entry = _cache_entry(path)
    try:
        cached = json.loads(entry.read_text())
        if cached["path"] == str(path) and cached["size"] == stat.st_size and cached["mtime_ns"] == stat.st_mtime_ns:
            return cached["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = _digest(path)
    try:
        write_atomically(entry, json.dumps({"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                            "sha256": value}).encode())
    except OSError:
        pass  # a read-only cache: hash again next time
    return value


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path, note: str | None = None) -> dict:
    """{"path", "size", "sha256"(, "note")}; a file that cannot be read is recorded as not hashed, not fatal to
    the run that records it."""
    path = Path(path)
    try:
        record = {"path": str(path), "size": path.stat().st_size, "sha256": sha256_file(path)}
    except OSError as exc:
        return {"path": str(path), "size": None, "sha256": None,
                "note": f"not hashed: {exc.strerror or type(exc).__name__}"}
    if note:
        record["note"] = note
    return record


def directory_files(directory: Path) -> list[Path]:
    """The files a model directory is loaded from: its top-level files (weights, config, tokenizer), not
    subdirectories, hidden files or documentation."""
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() not in (".md", ".lock"))


def model_files(source: str) -> list[dict]:
    """sha256 records of the files a model was loaded from, given its LoadedModel source: a .gguf file, a local
    directory (a distilled draft too), a hub id (its snapshot in the local hub cache). The runner, which knows the
    engine's offline aliases and tiny random models, resolves those itself (runs.pool.loaded_model_files)."""
    if source.startswith("gguf:"):
        return [file_record(source.removeprefix("gguf:"))]
    path = Path(source.split(" (cached at ")[0])
    if path.is_dir():
        return [file_record(p) for p in directory_files(path)]
    if source.startswith("hub:"):
        try:
            from huggingface_hub import snapshot_download

            snapshot = Path(snapshot_download(source.removeprefix("hub:"), local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - any failure only means no checksums for this model
            return [{"path": source, "size": None, "sha256": None,
                     "note": f"not hashed: no local snapshot ({type(exc).__name__})"}]
        return [file_record(p) for p in directory_files(snapshot)]
    return [{"path": source, "size": None, "sha256": None, "note": "not hashed: no file found"}]


def data_files(task_names, data_source: str) -> dict:
    """sha256 records of each task's data file (the file inside its wheel), or a note for hub datasets."""
    from reproduce.offline import find_package_file
    from reproduce.tasks import TASKS

    if data_source != "offline":
        return {task: {"path": f"{data_source} dataset", "size": None, "sha256": None,
                       "note": "not hashed: read from the Hugging Face hub"} for task in task_names}
    return {task: file_record(find_package_file(*TASKS[task].data_file)) for task in task_names}
