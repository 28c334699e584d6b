// Multi-scale deformable attention: the kernels behind the registered operators genvis::ms_deform_attn,
// genvis::ms_deform_attn_backward (CPU; CUDA in the CUDA library, built with GENVIS_WITH_CUDA) and
// genvis::ms_deform_attn_from_projections (CPU).
//
// Shapes (N batch, S flattened pixels of all levels, M heads, D channels per head, Lq queries,
// L levels, P points per head and level):
//   value               [N, S, M, D]          contiguous, float / double / half / bfloat16
//   spatial_shapes      [L, 2]  int64         (H_l, W_l), on the device of `value`
//   level_start_index   [L]     int64         offset of level l in S, on the device of `value`
//   sampling_locations  [N, Lq, M, L, P, 2]   normalised (x, y), same dtype as `value`
//   attention_weights   [N, Lq, M, L, P]      same dtype as `value`
//   output              [N, Lq, M * D]
// The backward returns the gradients of value, sampling_locations and attention_weights.
//
// Inference on CPUs, from the layer's projections (float32): forward_from_projections_cpu takes
//   reference_points    [N, Lq, L, 2]         contiguous, normalised (x, y)
//   offsets             [N, Lq, M * L * P * 2] in pixels of each level; last dim contiguous, any row strides
//   logits              [N, Lq, M * L * P]     attention logits (softmax over L * P per head); idem
// and computes sampling_locations = reference + offset / (W_l, H_l) and attention_weights = softmax(logits)
// on the fly.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace genvis_ms_deform_attn {

at::Tensor forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                       const at::Tensor& attention_weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                                        const at::Tensor& attention_weights,
                                                        const at::Tensor& grad_output);

at::Tensor forward_from_projections_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                        const at::Tensor& level_start_index, const at::Tensor& reference_points,
                                        const at::Tensor& offsets, const at::Tensor& logits, int64_t num_points);

#ifdef GENVIS_WITH_CUDA
at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                        const at::Tensor& attention_weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                                         const at::Tensor& attention_weights,
                                                         const at::Tensor& grad_output);
#endif

}  // namespace genvis_ms_deform_attn
