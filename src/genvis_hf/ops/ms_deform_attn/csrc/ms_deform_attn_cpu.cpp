// CPU kernels of multi-scale deformable attention (see ms_deform_attn.h for shapes).
//
// Forward: parallel over (batch x query) rows with at::parallel_for (torch's intra-op thread pool, i.e.
// torch.get_num_threads()); for each head the four bilinear corners of every sampling point are
// combined in one pass over the head's D contiguous channels, a loop the compiler vectorises.
// Forward from projections (inference): the same sampling, with the attention-weight softmax and the sampling
// locations (reference + offset / level size) computed per query inside the kernel, vectorised across the
// query's samples, instead of as two separate passes over [N, Lq, M, L, P(, 2)] tensors.
// Backward: parallel over (batch x head) pairs, so every thread owns a disjoint slice of grad_value and
// needs neither atomics nor per-thread copies; the result is deterministic. Its channel loop, with the
// three per-sample sums, is vectorised with `omp simd`.
#include "ms_deform_attn.h"
#include "ms_deform_attn_sampling.h"
#include "exp_nonpositive.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace genvis_ms_deform_attn {
namespace {

struct Dims {
  int64_t batch, num_values, num_heads, head_dim, num_queries, num_levels, num_points;
};

Dims dims_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0), value.size(1), value.size(2), value.size(3),
          sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
}

// out[c] += sum_k coef[k] * rows[k][c] for c < n.
template <typename scalar_t, typename acc_t>
inline void accumulate_corners(acc_t* __restrict__ out, const scalar_t* __restrict__ r0,
                               const scalar_t* __restrict__ r1, const scalar_t* __restrict__ r2,
                               const scalar_t* __restrict__ r3, const acc_t* coef, int64_t n) {
  const acc_t c0 = coef[0], c1 = coef[1], c2 = coef[2], c3 = coef[3];
  for (int64_t c = 0; c < n; ++c) {
    out[c] += c0 * static_cast<acc_t>(r0[c]) + c1 * static_cast<acc_t>(r1[c]) +
              c2 * static_cast<acc_t>(r2[c]) + c3 * static_cast<acc_t>(r3[c]);
  }
}

// One (batch n, query, head m): out[0:D] = sum over levels l and points p of attn[s] * bilinear sample of the
// head's channels at loc[2s], loc[2s + 1] (s = l * P + p). `acc` is D scratch accumulators.
template <typename scalar_t, typename loc_t, typename acc_t>
inline void sample_head(const scalar_t* value, int64_t n, int64_t m, const int64_t* shapes, const int64_t* starts,
                        const loc_t* loc, const loc_t* attn, const scalar_t* zero_row, acc_t* acc, scalar_t* out,
                        const Dims& d) {
  const int64_t row_stride = d.num_heads * d.head_dim;  // elements between two pixels of `value`
  std::fill(acc, acc + d.head_dim, acc_t(0));
  for (int64_t l = 0; l < d.num_levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    const scalar_t* level = value + ((n * d.num_values + starts[l]) * d.num_heads + m) * d.head_dim;
    for (int64_t p = 0; p < d.num_points; ++p) {
      const int64_t s = l * d.num_points + p;
      BilinearCorners<acc_t> corners;
      if (!bilinear_corners<acc_t>(loc[2 * s], loc[2 * s + 1], height, width, corners)) continue;
      const acc_t a = static_cast<acc_t>(attn[s]);
      const scalar_t* rows[4];
      acc_t coef[4];
      for (int k = 0; k < 4; ++k) {
        const bool inside = corners.pixel[k] >= 0;
        rows[k] = inside ? level + corners.pixel[k] * row_stride : zero_row;
        coef[k] = inside ? a * corners.weight[k] : acc_t(0);
      }
      accumulate_corners(acc, rows[0], rows[1], rows[2], rows[3], coef, d.head_dim);
    }
  }
  for (int64_t c = 0; c < d.head_dim; ++c) out[c] = static_cast<scalar_t>(acc[c]);
}

template <typename scalar_t>
void forward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                    const scalar_t* locations, const scalar_t* weights, scalar_t* output, const Dims& d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t samples = d.num_levels * d.num_points;
  at::parallel_for(0, d.batch * d.num_queries, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(d.head_dim);
    const std::vector<scalar_t> zero_row(d.head_dim, scalar_t(0));  // stands in for corners outside the map
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / d.num_queries;
      for (int64_t m = 0; m < d.num_heads; ++m) {
        const int64_t head = nq * d.num_heads + m;
        sample_head(value, n, m, shapes, starts, locations + head * samples * 2, weights + head * samples,
                    zero_row.data(), acc.data(), output + head * d.head_dim, d);
      }
    }
  });
}

