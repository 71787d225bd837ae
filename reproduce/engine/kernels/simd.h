// Horizontal reductions of 8 float lanes (AVX), shared by the C++ kernels. The order of the adds is fixed, so a
// reduction's rounding never depends on anything but its 8 inputs (what batch invariance needs). static: each
// extension module, built for its own ISA, keeps its own copy.
#pragma once

#include <immintrin.h>

namespace reproduce_simd {

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

}  // namespace reproduce_simd
