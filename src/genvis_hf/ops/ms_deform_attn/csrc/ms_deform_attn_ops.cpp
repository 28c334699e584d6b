// Python binding of the multi-scale deformable attention kernels: argument checks, then the CPU or
// (when built with GENVIS_WITH_CUDA) the CUDA implementation according to the device of `value`.
#include <torch/extension.h>

#include "ms_deform_attn.h"
#include "masked_attention.h"
#include "winograd.h"

namespace genvis_ms_deform_attn {
namespace {

void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
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

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  if (value.is_cuda()) {
#ifdef GENVIS_WITH_CUDA
    return forward_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
#else
    TORCH_CHECK(false, "this build of the deformable attention extension has no CUDA support");
#endif
  }
  TORCH_CHECK(value.device().is_cpu(), "unsupported device ", value.device());
  return forward_cpu(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.device() == value.device() &&
                  grad_output.scalar_type() == value.scalar_type(),
              "grad_output must be contiguous, on the device and of the dtype of value");
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == value.size(0) &&
                  grad_output.size(1) == sampling_locations.size(1) &&
                  grad_output.size(2) == value.size(2) * value.size(3),
              "grad_output must be [N, Lq, heads * head_dim], got ", grad_output.sizes());
  if (value.is_cuda()) {
#ifdef GENVIS_WITH_CUDA
    return backward_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output);
#else
    TORCH_CHECK(false, "this build of the deformable attention extension has no CUDA support");
#endif
  }
  TORCH_CHECK(value.device().is_cpu(), "unsupported device ", value.device());
  return backward_cpu(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output);
}

at::Tensor forward_from_projections(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                    const at::Tensor& level_start_index, const at::Tensor& reference_points,
                                    const at::Tensor& offsets, const at::Tensor& logits, int64_t num_points) {
  TORCH_CHECK(value.device().is_cpu(), "forward_from_projections runs on CPUs only, got ", value.device());
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
    TORCH_CHECK(t->scalar_type() == at::kFloat, "forward_from_projections takes float32 tensors, got ",
                t->scalar_type());
  }
  for (const at::Tensor* t : {&spatial_shapes, &level_start_index, &reference_points, &offsets, &logits}) {
    TORCH_CHECK(t->device() == value.device(), "all inputs must be on ", value.device(), ", got one on ",
                t->device());
  }
  return forward_from_projections_cpu(value, spatial_shapes, level_start_index, reference_points, offsets, logits,
                                      num_points);
}

at::Tensor winograd_conv3x3(const at::Tensor& x, const at::Tensor& transformed_weight,
                            const c10::optional<at::Tensor>& bias, bool relu) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4 &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "winograd_conv3x3: x must be a channels-last float32 CPU tensor [N, C, H, W], got ", x.sizes(), " ",
              x.scalar_type(), " on ", x.device());
  TORCH_CHECK(transformed_weight.device().is_cpu() && transformed_weight.scalar_type() == at::kFloat &&
                  transformed_weight.dim() == 3 && transformed_weight.size(0) == 36 &&
                  transformed_weight.size(1) == x.size(1) && transformed_weight.is_contiguous(),
              "winograd_conv3x3: transformed_weight must be contiguous float32 [36, ", x.size(1), ", C_out], got ",
              transformed_weight.sizes());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->device().is_cpu() && bias->scalar_type() == at::kFloat && bias->dim() == 1 &&
                    bias->size(0) == transformed_weight.size(2) && bias->is_contiguous(),
                "winograd_conv3x3: bias must be contiguous float32 [", transformed_weight.size(2), "], got ",
                bias->sizes());
  }
  return genvis_winograd::conv3x3_cpu(x, transformed_weight, bias, relu);
}

at::Tensor masked_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                            const at::Tensor& allowed, int64_t num_heads) {
  for (const at::Tensor* t : {&query, &key, &value}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 3 && t->stride(2) == 1,
                "masked_attention: query, key and value must be float32 CPU tensors [N, L, C] with a contiguous "
                "last dim, got ", t->sizes(), " ", t->scalar_type(), " strides ", t->strides());
  }
  const auto n = query.size(0), channels = query.size(2);
  TORCH_CHECK(num_heads > 0 && channels % num_heads == 0, "masked_attention: ", channels,
              " channels do not split into ", num_heads, " heads");
  TORCH_CHECK(key.size(0) == n && value.size(0) == n && key.size(2) == channels && value.size(2) == channels &&
                  value.size(1) == key.size(1),
              "masked_attention: key ", key.sizes(), " and value ", value.sizes(), " do not match query ",
              query.sizes());
  TORCH_CHECK(allowed.device().is_cpu() && allowed.scalar_type() == at::kBool && allowed.is_contiguous() &&
                  allowed.dim() == 3 && allowed.size(0) == n && allowed.size(1) == query.size(1) &&
                  allowed.size(2) == key.size(1),
              "masked_attention: allowed must be a contiguous bool [", n, ", ", query.size(1), ", ", key.size(1),
              "] tensor, got ", allowed.sizes(), " ", allowed.scalar_type());
  return genvis_attention::masked_attention_cpu(query, key, value, allowed, num_heads);
}

}  // namespace
}  // namespace genvis_ms_deform_attn

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "genvis_hf kernels: multi-scale deformable attention; Winograd 3x3 convolution and masked attention "
            "(CPU inference)";
  m.def("forward", &genvis_ms_deform_attn::forward, "multi-scale deformable attention forward");
  m.def("forward_from_projections", &genvis_ms_deform_attn::forward_from_projections,
        "inference forward on CPUs from the offset and attention-logit projections (softmax and sampling "
        "locations computed in the kernel)");
  m.def("backward", &genvis_ms_deform_attn::backward,
        "multi-scale deformable attention backward: (grad_value, grad_sampling_locations, grad_attention_weights)");
  m.def("winograd_conv3x3", &genvis_ms_deform_attn::winograd_conv3x3,
        "relu?(conv3x3(x) + bias?), stride 1, padding 1, by Winograd F(4x4, 3x3) on CPUs: x [N, C, H, W] "
        "channels-last, transformed_weight [36, C, K]; returns [N, K, H, W] channels-last");
  m.def("masked_attention", &genvis_ms_deform_attn::masked_attention,
        "softmax(Q K^T / sqrt(d) over allowed keys) V per head on CPUs: query [N, Lq, C], key / value [N, S, C], "
        "allowed bool [N, Lq, S]; returns [N, Lq, C]");
#ifdef GENVIS_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
