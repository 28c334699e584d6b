// CUDA kernels of multi-scale deformable attention (see ms_deform_attn.h for shapes), registered as the CUDA
// implementations of genvis::ms_deform_attn and genvis::ms_deform_attn_backward (the schemas are defined by the
// CPU library, ms_deform_attn_ops.cpp, which is always loaded first).
//
// Forward: one thread per output element (n, q, head, channel); consecutive threads read consecutive
// channels of a pixel, so a warp's value loads are coalesced. Accumulation is in float for half/bfloat16.
// Backward: one warp per (n, q, head); lanes stride over the head's channels, scatter grad_value with
// atomicAdd (coalesced across lanes, into a float buffer for half/bfloat16), and reduce the per-sample
// gradients of the attention weight and of the location with warp shuffles.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ms_deform_attn.h"
#include "ms_deform_attn_checks.h"
#include "ms_deform_attn_sampling.h"

namespace genvis_ms_deform_attn {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

struct Dims {
  int64_t batch, num_values, num_heads, head_dim, num_queries, num_levels, num_points;
};

Dims dims_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0), value.size(1), value.size(2), value.size(3),
          sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts, const scalar_t* __restrict__ locations,
                               const scalar_t* __restrict__ weights, scalar_t* __restrict__ output, Dims d,
                               int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int64_t c = index % d.head_dim;
  const int64_t head = index / d.head_dim;  // (n * Lq + q) * M + m
  const int64_t m = head % d.num_heads;
  const int64_t n = head / (d.num_heads * d.num_queries);
  const int64_t row_stride = d.num_heads * d.head_dim;
  const int64_t samples = d.num_levels * d.num_points;
  const scalar_t* loc = locations + head * samples * 2;
  const scalar_t* attn = weights + head * samples;
  acc_t acc = 0;
  for (int64_t l = 0; l < d.num_levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    const scalar_t* level = value + ((n * d.num_values + starts[l]) * d.num_heads + m) * d.head_dim + c;
    for (int64_t p = 0; p < d.num_points; ++p) {
      const int64_t s = l * d.num_points + p;
      BilinearCorners<acc_t> corners;
      if (!bilinear_corners<acc_t>(static_cast<acc_t>(loc[2 * s]), static_cast<acc_t>(loc[2 * s + 1]), height,
                                   width, corners)) {
        continue;
      }
      acc_t sample = 0;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (corners.pixel[k] >= 0) {
          sample += corners.weight[k] * static_cast<acc_t>(level[corners.pixel[k] * row_stride]);
        }
      }
      acc += static_cast<acc_t>(attn[s]) * sample;
    }
  }
  output[index] = static_cast<scalar_t>(acc);
}

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts, const scalar_t* __restrict__ locations,
                                const scalar_t* __restrict__ weights, const scalar_t* __restrict__ grad_output,
                                at::opmath_type<scalar_t>* __restrict__ grad_value,
                                scalar_t* __restrict__ grad_locations, scalar_t* __restrict__ grad_weights, Dims d,
                                int64_t num_warps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t head = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (head >= num_warps) return;  // uniform across the warp: every lane of a warp has the same `head`
  const int64_t m = head % d.num_heads;
  const int64_t n = head / (d.num_heads * d.num_queries);
  const int64_t row_stride = d.num_heads * d.head_dim;
  const int64_t samples = d.num_levels * d.num_points;
  const scalar_t* loc = locations + head * samples * 2;
  const scalar_t* attn = weights + head * samples;
  const scalar_t* grad_out = grad_output + head * d.head_dim;
  for (int64_t l = 0; l < d.num_levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    const int64_t level_offset = ((n * d.num_values + starts[l]) * d.num_heads + m) * d.head_dim;
    for (int64_t p = 0; p < d.num_points; ++p) {
      const int64_t s = l * d.num_points + p;
      BilinearCorners<acc_t> corners;
      // Outside the map: zero sample, zero gradients (the outputs start zeroed). Uniform across the warp.
      if (!bilinear_corners<acc_t>(static_cast<acc_t>(loc[2 * s]), static_cast<acc_t>(loc[2 * s + 1]), height,
                                   width, corners)) {
        continue;
      }
      const acc_t a = static_cast<acc_t>(attn[s]);
      const acc_t lh = corners.frac_h, lw = corners.frac_w, hh = acc_t(1) - lh, hw = acc_t(1) - lw;
      acc_t grad_attn = 0, grad_lw = 0, grad_lh = 0;
      for (int64_t c = lane; c < d.head_dim; c += kWarp) {
        const acc_t g = static_cast<acc_t>(grad_out[c]);
        acc_t v[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const bool inside = corners.pixel[k] >= 0;
          const int64_t offset = level_offset + corners.pixel[k] * row_stride + c;
          v[k] = inside ? static_cast<acc_t>(value[offset]) : acc_t(0);
          if (inside) atomicAdd(grad_value + offset, a * corners.weight[k] * g);
        }
        grad_attn += g * (corners.weight[0] * v[0] + corners.weight[1] * v[1] + corners.weight[2] * v[2] +
                          corners.weight[3] * v[3]);
        grad_lw += g * (hh * (v[1] - v[0]) + lh * (v[3] - v[2]));
        grad_lh += g * (hw * (v[2] - v[0]) + lw * (v[3] - v[1]));
      }
      grad_attn = warp_sum(grad_attn);
      grad_lw = warp_sum(grad_lw);
      grad_lh = warp_sum(grad_lh);
      if (lane == 0) {
        grad_weights[head * samples + s] = static_cast<scalar_t>(grad_attn);
        grad_locations[(head * samples + s) * 2] = static_cast<scalar_t>(a * grad_lw * static_cast<acc_t>(width));
        grad_locations[(head * samples + s) * 2 + 1] =
            static_cast<scalar_t>(a * grad_lh * static_cast<acc_t>(height));
      }
    }
  }
}

