"""The distilled draft at inference: loading what `python -m reproduce distill` built, with its restricted head.

The draft is saved as a full-vocabulary Llama plus `kept_tokens.pt` (the head's rows) and `distill.json`. In a fast
runtime it runs as reproduce.engine.restricted.RestrictedFastLM: logits only for the kept tokens (and, per prompt, the prompt's own tokens),
-inf elsewhere, which the verification rule handles losslessly. Training lives in reproduce.distill, which the
engine never imports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from reproduce.engine.linear import INT4_MODES
from reproduce.engine.models import LoadedModel
from reproduce.engine.restricted import RestrictedFastLM
from reproduce.engine.runtime import build_lm, resolve_runtime
from reproduce.errors import ReproduceError
from reproduce.offline import cache_dir

FORMAT_VERSION = 2  # bump when the recipe or file layout changes: a cached draft of another version is rebuilt


def distilled_draft_dir(target_name: str) -> Path:
    """Where the distilled draft for `target_name` lives (outside the repository)."""
    return cache_dir() / "drafts" / (re.sub(r"[^A-Za-z0-9_.-]+", "--", target_name) + "-distilled")


def is_built(path: Path) -> bool:
    try:
        return json.loads((path / "distill.json").read_text())["format_version"] == FORMAT_VERSION
    except (OSError, KeyError, ValueError):
        return False


def load_distilled(path: Path, vocab_size: int, runtime: str = "auto"):
    """(LoadedModel, resolved runtime, factory of fresh restricted-head LMs) for a distilled draft directory."""
    path = Path(path)
    if not is_built(path):
        raise ReproduceError(f"no distilled draft at {path}: build it with `make draft` "
                             "(python -m reproduce distill; ~25 min on 2 CPU cores)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else None
    loaded = LoadedModel("distilled", model, tokenizer, str(path))
    runtime = resolve_runtime(runtime, loaded.model, "draft", vocab_size=vocab_size)
    if runtime == "hf":  # e.g. on a GPU: the full-vocabulary model (kept rows trained, the rest the target's)
        return loaded, runtime, lambda: build_lm(loaded.model, vocab_size, runtime)
    kept = torch.load(path / "kept_tokens.pt")
    full_head = loaded.model.lm_head.weight.detach()[:vocab_size].float()

    def new_lm() -> RestrictedFastLM:
        lm = RestrictedFastLM.from_hf(loaded.model, vocab_size, linear_mode=runtime.removeprefix("fast-"))
        int4 = runtime.removeprefix("fast-") in INT4_MODES
        return lm.restrict(kept, full_head, vocab_size, head_mode="int8" if int4 else None)

    return loaded, runtime, new_lm
