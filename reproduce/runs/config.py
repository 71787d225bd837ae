"""Experiment configuration: small YAML files resolved into frozen dataclasses.

A file states only what differs from what it includes (`include: base.yaml`, lm-eval-harness style):
mappings merge key by key, everything else replaces. Unknown keys fail with a did-you-mean error (nanoGPT's
lesson: a typo must never be silently ignored). The resolved config is saved beside the results.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reproduce.catalogue import (
    DEFAULT_METHODS,
    METHOD_KINDS,
    RUNTIMES,
    SWEEPABLE,
    DraftName,
    draft_kind,
    draft_source,
)
from reproduce.errors import ReproduceError
from reproduce.tasks import PERPLEXITY, TASKS

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
AUTO_K = "auto"  # a K sweep's value chosen by the probe with the block's target mode (SweepSpec.values)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dtype: str = "float32"
    device_map: str | None = None  # "auto" shards a target larger than one device (accelerate)
    architecture: str | None = None  # model_type, so tests can stand in a tiny random model of the same kind
    runtime: str = "auto"  # one of catalogue.RUNTIMES (reproduce.engine.runtime.resolve_runtime)


@dataclass(frozen=True)
class DraftSpec:
    """A drafter: `name` labels its rows; `model` (default: the name) says what it is, in catalogue.parse_draft's
    grammar (ngram, target, distilled, ngram+<draft>, or a model to load). Two drafts may share a model, e.g. one
    model in two runtimes."""

    name: str
    model: str | None = None
    ngram_size: int = 3
    dtype: str = "float32"
    architecture: str | None = None
    k_values: tuple[int, ...] | None = None  # overrides the experiment's k_values for this draft
    runtime: str = "auto"  # as for the target; the `target` draft always uses the target's runtime
    # a model draft's head restricted to this many tokens, chosen from data (reproduce.runs.vocabulary), plus each
    # prompt's own; None: the full vocabulary
    vocabulary: int | None = None
    # an adaptive draft length: a model draft stops before K after a token it gave a probability below this
    # (reproduce.engine.drafters.ModelDrafter._stops); 0: K tokens every call
    stop_below: float = 0.0

    @property
    def source(self) -> str:
        return draft_source(self.name, self.model)

    @property
    def kind(self) -> DraftName:
        return draft_kind(self)


@dataclass(frozen=True)
class ModeSpec:
    """A sampling mode. temperature 0 is greedy; num_samples > 1 draws several outputs per prompt (pass@k)."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    num_samples: int = 1


@dataclass(frozen=True)
class TaskSpec:
    rows: tuple[int, int]  # [start, stop) of the task's evaluation rows
    modes: tuple[str, ...]
    max_new_tokens: int = 64
    max_prompt_tokens: int = 400  # documents are truncated to this budget, identically for every method
    # decode exactly max_new_tokens, EOS sampled like any token (the paper's Figure 1 times 128 tokens), so speed is
    # compared over equal lengths; quality is scored on the output cut at EOS and the task's stop (tasks.quality_length)
    ignore_eos: bool = False
    chat: bool | None = None  # the prompt format: None = the chat template when the tokenizer has one; False = raw


@dataclass(frozen=True)
class SweepSpec:
    """Vary one setting over `values` on a few prompts; ArS and SpS with `draft` run at every value."""

    task: str
    mode: str
    draft: str
    vary: str
    # for `vary: k` in a block with an auto target runtime, [auto]: the K chosen with the target's mode, the one of
    # 1..8 the probe predicts best at acceptance `acceptance` (probe.choose; the manifest's runtime_choices say which)
    values: tuple
    rows: tuple[int, int] = (0, 4)
    k: int = 4
    max_new_tokens: int | None = None  # default: the task's
    # generate exactly max_new_tokens, EOS sampled like any token (the paper times 128 tokens): a cost
    # measurement, so its text is not scored
    ignore_eos: bool = False
    # the target's runtime in this block, when not the experiment's: e.g. auto-flattest, the paper's regime (the
    # batch-invariant mode whose verification is flattest, the block's draft at c <= 0.15), beside Table 1's
    # practical regime (the fastest ArS)
    target_runtime: str | None = None
    acceptance: float | None = None  # what a K = auto choice assumes (None: probe.ALPHA_PRIOR, 0.8)

    @property
    def auto_k(self) -> bool:
        """Whether the block's K is the probe's choice (values: [auto])."""
        return tuple(self.values) == (AUTO_K,)


