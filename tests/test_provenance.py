"""Provenance: what a run, a test run and a report record about the code, the machine and the files they used.

Method: sha256 caching is checked on a small file whose cached digest is replaced by a marker (served from the
cache while size and mtime match; recomputed once either changes); CPU flags are parsed from synthetic
/proc/cpuinfo text (x86 with and without AVX-512, a machine without flags, a missing file); model and data file
records are compared with hashlib on small files; the runner's provenance() and the losslessness JSON (written by
a real pytest run of one fast losslessness test with --stats-json) are checked to carry the commit that
`git rev-parse HEAD` names. No model is loaded.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reproduce.report import render
from reproduce import provenance

REPO = Path(__file__).resolve().parents[1]


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO,
                          check=True).stdout.strip()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_sha256_is_cached_by_size_and_mtime_and_a_changed_file_is_rehashed(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(provenance, "CACHE_MIN_BYTES", 100)  # a small file stands in for gigabytes of weights
    (tmp_path / "small.json").write_text("{}")
    provenance.sha256_file(tmp_path / "small.json")
    assert not (cache / "sha256").exists()  # below the threshold: hashed, not cached
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    assert provenance.sha256_file(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    [entry] = (cache / "sha256").iterdir()
    marker = "cached" * 8
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "sha256": marker}))
    assert provenance.sha256_file(path) == marker  # unchanged size and mtime: served from the cache, not rehashed
    stat = path.stat()
    path.write_bytes(b"b" * 1000)  # same size, new content ...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # ... and a new mtime
    assert provenance.sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()
    path.write_bytes(b"b" * 1001)  # another size
    assert provenance.sha256_file(path) == hashlib.sha256(b"b" * 1001).hexdigest()
    assert provenance.sha256_file(path) == hashlib.sha256(b"b" * 1001).hexdigest()  # and cached again
    assert len(list((cache / "sha256").iterdir())) == 1  # one entry per file


CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14 96-Core Processor
stepping\t: 1
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx512vl

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: something else
flags\t\t: fpu amx_bf16
"""


def test_cpu_flags_are_parsed_from_the_first_processor():
    info = provenance.parse_cpuinfo(CPUINFO)
    assert info["cpu"] == "AMD EPYC 9R14 96-Core Processor"
    assert info["cpu_id"] == "AuthenticAMD family 25 model 17 stepping 1"  # 'model name' is not 'model'
    assert info["cpu_flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": True, "avx512_vnni": True,
                                 "amx_bf16": False}  # the second processor's amx_bf16 is not the first's
    avx2_only = provenance.parse_cpuinfo(CPUINFO.replace("avx512f avx512bw avx512_vnni avx512_bf16 avx512vl", ""))
    assert avx2_only["cpu_flags"] == {"avx2": True, "avx512f": False, "avx512_bf16": False, "avx512_vnni": False,
                                      "amx_bf16": False}
    arm = provenance.parse_cpuinfo("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n")
    assert arm["cpu_flags"] is None and arm["cpu_id"] is None  # no x86 flags: not recorded, not "all absent"


def test_cpu_info_of_a_missing_file_records_nothing_it_does_not_know(tmp_path):
    info = provenance.cpu_info(str(tmp_path / "no-cpuinfo"))
    assert info["cpu_flags"] is None and info["cpu_id"] is None


def test_cpu_flags_and_the_probe_cache_key_read_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    flags = provenance.cpu_flags(str(cpuinfo))
    assert {"avx2", "avx512_bf16", "fpu"} <= flags and "amx_bf16" not in flags  # the second processor's is not read
    key = provenance.cpu_key(str(cpuinfo))
    assert key == "model name\t: AMD EPYC 9R14 96-Core Processor\nflags\t\t: " + CPUINFO.split("flags\t\t: ")[1].split("\n")[0]
    other = tmp_path / "other"
    other.write_text(CPUINFO.replace(" avx512_bf16", ""))
    assert provenance.cpu_key(str(other)) != key  # a CPU without native bf16 does not read this one's timings
    assert provenance.cpu_flags(str(tmp_path / "none")) == set() and provenance.cpu_key(str(tmp_path / "none")) == "unknown"


def test_runner_provenance_records_the_commit_and_the_cpu(monkeypatch):
    from reproduce.engine.probe import KERNEL_ENV
    from reproduce.runs.runner import provenance as run_provenance

    for name in KERNEL_ENV:
        monkeypatch.delenv(name, raising=False)
    session = run_provenance()
    assert "kernel_env" not in session
    assert session["git_hash"] == _head() and isinstance(session["git_dirty"], bool)
    assert set(session["cpu_flags"]) == set(provenance.CPU_FLAGS)
    assert session["cpu_native_bf16"] == (session["cpu_flags"]["avx512_bf16"] or session["cpu_flags"]["amx_bf16"])
    assert session["cpu"] and session["cpu_id"]


