// Swin's window attention for CPU inference: every (window, head) of a block at once, without the copies around
// the attention of the reference (`SwinWindowAttention`: reshape/permute of the packed qkv, the relative-position
// bias gathered and added per call, the shift mask broadcast and added, two batched products through the
// [windows x heads, N, N] score tensor).
//
// One task per (window, head), each with three steps on an [N, N] score block (N = 144 tokens for window 12) that
// stays in the core's cache:
//     scores = Q_h K_h^T                                   a GEMM on strided views of qkv
//     p = exp(scale * scores + bias_h + mask_w - row max)  vectorised, row sums kept
//     out_h = (p V_h) / row sum                            a GEMM into the head's columns of the output
// Same formulas as the reference; the scale is applied to the scores instead of the queries and the softmax sums
// run in another order (differences ~1e-7 relative).
//
// The two GEMMs are tiny (144 x 32 x 144) and there are thousands per frame. On CPUs with AVX-512 they run as
// register-blocked AVX-512 micro-kernels (K_h transposed once per task into a zero-padded [d, N16] block; head
// sizes that are multiples of 16 up to 64, Swin's 32 included): the BLAS behind at::mm (MKL) takes its AVX2 path on
// AMD CPUs and pays a call overhead per product. Elsewhere, and for other head sizes, at::mm_out. The micro-kernels
// are compiled for AVX-512 with function attributes and chosen at run time, so the library still loads on CPUs
// without it.
#include "window_attention.h"

#include "avx512.h"
#include "exp_nonpositive.h"

#include <ATen/Parallel.h>
#include <ATen/TensorIndexing.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace genvis_window_attention {
namespace {

using genvis_simd::exp_nonpositive;

#if GENVIS_HAVE_AVX512_KERNELS
using genvis_simd::cpu_has_avx512;

// out[r][0 .. 16D) = inverse[r] * sum_j p[r * p_stride + j] * v[j * v_stride ..] for R rows, j < n.
template <int R, int D>
GENVIS_AVX512 inline void output_block(const float* p, int64_t p_stride, int64_t n, const float* v,
                                       int64_t v_stride, const float* inverse, float* out, int64_t out_stride) {
  __m512 acc[R][D];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < D; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    __m512 values[D];
    for (int t = 0; t < D; ++t) values[t] = _mm512_loadu_ps(v + j * v_stride + 16 * t);
    for (int r = 0; r < R; ++r) {
      const __m512 pb = _mm512_set1_ps(p[r * p_stride + j]);
      for (int t = 0; t < D; ++t) acc[r][t] = _mm512_fmadd_ps(pb, values[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m512 scale = _mm512_set1_ps(inverse[r]);
    for (int t = 0; t < D; ++t) _mm512_storeu_ps(out + r * out_stride + 16 * t, _mm512_mul_ps(acc[r][t], scale));
  }
}

// The output product of a (window, head) for head size 16 * D (the scores are a plain GEMM: gemm_rows).
template <int D>
struct Avx512Head {
  static constexpr int kOutRows = 24 / D;  // 24 output accumulators

  GENVIS_AVX512 static void output(const float* p, int64_t n, int64_t n16, const float* v, int64_t v_stride,
                                   const float* inverse, float* out, int64_t out_stride) {
    int64_t i = 0;
    for (; i + kOutRows <= n; i += kOutRows)
      output_block<kOutRows, D>(p + i * n16, n16, n, v, v_stride, inverse + i, out + i * out_stride, out_stride);
    for (; i < n; ++i) output_block<1, D>(p + i * n16, n16, n, v, v_stride, inverse + i, out + i * out_stride, out_stride);
  }
};

// One (window, head) with the micro-kernels; false when the head size has none (the caller uses at::mm_out).
bool avx512_head(int64_t head_dim, const float* q, const float* k, const float* v, int64_t row_stride, int64_t n,
                 int64_t n16, float* kt, float* s, const float* bias, const float* mask, float scale,
                 float* inverse, float* out, int64_t out_stride);
#endif

// One row: s[j] = exp(scale * s[j] + bias[j] + mask[j] - max) in place (mask may be null); returns the sum.
float softmax_row(float* __restrict__ s, const float* __restrict__ bias, const float* __restrict__ mask, int64_t n,
                  float scale) {
  float row_max = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 scale8 = _mm256_set1_ps(scale);
  __m256 max8 = _mm256_set1_ps(row_max);
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(s + j), scale8, _mm256_loadu_ps(bias + j));
    if (mask != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(mask + j));
    _mm256_storeu_ps(s + j, v);
    max8 = _mm256_max_ps(max8, v);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, max8);
  for (float lane : lanes) row_max = std::max(row_max, lane);
#endif
  for (; j < n; ++j) {
    s[j] = std::fma(s[j], scale, bias[j]) + (mask != nullptr ? mask[j] : 0.f);
    row_max = std::max(row_max, s[j]);
  }
  return genvis_simd::exp_shifted_sum(s, n, row_max);
}

#if GENVIS_HAVE_AVX512_KERNELS
template <int D>
bool avx512_head_of_size(const float* q, const float* k, const float* v, int64_t row_stride, int64_t n, int64_t n16,
                         float* kt, float* s, const float* bias, const float* mask, float scale, float* inverse,
                         float* out, int64_t out_stride) {
  constexpr int64_t depth = 16 * D;
  for (int64_t c = 0; c < depth; ++c) {  // K_h transposed, zero-padded to n16 columns
    float* row = kt + c * n16;
    for (int64_t j = 0; j < n; ++j) row[j] = k[j * row_stride + c];
    for (int64_t j = n; j < n16; ++j) row[j] = 0.f;
  }
  genvis_simd::gemm_rows(q, row_stride, kt, n16, n, depth, n16, s, n16);  // scores [n, n16] = Q_h K_h^T
  for (int64_t i = 0; i < n; ++i) {
    inverse[i] = 1.f / softmax_row(s + i * n16, bias + i * n, mask != nullptr ? mask + i * n : nullptr, n, scale);
  }
  Avx512Head<D>::output(s, n, n16, v, row_stride, inverse, out, out_stride);
  return true;
}

bool avx512_head(int64_t head_dim, const float* q, const float* k, const float* v, int64_t row_stride, int64_t n,
                 int64_t n16, float* kt, float* s, const float* bias, const float* mask, float scale,
                 float* inverse, float* out, int64_t out_stride) {
  switch (head_dim) {
    case 16: return avx512_head_of_size<1>(q, k, v, row_stride, n, n16, kt, s, bias, mask, scale, inverse, out, out_stride);
    case 32: return avx512_head_of_size<2>(q, k, v, row_stride, n, n16, kt, s, bias, mask, scale, inverse, out, out_stride);
    case 48: return avx512_head_of_size<3>(q, k, v, row_stride, n, n16, kt, s, bias, mask, scale, inverse, out, out_stride);
    case 64: return avx512_head_of_size<4>(q, k, v, row_stride, n, n16, kt, s, bias, mask, scale, inverse, out, out_stride);
    default: return false;
  }
}
#endif

}  // namespace

