// The w4a8 linear mode's GEMM (reproduce/engine/w4a8.py): int4 weights times int8 activations for calls of a few
// rows. As llama.cpp's repacked q4_0x8 kernels do, the weights of 8 output rows are interleaved, so one 32-byte load
// holds 4 inputs of each of the 8 rows and one multiply-add instruction computes 8 rows' partial dot products at once;
// a row's integer sum is scaled once per group of 32 inputs.
//
// Two builds of this file (w4a8.py picks one by the CPU): AVX2 + FMA (maddubs into int16, then int32), and, with
// W4A8_AVX512 defined, AVX-512 VNNI (dpbusd on 512 bits: two of a tile's vectors a load, half the instructions). They
// differ only in load_codes and group_dot, which computes every group's integer dot product exactly in both (no
// int16 step saturates), and share tile_rows' float steps, so they give the same bits. The weights are read once per
// call for up to MAX_PASS activation rows (4 on AVX2, whose 16 vector registers hold no more accumulators; 8 on
// AVX-512).
//
// Layout (w4a8.pack): per tile of 8 output rows, per group of 32 inputs, 160 bytes: 4 x 32 bytes of codes (byte 4r + b
// of vector i: code of row r at input 4i + b in its low nibble, at input 16 + 4i + b in its high one), then the 8 rows'
// bf16 scales, then their bf16 zeros: w = (q - 8) * scale + zero, q in 0..15 (reproduce.engine.linear's int4 grid).
// 3-bit weights (the w3a8 mode, the grid at 3 bits: w = (q - 4) * scale + zero): 128 bytes, the codes as two 32-byte
// planes of 2-bit fields and one of high bits (code_vectors3 and the AVX-512 load_codes unpack them).
// Activations: each row rounded to int8 per group of 32 (scale = max |x| / 127, half to even), its fp32 sum kept for
// the zero term.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cstdint>
#include <cstring>

#include "simd.h"

namespace {

using reproduce_simd::hmax;
using reproduce_simd::hsum;

constexpr int G = 32;       // inputs per group (one scale and one zero per output row)
constexpr int R = 8;        // output rows per tile
// codes (4 bits: 4 x 32 bytes of nibbles; 3 bits: 2 x 32 bytes of 2-bit fields and 32 bytes of high bits), then 8
// bf16 scales and 8 bf16 zeros
template <int BITS> constexpr int tile_bytes() { return (BITS == 4 ? 128 : 96) + 16 + 16; }
template <int BITS> constexpr int code_bytes() { return BITS == 4 ? 128 : 96; }
#ifdef W4A8_AVX512
constexpr int MAX_PASS = 8;  // activation rows per pass over the weights
#else
constexpr int MAX_PASS = 4;
#endif

inline __m256 load_bf16x8(const uint8_t* p) {
  const __m128i h = _mm_loadu_si128((const __m128i*)p);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// one row of x [K] -> codes [K] int8 (round half to even), scale and sum of x per group of 32
void quantize_row(const float* x, int64_t K, int8_t* codes, float* scale, float* sum) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (int64_t g = 0; g < K / G; ++g) {
    const float* v = x + g * G;
    __m256 a[4], amax = _mm256_setzero_ps(), s = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      a[i] = _mm256_loadu_ps(v + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, a[i]));
      s = _mm256_add_ps(s, a[i]);
    }
    const float d = hmax(amax) / 127.f;
    const __m256 inv = _mm256_set1_ps(d > 0.f ? 1.f / d : 0.f);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(a[i], inv));
    // int32 -> int8 in input order (packs interleave 128-bit lanes; the permute undoes it)
    const __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
    const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    const __m256i ordered = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i*)(codes + g * G), ordered);
    scale[g] = d;
    sum[g] = hsum(s);
  }
}

#ifdef W4A8_AVX512
constexpr int GROUP_BYTES = 256;  // a row's activation bytes per group, in expand_row's layout

