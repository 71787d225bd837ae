"""The Hugging Face peers against our loops on the same prompts, like for like first; llama.cpp's plain and
speculative decoding beside our ArS and fastest SpS, in tokens per second."""

from __future__ import annotations

from dataclasses import dataclass

from reproduce.catalogue import METHOD_KINDS, hf_compared
from reproduce.report.groups import MethodRow, Setting
from reproduce.report.records import Speedup, Span


@dataclass(frozen=True)
class PeerPair:
    setting: str
    ours: MethodRow
    hf: MethodRow
    ours_over_hf: Speedup | None  # HF's ms/token over ours, end to end, paired by prompt (> 1: ours faster)


@dataclass(frozen=True)
class Peers:
    like_for_like: tuple[PeerPair, ...]  # our loops over the very HF forward generate() runs (ars_hf, sps_hf)
    stack: tuple[PeerPair, ...]  # our loops in the configured runtime: loop and kernels mixed

    def span(self, which: str, hf_method: str) -> Span | None:
        pairs = self.like_for_like if which == "like_for_like" else self.stack
        return Span.of(p.ours_over_hf.ratio for p in pairs if p.hf.method == hf_method and p.ours_over_hf)


@dataclass(frozen=True)
class LlamaCppPeer:
    """One setting's tokens/s side by side (issue 24): our ArS and fastest SpS against llama.cpp's plain decoding
    and its fastest speculative decoding, each ratio paired by prompt on the decode loop (> 1: ours faster)."""
    setting: str
    ars: MethodRow
    sps: MethodRow | None  # the setting's fastest SpS (Setting.best)
    plain: MethodRow | None  # llamacpp_ars
    speculative: MethodRow | None  # llama.cpp's speculative row with the lowest decode ms/token
    sps_over_plain: Speedup | None
    sps_over_speculative: Speedup | None
    ars_over_plain: Speedup | None


def llamacpp_peers(settings: tuple[Setting, ...]) -> tuple[LlamaCppPeer, ...]:
    """Every setting with llama.cpp rows: ours (ArS, fastest SpS) beside llama.cpp's (plain, fastest speculative)."""
    out = []
    for s in settings:
        if not s.llamacpp_rows:
            continue
        plain = s.llamacpp_plain
        speculative = min((r for r in s.llamacpp_rows if METHOD_KINDS[r.method].uses_draft),
                          key=lambda r: r.decode_ms_per_token_mean, default=None)
        out.append(LlamaCppPeer(
            s.short, s.ars, s.best, plain, speculative,
            sps_over_plain=plain.vs_llamacpp(s.best) if plain and s.best else None,
            sps_over_speculative=speculative.vs_llamacpp(s.best) if speculative and s.best else None,
            ars_over_plain=plain.vs_llamacpp(s.ars) if plain else None))
    return tuple(out)


def llamacpp_note(settings: tuple[Setting, ...], config: dict, manifest: dict) -> str:
    """What the run says about the llama.cpp peers (runs/llamacpp_peer.py): where their rows are, or why there are
    none."""
    kinds = [m for m in config["methods"] if METHOD_KINDS[m].llamacpp_peer]
    if any(METHOD_KINDS[r.method].llamacpp_peer for s in settings for r in s.rows):
        ran = {r.method for s in settings for r in s.rows}
        draft = ("its draft-model speculative decoding (`llamacpp_draft`: its `llama-speculative-simple` tool on the "
                 "target's and the draft's GGUFs, its own decode time)" if "llamacpp_draft" in ran else
                 "not its draft-model speculative decoding (`llamacpp_draft` is not in this run's methods, or its "
                 "tool was not built: `make install` builds it)")
        return ("llama.cpp's plain decoding of the target's own GGUF (`llamacpp_ars`: our ArS loop over llama.cpp's "
                "forward, `reproduce/engine/llamacpp_lm.py`), its own prompt-lookup speculative decoding "
                "(`llamacpp_ngram`: llama-cpp-python's `Llama.generate` with `LlamaPromptLookupDecoding`) and "
                f"{draft} are rows of the tables above, timed on the decode loop like ours. Their numerics are the "
                "GGUF's own (quantized weights as stored, llama.cpp's kernels).")
    if not kinds:
        return ("not measured in this run: its methods include none of `llamacpp_ars`, `llamacpp_ngram` and "
                "`llamacpp_draft`. The `llamacpp-peer` profile runs them beside our ArS and SpS on HumanEval greedy "
                "(`make reproduce PROFILE=llamacpp-peer`, its report in reports/llamacpp-peer/).")
    versions = [s.get("versions", {}).get("llama-cpp-python") for s in manifest.get("sessions", [])]
    if not any(versions):
        return ("not measured: llama-cpp-python was not installed when this run ran (`make install` builds it from "
                "source and says why where the build fails); rerunning the run after installing it adds the rows.")
    return "not measured: the run has no rows of " + ", ".join(f"`{k}`" for k in kinds) + "."


def peers(settings: tuple[Setting, ...]) -> Peers:
    """Each Hugging Face peer row beside our loop on its forward (when run) and our loop in the fast runtime."""
    like, stack = [], []
    for s in settings:
        for hf in (r for r in s.rows if METHOD_KINDS[r.method].hf_peer):
            same = [r for r in s.rows if r.draft == hf.draft and r.k == hf.k]
            ours_kind, hf_forward_kind = hf_compared(hf.method)
            forward = next((r for r in same if r.method == hf_forward_kind), None)
            if forward is not None:
                like.append(PeerPair(s.short, forward, hf, hf.ours_hf_forward_vs_hf))
            ours = next((r for r in same if r.method == ours_kind), None)
            if ours is not None:
                stack.append(PeerPair(s.short, ours, hf, hf.ours_vs_hf))
    return Peers(tuple(like), tuple(stack))
