// The w16a32 linear mode's GEMM (reproduce/engine/w16a32.py): bf16 weights times fp32 activations, fp32 sums, for
// calls of a few rows. The weights of 8 output rows are interleaved in pairs of inputs, so one 32-byte load holds
// inputs k and k + 1 of each of the 8 rows (one int32 lane a row: bf16 of input k in its low half, of k + 1 in its high
// half); a shift and a mask make them two fp32 vectors, and one FMA each adds 8 rows' products with a broadcast
// activation. Every output has two fp32 accumulators, one over its even inputs and one over its odd inputs, added at
// the end: the same operations in the same order whatever the row count of the call, so row i of an n-row call is
// bitwise the one-row call (batch invariance by construction; the probe checks it anyway), and any thread count gives
// the same bits (threads split the output rows).
//
// The weights are read once per call for up to MAX_PASS activation rows: 4, as the 16 vector registers of AVX2 hold
// 8 accumulators, 2 weight vectors and the broadcasts. A fifth row starts a second pass over a tile that is still in
// L2 (a tile of the 1.5B's widest GEMM is 143 KB), so rows past 4 cost arithmetic, not memory.
//
// Layout (w16a32.pack): per tile of 8 output rows, per pair of inputs p, 32 bytes: row r's bf16 weights at inputs 2p
// and 2p + 1 in bytes 4r..4r+3. One AVX2 + FMA build serves both CPU kinds (the same bits on each).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cstdint>
#include <cstring>

namespace {

constexpr int R = 8;         // output rows per tile
constexpr int MAX_PASS = 4;  // activation rows per pass over a tile's weights
// software prefetch distance: the next 4 KB, once a cache line. At 1 KB (w4a8's) one row read 121 ms for the 1.5B's
// GEMMs, at 4 KB 99 ms, the memory's limit (benchmarks/w16a32_kernel.py's shapes, torch's AVX2 paths, 2026-12-05)
constexpr int PREFETCH_BYTES = 4096;

// M activation rows (x: K apart) times one tile's 8 output rows (K / 2 pairs of 32 bytes)
template <int M>
void tile_rows(const uint8_t* tile, const float* x, int64_t K, float* out, int64_t out_stride, int valid) {
  const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
  __m256 even[M], odd[M];
  // unrolled, so the accumulators live in registers: GCC otherwise kept them on the stack, a store and a reload in
  // every FMA chain (4 rows ran at 14 GMAC/s a core instead of 27)
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m) even[m] = odd[m] = _mm256_setzero_ps();
  for (int64_t p = 0; p < K / 2; ++p, tile += 32) {
    if (!(p & 1)) _mm_prefetch((const char*)tile + PREFETCH_BYTES, _MM_HINT_T0);
    const __m256i v = _mm256_loadu_si256((const __m256i*)tile);
    const __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));     // input 2p, exactly (bf16 -> fp32)
    const __m256 w1 = _mm256_castsi256_ps(_mm256_and_si256(v, high));    // input 2p + 1
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      even[m] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + m * K + 2 * p), w0, even[m]);
      odd[m] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + m * K + 2 * p + 1), w1, odd[m]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m) {
    alignas(32) float r[R];
    _mm256_store_ps(r, _mm256_add_ps(even[m], odd[m]));
    std::memcpy(out + m * out_stride, r, sizeof(float) * valid);
  }
}

}  // namespace

// x [M, K] fp32, tiles from reproduce.engine.w16a32.pack, N outputs -> [M, N] fp32
torch::Tensor w16a32_mm(torch::Tensor x, torch::Tensor tiles, int64_t N) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), "x: contiguous fp32 [M, K]");
  const int64_t M = x.size(0), K = x.size(1), n_tiles = (N + R - 1) / R, tile_bytes = K / 2 * 32;
  TORCH_CHECK(K % 2 == 0, "inputs must be a multiple of 2");
  TORCH_CHECK(tiles.scalar_type() == torch::kUInt8 && tiles.is_contiguous(), "tiles: contiguous uint8");
  TORCH_CHECK(tiles.numel() == n_tiles * tile_bytes, "packed weights do not match x's width");
  auto out = torch::empty({M, N}, torch::kFloat);
  const uint8_t* w = tiles.data_ptr<uint8_t>();
  const float* xp = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, n_tiles, 8, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const uint8_t* tile = w + t * tile_bytes;
      const int valid = (int)std::min<int64_t>(R, N - t * R);
      for (int64_t m0 = 0; m0 < M; m0 += MAX_PASS) {
        const float* xx = xp + m0 * K;
        float* oo = o + m0 * N + t * R;
        switch (std::min<int64_t>(MAX_PASS, M - m0)) {
          case 1: tile_rows<1>(tile, xx, K, oo, N, valid); break;
          case 2: tile_rows<2>(tile, xx, K, oo, N, valid); break;
          case 3: tile_rows<3>(tile, xx, K, oo, N, valid); break;
          default: tile_rows<4>(tile, xx, K, oo, N, valid); break;
        }
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("w16a32_mm", &w16a32_mm); }
