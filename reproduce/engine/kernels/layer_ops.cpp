// The fast runtime's small ops between the GEMMs (reproduce/engine/layer_ops.py): RMSNorm, the attention block
// (q/k/v bias, RoPE, the KV-cache write, causal attention over the cache) and SiLU(gate) * up, each one call.
//
// Why: at one to nine rows these ops are tiny, and as ~45 torch calls a layer they cost more in per-call overhead than
// in arithmetic: ~4.5 ms of a 0.5B draft's 14 ms step on 2 cores (notes/qwen-pair.md, session 16). gpt-fast fuses them
// with torch.compile; here they are written out, because batch invariance (row i of an n-row call is bitwise the
// one-row call at its position, which greedy SpS == ArS rests on) must hold by construction: every output row is
// computed by the same code in the same order whatever n is, and threads split rows and heads, never a sum.
//
// Built once with AVX2 + FMA (no AVX-512 variant), so both CPU kinds run this very code and get the same bits.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <vector>

#include "simd.h"

namespace {

using reproduce_simd::hsum;

// exp on 8 lanes: ATen's exp_u20 (Cephes-style: 2^n times a degree-5 polynomial, within 20 ulp), written out so that
// this file needs no ATen vector build flags; 0 below ln(FLT_MIN), as torch's. Its clamps turn a NaN input into a
// finite value (torch's exp keeps NaN): a NaN activation is a broken model either way.
inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_castsi256_ps(_mm256_set1_epi32(0xc2aeac50));  // ln(FLT_MIN)
  const __m256 hi = _mm256_castsi256_ps(_mm256_set1_epi32(0x42b17218));  // ln(FLT_MAX)
  const __m256 too_small = _mm256_cmp_ps(x, lo, _CMP_LT_OS);
  x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 log2e = _mm256_castsi256_ps(_mm256_set1_epi32(0x3fb8aa3b));
  const __m256 ln2 = _mm256_castsi256_ps(_mm256_set1_epi32(0x3f317218));
  const __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, log2e, _mm256_set1_ps(0.5f)));
  const __m256 r = _mm256_fnmadd_ps(fx, ln2, x);
  __m256 p = _mm256_fmadd_ps(r, _mm256_set1_ps(0.00828929059f), _mm256_set1_ps(0.0418978221f));
  p = _mm256_fmadd_ps(r, p, _mm256_set1_ps(0.166676521f));
  p = _mm256_fmadd_ps(r, p, _mm256_set1_ps(0.499991506f));
  p = _mm256_fmadd_ps(r, p, _mm256_set1_ps(0.999999701f));
  p = _mm256_fmadd_ps(r, p, one);
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_sub_ps(fx, one)), _mm256_set1_epi32(127));
  __m256 pow2 = _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_slli_epi32(e, 23)), _mm256_setzero_ps(), too_small);
  return _mm256_mul_ps(_mm256_mul_ps(p, pow2), _mm256_set1_ps(2.f));
}

// the 8 lane sums of a[0..7] as one vector (lane j: a[j]'s sum), by a fixed tree of hadds
inline __m256 sum8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

// sum of squares of x [d] (d % 8 == 0): 8 lane sums in input order, then one fixed horizontal sum
inline float sum_squares(const float* x, int64_t d) {
  __m256 s = _mm256_setzero_ps();
  for (int64_t j = 0; j < d; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    s = _mm256_fmadd_ps(v, v, s);
  }
  return hsum(s);
}

inline void norm_row(const float* x, const float* w, float eps, int64_t d, float* out) {
  const __m256 r = _mm256_set1_ps(1.f / std::sqrt(sum_squares(x, d) / d + eps));
  for (int64_t j = 0; j < d; j += 8)
    _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), r), _mm256_loadu_ps(w + j)));
}

