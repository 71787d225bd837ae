"""Section 8, the Hugging Face peers against our loops on the same prompts."""

from __future__ import annotations

from reproduce.catalogue import METHOD_KINDS, hf_compared


def peers_view(groups: list[dict]) -> dict:
    """The Hugging Face peers, like for like first: our ArS / SpS loops over the very HF forward generate() runs
    (ars_hf, sps_hf; only when the config ran them) against HF generate() / assisted generation, which isolates the
    decoding loop; then the stack comparison, our loops in the configured fast runtime against HF, which mixes loop
    and kernels. `ours_over_hf` is HF's ms/token over ours on the same prompts (paired 95% CI; > 1: ours faster)."""
    like, stack = [], []
    for g in groups:
        views = g["views"]
        for hf in (v for v in views if METHOD_KINDS[v["method"]].hf_peer):
            same = [v for v in views if v["draft"] == hf["draft"] and v["k"] == hf["k"]]
            ours_kind, hf_forward_kind = hf_compared(hf["method"])
            hf_forward = next((v for v in same if v["method"] == hf_forward_kind), None)
            if hf_forward is not None:
                like.append({"title": g["title"], "ours": hf_forward, "hf": hf,
                             "ours_over_hf": hf.get("ours_hf_forward_vs_hf")})
            ours = next((v for v in same if v["method"] == ours_kind), None)
            if ours is not None:
                stack.append({"title": g["title"], "ours": ours, "hf": hf, "ours_over_hf": hf.get("ours_vs_hf")})
    return {"like_for_like": like, "stack": stack}