// One row's int8 codes [K] -> per group, 4 x 64 bytes: vector j holds inputs 8j..8j+3 (4 bytes) 8 times in its low
// half and inputs 8j+4..8j+7 8 times in its high half, the activations a 512-bit load of two code vectors meets.
void expand_row(const int8_t* codes, int64_t K, int8_t* expanded) {
  const __m512i pick[4] = {
      _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
      _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3),
      _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5),
      _mm512_setr_epi32(6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7)};
  for (int64_t g = 0; g < K / G; ++g) {
    const __m512i c = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(codes + g * G)));
    for (int j = 0; j < 4; ++j)
      _mm512_storeu_si512((__m512i*)(expanded + g * GROUP_BYTES + 64 * j), _mm512_permutexvar_epi32(pick[j], c));
  }
}

// A group's codes: a 64-byte load holds code vectors 2i and 2i + 1, whose low nibbles are inputs 8i..8i+3 and
// 8i+4..8i+7 of the 8 rows (high nibbles: 16 more); in the order of expand_row's vectors, inputs 0..7, 8..15, 16..23,
// 24..31.
struct Codes { __m512i w[4]; };

template <int BITS>
inline Codes load_codes(const uint8_t* tile) {
  if constexpr (BITS == 3) {
    // the two 2-bit planes in one register: field j of its halves is code vectors 2j and 2j + 1, the pair w[j]
    // holds; the high-bit plane beside itself shifted by one, so bit 2j of both halves is those vectors' high bit
    const __m512i three = _mm512_set1_epi8(3), one = _mm512_set1_epi8(1);
    const __m512i planes = _mm512_loadu_si512(tile);
    const __m256i high = _mm256_loadu_si256((const __m256i*)(tile + 64));
    const __m512i highs = _mm512_inserti64x4(_mm512_castsi256_si512(high), _mm256_srli_epi16(high, 1), 1);
    Codes c;
    for (int j = 0; j < 4; ++j) {
      const __m512i top = _mm512_and_si512(_mm512_srli_epi16(highs, 2 * j), one);
      c.w[j] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(planes, 2 * j), three), _mm512_slli_epi16(top, 2));
    }
    return c;
  }
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i v01 = _mm512_loadu_si512(tile), v23 = _mm512_loadu_si512(tile + 64);
  return {{_mm512_and_si512(v01, low), _mm512_and_si512(v23, low), _mm512_and_si512(_mm512_srli_epi16(v01, 4), low),
           _mm512_and_si512(_mm512_srli_epi16(v23, 4), low)}};
}

// The 8 rows' exact integer dot products with one activation row's group: 4 dpbusd, then the two halves' int32 sums
inline __m256i group_dot(const Codes& c, const int8_t* y) {
  __m512i p = _mm512_setzero_si512();
  for (int j = 0; j < 4; ++j) p = _mm512_dpbusd_epi32(p, c.w[j], _mm512_loadu_si512(y + 64 * j));
  return _mm256_add_epi32(_mm512_castsi512_si256(p), _mm512_extracti64x4_epi64(p, 1));
}
#else
constexpr int GROUP_BYTES = G;  // a row's activation bytes per group: its int8 codes as they are

// A 3-bit tile's 8 code vectors (v[s]: byte 4r + b holds the code of row r at input 4s + b, as the 4-bit nibbles
// give): 2-bit field j of vector p's byte is the low bits of code vector p + 2j, bit s of the third vector's byte the
// high bit of code vector s (w4a8.pack's layout at 3 bits). Shifts are on 16-bit lanes; the masks drop what crosses bytes.
inline void code_vectors3(const uint8_t* tile, __m256i* v) {
  const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  const __m256i p0 = _mm256_loadu_si256((const __m256i*)tile), p1 = _mm256_loadu_si256((const __m256i*)(tile + 32));
  const __m256i high = _mm256_loadu_si256((const __m256i*)(tile + 64));
  for (int s = 0; s < 8; ++s) {
    const __m128i low_shift = _mm_cvtsi32_si128(2 * (s / 2)), high_shift = _mm_cvtsi32_si128(s);
    const __m256i low2 = _mm256_and_si256(_mm256_srl_epi16(s % 2 ? p1 : p0, low_shift), three);
    const __m256i top = _mm256_and_si256(_mm256_srl_epi16(high, high_shift), one);
    v[s] = _mm256_or_si256(low2, _mm256_slli_epi16(top, 2));  // top <= 1 a byte: the shift stays in its byte
  }
}

