"""The Hugging Face peers against our loops on the same prompts, like for like first."""

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
