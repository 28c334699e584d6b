// The registered operators of multi-scale deformable attention (namespace `genvis`), CPU implementations:
//   genvis::ms_deform_attn                    forward (any float dtype; CUDA: ms_deform_attn_cuda.cu)
//   genvis::ms_deform_attn_backward           its gradients w.r.t. value, sampling locations and weights
//   genvis::ms_deform_attn_from_projections   CPU float32 inference from the layer's offset and logit projections
// Shapes in ms_deform_attn.h. Fake (meta) implementations and the autograd formula are registered from Python
// (genvis_hf/ops/ms_deform_attn/__init__.py).
#include <torch/library.h>

#include "ms_deform_attn.h"
#include "ms_deform_attn_checks.h"

namespace genvis_ms_deform_attn {
namespace {

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  return forward_cpu(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                        const at::Tensor& level_start_index,
                                                        const at::Tensor& sampling_locations,
                                                        const at::Tensor& attention_weights,
                                                        const at::Tensor& grad_output) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_grad_output(value, sampling_locations, grad_output);
  return backward_cpu(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output);
}

at::Tensor forward_from_projections(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                    const at::Tensor& level_start_index, const at::Tensor& reference_points,
                                    const at::Tensor& offsets, const at::Tensor& logits, int64_t num_points) {
  TORCH_CHECK(value.dim() == 4 && value.is_contiguous(), "value must be contiguous [N, S, heads, head_dim], got ",
              value.sizes());
  const auto n = value.size(0), heads = value.size(2);
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 && spatial_shapes.is_contiguous() &&
                  spatial_shapes.scalar_type() == at::kLong,
              "spatial_shapes must be contiguous int64 [levels, 2], got ", spatial_shapes.sizes());
  const auto levels = spatial_shapes.size(0);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == levels &&
                  level_start_index.is_contiguous() && level_start_index.scalar_type() == at::kLong,
              "level_start_index must be contiguous int64 [levels], got ", level_start_index.sizes());
  TORCH_CHECK(reference_points.dim() == 4 && reference_points.size(0) == n && reference_points.size(2) == levels &&
                  reference_points.size(3) == 2 && reference_points.is_contiguous(),
              "reference_points must be contiguous [N, Lq, levels, 2], got ", reference_points.sizes());
  const auto queries = reference_points.size(1);
  const auto samples = heads * levels * num_points;
  TORCH_CHECK(num_points > 0, "num_points must be positive");
  TORCH_CHECK(offsets.dim() == 3 && offsets.size(0) == n && offsets.size(1) == queries &&
                  offsets.size(2) == samples * 2 && offsets.stride(2) == 1,
              "offsets must be [N, Lq, heads * levels * points * 2] with a contiguous last dim, got ", offsets.sizes());
  TORCH_CHECK(logits.dim() == 3 && logits.size(0) == n && logits.size(1) == queries && logits.size(2) == samples &&
                  logits.stride(2) == 1,
              "logits must be [N, Lq, heads * levels * points] with a contiguous last dim, got ", logits.sizes());
  for (const at::Tensor* t : {&value, &reference_points, &offsets, &logits}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, "ms_deform_attn_from_projections takes float32 tensors, got ",
                t->scalar_type());
  }
  for (const at::Tensor* t : {&spatial_shapes, &level_start_index, &reference_points, &offsets, &logits}) {
    TORCH_CHECK(t->device() == value.device(), "all inputs must be on ", value.device(), ", got one on ",
                t->device());
  }
  return forward_from_projections_cpu(value, spatial_shapes, level_start_index, reference_points, offsets, logits,
                                      num_points);
}

}  // namespace
}  // namespace genvis_ms_deform_attn

TORCH_LIBRARY_FRAGMENT(genvis, m) {
  m.def("ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_locations, "
        "Tensor attention_weights) -> Tensor");
  m.def("ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
        "Tensor sampling_locations, Tensor attention_weights, Tensor grad_output) -> (Tensor, Tensor, Tensor)");
  m.def("ms_deform_attn_from_projections(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
        "Tensor reference_points, Tensor offsets, Tensor logits, int num_points) -> Tensor");
}

TORCH_LIBRARY_IMPL(genvis, CPU, m) {
  m.impl("ms_deform_attn", &genvis_ms_deform_attn::forward);
  m.impl("ms_deform_attn_backward", &genvis_ms_deform_attn::backward);
  m.impl("ms_deform_attn_from_projections", &genvis_ms_deform_attn::forward_from_projections);
}