struct Codes { __m256i w[8]; };  // w[s]: 4 codes (inputs 4s..4s+3) of each of the 8 rows

template <int BITS>
inline Codes load_codes(const uint8_t* tile) {
  Codes c;
  if constexpr (BITS == 3) {
    code_vectors3(tile, c.w);
    return c;
  }
  const __m256i low = _mm256_set1_epi8(0x0F);
  for (int i = 0; i < 4; ++i) {
    const __m256i v = _mm256_loadu_si256((const __m256i*)(tile + 32 * i));
    c.w[i] = _mm256_and_si256(v, low);
    c.w[i + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  }
  return c;
}

// The 8 rows' exact integer dot products with one activation row's group: maddubs into int16 (8 steps of at most
// 2 * 15 * 127 each stay below 32768: no step saturates), then madd into int32
inline __m256i group_dot(const Codes& c, const int8_t* y) {
  __m256i p = _mm256_setzero_si256();
  for (int s = 0; s < 8; ++s) {
    int32_t four; std::memcpy(&four, y + 4 * s, 4);
    p = _mm256_add_epi16(p, _mm256_maddubs_epi16(c.w[s], _mm256_set1_epi32(four)));
  }
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}
#endif

// M activation rows (xq: row_bytes apart, GROUP_BYTES a group) times one tile's 8 output rows. The float steps are
// the same code in both builds, so equal integer sums give equal bits.
template <int BITS, int M>
void tile_rows(const uint8_t* tile, const int8_t* xq, int64_t row_bytes, const float* xd, const float* xs, int64_t K,
               float* out, int64_t out_stride, int valid) {
  const int64_t groups = K / G;
  __m256 acc[M], zacc[M];
  for (int m = 0; m < M; ++m) acc[m] = zacc[m] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g, tile += tile_bytes<BITS>()) {
    _mm_prefetch((const char*)tile + 1024, _MM_HINT_T0);
    _mm_prefetch((const char*)tile + 1088, _MM_HINT_T0);
    _mm_prefetch((const char*)tile + 1152, _MM_HINT_T0);
    const Codes codes = load_codes<BITS>(tile);
    const __m256 scales = load_bf16x8(tile + code_bytes<BITS>());
    // w = (q - mid) * scale + zero = q * scale + (zero - mid * scale), mid = 2^(BITS - 1)
    const __m256 zeros = _mm256_fnmadd_ps(_mm256_set1_ps(float(1 << (BITS - 1))), scales,
                                          load_bf16x8(tile + code_bytes<BITS>() + 16));
    for (int m = 0; m < M; ++m) {
      const __m256 dot = _mm256_cvtepi32_ps(group_dot(codes, xq + m * row_bytes + g * GROUP_BYTES));
      acc[m] = _mm256_fmadd_ps(dot, _mm256_mul_ps(scales, _mm256_set1_ps(xd[m * groups + g])), acc[m]);
      zacc[m] = _mm256_fmadd_ps(zeros, _mm256_set1_ps(xs[m * groups + g]), zacc[m]);
    }
  }
  for (int m = 0; m < M; ++m) {
    alignas(32) float r[R];
    _mm256_store_ps(r, _mm256_add_ps(acc[m], zacc[m]));
    std::memcpy(out + m * out_stride, r, sizeof(float) * valid);
  }
}

}  // namespace

