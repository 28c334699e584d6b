// Argument checks of genvis::ms_deform_attn and genvis::ms_deform_attn_backward, shared by the CPU registration
// (ms_deform_attn_ops.cpp) and the CUDA one (ms_deform_attn_cuda.cu, a separate library): inline, so that
// neither library needs the other's symbols.
#pragma once

#include <ATen/ATen.h>

namespace genvis_ms_deform_attn {

inline void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                         const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                         const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "value must be [N, S, heads, head_dim], got ", value.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "sampling_locations must be [N, Lq, heads, levels, points, 2], got ", sampling_locations.sizes());
  TORCH_CHECK(attention_weights.dim() == 5, "attention_weights must be [N, Lq, heads, levels, points], got ",
              attention_weights.sizes());
  const auto n = value.size(0), heads = value.size(2);
  TORCH_CHECK(sampling_locations.size(0) == n && sampling_locations.size(2) == heads,
              "sampling_locations ", sampling_locations.sizes(), " does not match value ", value.sizes());
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights ", attention_weights.sizes(), " does not match sampling_locations ",
              sampling_locations.sizes());
  const auto levels = sampling_locations.size(3);
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == levels && spatial_shapes.size(1) == 2,
              "spatial_shapes must be [levels, 2], got ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == levels,
              "level_start_index must be [levels], got ", level_start_index.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              "value, sampling_locations and attention_weights must have one dtype, got ", value.scalar_type(), ", ",
              sampling_locations.scalar_type(), ", ", attention_weights.scalar_type());
  for (const at::Tensor* t : {&spatial_shapes, &level_start_index, &sampling_locations, &attention_weights}) {
    TORCH_CHECK(t->device() == value.device(), "all inputs must be on ", value.device(), ", got one on ",
                t->device());
  }
  for (const at::Tensor* t : {&value, &spatial_shapes, &level_start_index, &sampling_locations, &attention_weights}) {
    TORCH_CHECK(t->is_contiguous(), "inputs must be contiguous");
  }
}

inline void check_grad_output(const at::Tensor& value, const at::Tensor& sampling_locations,
                              const at::Tensor& grad_output) {
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.device() == value.device() &&
                  grad_output.scalar_type() == value.scalar_type(),
              "grad_output must be contiguous, on the device and of the dtype of value");
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == value.size(0) &&
                  grad_output.size(1) == sampling_locations.size(1) &&
                  grad_output.size(2) == value.size(2) * value.size(3),
              "grad_output must be [N, Lq, heads * head_dim], got ", grad_output.sizes());
}

}  // namespace genvis_ms_deform_attn
