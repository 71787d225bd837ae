"""The fast runtime's GEMM weights, one class per numerics ("linear mode"): fp32, bf16, weight-only int8 and int4,
int4 weights with int8 activations (w4a8, this project's kernel: reproduce.engine.w4a8) and bf16 weights with fp32
activations (w16a32, this project's too: reproduce.engine.w16a32).

Each holds one weight [out_features, in_features] in its own format and maps fp32 activations [n, in] to fp32
outputs [n, out]. The mode is part of a target's definition: the ArS baseline and SpS must use the same object.

Batch invariance (row i of an n-row call bitwise equal to a one-row call) is what makes greedy SpS emit exactly
ArS's tokens. It is a property of the CPU's kernel, not of the format, so it is measured, not assumed:
reproduce.engine.probe checks every mode on the model's own shapes, and `runtime: auto` only picks a mode that
passed there. What we measured (notes/runtimes.md):
- fp32 `F.linear` (MKL / oneDNN): rows depend on the row count on the CPUs we tried;
- bf16 `F.linear`: invariant on AVX2 paths; on AVX512-BF16 (oneDNN) invariant for inner dimensions up to at least
  1024 but not 1536, hence the input chunks of at most BF16_CHUNK_INPUTS below;
- int8 (`_weight_int8pack_mm`) and int4 (`_weight_int4pack_mm_for_cpu`): invariant on both; they read 1/2 and
  ~1/3 of bf16's bytes, which is what a memory-bound single-token call costs;
- w4a8: int4's bytes, invariant by construction (its AVX2 and AVX-512 builds give the same bits); its weights are
  read once for up to 4 rows, 8 in the AVX-512 build (t(4)/t(1) ~1.3 for the target's GEMMs, against int4's 1.2-1.7
  and 2.1-3.3 at 5 rows);
- w16a32: bf16's bytes, invariant by construction (one build for both CPU kinds); its weights are read once for up
  to 4 rows, the flat verification the paper's regime needs where torch's bf16 is not flat (AVX2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reproduce.catalogue import LINEAR_MODES
from reproduce.engine import w4a8, w16a32
from reproduce.errors import ReproduceError

INT4_MODES = ("int4", "w4a8", "w3a8")  # int4 (or int3) weights: the head stays in int8
KERNEL_BITS = {"w4a8": 4, "w3a8": 3}  # the w4a8 kernel's modes: bits a weight code
# modes whose linears hold the model's bf16 weight tensor as it is (.weight): a Hugging Face model shares it
BF16_WEIGHT_MODES = ("bf16", "w16a32")

# bf16: the most inputs one GEMM call sums over. On the AVX512-BF16 CPU we measured, a bf16 GEMM's rows flip by an
# ulp with the row count for 1536 inputs but not for <= 1024: a wider GEMM is computed as a sum of <= 768-input GEMMs
BF16_CHUNK_INPUTS = 768

# int4: one scale and one zero per group of inputs. 32 is the sub-block of GGUF's Q4_K, the format of the offline
# Qwen2.5-Coder target, so its 4-bit weights land on the same grid; it measured as fast as 128 (notes/runtimes.md).
# The w4a8 kernel is built for this group size, so its constant is the one definition
INT4_GROUP = w4a8.GROUP


@dataclass(frozen=True)
class Fp32Linear:
    weight: torch.Tensor  # [out, in] fp32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


@dataclass(frozen=True)
class Bf16Linear:
    """Inputs rounded to bf16, fp32 accumulation inside the kernel, output rounded to bf16; more than
    BF16_CHUNK_INPUTS inputs are cut into chunks (views of one tensor, so a Hugging Face model can share it) whose
    bf16 outputs are summed in fp32, in a fixed order."""

    weight: torch.Tensor  # [out, in] bf16

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.bfloat16)
        inputs = self.weight.shape[1]
        out = None
        for start in range(0, inputs, BF16_CHUNK_INPUTS):
            end = min(start + BF16_CHUNK_INPUTS, inputs)
            part = F.linear(x[:, start:end], self.weight[:, start:end]).float()
            out = part if out is None else out + part
        return out


@dataclass(frozen=True)
class Int8Linear:
    """Weight-only int8: one bf16 scale per output row (symmetric), bf16 activations (gpt-fast's int8)."""

    weight: torch.Tensor  # [out, in] int8
    scales: torch.Tensor  # [out] bf16

    @classmethod
    def quantize(cls, weight: torch.Tensor, chunk_rows: int = 8192) -> "Int8Linear":
        """Row by row (in chunks: a 151,936-row head in fp32 at once was a 0.9 GB peak; rows are independent, so
        chunking changes no bit)."""
        quantized, scales = [], []
        for rows in weight.split(chunk_rows):
            rows = rows.float()
            row_scales = rows.abs().amax(dim=1).clamp(min=1e-8) / 127  # [rows]
            quantized.append((rows / row_scales[:, None]).round().clamp(-127, 127).to(torch.int8))
            scales.append(row_scales)
        return cls(torch.cat(quantized).contiguous(), torch.cat(scales).to(torch.bfloat16))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16).contiguous(), self.weight, self.scales).float()


