// Masked multi-head attention for CPU inference (see masked_attention_cpu.cpp).
#pragma once

#include <ATen/ATen.h>

namespace genvis_attention {

// softmax(Q_h K_h^T / sqrt(d), over allowed keys) V_h for every head h: query float32 [N, Lq, C], key / value
// [N, S, C] (last dim contiguous), allowed bool [N, Lq, S] contiguous; C = num_heads * d. Returns [N, Lq, C].
at::Tensor masked_attention_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                const at::Tensor& allowed, int64_t num_heads);

}  // namespace genvis_attention