// Rows of a [N, Lq, K] tensor whose last dimension is contiguous (a column slice of a wider projection).
struct RowView {
  const float* data;
  int64_t batch_stride, query_stride;
  const float* row(int64_t n, int64_t q) const { return data + n * batch_stride + q * query_stride; }
};

// Scratch of one thread of the inference kernel: per sample j = m * S + s of one query (M heads x S = L * P
// samples), the attention weight and the four bilinear corners (pixel index within the level, -1 outside;
// coefficient = attention weight x bilinear weight), laid out as arrays so the geometry vectorises.
struct QuerySamples {
  std::vector<float> attn, scratch, coef[4];
  std::vector<int32_t> pixel[4];
  std::vector<int32_t> inside;  // some corner may be inside the map (else the sample adds exactly zero)
  explicit QuerySamples(int64_t count) : attn(count), scratch(count), inside(count) {
    for (int k = 0; k < 4; ++k) {
      coef[k].resize(count);
      pixel[k].resize(count);
    }
  }
};

// Per-sample level tables of a query's M * S samples (the same for every query).
struct SampleLevels {
  std::vector<int32_t> level, height, width;
  std::vector<float> height_f, width_f;
  SampleLevels(const int64_t* shapes, const Dims& d) {
    const int64_t count = d.num_heads * d.num_levels * d.num_points;
    level.resize(count), height.resize(count), width.resize(count), height_f.resize(count), width_f.resize(count);
    for (int64_t j = 0; j < count; ++j) {
      const int64_t l = (j % (d.num_levels * d.num_points)) / d.num_points;
      level[j] = static_cast<int32_t>(l);
      height[j] = static_cast<int32_t>(shapes[2 * l]);
      width[j] = static_cast<int32_t>(shapes[2 * l + 1]);
      height_f[j] = static_cast<float>(shapes[2 * l]);
      width_f[j] = static_cast<float>(shapes[2 * l + 1]);
    }
  }
};

// The locations (reference + offset / size) and bilinear corners of all of a query's samples: the arithmetic
// of `bilinear_corners` (same operations, so the same roundings), written branch-free over arrays so that the
// compiler vectorises it across samples.
inline void locate_samples(const float* __restrict__ reference, const float* __restrict__ offsets,
                           const SampleLevels& levels, int64_t count, QuerySamples& out) {
  const int32_t* __restrict__ level = levels.level.data();
  const int32_t* __restrict__ height_i = levels.height.data();
  const int32_t* __restrict__ width_i = levels.width.data();
  const float* __restrict__ height_f = levels.height_f.data();
  const float* __restrict__ width_f = levels.width_f.data();
  const float* __restrict__ attn = out.attn.data();
  int32_t* __restrict__ inside = out.inside.data();
  float *__restrict__ c0 = out.coef[0].data(), *__restrict__ c1 = out.coef[1].data(),
        *__restrict__ c2 = out.coef[2].data(), *__restrict__ c3 = out.coef[3].data();
  int32_t *__restrict__ p0 = out.pixel[0].data(), *__restrict__ p1 = out.pixel[1].data(),
          *__restrict__ p2 = out.pixel[2].data(), *__restrict__ p3 = out.pixel[3].data();
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) {
    const float width = width_f[j], height = height_f[j];
    const float x = reference[2 * level[j]] + offsets[2 * j] / width;
    const float y = reference[2 * level[j] + 1] + offsets[2 * j + 1] / height;
    const float w_im = location_to_pixel(x, width);
    const float h_im = location_to_pixel(y, height);
    // `&` rather than `&&`: no branches in the loop; NaN fails every comparison
    const int32_t any = (h_im > -1.0f) & (w_im > -1.0f) & (h_im < height) & (w_im < width);
    // clamped before the integer conversion (the clamp only changes samples that are outside anyway)
    const float h_clamped = std::min(height, std::max(-2.0f, h_im));  // argument order: NaN -> -2
    const float w_clamped = std::min(width, std::max(-2.0f, w_im));
    // floor by truncation (exact in this range; std::floor would not vectorise without -fno-trapping-math)
    const int32_t h_trunc = static_cast<int32_t>(h_clamped), w_trunc = static_cast<int32_t>(w_clamped);
    const int32_t h_low = h_trunc - (h_clamped < static_cast<float>(h_trunc));
    const int32_t w_low = w_trunc - (w_clamped < static_cast<float>(w_trunc));
    const float h_floor = static_cast<float>(h_low), w_floor = static_cast<float>(w_low);
    const float lh = h_im - h_floor, lw = w_im - w_floor;
    const float hh = 1.0f - lh, hw = 1.0f - lw;
    const int32_t top = any & (h_low >= 0), bottom = any & (h_low + 1 <= height_i[j] - 1);
    const int32_t left = w_low >= 0, right = w_low + 1 <= width_i[j] - 1;
    const int32_t corner = h_low * width_i[j] + w_low;
    const float a = attn[j];
    inside[j] = any;
    p0[j] = (top & left) ? corner : -1;
    p1[j] = (top & right) ? corner + 1 : -1;
    p2[j] = (bottom & left) ? corner + width_i[j] : -1;
    p3[j] = (bottom & right) ? corner + width_i[j] + 1 : -1;
    c0[j] = a * (hh * hw);
    c1[j] = a * (hh * lw);
    c2[j] = a * (lh * hw);
    c3[j] = a * (lh * lw);
  }
}

