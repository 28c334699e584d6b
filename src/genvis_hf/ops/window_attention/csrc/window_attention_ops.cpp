// The registered operator genvis::window_attention (CPU): Swin's window attention from the packed qkv projection of
// windowed tokens (window_attention_cpu.cpp). qkv [Wn, N, 3C] float32 with a contiguous last dim, relative_bias
// [heads, N, N], window_mask [nW, N, N] (window w uses mask w % nW) or None; returns [Wn, N, C]. Fake in Python.
#include <torch/library.h>

#include "window_attention.h"

namespace genvis_window_attention {
namespace {

at::Tensor window_attention(const at::Tensor& qkv, const at::Tensor& relative_bias,
                            const c10::optional<at::Tensor>& window_mask, int64_t num_heads, double scale) {
  TORCH_CHECK(qkv.device().is_cpu() && qkv.scalar_type() == at::kFloat && qkv.dim() == 3 && qkv.stride(2) == 1 &&
                  qkv.size(2) % 3 == 0,
              "window_attention: qkv must be a float32 CPU tensor [windows, N, 3C] with a contiguous last dim, got ",
              qkv.sizes(), " ", qkv.scalar_type(), " strides ", qkv.strides());
  const auto tokens = qkv.size(1), channels = qkv.size(2) / 3;
  TORCH_CHECK(num_heads > 0 && channels % num_heads == 0, "window_attention: ", channels,
              " channels do not split into ", num_heads, " heads");
  TORCH_CHECK(relative_bias.device().is_cpu() && relative_bias.scalar_type() == at::kFloat &&
                  relative_bias.is_contiguous() && relative_bias.dim() == 3 && relative_bias.size(0) == num_heads &&
                  relative_bias.size(1) == tokens && relative_bias.size(2) == tokens,
              "window_attention: relative_bias must be a contiguous float32 [", num_heads, ", ", tokens, ", ", tokens,
              "] tensor, got ", relative_bias.sizes());
  if (window_mask.has_value() && window_mask->defined()) {
    const at::Tensor& mask = *window_mask;
    TORCH_CHECK(mask.device().is_cpu() && mask.scalar_type() == at::kFloat && mask.is_contiguous() &&
                    mask.dim() == 3 && mask.size(0) > 0 && qkv.size(0) % mask.size(0) == 0 &&
                    mask.size(1) == tokens && mask.size(2) == tokens,
                "window_attention: window_mask must be a contiguous float32 [nW, ", tokens, ", ", tokens,
                "] tensor with nW dividing the ", qkv.size(0), " windows, got ", mask.sizes());
  }
  return window_attention_cpu(qkv, relative_bias, window_mask, num_heads, scale);
}

}  // namespace
}  // namespace genvis_window_attention

TORCH_LIBRARY_FRAGMENT(genvis, m) {
  m.def("window_attention(Tensor qkv, Tensor relative_bias, Tensor? window_mask, int num_heads, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(genvis, CPU, m) {
  m.impl("window_attention", &genvis_window_attention::window_attention);
}