def int4_grid(weight: torch.Tensor, bits: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 (or `bits`) per group of INT4_GROUP inputs: (codes [out, in] int32 in 0..2^bits - 1, scales
    and zeros [out, in / INT4_GROUP] fp32) with w = (q - 2^(bits-1)) * scale + zero, the grid of the int4 modes
    (and of w3a8 at 3 bits)."""
    out_features, in_features = weight.shape
    if in_features % INT4_GROUP:
        raise ReproduceError(f"int4 needs layer inputs in multiples of {INT4_GROUP}, this model has "
                             f"{in_features}: use runtime fast-int8")
    groups = weight.float().reshape(out_features, in_features // INT4_GROUP, INT4_GROUP)
    low, high = groups.amin(-1), groups.amax(-1)
    levels, mid = 2**bits - 1, 2 ** (bits - 1)
    scales = ((high - low) / levels).clamp(min=1e-8)  # [out, groups]
    codes = ((groups - low[..., None]) / scales[..., None]).round().clamp(0, levels).to(torch.int32)
    return codes.reshape(out_features, in_features).contiguous(), scales, low + mid * scales  # kernels subtract mid


@dataclass(frozen=True)
class Int4Linear:
    """Weight-only int4, asymmetric per group of INT4_GROUP inputs: w = (q - 8) * scale + zero with q in 0..15,
    packed by torch's CPU kernel (as gpt-fast and torchao use it); bf16 activations and output."""

    packed: torch.Tensor  # [out, in / 2] uint8
    scales_and_zeros: torch.Tensor  # [in / group, out, 2] bf16

    @classmethod
    def quantize(cls, weight: torch.Tensor) -> "Int4Linear":
        codes, scales, zeros = int4_grid(weight)
        scales_and_zeros = torch.stack([scales, zeros], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
        return cls(torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 2), scales_and_zeros)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.bfloat16).contiguous()
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP, self.scales_and_zeros).float()


@dataclass(frozen=True)
class W4A8Linear:
    """Int4Linear's weights (the same grid) in reproduce.engine.w4a8's kernel: activations rounded to int8 per group
    of 32 inputs (scale max |x| / 127), integer dot products, fp32 output."""

    tiles: torch.Tensor  # uint8, w4a8.pack's layout
    out_features: int
    bits: int = 4  # 3: the w3a8 mode (int4_grid at 3 bits, the same kernel)

    @classmethod
    def quantize(cls, weight: torch.Tensor, bits: int = 4) -> "W4A8Linear":
        grid = int4_grid(weight, bits)
        w4a8.kernel()  # fail here, in one line, where the kernel cannot be built: not at the first token
        return cls(w4a8.pack(*grid, bits=bits), weight.shape[0], bits)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return w4a8.w4a8_mm(x, self.tiles, self.out_features, self.bits)


@dataclass(frozen=True)
class W16A32Linear:
    """bf16 weights (Bf16Linear's tensor, shareable with a Hugging Face model) in reproduce.engine.w16a32's kernel:
    fp32 activations and sums, fp32 output."""

    weight: torch.Tensor  # [out, in] bf16

    @classmethod
    def from_weight(cls, weight: torch.Tensor) -> "W16A32Linear":
        w16a32.check_width(weight.shape[1])
        w16a32.kernel()  # fail here, in one line, where the kernel cannot be built: not at the first token
        return cls(weight.detach().to(torch.bfloat16).contiguous())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return w16a32.w16a32_mm(x, self.weight)


def make_linear(weight: torch.Tensor, mode: str, head: bool = False):
    """`weight` [out, in] (any float dtype) in linear mode `mode`. The int4 modes keep the head in int8: the head
    is the most sensitive layer (GGUF's Q4_K_M stores it in 6 bits) and a small share of the bytes."""
    if mode == "fp32":
        return Fp32Linear(weight.detach().float().contiguous())
    if mode == "bf16":
        return Bf16Linear(weight.detach().to(torch.bfloat16).contiguous())
    if mode == "int8" or (mode in INT4_MODES and head):
        return Int8Linear.quantize(weight.detach())
    if mode == "int4":
        return Int4Linear.quantize(weight.detach())
    if mode == "w16a32":
        return W16A32Linear.from_weight(weight)
    if mode in KERNEL_BITS:
        return W4A8Linear.quantize(weight.detach(), KERNEL_BITS[mode])
    raise ReproduceError(f"unknown linear_mode {mode!r}: choose one of {', '.join(LINEAR_MODES)}")