template <int BITS>
torch::Tensor mm(torch::Tensor x, torch::Tensor tiles, int64_t N) {
  constexpr int TILE_BYTES = tile_bytes<BITS>();
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), "x: contiguous fp32 [M, K]");
  const int64_t M = x.size(0), K = x.size(1), groups = K / G, n_tiles = (N + R - 1) / R;
  TORCH_CHECK(K % G == 0, "inputs must be a multiple of 32");
  TORCH_CHECK(tiles.scalar_type() == torch::kUInt8 && tiles.is_contiguous(), "tiles: contiguous uint8");
  TORCH_CHECK(tiles.numel() == n_tiles * groups * TILE_BYTES, "packed weights do not match x's width");
  auto xq = torch::empty({M, K}, torch::kInt8);
  auto xd = torch::empty({M, groups}, torch::kFloat), xs = torch::empty({M, groups}, torch::kFloat);
  for (int64_t m = 0; m < M; ++m)
    quantize_row(x.data_ptr<float>() + m * K, K, xq.data_ptr<int8_t>() + m * K, xd.data_ptr<float>() + m * groups,
                 xs.data_ptr<float>() + m * groups);
#ifdef W4A8_AVX512
  auto xe = torch::empty({M, groups * GROUP_BYTES}, torch::kInt8);  // tile_rows reads expand_row's layout
  for (int64_t m = 0; m < M; ++m)
    expand_row(xq.data_ptr<int8_t>() + m * K, K, xe.data_ptr<int8_t>() + m * groups * GROUP_BYTES);
  const int8_t* q = xe.data_ptr<int8_t>();
#else
  const int8_t* q = xq.data_ptr<int8_t>();
#endif
  const int64_t row_bytes = groups * GROUP_BYTES;
  auto out = torch::empty({M, N}, torch::kFloat);
  const uint8_t* w = tiles.data_ptr<uint8_t>();
  const float *d = xd.data_ptr<float>(), *s = xs.data_ptr<float>();
  float* o = out.data_ptr<float>();
  // every output's arithmetic is the same whatever M is (passes of up to MAX_PASS rows each redo it for their
  // rows), so row i of an M-row call equals a one-row call bit for bit
  at::parallel_for(0, n_tiles, 8, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const uint8_t* tile = w + t * groups * TILE_BYTES;
      const int valid = (int)std::min<int64_t>(R, N - t * R);
      for (int64_t m0 = 0; m0 < M; m0 += MAX_PASS) {
        const int64_t rows = std::min<int64_t>(MAX_PASS, M - m0);
        const int8_t* qq = q + m0 * row_bytes; const float* dd = d + m0 * groups; const float* ss = s + m0 * groups;
        float* oo = o + m0 * N + t * R;
        switch (rows) {
          case 1: tile_rows<BITS, 1>(tile, qq, row_bytes, dd, ss, K, oo, N, valid); break;
          case 2: tile_rows<BITS, 2>(tile, qq, row_bytes, dd, ss, K, oo, N, valid); break;
          case 3: tile_rows<BITS, 3>(tile, qq, row_bytes, dd, ss, K, oo, N, valid); break;
#ifdef W4A8_AVX512
          case 4: tile_rows<BITS, 4>(tile, qq, row_bytes, dd, ss, K, oo, N, valid); break;
          case 5: tile_rows<BITS, 5>(tile, qq, row_bytes, dd, ss, K, oo, N, valid); break;
          case 6: tile_rows<BITS, 6>(tile, qq, row_bytes, dd, ss, K, oo, N, valid); break;
          case 7: tile_rows<BITS, 7>(tile, qq, row_bytes, dd, ss, K, oo, N, valid); break;
          default: tile_rows<BITS, 8>(tile, qq, row_bytes, dd, ss, K, oo, N, valid); break;
#else
          default: tile_rows<BITS, 4>(tile, qq, row_bytes, dd, ss, K, oo, N, valid); break;
#endif
        }
      }
    }
  });
  return out;
}

// x [M, K] fp32, tiles from reproduce.engine.w4a8.pack with `bits` (4 or 3) a weight, N outputs -> [M, N] fp32
torch::Tensor w4a8_mm(torch::Tensor x, torch::Tensor tiles, int64_t N, int64_t bits) {
  TORCH_CHECK(bits == 4 || bits == 3, "weights of 4 or 3 bits, got ", bits);
  return bits == 4 ? mm<4>(x, tiles, N) : mm<3>(x, tiles, N);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("w4a8_mm", &w4a8_mm); }
