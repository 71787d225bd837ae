"""The w4a8 kernel (reproduce/engine/kernels/w4a8.cpp), both of its builds (AVX2 and AVX-512 VNNI): packing and
arithmetic against a float64 reference of the same quantization, the two builds' bitwise equality, bitwise batch
invariance over one and several passes of rows, padding of output rows, which build a process picks, and the one-line
errors where it cannot run; each for 4-bit weights (w4a8) and 3-bit ones (w3a8, the same kernel and grid at 3 bits).
Speed is benchmarks/w4a8_kernel.py's, not a test's."""

from __future__ import annotations

import pytest
import torch

from reproduce.engine import w4a8
from reproduce.engine.linear import W4A8Linear, int4_grid, make_linear
from reproduce.errors import ReproduceError
from reproduce.provenance import cpu_flags

HAS_VNNI = all(flag in cpu_flags() for flag in w4a8.ISAS["avx512"][1])
# A skip here leaves the AVX-512 build's arithmetic, batch invariance and equality to the AVX2 build unchecked on this
# CPU (the AVX2 build is checked everywhere); machines with AVX-512 VNNI (the CI's and other sessions') check it.
needs_vnni = pytest.mark.skipif(not HAS_VNNI, reason="CPU lacks AVX-512 VNNI: the avx512 build of the w4a8 kernel "
                                "(its arithmetic, batch invariance and equality to the avx2 build) is left unchecked")
ISA_PARAMS = [pytest.param("avx2"), pytest.param("avx512", marks=needs_vnni)]
MODES = pytest.mark.parametrize("mode", ["w4a8", "w3a8"])
BITS = {"w4a8": 4, "w3a8": 3}


@pytest.fixture
def fresh_builds():
    """Builds and the ISA choice looked up anew, before and after (a test's monkeypatched CPU or flags must not leak;
    list it before monkeypatch, so that its teardown runs after monkeypatch's)."""
    w4a8._build.cache_clear()
    w4a8._isa.cache_clear()
    yield
    w4a8._build.cache_clear()
    w4a8._isa.cache_clear()


def run(linear: W4A8Linear, x: torch.Tensor, which: str) -> torch.Tensor:
    return w4a8.kernel(which).w4a8_mm(x.float().contiguous(), linear.tiles, linear.out_features, linear.bits)