// out[0 .. 8W) = inv * sum_p weights[p] * v[p * stride + 0 .. 8W): W accumulators, each a fixed chain over p
template <int W>
inline void weighted_sum(const float* weights, const float* v, int64_t length, int64_t stride, float inv, float* out) {
  __m256 acc[W];
  for (int t = 0; t < W; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t p = 0; p < length; ++p) {
    const __m256 w = _mm256_set1_ps(weights[p]);
    for (int t = 0; t < W; ++t) acc[t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + p * stride + 8 * t), acc[t]);
  }
  const __m256 iv = _mm256_set1_ps(inv);
  for (int t = 0; t < W; ++t) _mm256_storeu_ps(out + 8 * t, _mm256_mul_ps(acc[t], iv));
}

void check_rows(const torch::Tensor& x, int64_t width, const char* what) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), what,
              ": a contiguous fp32 [n, d]");
  TORCH_CHECK(x.size(1) == width && width % 8 == 0, what, ": width must be ", width, " and a multiple of 8");
}

void check_vector(const torch::Tensor& w, int64_t width, const char* what) {
  TORCH_CHECK(w.dim() == 1 && w.numel() == width && w.scalar_type() == torch::kFloat && w.is_contiguous(), what,
              ": a contiguous fp32 vector of ", width);
}

}  // namespace

// RMSNorm of each row of x [n, d]: x * (1 / sqrt(mean(x^2) + eps)) * w
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor w, double eps) {
  check_rows(x, w.numel(), "rms_norm x");
  check_vector(w, x.size(1), "rms_norm weight");
  auto out = torch::empty_like(x);
  const int64_t n = x.size(0), d = x.size(1);
  for (int64_t i = 0; i < n; ++i)
    norm_row(x.data_ptr<float>() + i * d, w.data_ptr<float>(), (float)eps, d, out.data_ptr<float>() + i * d);
  return out;
}

// x += y in place (the residual stream), then RMSNorm of the new x
torch::Tensor add_rms_norm(torch::Tensor x, torch::Tensor y, torch::Tensor w, double eps) {
  check_rows(x, w.numel(), "add_rms_norm x");
  check_rows(y, w.numel(), "add_rms_norm y");
  check_vector(w, x.size(1), "add_rms_norm weight");
  TORCH_CHECK(y.size(0) == x.size(0), "add_rms_norm: x and y must have as many rows");
  auto out = torch::empty_like(x);
  const int64_t n = x.size(0), d = x.size(1);
  float* xs = x.data_ptr<float>();
  const float* ys = y.data_ptr<float>();
  for (int64_t i = 0; i < n * d; i += 8)
    _mm256_storeu_ps(xs + i, _mm256_add_ps(_mm256_loadu_ps(xs + i), _mm256_loadu_ps(ys + i)));
  for (int64_t i = 0; i < n; ++i)
    norm_row(xs + i * d, w.data_ptr<float>(), (float)eps, d, out.data_ptr<float>() + i * d);
  return out;
}

// gate_up [n, 2I] (gate's I columns, then up's) -> silu(gate) * up [n, I], silu(g) = g / (1 + exp(-g))
torch::Tensor silu_mul(torch::Tensor gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.scalar_type() == torch::kFloat && gate_up.is_contiguous(),
              "silu_mul: a contiguous fp32 [n, 2I]");
  const int64_t n = gate_up.size(0), inner = gate_up.size(1) / 2;
  TORCH_CHECK(gate_up.size(1) % 2 == 0 && inner % 8 == 0, "silu_mul: I must be a multiple of 8");
  auto out = torch::empty({n, inner}, gate_up.options());
  const __m256 one = _mm256_set1_ps(1.f), sign = _mm256_set1_ps(-0.f);
  for (int64_t i = 0; i < n; ++i) {
    const float* g = gate_up.data_ptr<float>() + i * 2 * inner;
    float* o = out.data_ptr<float>() + i * inner;
    for (int64_t j = 0; j < inner; j += 8) {
      const __m256 gv = _mm256_loadu_ps(g + j);
      const __m256 silu = _mm256_div_ps(gv, _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, sign))));
      _mm256_storeu_ps(o + j, _mm256_mul_ps(silu, _mm256_loadu_ps(g + inner + j)));
    }
  }
  return out;
}

