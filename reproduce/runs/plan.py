"""The plan of an experiment, torch-free: methods, units (one prompt under one setting), each row's seed and the
order.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from reproduce import tasks
from reproduce.catalogue import METHOD_KINDS, SWEEP_METHODS
from reproduce.engine.params import SamplingParams
from reproduce.runs.config import ExperimentConfig, ModeSpec
from reproduce.runs.results import row_key


@dataclass(frozen=True)
class Method:
    kind: str  # a key of catalogue.METHOD_KINDS
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
    ignore_eos: bool = False  # decode exactly max_new_tokens (config.TaskSpec.ignore_eos)
    chat: bool | None = None  # the prompt format (config.TaskSpec.chat)

    def row_key(self, method: Method) -> str:
        return row_key(dict(self.identity(), method=method.kind, draft=method.draft, k=method.k))

    def identity(self) -> dict:
        return dict(block=self.block, task=self.task, example_id=self.example.example_id, mode=self.mode,
                    seed=self.seed, sample=self.sample, sweep_value=self.sweep_value)


def _params(mode: ModeSpec, temperature: float | None = None) -> SamplingParams:
    return SamplingParams(temperature=mode.temperature if temperature is None else temperature,
                          top_p=mode.top_p, top_k=mode.top_k)


def main_methods(config: ExperimentConfig) -> tuple[Method, ...]:
    """The configured methods as catalogue.METHOD_KINDS plans them: the once-per-prompt kinds (ArS; ArS again on
    its own seed stream, the A/A check; our ArS on the HF forward; HF generate; llama.cpp's plain decoding), then
    per draft: per K SpS, and at the peer K values the Hugging Face peers (assisted generation, our SpS on the HF
    forward) for drafts HF can run and llama.cpp's prompt lookup for n-gram drafts; draft-only for a model drafting
    alone. The same in every mode."""
    def kinds(plan: str) -> list[str]:
        return [name for name, kind in METHOD_KINDS.items() if kind.plan == plan and name in config.methods
                and (llamacpp_installed() or not kind.llamacpp_peer)
                and (not kind.needs_speculative_tool or speculative_tool() is not None)]

    methods = [Method(kind) for kind in kinds("prompt")]
    peered = set()  # HF runs a model as loaded: one model in two of our runtimes has one HF peer, the first's
    for draft in config.drafts:
        first_of_model = draft.source not in peered
        hf_peer = draft.kind.has_hf_peer and first_of_model
        peered.add(draft.source)
        for k in draft.k_values or config.k_values:
            methods += [Method(kind, draft.name, k) for kind in kinds("draft_k")]
            at_peer_k = config.peer_k_values is None or k in config.peer_k_values
            if hf_peer and at_peer_k:
                methods += [Method(kind, draft.name, k) for kind in kinds("peer_k")]
            if draft.kind.kind == "ngram" and at_peer_k:  # llama.cpp's own speculative decoding: prompt lookup
                methods += [Method(kind, draft.name, k) for kind in kinds("ngram_k")]
            if draft.kind.kind == "model" and at_peer_k and first_of_model:  # and with the draft model (once per model)
                methods += [Method(kind, draft.name, k) for kind in kinds("model_k")]
        if draft.kind.is_model:
            methods += [Method(kind, draft.name) for kind in kinds("model_draft")]
    return tuple(methods)


def llamacpp_installed() -> bool:
    """llama-cpp-python is installed (`make install` builds it; a failed build leaves it out). Without it the
    llama.cpp peers are not planned, the run goes on, and the report says they were not measured (a rerun once it
    is installed adds their rows)."""
    return importlib.util.find_spec("llama_cpp") is not None


SPECULATIVE_TOOL = "llama-speculative-simple"  # llama.cpp's draft-model speculative decoding; make install builds it


def speculative_tool() -> Path | None:
    """llama.cpp's llama-speculative-simple beside this Python (make install puts it in the venv's bin/), else on
    PATH; None where it was not built (then `llamacpp_draft` is not planned and the report says so)."""
    here = Path(sys.executable).parent / SPECULATIVE_TOOL
    found = here if here.is_file() else shutil.which(SPECULATIVE_TOOL)
    return Path(found) if found else None


def is_control(config: ExperimentConfig, method: Method) -> bool:
    """A row that runs only on the first config.controls.prompts prompts of each main task and mode."""
    controls = config.controls
    return controls is not None and (method.kind in controls.methods or method.draft in controls.drafts)


def in_scope(config: ExperimentConfig, method: Method, task: str, mode: str) -> bool:
    """Whether a main-block method runs in this task and mode (config.method_scopes; unscoped kinds run in all)."""
    scope = config.method_scopes.get(method.kind)
    return scope is None or scope.covers(task, mode)


def plan_units(config: ExperimentConfig) -> list[Unit]:
    """The whole experiment as a list of units, in a fixed order (the resume logic relies on keys, not order)."""
    units = []
    main = main_methods(config)
    # a prompt's units are adjacent (its modes, samples and sweep values), so the runner prefills it once for all
    for task_name, task in config.tasks.items():
        examples = tasks.load_examples(task_name, range(*task.rows), source=config.data_source)
        controls = config.controls
        for seed in config.seeds:
            for index, example in enumerate(examples):
                with_controls = controls is None or (index < controls.prompts
                                                     and (not controls.tasks or task_name in controls.tasks))
                methods = main if with_controls else tuple(m for m in main if not is_control(config, m))
                for mode_name in task.modes:
                    mode = config.modes[mode_name]
                    scoped = tuple(m for m in methods if in_scope(config, m, task_name, mode_name))
                    for sample in range(mode.num_samples):
                        units.append(Unit("main", task_name, example, mode_name, _params(mode),
                                          task.max_new_tokens, task.max_prompt_tokens, seed, sample, scoped,
                                          ignore_eos=task.ignore_eos, chat=task.chat))
    for sweep_name, sweep in config.sweeps.items():
        task, mode = config.tasks[sweep.task], config.modes[sweep.mode]
        draft = config.draft(sweep.draft)
        examples = tasks.load_examples(sweep.task, range(*sweep.rows), source=config.data_source)
        for example in examples:
            for value in sweep.values:
                k = value if sweep.vary == "k" else sweep.k
                methods = tuple(Method(kind, draft.name if METHOD_KINDS[kind].uses_draft else None,
                                       k if METHOD_KINDS[kind].uses_k else None)
                                for kind in SWEEP_METHODS if kind in config.methods)
                units.append(Unit(
                    sweep_name, sweep.task, example, sweep.mode,
                    _params(mode, temperature=value if sweep.vary == "temperature" else None),
                    value if sweep.vary == "max_new_tokens" else sweep.max_new_tokens or task.max_new_tokens,
                    value if sweep.vary == "max_prompt_tokens" else task.max_prompt_tokens,
                    config.seeds[0], 0, methods, sweep_value=value, ignore_eos=sweep.ignore_eos, chat=task.chat,
                ))
    return units


def row_seed(unit: Unit, method: Method) -> int:
    """The seed of one (unit, method) row: the crc32 of its row key (the unit's identity, config seed included,
    and the method's kind, draft and K), stable across runs and machines.

    Every row gets a stream of its own, so the ArS and SpS samples of a prompt are independent draws, as the
    two-sample tests in reproduce.analysis assume. (One seed per unit, shared by its methods, made them
    dependent: ArS and SpS with the target as draft both drew their first token with the same first uniform,
    so their first tokens were equal on every prompt.) Greedy rows do not depend on the seed."""
    return zlib.crc32(unit.row_key(method).encode())


def rotate_methods(methods: tuple[Method, ...], index: int) -> list[Method]:
    """Rotate the method order by unit so no method always runs first (or right after another)."""
    shift = index % len(methods)
    return list(methods[shift:] + methods[:shift])
