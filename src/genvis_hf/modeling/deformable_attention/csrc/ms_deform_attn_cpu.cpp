// CPU kernels of multi-scale deformable attention (see ms_deform_attn.h for shapes).
//
// Forward: parallel over (batch x query) rows with at::parallel_for (torch's intra-op thread pool, i.e.
// torch.get_num_threads()); for each head the four bilinear corners of every sampling point are
// combined in one pass over the head's D contiguous channels, a loop the compiler vectorises.
// Forward from projections (inference): the same sampling, with the attention-weight softmax and the sampling
// locations (reference + offset / level size) computed per (query, head) inside the loop instead of as two
// separate passes over [N, Lq, M, L, P(, 2)] tensors.
// Backward: parallel over (batch x head) pairs, so every thread owns a disjoint slice of grad_value and
// needs neither atomics nor per-thread copies; the result is deterministic. Its channel loop, with the
// three per-sample sums, is vectorised with `omp simd`.
#include "ms_deform_attn.h"
#include "ms_deform_attn_sampling.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>

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

// float32 only: what the encoder runs at inference. Same arithmetic as the separate passes it replaces
// (softmax_small_last_dim: max-shifted exp over the L * P logits of a head, divided by their sum; addcdiv:
// reference + offset / size), up to the order of the L * P-term sum and the exp implementation (~1 ulp).
void forward_from_projections_kernel(const float* value, const int64_t* shapes, const int64_t* starts,
                                     const float* reference, const RowView& offsets, const RowView& logits,
                                     float* output, const Dims& d) {
  const int64_t samples = d.num_levels * d.num_points;
  at::parallel_for(0, d.batch * d.num_queries, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(d.head_dim), loc(samples * 2), attn(samples);
    const std::vector<float> zero_row(d.head_dim, 0.0f);
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / d.num_queries, q = nq % d.num_queries;
      const float* ref = reference + nq * d.num_levels * 2;  // [L, 2] (x, y)
      const float* offset_row = offsets.row(n, q);            // [M, L, P, 2]
      const float* logit_row = logits.row(n, q);              // [M, L * P]
      for (int64_t m = 0; m < d.num_heads; ++m) {
        const float* head_logits = logit_row + m * samples;
        float peak = head_logits[0];
        for (int64_t s = 1; s < samples; ++s) peak = std::max(peak, head_logits[s]);
        float total = 0.0f;
        for (int64_t s = 0; s < samples; ++s) total += (attn[s] = std::exp(head_logits[s] - peak));
        for (int64_t s = 0; s < samples; ++s) attn[s] /= total;
        const float* head_offsets = offset_row + m * samples * 2;
        for (int64_t l = 0; l < d.num_levels; ++l) {
          const float width = static_cast<float>(shapes[2 * l + 1]), height = static_cast<float>(shapes[2 * l]);
          for (int64_t p = 0; p < d.num_points; ++p) {
            const int64_t s = l * d.num_points + p;
            loc[2 * s] = ref[2 * l] + head_offsets[2 * s] / width;
            loc[2 * s + 1] = ref[2 * l + 1] + head_offsets[2 * s + 1] / height;
          }
        }
        sample_head(value, n, m, shapes, starts, loc.data(), attn.data(), zero_row.data(), acc.data(),
                    output + (nq * d.num_heads + m) * d.head_dim, d);
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

std::vector<at::Tensor> backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
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
  return {grad_value.to(value.scalar_type()), grad_locations, grad_weights};
}

}  // namespace genvis_ms_deform_attn