using genvis_simd::exp_nonpositive;

// The attention weights of every head of one query: softmax over each head's S = L * P logits (max-shifted exp,
// summed in sample order, divided by the sum), the exps and divisions vectorised across the M * S samples.
inline void softmax_heads(const float* __restrict__ logits, int64_t num_heads, int64_t samples, QuerySamples& query) {
  const int64_t count = num_heads * samples;
  float* __restrict__ attn = query.attn.data();
  float* __restrict__ shift = query.scratch.data();
  for (int64_t m = 0; m < num_heads; ++m) {
    const float* head = logits + m * samples;
    float peak = head[0];
    for (int64_t s = 1; s < samples; ++s) peak = std::max(peak, head[s]);
    std::fill(shift + m * samples, shift + (m + 1) * samples, peak);
  }
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; j + 8 <= count; j += 8) {
    const __m256 x = _mm256_sub_ps(_mm256_loadu_ps(logits + j), _mm256_loadu_ps(shift + j));
    _mm256_storeu_ps(attn + j, exp_nonpositive(x));
  }
#endif
  for (; j < count; ++j) attn[j] = exp_nonpositive(logits[j] - shift[j]);
  for (int64_t m = 0; m < num_heads; ++m) {
    float total = 0.0f;
    for (int64_t s = 0; s < samples; ++s) total += attn[m * samples + s];
    std::fill(shift + m * samples, shift + (m + 1) * samples, total);
  }
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) attn[j] /= shift[j];
}

#if defined(__AVX2__) && defined(__FMA__)
// D = 32 with AVX2: out = sum over the head's samples of their four weighted corner rows, the 32 accumulators
// held in four 8-float registers (per channel: acc += ((c0 * r0 + c1 * r1) + c2 * r2) + c3 * r3, fused).
inline void accumulate_head_32(const float* const* rows, const float* coef, int64_t count, float* __restrict__ out) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(),
         acc3 = _mm256_setzero_ps();
  for (int64_t i = 0; i < count; ++i) {
    const float* const* r = rows + 4 * i;
    const __m256 c0 = _mm256_set1_ps(coef[4 * i]), c1 = _mm256_set1_ps(coef[4 * i + 1]),
                 c2 = _mm256_set1_ps(coef[4 * i + 2]), c3 = _mm256_set1_ps(coef[4 * i + 3]);
    auto block = [&](int c) {
      __m256 t = _mm256_mul_ps(c0, _mm256_loadu_ps(r[0] + c));
      t = _mm256_fmadd_ps(c1, _mm256_loadu_ps(r[1] + c), t);
      t = _mm256_fmadd_ps(c2, _mm256_loadu_ps(r[2] + c), t);
      return _mm256_fmadd_ps(c3, _mm256_loadu_ps(r[3] + c), t);
    };
    acc0 = _mm256_add_ps(acc0, block(0));
    acc1 = _mm256_add_ps(acc1, block(8));
    acc2 = _mm256_add_ps(acc2, block(16));
    acc3 = _mm256_add_ps(acc3, block(24));
  }
  _mm256_storeu_ps(out, acc0);
  _mm256_storeu_ps(out + 8, acc1);
  _mm256_storeu_ps(out + 16, acc2);
  _mm256_storeu_ps(out + 24, acc3);
}
#endif

