"""Choosing how a model's forward runs (its runtime) and building the cached LM the loops call.

Runtimes (catalogue.RUNTIMES): `hf` is Hugging Face's forward (reproduce.engine.lm.CachedLM); `fast-<mode>` the
fast CPU runtime (reproduce.engine.fast_lm.FastLlamaLM) with GEMMs in one linear mode of reproduce.engine.linear;
`llama.cpp` the model's own GGUF in llama.cpp (reproduce.engine.llamacpp_lm.LlamaCppLM); `auto` asks
reproduce.engine.probe which fast mode is best on this CPU for the model's role. The runtime is part of the
target's definition (its numerics): ArS and SpS must be given LMs built with the same runtime.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from reproduce.catalogue import RUNTIMES
from reproduce.engine.fast_lm import FAST_MODEL_TYPES, FastLlamaLM
from reproduce.engine.llamacpp_lm import import_llama_cpp
from reproduce.engine.lm import CachedLM
from reproduce.engine.models import gguf_file
from reproduce.engine.probe import (
    ALPHA_PRIOR,
    KERNEL_ENV,
    PROBE_MODES,
    Choice,
    choose,
    format_choice,
    probe_model,
)
from reproduce.errors import ReproduceError
from reproduce.provenance import aten_held_to_avx2, cpu_flags

_announced: set[tuple] = set()  # (model, role, (k, k_options, draft_ms)) whose choice was printed: once a process


# ONEDNN_MAX_CPU_ISA values below AVX512-BF16: oneDNN's bf16 GEMMs then run without it
ONEDNN_BELOW_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def kernel_env() -> dict[str, str]:
    """The environment variables that hold torch's kernels below the CPU's own instruction set (probe.KERNEL_ENV),
    those set: a run on torch's AVX2 paths of an AVX-512 CPU records them beside the CPU's flags."""
    return {v: os.environ[v] for v in KERNEL_ENV if os.environ.get(v)}


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX, and torch allowed to use it: where bf16 GEMMs are fast even for one row (measured: 2x
    faster than fp32). False on torch's AVX2 paths (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2) of such a CPU."""
    env = kernel_env()
    if aten_held_to_avx2(env.get("ATEN_CPU_CAPABILITY", "")) or \
            env.get("ONEDNN_MAX_CPU_ISA", "").upper() in ONEDNN_BELOW_BF16:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def fast_eligible(model) -> bool:
    """A Llama or Qwen2 model on the CPU: what the fast runtime serves."""
    return model.config.model_type in FAST_MODEL_TYPES and next(model.parameters()).device.type == "cpu"


def llamacpp_eligible(model) -> bool:
    """A model loaded from a GGUF where llama-cpp-python imports: `auto` probes the llama.cpp runtime too. Not a
    draft with a restricted head (drafters.build_drafter marks its model): only the fast runtime computes that."""
    if getattr(model, "gguf_source", None) is None or getattr(model, "restricted_head", False):
        return False
    try:
        import_llama_cpp()
    except ReproduceError:
        return False
    return True


def auto_choice(model, vocab_size: int, role: str = "target", k: int = 4, name: str = "",
                k_options: tuple[int, ...] = (), draft_ms: float = 0.0, alpha: float = ALPHA_PRIOR) -> Choice | None:
    """The probe's choice for `model` in `role` ("target" verifying K drafts, "flattest", or "draft"), for a draft
    costing `draft_ms` a token and accepted at `alpha` (probe.choose); None where only `hf` applies. Printed once per
    process (stderr), with the reason and t(n) of every mode."""
    if not fast_eligible(model):
        return None
    probes = probe_model(model.config, vocab_size)
    if llamacpp_eligible(model):
        from reproduce.engine.llamacpp_probe import probe_gguf

        probes = probes + [probe_gguf(gguf_file(model), vocab_size)]
    choice = choose(probes, role, k, k_options, draft_ms=draft_ms, alpha=alpha)
    key = (model.config.name_or_path, role,
           None if role == "draft" else (k, tuple(k_options), round(draft_ms, 1), alpha))
    if key not in _announced:
        _announced.add(key)
        print(format_choice(f"{name or model.config.model_type} as {role}", choice,
                           None if role == "draft" else choice.k or k),
              file=sys.stderr)
    return choice


