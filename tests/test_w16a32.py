"""The w16a32 kernel (reproduce/engine/kernels/w16a32.cpp): arithmetic against a float64 product of the bf16 weights,
bitwise batch invariance over one and several passes of rows, the same bits for outputs computed side by side or
alone and on one thread or two, and the one-line errors where it cannot run. One AVX2 + FMA build serves both CPU
kinds, so nothing here depends on AVX-512. Speed is benchmarks/w16a32_kernel.py's, not a test's."""

from __future__ import annotations

import pytest
import torch

from reproduce.engine import w16a32
from reproduce.engine.linear import W16A32Linear, make_linear
from reproduce.errors import ReproduceError


@pytest.fixture
def fresh_build():
    """The build looked up anew, before and after (a test's monkeypatched CPU must not leak; list it before
    monkeypatch, so that its teardown runs after monkeypatch's)."""
    w16a32._build.cache_clear()
    yield
    w16a32._build.cache_clear()


def reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The product the kernel approximates in fp32 sums: fp32 activations times the weights rounded to bf16, float64."""
    return x.double() @ weight.to(torch.bfloat16).double().T


@pytest.mark.parametrize("out_features, in_features", [(1, 16), (13, 64), (40, 96), (2048, 1536), (1536, 8960)])
def test_kernel_computes_the_bf16_product(out_features, in_features):
    generator = torch.Generator().manual_seed(out_features)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.02
    x = torch.randn(6, in_features, generator=generator)  # 6 rows: more than one pass of 4
    linear = make_linear(weight, "w16a32")
    assert isinstance(linear, W16A32Linear)
    out = linear(x)
    assert out.shape == (6, out_features) and out.dtype == torch.float32
    expected = reference(x, weight)
    # fp32 sums of exact products (bf16 x fp32 fits fp32's mantissa): their rounding apart, ~1e-6 of the scale, while
    # a wrong interleave of rows or inputs, or a lost odd input, is off by the size of the outputs
    assert torch.allclose(out.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert not torch.allclose(out.double(), x.double() @ weight.double().T, rtol=1e-6, atol=0)  # bf16 weights


def test_rows_are_bitwise_independent_of_the_row_count():
    """Row i of an n-row call equals the one-row call, for n in one pass (4 rows) and over several (up to 13)."""
    generator = torch.Generator().manual_seed(1)
    linear = make_linear(torch.randn(72, 1536, generator=generator) * 0.02, "w16a32")
    x = torch.randn(13, 1536, generator=generator)
    single = torch.cat([linear(x[i : i + 1]) for i in range(13)])
    for n in range(2, 14):
        assert torch.equal(linear(x[:n]), single[:n]), n
    assert not torch.equal(single[0], single[1])  # the rows differ: the check compares something


def test_outputs_side_by_side_or_alone_give_the_same_bits():
    """One row computes 4 outputs side by side, two rows 2, more rows 1 (and leftovers fewer): each output's bits
    are the same whichever, so a weight cut to its first 1..7 rows gives those rows' outputs bitwise."""
    generator = torch.Generator().manual_seed(4)
    weight = torch.randn(7, 256, generator=generator) * 0.02
    x = torch.randn(6, 256, generator=generator)
    whole = make_linear(weight, "w16a32")(x)
    for rows in range(1, 7):
        assert torch.equal(make_linear(weight[:rows], "w16a32")(x), whole[:, :rows]), rows


def test_threads_do_not_change_the_bits():
    generator = torch.Generator().manual_seed(2)
    linear = make_linear(torch.randn(1000, 896, generator=generator) * 0.02, "w16a32")
    x = torch.randn(5, 896, generator=generator)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = linear(x)
        torch.set_num_threads(2)
        two = linear(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_a_changed_weight_changes_its_output_row_only():
    """Negative control for the indexing: one weight changed moves exactly the output it belongs to (row 11 of 13,
    in the last block of 4, a partial one), so the checks above would see a misplaced weight."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(13, 64, generator=generator) * 0.02
    x = torch.randn(3, 64, generator=generator)
    before = make_linear(weight, "w16a32")(x)
    changed = weight.clone()
    changed[11, 37] += 1.0
    after = make_linear(changed, "w16a32")(x)
    moved = (before != after).any(dim=0)
    assert moved.tolist() == [i == 11 for i in range(13)]


def test_odd_widths_and_a_cpu_without_avx2_get_one_line(fresh_build, monkeypatch):
    with pytest.raises(ReproduceError, match="multiples of 16.*fast-bf16") as raised:
        make_linear(torch.randn(16, 40), "w16a32")
    assert "\n" not in str(raised.value)
    monkeypatch.setattr(w16a32, "cpu_flags", lambda: {"sse2", "sse4_2"})
    w16a32._build.cache_clear()  # built above, on this CPU's flags
    with pytest.raises(ReproduceError, match="avx2, fma, which.*fast-bf16"):
        make_linear(torch.randn(8, 32), "w16a32")
    assert not w16a32.available()


def test_a_failed_build_gets_one_line_naming_the_fix(fresh_build, monkeypatch, tmp_path):
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path))
    monkeypatch.setattr(w16a32, "CFLAGS", [*w16a32.CFLAGS, "-include", "no/such/header.h"])
    with pytest.raises(ReproduceError) as raised:
        w16a32.kernel()
    message = str(raised.value)
    assert "could not compile the w16a32 kernel" in message and "fast-bf16" in message and "\n" not in message
    assert "no/such/header.h" in message  # the compiler's own reason


def test_the_kernel_benchmark_times_every_kernel_at_every_row_count():
    """benchmarks.w16a32_kernel's (and w4a8_kernel's) timing loop on tiny stacks: a time for every kernel and row
    count, each positive (speed itself is the benchmark's to print, not a test's to check)."""
    from benchmarks.w4a8_kernel import ROWS, best_pass_ms

    shapes = [(16, 32), (8, 64)]
    generator = torch.Generator().manual_seed(5)
    kernels = {mode: [make_linear(torch.randn(shape, generator=generator), mode) for shape in shapes]
               for mode in ("w16a32", "int8")}
    best = best_pass_ms(kernels, shapes, generator)
    assert set(best) == {(mode, rows) for mode in kernels for rows in ROWS}
    assert all(ms > 0 for ms in best.values())
