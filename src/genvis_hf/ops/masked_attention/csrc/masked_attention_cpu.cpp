// Masked multi-head attention for CPU inference: Mask2Former's masked cross-attention (100 queries attend to the
// up to ~3000 pixels of one level, restricted by a boolean mask shared by the heads).
//
// torch's scaled_dot_product_attention runs its flash kernel on such inputs as blocks of 32 queries x 512 keys:
// ~1500 tiny GEMM calls per call for 4 frames x 8 heads, plus a float copy of the mask: most of its time is call
// overhead, not arithmetic (docs/performance.md). Here one task per (batch, head), each with three steps on
// a [Lq, S] score block that stays in the core's cache:
//     scores = Q_h K_h^T                          one GEMM (at::mm_out: MKL, single-threaded inside the task)
//     p = exp(scale * scores - row max)           over allowed keys only (others 0), vectorised; row sums kept
//     out_h = (p V_h) / row sum                   one GEMM into the head's columns of the output, rows scaled
// Same formulas as SDPA; the softmax's sums run in another order (differences ~1e-7 relative).
//
// Shapes: query [N, Lq, C], key / value [N, S, C] (last dim contiguous, any row strides: e.g. slices of a
// stacked projection), allowed bool [N, Lq, S] contiguous (True = may attend), C = heads * head_dim.
// Output [N, Lq, C] contiguous. A query row with no allowed key gets zeros (as SDPA's CPU kernel).
#include "masked_attention.h"

#include "exp_nonpositive.h"

#include <ATen/Parallel.h>
#include <ATen/TensorIndexing.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

namespace genvis_attention {
namespace {

using genvis_simd::exp_nonpositive;

// One query row: p[j] = exp(scale * s[j] - max) where allowed[j], else 0 (in place); returns sum_j p[j] (0 when
// no key is allowed). Two vectorised passes: masked scaling with the running maximum, then the exps and their sum.
float masked_softmax_row(float* __restrict__ s, const bool* __restrict__ allowed, int64_t keys, float scale) {
  const float minus_infinity = -std::numeric_limits<float>::infinity();
  float row_max = minus_infinity;
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 scale8 = _mm256_set1_ps(scale), blocked = _mm256_set1_ps(minus_infinity);
  __m256 max8 = blocked;
  for (; j + 8 <= keys; j += 8) {
    int64_t bytes;  // 8 bools, each 0 or 1
    std::memcpy(&bytes, allowed + j, sizeof(bytes));
    const __m256i flags = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(flags, _mm256_setzero_si256()));
    const __m256 scaled = _mm256_blendv_ps(blocked, _mm256_mul_ps(_mm256_loadu_ps(s + j), scale8), keep);
    _mm256_storeu_ps(s + j, scaled);
    max8 = _mm256_max_ps(max8, scaled);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, max8);
  for (float lane : lanes) row_max = std::max(row_max, lane);
#endif
  for (; j < keys; ++j) {
    s[j] = allowed[j] ? s[j] * scale : minus_infinity;
    row_max = std::max(row_max, s[j]);
  }
  if (row_max == minus_infinity) {  // nothing to attend to
    std::fill(s, s + keys, 0.f);
    return 0.f;
  }
  return genvis_simd::exp_shifted_sum(s, keys, row_max);
}

}  // namespace

at::Tensor masked_attention_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                const at::Tensor& allowed, int64_t num_heads) {
  const int64_t batch = query.size(0), queries = query.size(1), channels = query.size(2);
  const int64_t keys = key.size(1), head_dim = channels / num_heads;
  const float scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  at::Tensor out = at::empty({batch, queries, channels}, query.options());
  const bool* allowed_data = allowed.data_ptr<bool>();

  at::parallel_for(0, batch * num_heads, 1, [&](int64_t begin, int64_t end) {
    // Inside a parallel region ATen's own ops run on the calling thread: each task's products are
    // single-threaded GEMMs on strided views (no copies: every operand has a unit stride in one dim). Worker
    // threads do not inherit the caller's inference mode: set it, so that writing into `out` is allowed when
    // the caller runs under torch.inference_mode() (no autograd is involved either way).
    c10::InferenceMode inference_mode;
    at::Tensor scores = at::empty({queries, keys}, query.options());  // [Lq, S]
    float* score_data = scores.data_ptr<float>();
    std::vector<float> inverse_sums(queries);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / num_heads, h = task % num_heads;
      const auto head = at::indexing::Slice(h * head_dim, (h + 1) * head_dim);
      const at::Tensor q = query[n].index({at::indexing::Slice(), head});  // [Lq, d]
      const at::Tensor k = key[n].index({at::indexing::Slice(), head});    // [S, d]
      const at::Tensor v = value[n].index({at::indexing::Slice(), head});  // [S, d]
      at::Tensor o = out[n].index({at::indexing::Slice(), head});          // [Lq, d], row stride C
      at::mm_out(scores, q, k.t());
      const bool* mask = allowed_data + n * queries * keys;
      for (int64_t i = 0; i < queries; ++i) {
        const float sum = masked_softmax_row(score_data + i * keys, mask + i * keys, keys, scale);
        inverse_sums[i] = sum > 0.f ? 1.f / sum : 0.f;
      }
      at::mm_out(o, scores, v);  // unnormalised; each row divided by its sum below
      float* o_data = o.data_ptr<float>();
      for (int64_t i = 0; i < queries; ++i) {
        for (int64_t c = 0; c < head_dim; ++c) o_data[i * channels + c] *= inverse_sums[i];
      }
    }
  });
  return out;
}

}  // namespace genvis_attention
