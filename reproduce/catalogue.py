"""The suite's vocabularies, each defined once: runtimes, draft kinds, method kinds, sweepable settings.

Torch-free, so configs, analysis and the report can ask it without loading the engine. Code that needs "which
methods draft", "which are Hugging Face's" or "what a draft named X is" asks here instead of listing names.
Tasks (label, metric, split, prompt format) are defined once in `reproduce.tasks.TASKS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from reproduce.errors import ReproduceError

# ---- runtimes: how a model's forward runs (reproduce.engine.runtime builds them) --------------------------------

# auto: the probe's choice per CPU and role (reproduce.engine.probe); auto-flattest: for a target, the batch-invariant
# mode whose verification is flattest among those that leave the draft at c <= 0.15 by the probes, where the draft's
# cost is known (a run's block: its draft is probed first; not `generate`) (the paper's regime, where scoring K+1
# tokens costs about one and drafting little), and a block's K = auto the K Leviathan's formula predicts best in that
# mode; hf: Hugging Face's forward; fast-<mode>: the fast CPU runtime with GEMMs
# in one of LINEAR_MODES (reproduce.engine.linear: fp32, bf16, weight-only int8 or int4, int4 weights with int8
# activations, bf16 weights with fp32 activations); llama.cpp: the model's GGUF in llama.cpp
# (reproduce.engine.llamacpp_lm, its numerics the GGUF's own). For a target the runtime is part of its definition
# (ArS and SpS share it); for a draft it changes only speed and acceptance.
LINEAR_MODES = ("fp32", "bf16", "w16a32", "int8", "int4", "w4a8", "w3a8")
# modes `auto` never picks (the probe leaves them out): w3a8 (3-bit weights in the w4a8 kernel) is there for drafts,
# named (runtime: fast-w3a8), until a full run shows what its coarser grid costs in acceptance
NAMED_ONLY_MODES = ("w3a8",)
RUNTIMES = ("auto", "auto-flattest", "hf", *(f"fast-{mode}" for mode in LINEAR_MODES), "llama.cpp")

# ---- drafts -----------------------------------------------------------------------------------------------------

HYBRID_PREFIX = "ngram+"  # ngram+<draft>: prompt lookup where the sequence repeats an n-gram, <draft> elsewhere


@dataclass(frozen=True)
class DraftKind:
    name: str
    role: str  # what it is, for the report's "where the speedups came from"
    copying: bool  # proposes by copying text (prompt lookup), no model of its own
    model_on_its_own: bool  # a model drafting alone: draft-only rows and a Hugging Face assisted peer
    separate_model: bool  # a model other than the target, the paper's kind of draft


DRAFT_KINDS = {k.name: k for k in (
    DraftKind("ngram", "copying: n-gram prompt lookup from the prompt and the output so far", True, False, False),
    DraftKind("target", "a model draft, the target drafting for itself: it accepts everything and costs a target call "
                        "per drafted token", False, False, False),
    DraftKind("distilled", "a model draft distilled from the target", False, True, True),
    DraftKind("hybrid", "copying where the text repeats itself, a draft model elsewhere", False, False, True),
    DraftKind("model", "a model draft", False, True, True),
)}


@dataclass(frozen=True)
class DraftName:
    """A draft name parsed once: `ngram` (prompt lookup), `target` (the target drafting for itself, sharing its
    weights), `distilled` (the suite's distilled draft of the target), `ngram+<draft>` (hybrid), or a model name."""

    name: str
    kind: str  # a key of DRAFT_KINDS
    inner: DraftName | None = None  # the hybrid's model draft

    @property
    def is_model(self) -> bool:
        """A model drafting on its own: it has draft-only rows and a Hugging Face assisted-generation peer. A hybrid
        has neither (HF has no prompt lookup + assistant mode, and the model alone is not the hybrid); the target
        drafting for itself is the target."""
        return DRAFT_KINDS[self.kind].model_on_its_own

    @property
    def has_hf_peer(self) -> bool:
        """Whether HF assisted generation can run this draft: n-gram maps to prompt lookup, a model to
        assistant_model."""
        return self.kind == "ngram" or self.is_model

    @property
    def label(self) -> str:
        """Short name for tables and legends: a model path's last part."""
        if self.kind == "hybrid":
            return f"{HYBRID_PREFIX}{self.inner.label}"
        return self.name.rstrip("/").split("/")[-1] if self.kind == "model" else self.name


def draft_source(name: str, model: str | None = None) -> str:
    """What a configured draft is: its `model` where given, else its name (two drafts may share one model, e.g. in
    two runtimes; the name labels the rows)."""
    return model or name


def draft_kind(spec) -> DraftName:
    """The DraftName of a config's draft, a DraftSpec or its plain dict as saved in a manifest."""
    if isinstance(spec, dict):
        return parse_draft(draft_source(spec["name"], spec.get("model")))
    return parse_draft(draft_source(spec.name, spec.model))


def parse_draft(name: str) -> DraftName:
    """`name` -> DraftName; a hybrid must put a model draft (target, distilled or a model) after the prefix."""
    if not name:
        raise ReproduceError("empty draft name: use ngram, target, distilled, ngram+<draft> or a model name")
    if name in DRAFT_KINDS and name not in ("hybrid", "model"):  # kinds named by themselves
        return DraftName(name, name)
    if name.startswith(HYBRID_PREFIX):
        inner = parse_draft(name.removeprefix(HYBRID_PREFIX))
        if inner.kind in ("ngram", "hybrid"):
            raise ReproduceError(f"draft {name!r}: after {HYBRID_PREFIX!r} name a model draft, e.g. ngram+distilled")
        return DraftName(name, "hybrid", inner)
    return DraftName(name, "model")


# ---- methods: what one row of a run measured -------------------------------------------------------------------


@dataclass(frozen=True)
class MethodKind:
    name: str
    label: str  # in tables: "SpS" -> "SpS[ngram,K=4]"
    legend: str  # in figure legends
    order: int  # in tables and figures
    hatch: str | None  # in bar figures: the colour is the draft's, the hatch the method's
    plan: str  # which rows a unit gets (runs.plan): "prompt" one, "draft_k" one per draft and K, "peer_k" one
    #            per draft Hugging Face can run at the peer K values, "model_draft" one per model drafting alone,
    #            "ngram_k" one per n-gram draft at the peer K values, "model_k" one per model draft (GGUF) there
    uses_draft: bool = False  # rows carry a draft name
    uses_k: bool = False  # rows carry K
    hf_peer: bool = False  # Hugging Face's own generate(), a peer of ours
    hf_forward: bool = False  # our loop over the Hugging Face forward (the like-for-like peer of generate())
    # ours: the Hugging Face peer this loop is compared with (HF's ms/token over ours on the same prompts)
    hf_counterpart: str | None = None
    legend_rank: int | None = None  # place in the figures' method legends (None: no legend entry)
    llamacpp_peer: bool = False  # llama.cpp on the target's GGUF (runs.llamacpp_peer), a peer of ours
    # runs llama.cpp's llama-speculative-simple tool (runs.plan.speculative_tool): planned only where it was built
    needs_speculative_tool: bool = False

    @property
    def ours_drafting(self) -> bool:
        """Our speculative loop: it records per-step acceptance (HF's assisted generation does not, nor llama.cpp's)."""
        return self.uses_k and not self.hf_peer and not self.llamacpp_peer


# In the order a unit plans them (runs.plan); `order` sorts tables.
METHOD_KINDS = {m.name: m for m in (
    MethodKind("ars", "ArS", "ArS (ours)", 0, None, "prompt", hf_counterpart="hf_generate"),
    # ArS again on the same prompts with its own seed stream: the A/A check of timing drift (every mode) and the
    # ArS-vs-ArS spread of quality (sampled modes; a greedy repeat emits ArS's tokens)
    MethodKind("ars_repeat", "ArS (repeat)", "ArS again (own seed)", 1, "--", "prompt", legend_rank=0),
    MethodKind("ars_hf", "ArS (HF forward)", "ArS (ours, HF forward)", 2, "\\\\", "prompt", hf_forward=True,
               hf_counterpart="hf_generate", legend_rank=5),
    MethodKind("hf_generate", "HF generate", "HF generate", 3, "...", "prompt", hf_peer=True, legend_rank=4),
    MethodKind("sps", "SpS", "SpS (ours)", 4, None, "draft_k", uses_draft=True, uses_k=True,
               hf_counterpart="hf_assisted", legend_rank=1),
    MethodKind("hf_assisted", "HF assisted", "HF assisted", 6, "///", "peer_k", uses_draft=True, uses_k=True,
               hf_peer=True, legend_rank=2),
    MethodKind("sps_hf", "SpS (HF forward)", "SpS (ours, HF forward)", 5, "\\\\", "peer_k", uses_draft=True,
               uses_k=True, hf_forward=True, hf_counterpart="hf_assisted", legend_rank=6),
    MethodKind("draft_only", "draft-only", "draft only", 7, "xx", "model_draft", uses_draft=True, legend_rank=3),
    # llama.cpp's plain decoding of the target's GGUF: our ArS loop (sampling included) over llama.cpp's forward
    # (reproduce.engine.llamacpp_lm), whatever runtime the target runs in; and llama.cpp's own n-gram speculative
    # decoding (llama-cpp-python's Llama.generate with LlamaPromptLookupDecoding), its sampling llama.cpp's
    MethodKind("llamacpp_ars", "llama.cpp", "llama.cpp plain decoding", 8, "oo", "prompt", llamacpp_peer=True),
    MethodKind("llamacpp_ngram", "llama.cpp n-gram", "llama.cpp prompt lookup", 9, "++", "ngram_k", uses_draft=True,
               uses_k=True, llamacpp_peer=True),
    # llama.cpp's draft-model speculative decoding: its llama-speculative-simple tool on both models' GGUFs
    MethodKind("llamacpp_draft", "llama.cpp draft", "llama.cpp draft-model speculative", 10, "**", "model_k",
               uses_draft=True, uses_k=True, llamacpp_peer=True, needs_speculative_tool=True),
)}
# ars_hf / sps_hf run only when a config lists them: they are the slow like-for-like engine comparisons;
# ars_repeat too (it costs one more ArS decode per prompt)
DEFAULT_METHODS = ("ars", "sps", "draft_only", "hf_generate", "hf_assisted")
# what a sweep runs at every value: the baseline and speculative sampling
SWEEP_METHODS = ("ars", "sps")
# our two loops in the configured runtime, the baseline and SpS, whose target calls trace the cost curve t(n)
# (ars_hf / sps_hf run the target's HF forward, another curve; draft-only the draft's)
COST_CURVE_METHODS = ("ars", "sps")


def method_kinds(**flags) -> tuple[str, ...]:
    """The method kinds whose fields equal `flags`, in METHOD_KINDS order, e.g. method_kinds(hf_peer=True)."""
    return tuple(name for name, kind in METHOD_KINDS.items()
                 if all(getattr(kind, flag) == value for flag, value in flags.items()))


def hf_compared(hf_peer: str) -> tuple[str | None, str | None]:
    """(our loop in the configured runtime, our loop over the HF forward) that the Hugging Face peer `hf_peer` is
    compared with: ("ars", "ars_hf") for hf_generate, ("sps", "sps_hf") for hf_assisted."""
    ours = [m for m in METHOD_KINDS.values() if m.hf_counterpart == hf_peer]
    return (next((m.name for m in ours if not m.hf_forward), None), next((m.name for m in ours if m.hf_forward), None))


# ---- sweeps: the settings an experiment can vary --------------------------------------------------------------


@dataclass(frozen=True)
class Sweepable:
    name: str  # in titles: "K on XSum greedy"
    axis: str  # on a figure's axis


SWEEPABLE = {
    "k": Sweepable("K", "K (tokens drafted per loop)"),
    "max_new_tokens": Sweepable("max new tokens", "max new tokens"),
    "max_prompt_tokens": Sweepable("prompt budget", "prompt budget (tokens)"),
    "temperature": Sweepable("temperature", "temperature"),
}


def method_label(method: str, draft: str | None = None, k: int | None = None) -> str:
    """A readable row label: ArS, SpS[ngram,K=4], draft-only[name], HF generate, HF assisted[ngram,K=4], ..."""
    kind = METHOD_KINDS[method]
    if kind.uses_k:
        return f"{kind.label}[{draft},K={int(k)}]"
    if kind.uses_draft:
        return f"{kind.label}[{draft}]"
    return kind.label