@dataclass(frozen=True)
class ControlSpec:
    """Rows that are controls, or drafts the last run showed dominated: they run on the first `prompts` prompts
    of each main task and mode only, beside the full rows, so the run's time goes to the rows Table 1 judges."""

    prompts: int = 2
    tasks: tuple[str, ...] = ()  # the tasks that run them (empty: every task)
    methods: tuple[str, ...] = ()  # method kinds (e.g. hf_generate, draft_only)
    drafts: tuple[str, ...] = ()  # drafts all of whose rows are controls (e.g. target: the price of speculation)


@dataclass(frozen=True)
class MethodScope:
    """Where a main-block method kind runs, when not everywhere: only in these tasks and modes (empty: all). For
    peers whose rows only one table reads, e.g. llama.cpp's on HumanEval greedy, so they cost minutes, not a
    quarter of the run."""

    tasks: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()

    def covers(self, task: str, mode: str) -> bool:
        return (not self.tasks or task in self.tasks) and (not self.modes or mode in self.modes)


@dataclass(frozen=True)
class QualityMargin:
    """The equivalence margin of one quality metric (TOST, paired by prompt): fixed in the config before the run,
    used as it is, with the reason it is that size. Units: the metric's own (ROUGE-2 F absolute, pass@1 and
    decision accuracy as proportions, log-perplexity in nats per token)."""

    margin: float
    reason: str


# The metrics a margin can be set for: each task's quality number and the log-perplexity every task gets
# (reproduce.tasks: QualityMetric.quality_key), so a new task's metric needs no second list here.
QUALITY_MARGIN_METRICS = tuple(dict.fromkeys([t.quality.quality_key for t in TASKS.values()] + [PERPLEXITY.quality_key]))
BASE_CONFIG = "base.yaml"


def base_quality_margins() -> dict[str, QualityMargin]:
    """The margins experiments/base.yaml sets: the default of a config that does not include it, and of a run's
    saved config written before margins were configured (the analysis reads them through here too)."""
    data = yaml.safe_load((EXPERIMENTS_DIR / BASE_CONFIG).read_text()) or {}
    return _quality_margins(data.get("quality_margins") or {}, BASE_CONFIG)


def _quality_margins(data, source: str) -> dict[str, QualityMargin]:
    if not isinstance(data, dict):
        raise ReproduceError(f"{source}: quality_margins must map metric names to {{margin, reason}}, got {data!r}")
    out = {}
    for metric, spec in data.items():
        if metric not in QUALITY_MARGIN_METRICS:
            close = difflib.get_close_matches(str(metric), QUALITY_MARGIN_METRICS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(QUALITY_MARGIN_METRICS)}"
            raise ReproduceError(f"{source}: quality_margins: unknown metric {metric!r}; {hint}")
        out[metric] = spec if isinstance(spec, QualityMargin) else _build(QualityMargin, spec, f"{source}: quality_margins.{metric}")
    return out


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    target: ModelSpec
    drafts: tuple[DraftSpec, ...]
    tasks: dict[str, TaskSpec]
    modes: dict[str, ModeSpec]
    k_values: tuple[int, ...] = (4,)
    # the K values at which the Hugging Face peers (hf_assisted, sps_hf) run; None = every K of each draft.
    # The peers are slow, so timing them at every K would multiply a K sweep's run time.
    peer_k_values: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = DEFAULT_METHODS
    sweeps: dict[str, SweepSpec] = field(default_factory=dict)
    controls: ControlSpec | None = None
    method_scopes: dict[str, MethodScope] = field(default_factory=dict)  # method kind -> where it runs
    data_source: str = "offline"  # or "hub"
    threads: int = 2
    warmup_tokens: int = 8
    price_per_hour_usd: float = 0.10  # for the $ per 1M tokens estimate
    # quality equivalence margins per metric (QUALITY_MARGIN_METRICS), fixed before the run: base.yaml's by default
    quality_margins: dict[str, QualityMargin] = field(default_factory=base_quality_margins)
    description: str = ""

    def draft(self, name: str) -> DraftSpec:
        return next(d for d in self.drafts if d.name == name)


