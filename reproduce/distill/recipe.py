"""The recipe of a distilled draft: every setting that defines it (recorded in distill.json). Torch-free, so the
command line can offer each setting as a flag without loading torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Recipe:
    """Everything that defines a distilled draft (recorded in distill.json)."""

    target: str = "smollm2-135m-instruct"
    runtime: str = "auto"  # the target's runtime for teacher data (its numerics are what acceptance is measured on)
    seed: int = 0
    xsum_rows: int = 480  # training prompts drawn from each source
    pubmedqa_rows: int = 64
    code_prompts: int = 128
    heldout_xsum_rows: tuple[int, int] = (980, 1000)  # XSum training-split rows never trained on: the held-out log
    max_prompt_tokens: int = 400
    max_new_tokens: int = 64
    teacher_top_k: int = 32
    vocab_size: int = 8192
    layers: tuple[int, ...] = (0, 1)
    continuation_weight: float = 4.0  # loss weight of continuation positions vs prompt positions
    steps: int = 900
    batch_size: int = 8
    lr: float = 1e-3
    bf16_autocast: bool = True
    eval_every: int = 100
    workers: int = 2