// The attention block of the n new tokens at positions start..start+n-1:
//   qkv [n, (H + 2 KV) D] (the fused GEMM's output), plus `bias` if defined; RoPE on q and k with cos / signed_sin
//   [n, D] (rotate_half as a roll by D/2: out[d] = x[d] cos[d] + x[(d + D/2) % D] signed_sin[d]); k and v written to
//   keys / values [KV, max_len, D] at their positions; then each query row attends causally to positions
//   <= its own (grouped-query: head h reads kv head h / (H / KV)) with scores scaled by D^-0.5 and a max-subtracted
//   softmax. Returns [n, H D]. Rows and heads are split among threads; each (row, head) is one thread's fixed loop.
//   (With -mfma the compiler may contract RoPE's x c + x' s into an FMA: the instructions are fixed per D, so every
//   row still gets the same ones.)
torch::Tensor attention(torch::Tensor qkv, c10::optional<torch::Tensor> bias, torch::Tensor cos,
                        torch::Tensor signed_sin, torch::Tensor keys, torch::Tensor values, int64_t start,
                        int64_t heads, int64_t kv_heads) {
  TORCH_CHECK(heads > 0 && kv_heads > 0 && heads % kv_heads == 0, "attention: heads must be a multiple of kv_heads");
  TORCH_CHECK(keys.dim() == 3 && keys.sizes() == values.sizes() && keys.size(0) == kv_heads &&
              keys.scalar_type() == torch::kFloat && values.scalar_type() == torch::kFloat && keys.is_contiguous() &&
              values.is_contiguous(), "attention: keys and values must be contiguous fp32 [kv_heads, max_len, D]");
  const int64_t n = qkv.size(0), D = keys.size(2), max_len = keys.size(1), half = D / 2;
  const int64_t width = (heads + 2 * kv_heads) * D;
  check_rows(qkv, width, "attention qkv");
  TORCH_CHECK(D % 8 == 0, "attention: head_dim must be a multiple of 8");
  TORCH_CHECK(start >= 0 && start + n <= max_len, "attention: positions past the cache");
  for (const auto* table : {&cos, &signed_sin})
    TORCH_CHECK(table->dim() == 2 && table->size(0) == n && table->size(1) == D && table->is_contiguous() &&
                table->scalar_type() == torch::kFloat, "attention: cos and signed_sin must be contiguous fp32 [n, D]");
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) check_vector(*bias, width, "attention bias");
  // q rotated, [n, H, D]; k rotated and v into the cache
  auto q = torch::empty({n, heads, D}, qkv.options());
  float* qs = q.data_ptr<float>();
  float* ks = keys.data_ptr<float>();
  float* vs = values.data_ptr<float>();
  const float* b = has_bias ? bias->data_ptr<float>() : nullptr;
  std::vector<float> row(width);
  for (int64_t i = 0; i < n; ++i) {
    const float* src = qkv.data_ptr<float>() + i * width;
    for (int64_t j = 0; j < width; ++j) row[j] = b ? src[j] + b[j] : src[j];
    const float* c = cos.data_ptr<float>() + i * D;
    const float* s = signed_sin.data_ptr<float>() + i * D;
    for (int64_t h = 0; h < heads + kv_heads; ++h) {
      const float* x = row.data() + h * D;
      float* dst = h < heads ? qs + (i * heads + h) * D : ks + ((h - heads) * max_len + start + i) * D;
      for (int64_t d = 0; d < half; ++d) dst[d] = x[d] * c[d] + x[d + half] * s[d];
      for (int64_t d = half; d < D; ++d) dst[d] = x[d] * c[d] + x[d - half] * s[d];
    }
    for (int64_t h = 0; h < kv_heads; ++h) {
      const float* x = row.data() + (heads + kv_heads + h) * D;
      float* dst = vs + (h * max_len + start + i) * D;
      for (int64_t d = 0; d < D; ++d) dst[d] = x[d];
    }
  }
  auto out = torch::empty({n, heads * D}, qkv.options());
  float* os = out.data_ptr<float>();
  const int64_t group = heads / kv_heads, vecs = D / 8;
  const float scale = 1.f / std::sqrt((float)D);
  at::parallel_for(0, n * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(max_len + 8);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t i = job / heads, h = job % heads, length = start + i + 1;
      const float* qh = qs + (i * heads + h) * D;
      const float* kh = ks + (h / group) * max_len * D;
      const float* vh = vs + (h / group) * max_len * D;
      // scores, 8 positions at a time (8 independent FMA chains, not one: the chains' latency bound the loop),
      // each position's 8 lane sums reduced by one fixed hadd tree; the last < 8 positions one by one
      int64_t p = 0;
      for (; p + 8 <= length; p += 8) {
        __m256 acc8[8];
        for (int j = 0; j < 8; ++j) acc8[j] = _mm256_setzero_ps();
        for (int64_t t = 0; t < vecs; ++t) {
          const __m256 qt = _mm256_loadu_ps(qh + 8 * t);
          for (int j = 0; j < 8; ++j)
            acc8[j] = _mm256_fmadd_ps(qt, _mm256_loadu_ps(kh + (p + j) * D + 8 * t), acc8[j]);
        }
        _mm256_storeu_ps(scores.data() + p, _mm256_mul_ps(sum8(acc8), _mm256_set1_ps(scale)));
      }
      for (; p < length; ++p) {
        __m256 acc8[8];
        for (int j = 0; j < 8; ++j) acc8[j] = _mm256_setzero_ps();
        for (int64_t t = 0; t < vecs; ++t)
          acc8[0] = _mm256_fmadd_ps(_mm256_loadu_ps(qh + 8 * t), _mm256_loadu_ps(kh + p * D + 8 * t), acc8[0]);
        scores[p] = _mm256_cvtss_f32(sum8(acc8)) * scale;  // lane 0 of the same tree, so the same sum as a block's
      }
      float m = -INFINITY;
      for (int64_t p = 0; p < length; ++p) m = scores[p] > m ? scores[p] : m;
      const __m256 mb = _mm256_set1_ps(m);
      for (int64_t p = length; p < ((length + 7) / 8) * 8; ++p) scores[p] = -INFINITY;
      __m256 sv = _mm256_setzero_ps();
      for (int64_t p = 0; p < length; p += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores.data() + p), mb));
        _mm256_storeu_ps(scores.data() + p, e);
        sv = _mm256_add_ps(sv, e);
      }
      const float inv = 1.f / hsum(sv);
      // the values' weighted sum, 64 columns at a time (W <= 8 accumulators in registers)
      float* o = os + i * heads * D + h * D;
      for (int64_t t0 = 0; t0 < vecs; t0 += 8) {
        const float* v = vh + 8 * t0;
        switch (vecs - t0 < 8 ? vecs - t0 : 8) {
          case 1: weighted_sum<1>(scores.data(), v, length, D, inv, o + 8 * t0); break;
          case 2: weighted_sum<2>(scores.data(), v, length, D, inv, o + 8 * t0); break;
          case 3: weighted_sum<3>(scores.data(), v, length, D, inv, o + 8 * t0); break;
          case 4: weighted_sum<4>(scores.data(), v, length, D, inv, o + 8 * t0); break;
          case 5: weighted_sum<5>(scores.data(), v, length, D, inv, o + 8 * t0); break;
          case 6: weighted_sum<6>(scores.data(), v, length, D, inv, o + 8 * t0); break;
          case 7: weighted_sum<7>(scores.data(), v, length, D, inv, o + 8 * t0); break;
          default: weighted_sum<8>(scores.data(), v, length, D, inv, o + 8 * t0);
        }
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rms_norm", &rms_norm);
  m.def("add_rms_norm", &add_rms_norm);
  m.def("silu_mul", &silu_mul);
  m.def("attention", &attention);
}
