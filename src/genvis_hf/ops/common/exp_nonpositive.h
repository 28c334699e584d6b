// exp(x) for x <= 0, vectorised: the max-shifted logits of a softmax (deformable attention weights, masked
// attention). Shared by the CPU kernels.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace genvis_simd {

// exp(x) for x <= 0 (max-shifted logits). With AVX2 + FMA: Cephes' single-precision range reduction and
// polynomial, 8 at a time and, for a tail, the same operations on one float (within 2 ulp of the exact value;
// x < -87.3 gives 0 instead of a subnormal). Elsewhere std::exp.
#if defined(__AVX2__) && defined(__FMA__)
constexpr float kLog2e = 1.44269504088896341f, kLn2High = 0.693359375f, kLn2Low = 2.12194440e-4f;
constexpr float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

inline __m256 exp_nonpositive(__m256 x) {
  const __m256 floor_value = _mm256_set1_ps(-87.3f);
  const __m256 underflow = _mm256_cmp_ps(x, floor_value, _CMP_NGT_UQ);  // x <= -87.3 or NaN
  x = _mm256_max_ps(x, floor_value);                                     // NaN -> -87.3
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2High), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(kLn2Low), r);  // x - n ln 2
  __m256 p = _mm256_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpPoly[i]));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  // p * 2^n: n (in [-126, 0]) added to the exponent bits
  const __m256i scaled = _mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_cvttps_epi32(n), 23));
  return _mm256_andnot_ps(underflow, _mm256_castsi256_ps(scaled));
}

inline float exp_nonpositive(float x) {  // the same operations on one float
  const bool underflow = !(x > -87.3f);
  x = underflow ? -87.3f : x;
  const float n = std::floor(std::fma(x, kLog2e, 0.5f));
  float r = std::fma(n, -kLn2High, x);
  r = std::fma(n, kLn2Low, r);
  float p = kExpPoly[0];
  for (int i = 1; i < 6; ++i) p = std::fma(p, r, kExpPoly[i]);
  p = std::fma(p, r * r, r) + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  bits += static_cast<int32_t>(n) * (1 << 23);
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return underflow ? 0.0f : result;
}
#else
inline float exp_nonpositive(float x) { return std::exp(x); }
#endif

// The second pass of a softmax row: s[j] = exp(s[j] - row_max) in place for j < n; returns their sum (vectorised
// 8 at a time with AVX2, the sum then in lane order).
inline float exp_shifted_sum(float* __restrict__ s, int64_t n, float row_max) {
  float sum = 0.f;
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 shift = _mm256_set1_ps(row_max);
  __m256 partial = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    const __m256 p = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + j), shift));  // exp(-inf) = 0
    _mm256_storeu_ps(s + j, p);
    partial = _mm256_add_ps(partial, p);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, partial);
  for (float lane : lanes) sum += lane;
#endif
  for (; j < n; ++j) {
    s[j] = exp_nonpositive(s[j] - row_max);
    sum += s[j];
  }
  return sum;
}

}  // namespace genvis_simd
