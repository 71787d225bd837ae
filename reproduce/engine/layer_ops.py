"""The fast runtime's small ops between the GEMMs, fused in C++ (kernels/layer_ops.cpp): RMSNorm (with the residual
add before it), the attention block of a few new tokens, and SiLU(gate) * up.

At one to nine rows a layer's ~45 torch calls between its four GEMMs cost more in per-call overhead than in
arithmetic (a 0.5B draft: ~4.5 of its 14 ms a token on 2 cores); as four calls they cost ~1 (benchmarks/layer_ops.py).
Each output row is computed by the same code in the same order whatever the call's row count, so a fused forward is
batch-invariant by construction (tests/test_layer_ops.py checks it, and the probe checks every mode's whole forward).
One build (AVX2 + FMA) serves both CPU kinds: the same bits on each. Where it cannot be compiled, FastLlamaLM keeps
torch's ops (the same function, other roundings), and the reason is printed once.
"""

from __future__ import annotations

import functools
import sys

from reproduce.engine import cpp_build
from reproduce.errors import ReproduceError
from reproduce.provenance import cpu_flags


@functools.cache
def _build():
    """The module, or the ReproduceError saying why there is none (printed once: speed and bits depend on it)."""
    built = cpp_build.build_for_cpu("layer_ops", "avx2", cpp_build.AVX2_CFLAGS, cpp_build.AVX2_NEEDS, cpu_flags(),
                                    "the fused layer ops' kernel", "torch's ops serve instead")
    if isinstance(built, ReproduceError):
        print(f"note: {built}", file=sys.stderr)
    return built


def available() -> bool:
    """Whether the fused ops work here (building them first if need be)."""
    return not isinstance(_build(), ReproduceError)


def kernel():
    """The compiled module; a one-line ReproduceError where it cannot be had."""
    return cpp_build.module(_build())


def build_id() -> str | None:
    """What the probe's cache key holds of these ops: the build's digest, None where torch's ops serve."""
    return cpp_build.build_id(_build(), "layer_ops") if available() else None  # a test may turn them off


def fits(hidden: int, intermediate: int, head_dim: int) -> bool:
    """The fused ops work on widths that are multiples of 8 (one AVX2 vector)."""
    return hidden % 8 == 0 and intermediate % 8 == 0 and head_dim % 8 == 0