at::Tensor window_attention_cpu(const at::Tensor& qkv, const at::Tensor& relative_bias,
                                const c10::optional<at::Tensor>& window_mask, int64_t num_heads, double scale) {
  const int64_t windows = qkv.size(0), tokens = qkv.size(1), channels = qkv.size(2) / 3;
  const int64_t head_dim = channels / num_heads;
  at::Tensor out = at::empty({windows, tokens, channels}, qkv.options());
  const float* bias_data = relative_bias.data_ptr<float>();
  const bool masked = window_mask.has_value() && window_mask->defined();
  const float* mask_data = masked ? window_mask->data_ptr<float>() : nullptr;
  const int64_t mask_windows = masked ? window_mask->size(0) : 1;
  const float scale_f = static_cast<float>(scale);

#if GENVIS_HAVE_AVX512_KERNELS
  if (cpu_has_avx512() && head_dim % 16 == 0 && head_dim <= 64) {
    const int64_t n16 = (tokens + 15) / 16 * 16, row_stride = qkv.stride(1);
    const float* qkv_data = qkv.data_ptr<float>();
    float* out_data = out.data_ptr<float>();
    at::parallel_for(0, windows * num_heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> kt(head_dim * n16), s(tokens * n16), inverse(tokens);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t w = task / num_heads, h = task % num_heads;
        const float* window = qkv_data + w * qkv.stride(0);
        avx512_head(head_dim, window + h * head_dim, window + channels + h * head_dim,
                    window + 2 * channels + h * head_dim, row_stride, tokens, n16, kt.data(), s.data(),
                    bias_data + h * tokens * tokens,
                    masked ? mask_data + (w % mask_windows) * tokens * tokens : nullptr, scale_f, inverse.data(),
                    out_data + w * tokens * channels + h * head_dim, channels);
      }
    });
    return out;
  }
#endif
  at::parallel_for(0, windows * num_heads, 1, [&](int64_t begin, int64_t end) {
    // Inside a parallel region ATen's own ops run on the calling thread: each task's products are single-threaded
    // GEMMs on strided views. Worker threads do not inherit the caller's inference mode: set it.
    c10::InferenceMode inference_mode;
    at::Tensor scores = at::empty({tokens, tokens}, qkv.options());
    float* score_data = scores.data_ptr<float>();
    std::vector<float> inverse_sums(tokens);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t w = task / num_heads, h = task % num_heads;
      using at::indexing::Slice;
      const at::Tensor window = qkv[w];                                          // [N, 3C]
      const at::Tensor q = window.index({Slice(), Slice(h * head_dim, (h + 1) * head_dim)});
      const at::Tensor k = window.index({Slice(), Slice(channels + h * head_dim, channels + (h + 1) * head_dim)});
      const at::Tensor v =
          window.index({Slice(), Slice(2 * channels + h * head_dim, 2 * channels + (h + 1) * head_dim)});
      at::Tensor o = out[w].index({Slice(), Slice(h * head_dim, (h + 1) * head_dim)});  // [N, d], row stride C
      at::mm_out(scores, q, k.t());
      const float* bias = bias_data + h * tokens * tokens;
      const float* mask = masked ? mask_data + (w % mask_windows) * tokens * tokens : nullptr;
      for (int64_t i = 0; i < tokens; ++i) {
        const float sum = softmax_row(score_data + i * tokens, bias + i * tokens,
                                      mask != nullptr ? mask + i * tokens : nullptr, tokens, scale_f);
        inverse_sums[i] = 1.f / sum;
      }
      at::mm_out(o, scores, v);  // unnormalised; each row divided by its sum below
      float* o_data = o.data_ptr<float>();
      for (int64_t i = 0; i < tokens; ++i) {
        for (int64_t c = 0; c < head_dim; ++c) o_data[i * channels + c] *= inverse_sums[i];
      }
    }
  });
  return out;
}

}  // namespace genvis_window_attention
