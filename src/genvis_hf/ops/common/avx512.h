// AVX-512 code inside a library built for AVX2: functions compiled for AVX-512 with a target attribute and chosen
// at run time (`cpu_has_avx512()`), so the same library loads on CPUs without it. Shared by the CPU kernels.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#define GENVIS_HAVE_AVX512_KERNELS 1
#define GENVIS_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))

namespace genvis_simd {

inline bool cpu_has_avx512() {
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                                __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return supported;
}

// c[r][0 .. 16V) = sum_p a[r * lda + p] * b[p * ldb + (0 .. 16V)] for R rows (R x V accumulators in registers).
template <int R, int V>
GENVIS_AVX512 inline void gemm_block(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t depth, float* c,
                                     int64_t ldc) {
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < depth; ++p) {
    __m512 bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(b + p * ldb + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 ab = _mm512_set1_ps(a[r * lda + p]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(ab, bv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
}

// The R rows of c (64-column panel at column j, `vectors` 16-wide vectors of it) = a's R rows x b's panel.
template <int R>
GENVIS_AVX512 inline void gemm_panel(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t depth, float* c,
                                     int64_t ldc, int vectors) {
  switch (vectors) {
    case 4: gemm_block<R, 4>(a, lda, b, ldb, depth, c, ldc); break;
    case 3: gemm_block<R, 3>(a, lda, b, ldb, depth, c, ldc); break;
    case 2: gemm_block<R, 2>(a, lda, b, ldb, depth, c, ldc); break;
    default: gemm_block<R, 1>(a, lda, b, ldb, depth, c, ldc); break;
  }
}

// Rows [0, rows) of c [rows, n] = a [rows, depth] x b [depth, n], n a multiple of 16 (row-major, leading dims given):
// 64-column panels of b (reused from cache across the rows), 6-row register blocks.
GENVIS_AVX512 inline void gemm_rows(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t rows,
                                    int64_t depth, int64_t n, float* c, int64_t ldc) {
  for (int64_t j = 0; j < n; j += 64) {
    const int vectors = static_cast<int>(std::min<int64_t>(4, (n - j) / 16));
    int64_t i = 0;
    for (; i + 6 <= rows; i += 6) gemm_panel<6>(a + i * lda, lda, b + j, ldb, depth, c + i * ldc + j, ldc, vectors);
    for (; i < rows; ++i) gemm_panel<1>(a + i * lda, lda, b + j, ldb, depth, c + i * ldc + j, ldc, vectors);
  }
}

}  // namespace genvis_simd
#endif
