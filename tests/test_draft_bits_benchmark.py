"""benchmarks/draft_bits.py's grid: its 4-bit row must be the runtime's int4 grid (reproduce.engine.linear.int4_grid),
or the acceptance it compares other widths against is not the draft that runs; fewer bits must round coarser."""

from __future__ import annotations

import torch

from benchmarks.draft_bits import fake_quantized
from reproduce.engine.linear import int4_grid


def test_the_4_bit_grid_is_the_runtimes_and_fewer_bits_round_coarser():
    weight = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    codes, scales, zeros = int4_grid(weight)
    runtime = ((codes.float().reshape(64, 4, 32) - 8) * scales[..., None] + zeros[..., None]).reshape(64, 128)
    assert torch.allclose(fake_quantized(weight, 4, 32), runtime, rtol=0, atol=1e-5)
    errors = {bits: (fake_quantized(weight, bits, 32) - weight).abs().mean().item() for bits in (2, 3, 4, 8)}
    assert errors[8] < errors[4] < errors[3] < errors[2]
    assert len(torch.unique(fake_quantized(weight, 3, 32)[0, :32])) <= 8  # 3 bits: at most 8 levels a group
    assert (fake_quantized(weight, 3, 64) - weight).abs().mean() > errors[3]  # a wider group rounds coarser
