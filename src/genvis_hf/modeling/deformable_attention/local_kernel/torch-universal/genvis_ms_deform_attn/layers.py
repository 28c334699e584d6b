"""Kernel layers of this local kernel repository (`kernels` requires stateless `nn.Module`s whose `forward`
matches the layer they replace)."""

from torch import nn

from genvis_hf.modeling.deformable_attention.jit_backend import multi_scale_deformable_attention_jit


class MultiScaleDeformableAttention(nn.Module):
    """Drop-in forward for a layer named `MultiScaleDeformableAttention` with the signature of transformers'
    Deformable DETR core (and of `kernels-community/deformable-detr`): our compiled CPU/CUDA kernels.
    `im2col_step` is accepted for compatibility and unused."""

    has_backward = True
    can_torch_compile = False

    def forward(self, value, value_spatial_shapes, value_spatial_shapes_list, level_start_index, sampling_locations,
                attention_weights, im2col_step=64):  # fmt: skip
        return multi_scale_deformable_attention_jit(
            value, value_spatial_shapes, value_spatial_shapes_list, level_start_index, sampling_locations,
            attention_weights,
        )  # fmt: skip
