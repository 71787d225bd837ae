"""Speculative sampling (Chen et al. 2023, Leviathan et al. 2023) reproduced on Hugging Face causal LMs.

Importing this package has no side effects: models load only when asked.
"""

from reproduce.errors import ReproduceError

__all__ = ["ReproduceError"]
