"""The w4a8 linear mode's kernel (kernels/w4a8.cpp): int4 weights times int8 activations, for calls of a few rows.

torch's own int4 kernel (`_weight_int4pack_mm_for_cpu`) streams its weights well below what two cores can and gets
dearer with every row: its GEMMs for 5 rows cost 2.1x one row (3.3x on torch's AVX2 paths). This kernel, llama.cpp's
scheme (8 output rows interleaved, activations rounded to int8 per group of 32, integer dot products, the weights
read once for up to 4 rows), measured on the Qwen2.5-Coder target's shapes 1.8x faster than torch's for one row and
1.6x for four natively, 2.1x and 2.7x on torch's AVX2 paths (`python -m benchmarks.w4a8_kernel`; README "Our int4
kernel"). Its weights are Int4Linear's grid, so only the activations' rounding differs.

It is built for one of two instruction sets (ISAS): AVX2 + FMA, or AVX-512 VNNI where the CPU has it (half the
instructions a group, and the weights read once for up to 8 rows, not 4: one row is near the memory's limit in
either build, so the gain is at 5-6 rows). Both compute every integer dot product exactly and the same float
operations in the same order, so they give the same bits (tests/test_w4a8.py compares them), as do any thread counts
(threads split the output rows). It is compiled on first use (reproduce.engine.cpp_build). Row i of an n-row call is
bitwise the one-row call (every output's arithmetic is the same whatever n is); the probe checks it anyway.
"""

from __future__ import annotations

import functools
import os

import torch

from reproduce.engine import cpp_build
from reproduce.errors import ReproduceError
from reproduce.provenance import aten_held_to_avx2, cpu_flags

# ISA -> (compiler flags, /proc/cpuinfo's names of what they let the compiler use)
ISAS = {
    "avx2": (cpp_build.AVX2_CFLAGS, cpp_build.AVX2_NEEDS),
    "avx512": ((*cpp_build.AVX2_CFLAGS, "-mavx512f", "-mavx512bw", "-mavx512vnni", "-DW4A8_AVX512"),
               (*cpp_build.AVX2_NEEDS, "avx512f", "avx512bw", "avx512_vnni")),
}
GROUP = 32  # inputs per scale and zero (the kernel's G; linear.INT4_GROUP, the int4 grid's group, is this)
TILE_ROWS = 8  # output rows interleaved in one tile (the kernel's R)


def wanted_isa(flags: set[str], capability: str) -> str:
    """avx512 where the CPU has what that build needs and torch is not held to its AVX2 paths (`capability`, the
    ATEN_CPU_CAPABILITY variable, avx2 or default: a run standing in for an AVX2 CPU on an AVX-512 one gets the AVX2
    build too), else avx2."""
    if aten_held_to_avx2(capability):
        return "avx2"
    return "avx512" if all(flag in flags for flag in ISAS["avx512"][1]) else "avx2"


def isa() -> str:
    """The build this process uses: wanted_isa's, or avx2 (the same bits) where the avx512 build cannot be compiled
    (an old compiler, say). Cheap after the first call: every GEMM asks."""
    return _isa(os.environ.get("ATEN_CPU_CAPABILITY", ""))


@functools.cache
def _isa(capability: str) -> str:
    which = wanted_isa(cpu_flags(), capability)
    if which == "avx512" and isinstance(_build("avx512"), ReproduceError):
        return "avx2"
    return which


def kernel(which: str | None = None):
    """The compiled extension module for ISA `which` (default: isa()); a one-line ReproduceError where this CPU or
    machine cannot have it (kept: a failed build is not retried in the same process)."""
    return cpp_build.module(_build(which or isa()))


def available(which: str | None = None) -> bool:
    """Whether kernel(which) works here (building it first if need be)."""
    return not isinstance(_build(which or isa()), ReproduceError)


def build_id() -> str | None:
    """What the probe's cache key holds of this kernel: the ISA and the digest of the build in use, None if none."""
    return cpp_build.build_id(_build(isa()), "w4a8")


@functools.cache
def _build(which: str):
    """The module for ISA `which`, or the ReproduceError saying why there is none."""
    if which not in ISAS:
        return ReproduceError(f"no w4a8 build {which!r}: choose one of {', '.join(ISAS)}")
    cflags, needs = ISAS[which]
    fix = "use runtime fast-int4" if which == "avx2" else "the avx2 build gives the same bits"
    # where /proc/cpuinfo cannot be read, the AVX2 build is tried (the compiler or the probe tells); AVX-512 is not
    return cpp_build.build_for_cpu("w4a8", which, cflags, needs, cpu_flags(), f"linear mode w4a8 ({which})", fix,
                                   try_unknown=which == "avx2")


def pack(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """The kernel's tiles (uint8, flat) from linear.int4_grid's grid: codes [out, in] in 0..2^bits - 1, scales and
    zeros [out, in / GROUP] (w = (q - 2^(bits-1)) * scale + zero), bits 4 (Int4Linear's grid) or 3. Rows are padded
    with zeros to a multiple of TILE_ROWS."""
    if bits not in (3, 4):
        raise ReproduceError(f"the kernel packs weights of 4 or 3 bits, not {bits}")
    out_features, in_features = codes.shape
    pad = -out_features % TILE_ROWS
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad, in_features)])
        scales, zeros = torch.cat([scales, scales.new_zeros(pad, scales.shape[1])]), \
            torch.cat([zeros, zeros.new_zeros(pad, zeros.shape[1])])
    tiles, groups = codes.shape[0] // TILE_ROWS, in_features // GROUP
    c = codes.to(torch.uint8).reshape(tiles, TILE_ROWS, groups, GROUP).permute(0, 2, 1, 3)  # [tile, group, row, 32]
    # code vector s of a group: 4 bytes per row, row r's codes at inputs 4s..4s+3 (byte 4r + b: input 4s + b)
    vectors = c.reshape(tiles, groups, TILE_ROWS, 8, 4).permute(0, 1, 3, 2, 4).reshape(tiles, groups, 8, 32)
    if bits == 4:  # vector i: code vectors i and 4 + i in its low and high nibbles
        packed = (vectors[:, :, :4] | (vectors[:, :, 4:] << 4)).reshape(tiles, groups, 4 * 32)
    else:  # vector p (0, 1): code vectors p, p + 2, p + 4, p + 6 in its 2-bit fields; then the 8 vectors' high bits
        low = vectors & 3
        fields = [sum(low[:, :, p + 2 * j] << (2 * j) for j in range(4)) for p in (0, 1)]
        high = sum(((vectors[:, :, s] >> 2) & 1) << s for s in range(8))
        packed = torch.stack([*fields, high], 2).to(torch.uint8).reshape(tiles, groups, 3 * 32)

    def per_tile(values: torch.Tensor) -> torch.Tensor:  # [rows, groups] -> [tile, group, 8 bf16 as 16 bytes]
        grouped = values.to(torch.bfloat16).reshape(tiles, TILE_ROWS, groups).permute(0, 2, 1).contiguous()
        return grouped.view(torch.uint8).reshape(tiles, groups, 2 * TILE_ROWS)

    return torch.cat([packed, per_tile(scales), per_tile(zeros)], -1).reshape(-1).contiguous()


def w4a8_mm(x: torch.Tensor, tiles: torch.Tensor, out_features: int, bits: int = 4) -> torch.Tensor:
    """x [n, in] (any float dtype) times the weight packed with `bits` a code: fp32 [n, out_features]."""
    return kernel().w4a8_mm(x.float().contiguous(), tiles, out_features, bits)
