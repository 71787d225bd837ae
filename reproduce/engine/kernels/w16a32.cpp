// The w16a32 linear mode's GEMM (reproduce/engine/w16a32.py): bf16 weights times fp32 activations, fp32 sums, for
// calls of a few rows. The weight is the plain row-major bf16 [N, K] tensor (the bf16 mode's, so a Hugging Face model
// can share it). A 32-byte load holds 16 inputs of one output row; a shift and a mask make them two fp32 vectors
// (bf16 -> fp32 is exact), its even and its odd inputs, which meet the activations' even and odd inputs (each row of x
// de-interleaved once per call) in two FMA chains per output, added and summed across lanes in a fixed order at the
// end. Every output's operations are the same, in the same order, whatever the row count of the call and however many
// outputs are computed side by side, so row i of an n-row call is bitwise the one-row call (batch invariance by
// construction; the probe checks it anyway), and any thread count gives the same bits (threads split the outputs).
//
// The weights are read once per call for up to MAX_PASS activation rows (the 16 AVX2 registers hold 8 accumulators):
// a block of 4 output rows is computed for each pass of up to 4 rows, 4 outputs side by side for one row, 2 for two,
// 1 for three or four, so every pass keeps 8 chains in flight. A fifth row starts a second pass over a block still in
// L2, so rows past 4 cost arithmetic, not memory. One AVX2 + FMA build serves both CPU kinds (the same bits on each).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cstdint>

#include "simd.h"

namespace {

using reproduce_simd::hsum;

constexpr int MAX_PASS = 4;  // activation rows per pass over a block's weights
constexpr int BLOCK = 4;     // output rows per block
// software prefetch distance: 4 KB ahead in each output row's stream, once a cache line. w4a8's 1 KB left one row at
// 121 ms for the 1.5B's GEMMs, 4 KB at ~100, the memory's limit (torch's AVX2 paths, 2026-12-05)
constexpr int PREFETCH_BYTES = 4096;

// O output rows (w: K bf16 each, K apart) times M activation rows (xd: de-interleaved, K apart). Loops over m and o
// are unrolled so the accumulators live in registers: GCC otherwise kept them on the stack, a store and a reload in
// every FMA chain (4 rows ran at 14 GMAC/s a core instead of 27).
template <int M, int O>
void rows_outputs(const uint16_t* w, const float* xd, int64_t K, float* out, int64_t out_stride) {
  const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
  __m256 even[M][O], odd[M][O];
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
    for (int o = 0; o < O; ++o) even[m][o] = odd[m][o] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
#pragma GCC unroll 8
    for (int o = 0; o < O; ++o) {
      const uint16_t* row = w + o * K + k;
      if (!(k & 31)) _mm_prefetch((const char*)row + PREFETCH_BYTES, _MM_HINT_T0);
      const __m256i v = _mm256_loadu_si256((const __m256i*)row);
      const __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));   // inputs k, k+2, ..., k+14
      const __m256 w1 = _mm256_castsi256_ps(_mm256_and_si256(v, high));  // inputs k+1, k+3, ..., k+15
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        even[m][o] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + m * K + k), w0, even[m][o]);
        odd[m][o] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + m * K + k + 8), w1, odd[m][o]);
      }
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
    for (int o = 0; o < O; ++o) out[m * out_stride + o] = hsum(_mm256_add_ps(even[m][o], odd[m][o]));
}

// One pass of `rows` (1..MAX_PASS) activation rows over outputs [n0, n1) (at most BLOCK of them)
void pass(const uint16_t* w, const float* xd, int64_t K, float* out, int64_t out_stride, int rows, int64_t n0,
          int64_t n1) {
  int64_t n = n0;
  if (rows == 1) {
    for (; n + 4 <= n1; n += 4) rows_outputs<1, 4>(w + n * K, xd, K, out + n, out_stride);
    for (; n + 2 <= n1; n += 2) rows_outputs<1, 2>(w + n * K, xd, K, out + n, out_stride);
  }
  if (rows == 2)
    for (; n + 2 <= n1; n += 2) rows_outputs<2, 2>(w + n * K, xd, K, out + n, out_stride);
  for (; n < n1; ++n) {  // what is left, one output at a time
    switch (rows) {
      case 1: rows_outputs<1, 1>(w + n * K, xd, K, out + n, out_stride); break;
      case 2: rows_outputs<2, 1>(w + n * K, xd, K, out + n, out_stride); break;
      case 3: rows_outputs<3, 1>(w + n * K, xd, K, out + n, out_stride); break;
      default: rows_outputs<4, 1>(w + n * K, xd, K, out + n, out_stride); break;
    }
  }
}

}  // namespace

// x [M, K] fp32, weight [N, K] bf16 (row-major, contiguous) -> [M, N] fp32
torch::Tensor w16a32_mm(torch::Tensor x, torch::Tensor weight) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), "x: contiguous fp32 [M, K]");
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kBFloat16 && weight.is_contiguous(),
              "weight: contiguous bf16 [N, K]");
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  TORCH_CHECK(weight.size(1) == K, "weight does not match x's width");
  TORCH_CHECK(K % 16 == 0, "inputs must be a multiple of 16");
  // each row of x de-interleaved per 16 inputs: the 8 even ones, then the 8 odd ones (what the weights' shift and
  // mask give)
  auto xd = torch::empty({M, K}, torch::kFloat);
  const float* xs = x.data_ptr<float>();
  float* xdp = xd.data_ptr<float>();
  for (int64_t i = 0; i < M * K; i += 16)
    for (int j = 0; j < 8; ++j) {
      xdp[i + j] = xs[i + 2 * j];
      xdp[i + 8 + j] = xs[i + 2 * j + 1];
    }
  auto out = torch::empty({M, N}, torch::kFloat);
  const uint16_t* w = reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>());
  float* o = out.data_ptr<float>();
  const int64_t blocks = (N + BLOCK - 1) / BLOCK;
  at::parallel_for(0, blocks, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n0 = b * BLOCK, n1 = std::min<int64_t>(n0 + BLOCK, N);
      for (int64_t m0 = 0; m0 < M; m0 += MAX_PASS)
        pass(w, xdp + m0 * K, K, o + m0 * N, N, (int)std::min<int64_t>(MAX_PASS, M - m0), n0, n1);
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("w16a32_mm", &w16a32_mm); }