// float32 only: what the encoder runs at inference. Same arithmetic as the separate passes it replaces
// (softmax_small_last_dim: max-shifted exp over the L * P logits of a head, divided by their sum; addcdiv:
// reference + offset / size), up to the order of the L * P-term sum and the exp implementation (<= 2 ulp).
// Per query: the softmax of every head, then the locations and corners of all M * S samples at once
// (vectorised across samples), then per head one pass over its channels (accumulators in registers for
// D = 32, Mask2Former's 256 channels / 8 heads).
void forward_from_projections_kernel(const float* value, const int64_t* shapes, const int64_t* starts,
                                     const float* reference, const RowView& offsets, const RowView& logits,
                                     float* output, const Dims& d) {
  const int64_t samples = d.num_levels * d.num_points;
  const int64_t count = d.num_heads * samples;
  const int64_t row_stride = d.num_heads * d.head_dim;  // elements between two pixels of `value`
  const SampleLevels levels(shapes, d);
  at::parallel_for(0, d.batch * d.num_queries, 16, [&](int64_t begin, int64_t end) {
    QuerySamples query(count);
    std::vector<float> acc(d.head_dim), coef(samples * 4);
    std::vector<const float*> rows(samples * 4);
    const std::vector<float> zero_row(d.head_dim, 0.0f);
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / d.num_queries, q = nq % d.num_queries;
      softmax_heads(logits.row(n, q), d.num_heads, samples, query);  // logits [M, L * P]
      // reference [L, 2] (x, y); offsets [M, L, P, 2]
      locate_samples(reference + nq * d.num_levels * 2, offsets.row(n, q), levels, count, query);
      for (int64_t m = 0; m < d.num_heads; ++m) {
        int64_t kept = 0;
        for (int64_t s = 0; s < samples; ++s) {
          const int64_t j = m * samples + s;
          if (!query.inside[j]) continue;
          const float* level = value + ((n * d.num_values + starts[levels.level[j]]) * d.num_heads + m) * d.head_dim;
          for (int k = 0; k < 4; ++k) {
            const int32_t pixel = query.pixel[k][j];
            rows[4 * kept + k] = pixel >= 0 ? level + pixel * row_stride : zero_row.data();
            coef[4 * kept + k] = pixel >= 0 ? query.coef[k][j] : 0.0f;
          }
          ++kept;
        }
        float* out = output + (nq * d.num_heads + m) * d.head_dim;
#if defined(__AVX2__) && defined(__FMA__)
        if (d.head_dim == 32) {
          accumulate_head_32(rows.data(), coef.data(), kept, out);
          continue;
        }
#endif
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t i = 0; i < kept; ++i) {
          accumulate_corners(acc.data(), rows[4 * i], rows[4 * i + 1], rows[4 * i + 2], rows[4 * i + 3],
                             &coef[4 * i], d.head_dim);
        }
        std::copy(acc.begin(), acc.end(), out);
      }
    }
  });
}

