// The registered operator genvis::winograd_conv3x3 (CPU): relu?(conv3x3(x) + bias?), stride 1, padding 1, by
// Winograd F(4x4, 3x3) (winograd_cpu.cpp). x [N, C, H, W] channels-last float32, transformed_weight [36, C, K]
// (genvis_hf/ops/winograd: `transform_weight`); returns [N, K, H, W] channels-last. Fake implementation in Python.
#include <torch/library.h>

#include "winograd.h"

namespace genvis_winograd {
namespace {

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
  return conv3x3_cpu(x, transformed_weight, bias, relu);
}

}  // namespace
}  // namespace genvis_winograd

TORCH_LIBRARY_FRAGMENT(genvis, m) {
  m.def("winograd_conv3x3(Tensor x, Tensor transformed_weight, Tensor? bias, bool relu) -> Tensor");
}

TORCH_LIBRARY_IMPL(genvis, CPU, m) {
  m.impl("winograd_conv3x3", &genvis_winograd::winograd_conv3x3);
}