def reference(x: torch.Tensor, weight: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """What the kernel computes, in float64. The grid's weight is w = q * scale + (zero - mid * scale), mid =
    2^(bits-1) (scale and zero rounded to bf16, as stored); the first term meets the activations rounded to int8 per
    group of 32 (half to even), the second their exact sum."""
    codes, scales, zeros = int4_grid(weight, bits)
    scales, zeros = scales.to(torch.bfloat16).double(), zeros.to(torch.bfloat16).double()
    per_input = lambda per_group: per_group.repeat_interleave(32, dim=1)  # noqa: E731 - [out, groups] -> [out, in]
    slope, offset = codes.double() * per_input(scales), per_input(zeros - 2 ** (bits - 1) * scales)
    groups = x.float().reshape(x.shape[0], -1, 32)
    step = groups.abs().amax(-1, keepdim=True) / 127
    rounded = torch.where(step > 0, torch.round(groups * torch.where(step > 0, 1 / step, 0)), 0)  # half to even
    xq = (rounded.double() * step.double()).reshape(x.shape)
    return xq @ slope.T + x.double() @ offset.T


@MODES
@pytest.mark.parametrize("which", ISA_PARAMS)
@pytest.mark.parametrize("out_features, in_features", [(8, 32), (13, 64), (40, 96), (1152, 896)])
def test_kernel_computes_the_quantized_product(out_features, in_features, which, mode):
    generator = torch.Generator().manual_seed(out_features)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.02
    x = torch.randn(10, in_features, generator=generator)  # 10 rows: more than one pass of either build
    linear = make_linear(weight, mode)
    out = run(linear, x, which)
    assert out.shape == (10, out_features) and out.dtype == torch.float32
    expected = reference(x, weight, BITS[mode])
    # fp32 accumulation of exact integer products: a float rounding apart, while a wrong interleave of rows or
    # inputs, or a lost zero term, is off by the size of the outputs
    assert torch.allclose(out.double(), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    fp32 = x @ weight.T
    assert (out - fp32).norm() / fp32.norm() < (0.15 if mode == "w4a8" else 0.3)  # int4's own error ~0.08, int3's ~2x


@MODES
@pytest.mark.parametrize("which", ISA_PARAMS)
def test_rows_are_bitwise_independent_of_the_row_count(which, mode):
    """Row i of an n-row call equals the one-row call, for n in one pass (4 rows on AVX2, 8 on AVX-512) and over
    several (up to 17)."""
    generator = torch.Generator().manual_seed(1)
    linear = make_linear(torch.randn(72, 160, generator=generator) * 0.02, mode)
    x = torch.randn(17, 160, generator=generator)
    single = torch.cat([run(linear, x[i : i + 1], which) for i in range(17)])
    for n in range(2, 18):
        assert torch.equal(run(linear, x[:n], which), single[:n]), n
    assert not torch.equal(single[0], single[1])  # the rows differ: the check compares something


@needs_vnni
@MODES
@pytest.mark.parametrize("out_features, in_features", [(13, 64), (1152, 896), (896, 4864)])
def test_both_builds_give_the_same_bits(out_features, in_features, mode):
    """The AVX-512 build's integer sums are exact, as the AVX2 build's are, and its float steps the same: equal bits,
    so a run's outputs do not depend on which build a CPU gets. The negative control: a different activation
    rounding (inputs scaled by 1 + 2^-10) changes the bits, so the comparison can fail."""
    assert w4a8.kernel("avx512").__name__ != w4a8.kernel("avx2").__name__  # two builds, not one twice
    generator = torch.Generator().manual_seed(in_features)
    linear = make_linear(torch.randn(out_features, in_features, generator=generator) * 0.02, mode)
    x = torch.randn(11, in_features, generator=generator) * 3
    avx2 = run(linear, x, "avx2")
    assert torch.equal(run(linear, x, "avx512"), avx2)
    assert not torch.equal(run(linear, x * (1 + 2**-10), "avx512"), avx2)


def test_3_bit_codes_unpack_to_the_grid_they_were_packed_from():
    """Every one of the 8 codes at every input position of every row of a tile: a one-hot weight per (row, input)
    read back through the kernel (activation 1 at one input) gives that weight's own dequantized value; a layout that
    swapped inputs, rows or bit planes gives another code's value there."""
    generator = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 8, (16, 64), generator=generator, dtype=torch.int32)
    codes[:, 0], codes[:, 1] = 0, 7  # each group spans the whole grid: scale 1, zero at mid
    codes[:, 32], codes[:, 33] = 0, 7
    weight = codes.float() - 4.0  # on the 3-bit grid exactly: w = (q - 4) * 1 + 0
    assert torch.equal(int4_grid(weight, 3)[0], codes)
    linear = make_linear(weight, "w3a8")
    for which in ["avx2"] + (["avx512"] if HAS_VNNI else []):
        out = run(linear, torch.eye(64), which)  # row i: the inputs' column i of the weight
        assert torch.equal(out, weight.T), which


@pytest.mark.parametrize("which", ISA_PARAMS)
def test_integer_sums_at_their_bounds_are_exact(which):
    """Codes of 15 against activations of +-127 everywhere: the AVX2 build's int16 sums reach 16 x 15 x 127 = 30,480
    of 32,767, and a saturating step would be off by thousands of units; both builds match the reference."""
    weight = torch.ones(16, 64)
    weight[:, ::32] = -1.0  # one input a group at the bottom of the grid, the other 31 at code 15
    x = torch.ones(2, 64)
    x[1] = -1.0
    linear = make_linear(weight, "w4a8")
    codes = int4_grid(weight)[0]
    assert (codes == 15).float().mean() > 0.95
    expected = reference(x, weight)
    assert torch.allclose(run(linear, x, which).double(), expected, rtol=1e-5, atol=1e-4)


def test_linear_calls_the_build_isa_picks():
    linear = make_linear(torch.randn(24, 64) * 0.02, "w4a8")
    x = torch.randn(3, 64)
    assert torch.equal(linear(x), run(linear, x, w4a8.isa()))


def test_the_build_follows_the_cpu_and_torchs_kernel_level():
    """AVX-512 VNNI where the CPU has it; AVX2 where it lacks any of it, or where torch is held to its AVX2 paths
    (a run standing in for an AVX2 CPU must not time the AVX-512 build)."""
    vnni = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"}
    assert w4a8.wanted_isa(vnni, "") == "avx512"
    assert w4a8.wanted_isa(vnni, "AVX512") == "avx512"
    assert w4a8.wanted_isa(vnni, "avx2") == w4a8.wanted_isa(vnni, "AVX2") == "avx2"
    assert w4a8.wanted_isa(vnni, "default") == "avx2"
    assert w4a8.wanted_isa(vnni - {"avx512_vnni"}, "") == "avx2"
    assert w4a8.wanted_isa(set(), "") == "avx2"


def test_an_unknown_build_or_a_cpu_without_vnni_gets_one_line(fresh_builds, monkeypatch):
    with pytest.raises(ReproduceError, match="no w4a8 build 'sse'"):
        w4a8.kernel("sse")
    monkeypatch.setattr(w4a8, "cpu_flags", lambda: {"avx2", "fma"})
    with pytest.raises(ReproduceError, match="avx512f, avx512bw, avx512_vnni, which.*avx2 build"):
        w4a8.kernel("avx512")


def test_an_avx512_cpu_whose_compiler_fails_falls_back_to_the_avx2_build(fresh_builds, monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setattr(w4a8, "cpu_flags", lambda: {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"})
    monkeypatch.setattr(w4a8, "_build", lambda which: ReproduceError("no") if which == "avx512" else object())
    assert w4a8.isa() == "avx2"


def test_head_stays_int8_and_bad_widths_fail_in_one_line():
    head = make_linear(torch.randn(16, 64), "w4a8", head=True)
    assert head.weight.dtype == torch.int8
    assert isinstance(make_linear(torch.randn(16, 64), "w4a8"), W4A8Linear)
    with pytest.raises(ReproduceError, match="multiples of 32") as raised:
        make_linear(torch.randn(16, 48), "w4a8")
    assert "\n" not in str(raised.value)


def test_a_cpu_without_avx2_gets_one_line_naming_int4(fresh_builds, monkeypatch):
    monkeypatch.setattr(w4a8, "cpu_flags", lambda: {"sse2", "sse4_2"})
    with pytest.raises(ReproduceError, match="avx2, fma, which.*fast-int4"):
        w4a8.kernel()
    assert not w4a8.available()
    with pytest.raises(ReproduceError):  # the failure is kept, not retried
        make_linear(torch.randn(8, 32), "w4a8")


def test_a_failed_build_gets_one_line_naming_the_fix(fresh_builds, monkeypatch, tmp_path):
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path))
    flags, needs = w4a8.ISAS["avx2"]
    monkeypatch.setitem(w4a8.ISAS, "avx2", ([*flags, "-DW4A8_BROKEN", "-include", "no/such/header.h"], needs))
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    with pytest.raises(ReproduceError) as raised:
        w4a8.kernel()
    message = str(raised.value)
    assert "could not compile the w4a8 kernel" in message and "fast-int4" in message and "\n" not in message
    assert "no/such/header.h" in message  # the compiler's own reason
