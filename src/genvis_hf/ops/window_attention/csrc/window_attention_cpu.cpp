// Swin's window attention for CPU inference: every (window, head) of a block at once, without the copies around
// the attention of the reference (`SwinWindowAttention`: reshape/permute of the packed qkv, the relative-position
// bias gathered and added per call, the shift mask broadcast and added, two batched products through the
// [windows x heads, N, N] score tensor).
//
// One task per (window, head), each with three steps on an [N, N] score block (N = 144 tokens for window 12) that
// stays in the core's cache:
//     scores = Q_h K_h^T                                   one GEMM on strided views of qkv (at::mm_out)
//     p = exp(scale * scores + bias_h + mask_w - row max)  vectorised, row sums kept
//     out_h = (p V_h) / row sum                            one GEMM into the head's columns of the output
// Same formulas as the reference; the scale is applied to the scores instead of the queries and the softmax sums
// run in another order (differences ~1e-7 relative).
#include "window_attention.h"

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
  float sum = 0.f;
  j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 shift = _mm256_set1_ps(row_max);
  __m256 partial = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    const __m256 p = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + j), shift));
    _mm256_storeu_ps(s + j, p);
    partial = _mm256_add_ps(partial, p);
  }
  _mm256_store_ps(lanes, partial);
  for (float lane : lanes) sum += lane;
#endif
  for (; j < n; ++j) {
    s[j] = exp_nonpositive(s[j] - row_max);
    sum += s[j];
  }
  return sum;
}

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
