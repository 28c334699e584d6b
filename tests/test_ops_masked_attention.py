"""The masked-attention operator (`torch.ops.genvis.masked_attention`, `genvis_hf/ops/masked_attention/`) against
SDPA in float64: frame-decoder shapes, odd key counts, inference mode, rows with no allowed key, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from deformable_attention_helpers import require_backend

from genvis_hf.ops.masked_attention import masked_attention, reference


@pytest.fixture(autouse=True)
def jit_cpu():
    require_backend("jit", "cpu")


def _sdpa(query, key, value, allowed, heads):
    def split(x):
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # [N, h, L, d]

    out = F.scaled_dot_product_attention(split(query), split(key), split(value), attn_mask=allowed.unsqueeze(1))
    return out.transpose(1, 2).flatten(2)


@pytest.mark.parametrize("batch, queries, keys, heads, channels", [(2, 100, 2880, 8, 256), (3, 7, 37, 4, 48),
                                                                   (1, 5, 3, 1, 8)])  # fmt: skip
@pytest.mark.parametrize("inference_mode", [False, True])
def test_masked_attention_matches_sdpa(batch, queries, keys, heads, channels, inference_mode):
    """Keys from a stacked projection (row stride 3C, as the frame decoder's), key counts that are not multiples
    of the 8-wide vectors, and torch.inference_mode() (whose state the op's worker threads must set themselves)."""
    generator = torch.Generator().manual_seed(keys)
    query = torch.randn(batch, queries, channels, generator=generator)
    stacked = torch.randn(batch, keys, 3 * channels, generator=generator) * 2
    key, value = stacked[..., channels : 2 * channels], stacked[..., 2 * channels :]
    allowed = torch.rand(batch, queries, keys, generator=generator) > 0.6
    allowed[:, :, 0] = True  # every query attends somewhere (the frame decoder guarantees it)
    op = masked_attention
    with torch.inference_mode(inference_mode), torch.no_grad():
        actual = op(query, key, value, allowed, heads)
    expected = _sdpa(query.double(), key.double(), value.double(), allowed, heads)
    assert actual.shape == (batch, queries, channels) and actual.is_contiguous()
    # within a small multiple of torch's own float32 error (~1e-6 at 2880 keys of values ~2)
    torch_error = (_sdpa(query, key, value, allowed, heads).double() - expected).abs().max().item()
    assert (actual.double() - expected).abs().max().item() <= 3 * max(torch_error, 1e-6)


def test_a_query_with_no_allowed_key_gets_zeros_and_extreme_scores_stay_finite():
    query = torch.randn(1, 3, 16) * 30  # scores in the hundreds: the max shift keeps the exps finite
    key, value = torch.randn(1, 9, 16) * 30, torch.randn(1, 9, 16)
    allowed = torch.ones(1, 3, 9, dtype=torch.bool)
    allowed[0, 1] = False
    out = masked_attention(query, key, value, allowed, 2)
    assert torch.equal(out[0, 1], torch.zeros(16))  # what SDPA gives for such a row
    assert torch.equal(_sdpa(query, key, value, allowed, 2)[0, 1], torch.zeros(16))
    rows = [0, 2]
    expected = _sdpa(query[:, rows].double(), key.double(), value.double(), allowed[:, rows], 2)
    torch.testing.assert_close(out[:, rows].double(), expected, rtol=0, atol=2e-6)


def test_reference_is_sdpa_with_the_mask_shared_by_the_heads():
    generator = torch.Generator().manual_seed(5)
    query, key, value = (torch.randn(2, 6, 32, generator=generator) for _ in range(3))
    allowed = torch.rand(2, 6, 6, generator=generator) > 0.5
    allowed[..., 0] = True
    torch.testing.assert_close(masked_attention(query, key, value, allowed, 4), reference(query, key, value, allowed, 4),
                               rtol=0, atol=1e-6)  # fmt: skip


def test_masked_attention_rejects_bad_inputs_with_clear_errors():
    op = masked_attention
    query, key = torch.randn(1, 4, 16), torch.randn(1, 6, 16)
    with pytest.raises(RuntimeError, match=r"allowed must be a contiguous bool \[1, 4, 6\]"):
        op(query, key, key, torch.ones(1, 4, 5, dtype=torch.bool), 2)
    with pytest.raises(RuntimeError, match="16 channels do not split into 3 heads"):
        op(query, key, key, torch.ones(1, 4, 6, dtype=torch.bool), 3)
    with pytest.raises(RuntimeError, match="must be float32 CPU tensors"):
        op(query.double(), key, key, torch.ones(1, 4, 6, dtype=torch.bool), 2)