@pytest.mark.parametrize("env, limited", [({"ATEN_CPU_CAPABILITY": "avx2"}, True),
                                          ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),
                                          ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, False)])
def test_a_run_on_torchs_avx2_paths_records_them_and_no_native_bf16(monkeypatch, env, limited):
    """torch held to AVX2 on an AVX-512 CPU (how the AVX2 numbers are measured there): the session records the
    variables and says no native bf16 whatever the flags; a ceiling at or above AMX limits nothing. On an AVX2-only
    CPU the flags already say no: the limited cases then check only that the variables are recorded."""
    from reproduce.engine.probe import KERNEL_ENV
    from reproduce.runs.runner import provenance as run_provenance

    for name in KERNEL_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    session = run_provenance()
    assert session["kernel_env"] == env
    native = session["cpu_flags"]["avx512_bf16"] or session["cpu_flags"]["amx_bf16"]
    assert session["cpu_native_bf16"] == (native and not limited)


def test_model_and_data_file_records(tmp_path, cache):
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"\0" * 4096)
    (model_dir / "README.md").write_text("not loaded")
    (model_dir / "sub").mkdir()
    records = provenance.model_files(str(model_dir))
    assert [Path(r["path"]).name for r in records] == ["config.json", "model.safetensors"]
    assert records[1]["sha256"] == hashlib.sha256(b"\0" * 4096).hexdigest() and records[1]["size"] == 4096
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert provenance.model_files(f"gguf:{gguf}")[0]["sha256"] == hashlib.sha256(b"GGUF").hexdigest()
    from reproduce.runs.pool import loaded_model_files  # the engine's names: tiny random models, offline aliases

    assert loaded_model_files("tiny-random-llama", "config") == []
    gone = provenance.file_record(tmp_path / "deleted.bin")  # unreadable: recorded as such, the run goes on
    assert gone["sha256"] is None and gone["note"].startswith("not hashed")

    from reproduce.offline import find_package_file
    from reproduce.tasks import TASKS

    data = provenance.data_files(["humaneval"], "offline")
    path = find_package_file(*TASKS["humaneval"].data_file)
    assert data["humaneval"] == {"path": str(path), "size": path.stat().st_size,
                                 "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert provenance.data_files(["xsum"], "hub")["xsum"]["sha256"] is None


def test_losslessness_json_records_its_commit_and_time(tmp_path):
    """A real pytest run of one fast losslessness test through tests/conftest.py's --stats-json writer."""
    out = tmp_path / "losslessness.json"
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--stats-json", str(out),
                    "tests/test_losslessness.py::test_acceptance_probability_is_min_one_ratio"],
                   cwd=REPO, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    data = json.loads(out.read_text())
    assert data["git_hash"] == _head() and isinstance(data["git_dirty"], bool)
    started, finished = (datetime.datetime.fromisoformat(data[k]) for k in ("started", "finished"))
    assert before <= started <= finished
    assert data["records"] and all(r["outcome"] == "passed" for r in data["records"])
    # the report reads both the records and their provenance (and still reads the bare list written before)
    assert len(render.load_losslessness(out)) == len(data["records"])
    assert render.losslessness_provenance(out) == {k: data[k] for k in ("git_hash", "git_dirty", "started", "finished",
                                                                        "cpu", "cpu_id", "cpu_flags")}
    assert data["cpu_flags"]["avx2"] in (True, False)  # the CPU the tests ran on, compared with the run's by the report
    out.write_text(json.dumps(data["records"]))
    assert render.losslessness_provenance(out) is None and len(render.load_losslessness(out)) == len(data["records"])


def test_runqueue_wait_sums_the_second_schedstat_field_of_every_thread(tmp_path):
    for task, line in (("1", "5000 1500000000 7"), ("2", "9 500000000 3"), ("3", "garbled")):
        (tmp_path / task).mkdir()
        (tmp_path / task / "schedstat").write_text(line + "\n")
    assert provenance.runqueue_wait_seconds(str(tmp_path)) == 2.0  # the garbled thread is skipped, not fatal
    assert provenance.runqueue_wait_seconds(str(tmp_path / "missing")) is None
    off = tmp_path / "sched_info_off"
    (off / "1").mkdir(parents=True)
    (off / "1" / "schedstat").write_text("0 0 0\n")  # a kernel without sched_info: it says nothing, not 'quiet'
    assert provenance.runqueue_wait_seconds(str(off)) is None