def load_config(name_or_path: str | Path) -> ExperimentConfig:
    """Load `experiments/<name>.yaml` or a path, following includes, and validate it."""
    data, source = read_config_data(name_or_path)
    return resolve_config(data, source)


def read_config_data(name_or_path: str | Path) -> tuple[dict, str]:
    """The plain settings of `experiments/<name>.yaml` or a path, includes merged in, and the file's name (for
    error messages). Command-line settings are applied to this dict before `resolve_config`."""
    path = Path(name_or_path)
    if not path.suffix:
        path = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
        raise ReproduceError(f"no experiment config {str(name_or_path)!r}: choose one of {', '.join(known)} or give a .yaml path")
    return _read_with_includes(path, seen=()), path.name


def dump_config(config: ExperimentConfig) -> str:
    """The resolved config as YAML that `load_config` reads back into an equal config (no includes)."""
    plain = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists, as YAML writes them
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=None, width=110)


def _read_with_includes(path: Path, seen: tuple) -> dict:
    if path in seen:
        raise ReproduceError(f"include cycle: {' -> '.join(p.name for p in (*seen, path))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ReproduceError(f"{path.name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ReproduceError(f"{path.name}: the top level must be a mapping of settings")
    includes = data.pop("include", [])
    merged: dict = {}
    for include in [includes] if isinstance(includes, str) else includes:
        merged = _merge(merged, _read_with_includes(path.parent / include, (*seen, path)))
    return _merge(merged, data)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _build(cls, data, where: str):
    """Construct dataclass `cls` from a mapping, rejecting unknown keys with a suggestion."""
    if not isinstance(data, dict):
        raise ReproduceError(f"{where}: expected a mapping of {cls.__name__} settings, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(names)}"
            raise ReproduceError(f"{where}: unknown key {key!r}; {hint}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = tuple(value) if _is_tuple_type(hints[key]) and isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ReproduceError(f"{where}: {exc}") from None


def _is_tuple_type(hint) -> bool:
    """tuple[...] or tuple[...] | None: YAML lists become tuples so configs stay hashable and frozen."""
    return typing.get_origin(hint) is tuple or any(typing.get_origin(arg) is tuple for arg in typing.get_args(hint))


def resolve_config(data: dict, source: str) -> ExperimentConfig:
    """Plain settings (as read from YAML, or built from command-line flags) -> a validated ExperimentConfig."""
    data = dict(data)
    for key in ("tasks", "modes", "sweeps"):
        if not isinstance(data.get(key) or {}, dict):
            raise ReproduceError(f"{source}: {key} must be a mapping of names to settings, got {data[key]!r}")
    if not isinstance(data.get("drafts") or [], list):
        raise ReproduceError(f"{source}: drafts must be a list of draft settings, got {data['drafts']!r}")
    for name in data.get("tasks") or {}:
        if name not in TASKS:  # before its settings are checked, which would miss the misspelt name
            close = difflib.get_close_matches(str(name), TASKS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(TASKS)}"
            raise ReproduceError(f"{source}: unknown task {name!r}; {hint}")
    if "target" in data:
        data["target"] = _build(ModelSpec, data["target"], f"{source}: target")
    data["drafts"] = tuple(_build(DraftSpec, d, f"{source}: drafts[{i}]") for i, d in enumerate(data.get("drafts") or []))
    data["modes"] = {n: _build(ModeSpec, m, f"{source}: modes.{n}") for n, m in (data.get("modes") or {}).items()}
    data["tasks"] = {n: _build(TaskSpec, t, f"{source}: tasks.{n}") for n, t in (data.get("tasks") or {}).items()}
    data["sweeps"] = {n: _build(SweepSpec, s, f"{source}: sweeps.{n}") for n, s in (data.get("sweeps") or {}).items()}
    if data.get("controls") is not None:
        data["controls"] = _build(ControlSpec, data["controls"], f"{source}: controls")
    if not isinstance(data.get("method_scopes") or {}, dict):
        raise ReproduceError(f"{source}: method_scopes must map method kinds to {{tasks, modes}}, got {data['method_scopes']!r}")
    data["method_scopes"] = {n: _build(MethodScope, m, f"{source}: method_scopes.{n}")
                             for n, m in (data.get("method_scopes") or {}).items()}
    if "quality_margins" in data:
        data["quality_margins"] = {**base_quality_margins(), **_quality_margins(data["quality_margins"], source)}
    config = _build(ExperimentConfig, data, source)
    _validate(config, source)
    return config


def _validate(config: ExperimentConfig, source: str) -> None:
    def fail(message: str):
        raise ReproduceError(f"{source}: {message}")

    draft_names = [d.name for d in config.drafts]
    if len(set(draft_names)) != len(draft_names):
        fail(f"draft names repeat: {draft_names}")
    for draft in config.drafts:
        try:
            draft.kind
        except ReproduceError as exc:
            fail(f"drafts: {exc}")
    for name, task in config.tasks.items():
        if name not in TASKS:
            fail(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
        if not (len(task.rows) == 2 and 0 <= task.rows[0] < task.rows[1]):
            fail(f"tasks.{name}.rows must be [start, stop) with 0 <= start < stop, got {list(task.rows)}")
        for mode in task.modes:
            if mode not in config.modes:
                fail(f"tasks.{name} uses mode {mode!r}, which is not defined under modes")
        _check_eval_rows(name, task.rows, f"{source}: tasks.{name}")
        if task.max_new_tokens < 1 or task.max_prompt_tokens < 1:
            fail(f"tasks.{name}: max_new_tokens and max_prompt_tokens must be >= 1")
    for name, mode in config.modes.items():
        if mode.temperature < 0 or not 0 < mode.top_p <= 1 or mode.top_k < 0 or mode.num_samples < 1:
            fail(f"modes.{name}: need temperature >= 0, 0 < top_p <= 1, top_k >= 0, num_samples >= 1")
    for where, k_values in [("k_values", config.k_values)] + [
        (f"drafts.{d.name}.k_values", d.k_values) for d in config.drafts if d.k_values is not None
    ]:
        if not k_values or any(not isinstance(k, int) or k < 1 for k in k_values):
            fail(f"{where} must be integers >= 1, got {list(k_values)}")
    if config.peer_k_values is not None:
        if not config.peer_k_values or any(not isinstance(k, int) or k < 1 for k in config.peer_k_values):
            fail(f"peer_k_values must be integers >= 1 (or null for every K), got {list(config.peer_k_values)}")
        draft_ks = {k for d in config.drafts for k in (d.k_values or config.k_values)}
        unused = [k for k in config.peer_k_values if k not in draft_ks]
        if unused:
            fail(f"peer_k_values {unused} are not among the drafts' K values {sorted(draft_ks)}, so no peer would run there")
    for method in config.methods:
        if method not in METHOD_KINDS:
            close = difflib.get_close_matches(method, METHOD_KINDS, n=1)
            fail(f"unknown method {method!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    for name, sweep in config.sweeps.items():
        if sweep.vary not in SWEEPABLE:
            fail(f"sweeps.{name}.vary must be one of {', '.join(SWEEPABLE)}, got {sweep.vary!r}")
        _check_eval_rows(sweep.task, sweep.rows, f"{source}: sweeps.{name}")
        if sweep.task not in config.tasks or sweep.mode not in config.modes or sweep.draft not in draft_names:
            fail(f"sweeps.{name} names a task, mode or draft not defined above ({sweep.task}, {sweep.mode}, {sweep.draft}): "
                 "define it, or drop the sweep (from the command line: --set sweeps={})")
        if sweep.target_runtime is not None and sweep.target_runtime not in RUNTIMES:
            fail(f"sweeps.{name}.target_runtime must be one of {', '.join(RUNTIMES)}, got {sweep.target_runtime!r}")
        if AUTO_K in sweep.values and (not sweep.auto_k or sweep.vary != "k"
                                       or not str(sweep.target_runtime).startswith("auto")):
            fail(f"sweeps.{name}: values [{AUTO_K}] (K chosen by the probe) stands alone, in a block with vary: k and "
                 f"target_runtime auto or auto-flattest, got values {list(sweep.values)}, vary {sweep.vary!r}, "
                 f"target_runtime {sweep.target_runtime!r}")
        if sweep.acceptance is not None and (isinstance(sweep.acceptance, bool) or not isinstance(
                sweep.acceptance, (int, float)) or not 0 < sweep.acceptance < 1):
            fail(f"sweeps.{name}.acceptance must be a probability in (0, 1), got {sweep.acceptance!r}")
    for draft in config.drafts:
        if draft.vocabulary is not None and (not isinstance(draft.vocabulary, int) or draft.vocabulary < 1
                                             or draft.kind.kind not in ("model", "hybrid")):
            fail(f"drafts.{draft.name}.vocabulary must be an integer >= 1 on a model draft, got {draft.vocabulary!r}")
        if draft.stop_below != 0 and (isinstance(draft.stop_below, bool) or not isinstance(draft.stop_below, (int, float))
                                      or not 0 < draft.stop_below < 1 or draft.kind.kind == "ngram"):
            fail(f"drafts.{draft.name}.stop_below must be a probability in (0, 1) on a draft with a model (0: always K "
                 f"tokens), got {draft.stop_below!r}")
    if config.controls is not None:
        unknown = [m for m in config.controls.methods if m not in config.methods] + \
                  [d for d in config.controls.drafts if d not in draft_names] + \
                  [t for t in config.controls.tasks if t not in config.tasks]
        if unknown or config.controls.prompts < 1:
            fail(f"controls: prompts must be >= 1 and tasks / methods / drafts must be ones the config runs, got {unknown}")
    for kind, scope in config.method_scopes.items():
        unknown = ([kind] if kind not in config.methods else []) + [t for t in scope.tasks if t not in config.tasks] + \
                  [m for m in scope.modes if m not in config.modes]
        if unknown:
            fail(f"method_scopes.{kind}: {unknown} are not among the config's methods, tasks or modes: "
                 "scope a method the config runs to its tasks and modes")
    for where, runtime in [("target", config.target.runtime)] + [(f"drafts.{d.name}", d.runtime) for d in config.drafts]:
        if runtime not in RUNTIMES:
            fail(f"{where}.runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    for metric, spec in config.quality_margins.items():
        if not (isinstance(spec.margin, (int, float)) and spec.margin > 0) or not str(spec.reason).strip():
            fail(f"quality_margins.{metric} needs a margin > 0 and a reason, got {spec.margin!r} and {spec.reason!r}")
    if config.data_source not in ("offline", "hub"):
        fail(f"data_source must be 'offline' or 'hub', got {config.data_source!r}")


def _check_eval_rows(task: str, rows: tuple[int, int], where: str) -> None:
    """Experiments evaluate only on the task's evaluation rows: the others may train distilled drafts."""
    if task in TASKS:
        eval_rows = TASKS[task].eval_rows
        if not (eval_rows.start <= rows[0] and rows[1] <= eval_rows.stop):
            raise ReproduceError(
                f"{where}: rows {list(rows)} leave the evaluation rows [{eval_rows.start}, {eval_rows.stop}) "
                f"of {task}; the rest are reserved for training drafts"
            )
