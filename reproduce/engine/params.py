"""Sampling settings: a plain dataclass, torch-free, so experiment plans can hold them without loading the engine."""

from __future__ import annotations

from dataclasses import dataclass

from reproduce.errors import ReproduceError


@dataclass(frozen=True)
class SamplingParams:
    """How logits become a distribution. The same shaping is applied to the target and the draft, so the
    speculative output follows the *shaped* target distribution exactly. temperature == 0 means greedy."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off

    def __post_init__(self):
        if not self.temperature >= 0:  # also rejects NaN
            raise ReproduceError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ReproduceError(f"top-p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.top_k < 0:
            raise ReproduceError(f"top-k must be >= 0 (0 = off), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