int64_t blocks_for(int64_t threads) { return (threads + kThreads - 1) / kThreads; }

}  // namespace

at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                        const at::Tensor& attention_weights) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Dims d = dims_of(value, sampling_locations);
  auto output = at::empty({d.batch, d.num_queries, d.num_heads * d.head_dim}, value.options());
  const int64_t total = output.numel();
  if (total == 0) return output;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<scalar_t>(),
        attention_weights.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), d, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Dims d = dims_of(value, sampling_locations);
  const auto acc_dtype = at::toOpMathType(value.scalar_type());
  auto grad_value = at::zeros(value.sizes(), value.options().dtype(acc_dtype));
  auto grad_locations = at::zeros_like(sampling_locations);
  auto grad_weights = at::zeros_like(attention_weights);
  const int64_t num_warps = d.batch * d.num_queries * d.num_heads;
  if (num_warps > 0 && d.head_dim > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      backward_kernel<scalar_t><<<blocks_for(num_warps * kWarp), kThreads, 0, stream>>>(
          value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
          level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<scalar_t>(),
          attention_weights.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
          grad_value.mutable_data_ptr<at::opmath_type<scalar_t>>(), grad_locations.mutable_data_ptr<scalar_t>(),
          grad_weights.mutable_data_ptr<scalar_t>(), d, num_warps);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return std::make_tuple(grad_value.to(value.scalar_type()), grad_locations, grad_weights);
}

}  // namespace genvis_ms_deform_attn

namespace genvis_ms_deform_attn {
namespace {

at::Tensor checked_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  return forward_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> checked_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_grad_output(value, sampling_locations, grad_output);
  return backward_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output);
}

}  // namespace
}  // namespace genvis_ms_deform_attn

TORCH_LIBRARY_IMPL(genvis, CUDA, m) {
  m.impl("ms_deform_attn", &genvis_ms_deform_attn::checked_forward_cuda);
  m.impl("ms_deform_attn_backward", &genvis_ms_deform_attn::checked_backward_cuda);
}