def probed_step_ms(model, runtime: str, vocab_size: int, choice: Choice | None = None) -> float | None:
    """The probe's t(1) of `model` (its head `vocab_size` rows) in `runtime`: from `choice` where `auto` chose it,
    else from the (cached) probe of a fast mode `auto` probes; None where nothing probes it (hf, llama.cpp, w3a8)."""
    if choice is None:
        if runtime.removeprefix("fast-") not in PROBE_MODES or not fast_eligible(model):
            return None
        probes = probe_model(model.config, vocab_size)
    else:
        probes = choice.probes  # choice.runtime is `runtime`
    probe = next((p for p in probes if p.runtime == runtime and p.ok), None)
    return probe.ms.get(1) if probe else None


def resolve_choice(runtime: str, model, role: str = "target", k: int = 4, vocab_size: int | None = None,
                   name: str = "", k_options: tuple[int, ...] = (), draft_ms: float = 0.0,
                   alpha: float = ALPHA_PRIOR) -> tuple[str, Choice | None]:
    """(a concrete runtime, the probe's Choice behind it or None): `runtime` itself, or for `auto` and
    `auto-flattest` the probe's choice for a draft costing `draft_ms` accepted at `alpha` (hf for models the fast
    runtime does not serve)."""
    if runtime not in RUNTIMES:
        raise ReproduceError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if not runtime.startswith("auto"):
        return runtime, None
    if runtime == "auto-flattest":
        role = "flattest"
    choice = auto_choice(model, vocab_size or model.config.vocab_size, role, k, name, k_options, draft_ms, alpha)
    return ("hf", None) if choice is None else (choice.runtime, choice)


def resolve_runtime(runtime: str, model, role: str = "target", k: int = 4, vocab_size: int | None = None,
                    name: str = "") -> str:
    """resolve_choice's runtime alone."""
    return resolve_choice(runtime, model, role, k, vocab_size, name)[0]


def build_lm(model, vocab_size: int, runtime: str = "auto", role: str = "target", k: int = 4):
    """The cached LM the engine calls: Hugging Face's forward (CachedLM), FastLlamaLM, or LlamaCppLM. `model` is a
    loaded Hugging Face model, or for llama.cpp also a GGUF path (models.gguf_file finds a loaded model's)."""
    if isinstance(model, (str, Path)):
        if runtime not in ("llama.cpp", "auto"):
            raise ReproduceError(f"a GGUF path runs in runtime llama.cpp, not {runtime!r}: load it with load_model")
        runtime = "llama.cpp"
    runtime = resolve_runtime(runtime, model, role, k, vocab_size)
    if runtime == "llama.cpp":
        from reproduce.engine.llamacpp_lm import LlamaCppLM

        return LlamaCppLM.load(model if isinstance(model, (str, Path)) else gguf_file(model), vocab_size)
    if runtime == "hf":
        return CachedLM(model, vocab_size)
    return FastLlamaLM.from_hf(model, vocab_size, linear_mode=runtime.removeprefix("fast-"))


def build_target(loaded, runtime: str = "auto", k: int = 4) -> tuple[str, object]:
    """(resolved runtime, cached LM) of a loaded target (reproduce.engine.models.LoadedModel) verifying K drafts,
    as the command line builds it (the experiment runner's ModelPool also keeps the probe's choice per role)."""
    runtime = resolve_runtime(runtime, loaded.model, "target", k, loaded.vocab_size, loaded.name)
    return runtime, build_lm(loaded.model, loaded.vocab_size, runtime)
