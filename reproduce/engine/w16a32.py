"""The w16a32 linear mode's kernel (kernels/w16a32.cpp): bf16 weights times fp32 activations, for calls of a few rows.

Why: the paper's regime needs a target whose verification is flat (scoring K+1 tokens costs about one) next to a
draft that costs little. On an AVX-512 BF16 CPU torch's bf16 GEMMs are that target; on AVX2 they are not (t(9)/t(1)
~4.1 on torch's AVX2 paths: each row is converted and multiplied on its own), and int8, the flattest mode there, rose
to t(4)/t(1) = 1.43 (reports/paper-regime-avx2). This kernel reads the bf16 weights once for up to 4 rows with plain
FMAs, so one row costs what its bytes cost and four little more (`python -m benchmarks.w16a32_kernel`). It reads the
plain row-major bf16 weight, the bf16 mode's tensor, so a Hugging Face model kept for the peers shares it (one copy
of the weights in memory, not two: a run holding both measured 8.1 GiB).

Its numerics: the model's bf16 weights exactly, activations in fp32 (not rounded to bf16 as the bf16 mode's are),
fp32 sums in a fixed order, so it is batch-invariant by construction (tests/test_w16a32.py). One AVX2 + FMA build
serves both CPU kinds with the same bits; it is compiled on first use (reproduce.engine.cpp_build).
"""

from __future__ import annotations

import functools

import torch

from reproduce.engine import cpp_build
from reproduce.errors import ReproduceError
from reproduce.provenance import cpu_flags

CFLAGS = cpp_build.AVX2_CFLAGS
INPUT_MULTIPLE = 16  # inputs a weight load holds


@functools.cache
def _build():
    """The module, or the ReproduceError saying why there is none."""
    return cpp_build.build_for_cpu("w16a32", "avx2", CFLAGS, cpp_build.AVX2_NEEDS, cpu_flags(), "linear mode w16a32",
                                   "use runtime fast-bf16")


def kernel():
    """The compiled module; a one-line ReproduceError where this machine cannot have it."""
    return cpp_build.module(_build())


def available() -> bool:
    """Whether kernel() works here (building it first if need be)."""
    return not isinstance(_build(), ReproduceError)


def build_id() -> str | None:
    """What the probe's cache key holds of this kernel: the build's digest, None if none."""
    return cpp_build.build_id(_build(), "w16a32")


def check_width(in_features: int) -> None:
    """A one-line error for widths the kernel does not take (it reads 16 inputs a load)."""
    if in_features % INPUT_MULTIPLE:
        raise ReproduceError(f"linear mode w16a32 needs layer inputs in multiples of {INPUT_MULTIPLE}, this model has "
                             f"{in_features}: use runtime fast-bf16")


def w16a32_mm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [n, in] (any float dtype) times weight [out, in] (bf16, contiguous): fp32 [n, out]."""
    return kernel().w16a32_mm(x.float().contiguous(), weight)
