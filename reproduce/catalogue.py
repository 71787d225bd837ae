"""The suite's vocabularies, each defined once: draft kinds, method kinds, runtimes.

Torch-free, so configs, analysis and the report can ask it without loading the engine. Tasks are defined once in
`reproduce.tasks.TASKS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from reproduce.errors import ReproduceError

# ---- runtimes: how a model's forward runs (reproduce.engine.runtime builds them) --------------------------------

# auto: the probe's choice per CPU and role (reproduce.engine.probe); hf: Hugging Face's forward; fast-<mode>: the fast
# CPU runtime with fp32, bf16, weight-only int8 or int4 GEMMs (reproduce.engine.linear). For a target the mode is part
# of its definition (ArS and SpS share it); for a draft it changes only speed and acceptance.
RUNTIMES = ("auto", "hf", "fast-fp32", "fast-bf16", "fast-int8", "fast-int4")

# ---- drafts -----------------------------------------------------------------------------------------------------

HYBRID_PREFIX = "ngram+"  # ngram+<draft>: prompt lookup where the sequence repeats an n-gram, <draft> elsewhere
DRAFT_KINDS = ("ngram", "target", "distilled", "hybrid", "model")


@dataclass(frozen=True)
class DraftName:
    """A draft name parsed once: `ngram` (prompt lookup), `target` (the target drafting for itself, sharing its
    weights), `distilled` (the suite's distilled draft of the target), `ngram+<draft>` (hybrid), or a model name."""

    name: str
    kind: str  # one of DRAFT_KINDS
    inner: DraftName | None = None  # the hybrid's model draft

    @property
    def is_model(self) -> bool:
        """A model drafting on its own: it has draft-only rows and a Hugging Face assisted-generation peer. A hybrid
        has neither (HF has no prompt lookup + assistant mode, and the model alone is not the hybrid); the target
        drafting for itself is the target."""
        return self.kind in ("distilled", "model")

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


def parse_draft(name: str) -> DraftName:
    """`name` -> DraftName; a hybrid must put a model draft (target, distilled or a model) after the prefix."""
    if not name:
        raise ReproduceError("empty draft name: use ngram, target, distilled, ngram+<draft> or a model name")
    if name in ("ngram", "target", "distilled"):
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
    uses_draft: bool  # rows carry a draft name
    uses_k: bool  # rows carry K
    hf_peer: bool  # Hugging Face's own generate(), a peer of ours
    hf_forward: bool  # our loop over the Hugging Face forward (the like-for-like peer of generate())


METHOD_KINDS = {m.name: m for m in (
    MethodKind("ars", "ArS", "ArS (ours)", 0, None, False, False, False, False),
    # ArS again on the same prompts with its own seed stream: the ArS-vs-ArS spread that sets the quality
    # equivalence margins (sampled modes only: a greedy repeat is ArS itself)
    MethodKind("ars_repeat", "ArS (repeat)", "ArS again (own seed)", 1, "--", False, False, False, False),
    MethodKind("ars_hf", "ArS (HF forward)", "ArS (ours, HF forward)", 2, "\\\\", False, False, False, True),
    MethodKind("hf_generate", "HF generate", "HF generate", 3, "...", False, False, True, False),
    MethodKind("sps", "SpS", "SpS (ours)", 4, None, True, True, False, False),
    MethodKind("sps_hf", "SpS (HF forward)", "SpS (ours, HF forward)", 5, "\\\\", True, True, False, True),
    MethodKind("hf_assisted", "HF assisted", "HF assisted", 6, "///", True, True, True, False),
    MethodKind("draft_only", "draft-only", "draft only", 7, "xx", True, False, False, False),
)}
# ars_hf / sps_hf run only when a config lists them: they are the slow like-for-like engine comparisons;
# ars_repeat too (it costs one more ArS decode per sampled prompt)
DEFAULT_METHODS = ("ars", "sps", "draft_only", "hf_generate", "hf_assisted")


def method_label(method: str, draft: str | None = None, k: int | None = None) -> str:
    """A readable row label: ArS, SpS[ngram,K=4], draft-only[name], HF generate, HF assisted[ngram,K=4], ..."""
    kind = METHOD_KINDS[method]
    if kind.uses_k:
        return f"{kind.label}[{draft},K={int(k)}]"
    if kind.uses_draft:
        return f"{kind.label}[{draft}]"
    return kind.label
