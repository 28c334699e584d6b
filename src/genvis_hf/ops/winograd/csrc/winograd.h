// Winograd F(4x4, 3x3) convolution for CPU inference (see winograd_cpu.cpp).
#pragma once

#include <ATen/ATen.h>

namespace genvis_winograd {

// relu?(conv3x3(x, stride 1, padding 1) + bias?): x float32 [N, C, H, W] channels-last; transformed_weight
// float32 [36, C, K] contiguous (the filters' Winograd transform, position-major); bias float32 [K] or none.
// Returns [N, K, H, W] channels-last.
at::Tensor conv3x3_cpu(const at::Tensor& x, const at::Tensor& transformed_weight,
                       const c10::optional<at::Tensor>& bias, bool relu);

}  // namespace genvis_winograd
