// The registered operator genvis::masked_attention (CPU): softmax(Q_h K_h^T / sqrt(d) over allowed keys) V_h per
// head (masked_attention_cpu.cpp). query [N, Lq, C], key / value [N, S, C] float32 with a contiguous last dim,
// allowed bool [N, Lq, S] contiguous; returns [N, Lq, C]. Fake implementation in Python.
#include <torch/library.h>

#include "masked_attention.h"

namespace genvis_attention {
namespace {

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
  return masked_attention_cpu(query, key, value, allowed, num_heads);
}

}  // namespace
}  // namespace genvis_attention

TORCH_LIBRARY_FRAGMENT(genvis, m) {
  m.def("masked_attention(Tensor query, Tensor key, Tensor value, Tensor allowed, int num_heads) -> Tensor");
}

TORCH_LIBRARY_IMPL(genvis, CPU, m) {
  m.impl("masked_attention", &genvis_attention::masked_attention);
}
