"""The w16a32 linear mode's kernel (kernels/w16a32.cpp): bf16 weights times fp32 activations, for calls of a few rows.

Why: the paper's regime needs a target whose verification is flat (scoring K+1 tokens costs about one) next to a
draft that costs little. On an AVX-512 BF16 CPU torch's bf16 GEMMs are that target; on AVX2 they are not (t(9)/t(1)
~4.1 on torch's AVX2 paths: each row is converted and multiplied on its own), and int8, the flattest mode there, rose
to t(4)/t(1) = 1.43 (reports/paper-regime-avx2). This kernel reads the bf16 weights once for up to 4 rows with plain
FMAs, so one row costs what its bytes cost and four little more (`python -m benchmarks.w16a32_kernel`).

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

CFLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp"]
NEEDS = ("avx2", "fma")
TILE_ROWS = 8  # output rows interleaved in one tile (the kernel's R)


@functools.cache
def _build():
    """The module, or the ReproduceError saying why there is none."""
    flags = cpu_flags()
    missing = [flag for flag in NEEDS if flags and flag not in flags]
    if missing:
        return ReproduceError(f"linear mode w16a32 needs {', '.join(missing)}, which this CPU lacks: use runtime "
                              "fast-bf16")
    return cpp_build.compile_extension("w16a32", "avx2", CFLAGS, "use runtime fast-bf16")


def kernel():
    """The compiled module; a one-line ReproduceError where this machine cannot have it."""
    return cpp_build.module(_build())


def available() -> bool:
    """Whether kernel() works here (building it first if need be)."""
    return not isinstance(_build(), ReproduceError)


def build_id() -> str | None:
    """What the probe's cache key holds of this kernel: the build's digest, None if none."""
    return cpp_build.build_id(_build(), "w16a32")


def pack(weight: torch.Tensor) -> torch.Tensor:
    """The kernel's tiles (uint8, flat) from weight [out, in] (any float dtype, rounded to bf16): per tile of
    TILE_ROWS output rows, per pair of inputs, the rows' two bf16 weights side by side. Rows are padded with zeros to
    a multiple of TILE_ROWS."""
    out_features, in_features = weight.shape
    if in_features % 2:
        raise ReproduceError(f"linear mode w16a32 needs an even number of layer inputs, this model has {in_features}: "
                             "use runtime fast-bf16")
    w = weight.detach().to(torch.bfloat16)
    pad = -out_features % TILE_ROWS
    if pad:
        w = torch.cat([w, w.new_zeros(pad, in_features)])
    tiles = w.reshape(-1, TILE_ROWS, in_features // 2, 2).permute(0, 2, 1, 3)  # [tile, pair, row, 2]
    return tiles.contiguous().view(torch.uint8).reshape(-1)


def w16a32_mm(x: torch.Tensor, tiles: torch.Tensor, out_features: int) -> torch.Tensor:
    """x [n, in] (any float dtype) times the packed weight: fp32 [n, out_features]."""
    return kernel().w16a32_mm(x.float().contiguous(), tiles, out_features)
