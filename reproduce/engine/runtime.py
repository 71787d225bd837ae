"""Choosing a runtime for a model: Hugging Face's forward (CachedLM) or the fast CPU runtime (FastLlamaLM).

The runtime is part of the target's definition (its numerics): ArS and SpS must be given LMs built with the same
runtime. Runtime names are catalogue.RUNTIMES.
"""

from __future__ import annotations

from reproduce.catalogue import RUNTIMES
from reproduce.engine.fast_lm import FAST_MODEL_TYPES, FastLlamaLM
from reproduce.engine.lm import CachedLM
from reproduce.errors import ReproduceError


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: where bf16 GEMMs are fast even for one row (measured: 2x faster than fp32)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_runtime(runtime: str, model) -> str:
    """'auto' -> fast-bf16 for a Llama or Qwen2 model on a CPU with native bf16, fast-fp32 for one without, else hf."""
    if runtime not in RUNTIMES:
        raise ReproduceError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime != "auto":
        return runtime
    on_cpu = next(model.parameters()).device.type == "cpu"
    if model.config.model_type not in FAST_MODEL_TYPES or not on_cpu:
        return "hf"
    return "fast-bf16" if cpu_has_native_bf16() else "fast-fp32"


def build_lm(model, vocab_size: int, runtime: str = "auto"):
    """The cached LM the engine calls: Hugging Face's forward (CachedLM) or FastLlamaLM. The runtime is part of
    the target's definition (its numerics): ArS and SpS must be given LMs built with the same runtime."""
    runtime = resolve_runtime(runtime, model)
    if runtime == "hf":
        return CachedLM(model, vocab_size)
    return FastLlamaLM.from_hf(model, vocab_size, linear_mode=runtime.removeprefix("fast-"))


def build_target(loaded, runtime: str = "auto") -> tuple[str, object]:
    """(resolved runtime, cached LM) of a loaded target (reproduce.engine.models.LoadedModel): the one assembly
    the command line and the experiment runner share."""
    runtime = resolve_runtime(runtime, loaded.model)
    return runtime, build_lm(loaded.model, loaded.vocab_size, runtime)