// grad_value is accumulated in acc_t (float for half/bfloat16) and cast by the caller.
template <typename scalar_t>
void backward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                     const scalar_t* locations, const scalar_t* weights, const scalar_t* grad_output,
                     at::opmath_type<scalar_t>* grad_value, scalar_t* grad_locations, scalar_t* grad_weights,
                     const Dims& d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_stride = d.num_heads * d.head_dim;
  const int64_t samples = d.num_levels * d.num_points;
  at::parallel_for(0, d.batch * d.num_heads, 1, [&](int64_t begin, int64_t end) {
    const std::vector<scalar_t> zero_row(d.head_dim, scalar_t(0));
    std::vector<acc_t> discard_row(d.head_dim);  // gradient sink for corners outside the map
    for (int64_t nm = begin; nm < end; ++nm) {
      const int64_t n = nm / d.num_heads, m = nm % d.num_heads;
      for (int64_t q = 0; q < d.num_queries; ++q) {
        const int64_t head = (n * d.num_queries + q) * d.num_heads + m;
        const scalar_t* loc = locations + head * samples * 2;
        const scalar_t* attn = weights + head * samples;
        const scalar_t* grad_out = grad_output + head * d.head_dim;
        for (int64_t l = 0; l < d.num_levels; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          const int64_t level_offset = ((n * d.num_values + starts[l]) * d.num_heads + m) * d.head_dim;
          for (int64_t p = 0; p < d.num_points; ++p) {
            const int64_t s = l * d.num_points + p;
            BilinearCorners<acc_t> corners;
            // Outside the map: the sample is zero, and so are all its gradients (outputs start zeroed).
            if (!bilinear_corners<acc_t>(loc[2 * s], loc[2 * s + 1], height, width, corners)) continue;
            const acc_t a = static_cast<acc_t>(attn[s]);
            const scalar_t* v[4];
            acc_t* gv[4];
            for (int k = 0; k < 4; ++k) {
              const bool inside = corners.pixel[k] >= 0;
              v[k] = inside ? value + level_offset + corners.pixel[k] * row_stride : zero_row.data();
              gv[k] = inside ? grad_value + level_offset + corners.pixel[k] * row_stride : discard_row.data();
            }
            const acc_t lh = corners.frac_h, lw = corners.frac_w, hh = acc_t(1) - lh, hw = acc_t(1) - lw;
            const acc_t* w = corners.weight;
            acc_t grad_attn = 0, grad_lw = 0, grad_lh = 0;
            // Vectorised over channels, the three sums included (OpenMP lets it reassociate them).
#pragma omp simd reduction(+ : grad_attn, grad_lw, grad_lh)
            for (int64_t c = 0; c < d.head_dim; ++c) {
              const acc_t g = static_cast<acc_t>(grad_out[c]);
              const acc_t v0 = v[0][c], v1 = v[1][c], v2 = v[2][c], v3 = v[3][c];
              grad_attn += g * (w[0] * v0 + w[1] * v1 + w[2] * v2 + w[3] * v3);
              grad_lw += g * (hh * (v1 - v0) + lh * (v3 - v2));
              grad_lh += g * (hw * (v2 - v0) + lw * (v3 - v1));
              const acc_t ag = a * g;
              gv[0][c] += ag * w[0];
              gv[1][c] += ag * w[1];
              gv[2][c] += ag * w[2];
              gv[3][c] += ag * w[3];
            }
            grad_weights[head * samples + s] = static_cast<scalar_t>(grad_attn);
            // d(pixel x)/d(location x) = W and d(pixel y)/d(location y) = H.
            grad_locations[(head * samples + s) * 2] = static_cast<scalar_t>(a * grad_lw * static_cast<acc_t>(width));
            grad_locations[(head * samples + s) * 2 + 1] =
                static_cast<scalar_t>(a * grad_lh * static_cast<acc_t>(height));
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                       const at::Tensor& attention_weights) {
  const Dims d = dims_of(value, sampling_locations);
  auto output = at::empty({d.batch, d.num_queries, d.num_heads * d.head_dim}, value.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    forward_kernel<scalar_t>(value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
                             level_start_index.const_data_ptr<int64_t>(),
                             sampling_locations.const_data_ptr<scalar_t>(),
                             attention_weights.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), d);
  });
  return output;
}

at::Tensor forward_from_projections_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                        const at::Tensor& level_start_index, const at::Tensor& reference_points,
                                        const at::Tensor& offsets, const at::Tensor& logits, int64_t num_points) {
  const int64_t levels = spatial_shapes.size(0);
  const Dims d = {value.size(0), value.size(1), value.size(2), value.size(3), reference_points.size(1), levels,
                  num_points};
  auto output = at::empty({d.batch, d.num_queries, d.num_heads * d.head_dim}, value.options());
  if (output.numel() == 0) return output;
  forward_from_projections_kernel(
      value.const_data_ptr<float>(), spatial_shapes.const_data_ptr<int64_t>(),
      level_start_index.const_data_ptr<int64_t>(), reference_points.const_data_ptr<float>(),
      {offsets.const_data_ptr<float>(), offsets.stride(0), offsets.stride(1)},
      {logits.const_data_ptr<float>(), logits.stride(0), logits.stride(1)}, output.mutable_data_ptr<float>(), d);
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                     const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  const Dims d = dims_of(value, sampling_locations);
  const auto acc_dtype = at::toOpMathType(value.scalar_type());
  auto grad_value = at::zeros(value.sizes(), value.options().dtype(acc_dtype));
  auto grad_locations = at::zeros_like(sampling_locations);
  auto grad_weights = at::zeros_like(attention_weights);
  if (grad_output.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
      backward_kernel<scalar_t>(
          value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
          level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<scalar_t>(),
          attention_weights.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
          grad_value.mutable_data_ptr<at::opmath_type<scalar_t>>(), grad_locations.mutable_data_ptr<scalar_t>(),
          grad_weights.mutable_data_ptr<scalar_t>(), d);
    });
  }
  return std::make_tuple(grad_value.to(value.scalar_type()), grad_locations, grad_weights);
}

}  // namespace genvis_ms_deform_attn
