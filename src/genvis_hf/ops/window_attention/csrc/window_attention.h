// Swin's window attention for CPU inference (see window_attention_cpu.cpp).
#pragma once

#include <ATen/ATen.h>

namespace genvis_window_attention {

// For every window w and head h: softmax(scale * Q K^T + relative_bias[h] + window_mask[w % nW]) V over the N
// tokens of the window. qkv float32 [Wn, N, 3C] (last dim contiguous: q, k, v of all heads side by side, as
// Swin's packed projection gives them), relative_bias [heads, N, N] contiguous, window_mask [nW, N, N] contiguous
// or undefined; C = heads * d. Returns [Wn, N, C] contiguous.
at::Tensor window_attention_cpu(const at::Tensor& qkv, const at::Tensor& relative_bias,
                                const c10::optional<at::Tensor>& window_mask, int64_t num_heads, double scale);

}  // namespace genvis_window_attention
