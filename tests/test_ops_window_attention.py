"""Swin's window-attention operator (`torch.ops.genvis.window_attention`, `genvis_hf/ops/window_attention/`) against
the reference arithmetic in float64: plain and shifted windows, Swin-L's head shape, odd token counts, bad inputs."""

from __future__ import annotations

import pytest
import torch
from deformable_attention_helpers import require_backend

from genvis_hf.ops.window_attention import reference, window_attention


@pytest.fixture(autouse=True)
def jit_cpu():
    require_backend("jit", "cpu")


@pytest.mark.parametrize("windows, tokens, heads, head_dim, mask_windows", [
    (24, 144, 6, 32, 12),  # Swin-L stage 1 (window 12): shifted, two images of 12 windows
    (4, 144, 48, 32, 0),  # stage 4: unshifted
    (6, 49, 3, 8, 3),  # window 7, a token count that is not a multiple of the 8-wide vectors
    (1, 1, 2, 4, 1),
])  # fmt: skip
@pytest.mark.parametrize("inference_mode", [False, True])
def test_window_attention_matches_the_reference(windows, tokens, heads, head_dim, mask_windows, inference_mode):
    generator = torch.Generator().manual_seed(tokens + heads)
    channels = heads * head_dim
    qkv = torch.randn(windows, tokens, 3 * channels, generator=generator) * 2
    bias = torch.randn(heads, tokens, tokens, generator=generator)
    mask = None
    if mask_windows:
        mask = torch.where(torch.rand(mask_windows, tokens, tokens, generator=generator) > 0.7, -100.0, 0.0)
    scale = head_dim**-0.5
    with torch.inference_mode(inference_mode), torch.no_grad():
        actual = window_attention(qkv, bias, mask, heads, scale)
    expected = reference(qkv.double(), bias.double(), None if mask is None else mask.double(), heads, scale)
    assert actual.shape == (windows, tokens, channels) and actual.is_contiguous()
    torch_error = (reference(qkv, bias, mask, heads, scale).double() - expected).abs().max().item()
    assert (actual.double() - expected).abs().max().item() <= 3 * max(torch_error, 1e-6)


def test_window_attention_rejects_bad_inputs_with_clear_errors():
    qkv = torch.randn(4, 9, 24)
    with pytest.raises(RuntimeError, match=r"relative_bias must be a contiguous float32 \[2, 9, 9\]"):
        window_attention(qkv, torch.randn(3, 9, 9), None, 2, 0.5)
    with pytest.raises(
        RuntimeError, match=r"window_mask must be a contiguous float32 .* with nW dividing the 4 windows"
    ):
        window_attention(qkv, torch.randn(2, 9, 9), torch.randn(3, 9, 9), 2, 0.5)
    with pytest.raises(RuntimeError, match="8 channels do not split into 3 heads"):
        window_attention(qkv, torch.randn(3, 9, 9), None, 3, 0.5)
