"""Inputs of GenVISModel.forward that used to fail deep inside the model or give silently wrong results: an
empty batch or video ("list index out of range"), NaN or infinite pixels (NaN scores), a zero-padded batch
without pixel_mask (issue 21 case 13)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_config_kwargs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genvis_hf import GenVISConfig, GenVISModel, GenVISVideoProcessor

SOME = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------- model inputs
@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return GenVISModel(GenVISConfig(**tiny_config_kwargs(deformable_attention_backend="torch"))).eval()


@SOME
@given(batch=st.integers(0, 2), frames=st.integers(0, 3), bad=st.sampled_from([None, math.nan, math.inf, -math.inf]),
       data=st.data())  # fmt: skip
def test_empty_and_non_finite_inputs_are_named(random_model, batch, frames, bad, data):
    pixel_values = torch.randn(batch, frames, 3, 32, 32)
    where = None
    if bad is not None and batch and frames:
        where = (data.draw(st.integers(0, batch - 1)), data.draw(st.integers(0, frames - 1)))
        pixel_values[where[0], where[1], data.draw(st.integers(0, 2)), 5, 7] = bad
    with torch.no_grad():
        if batch == 0 or frames == 0:
            empty = r"has no videos \(batch size 0\)$" if batch == 0 else "has no frames$"
            with pytest.raises(ValueError, match=empty):
                random_model(pixel_values)
        elif where is not None:
            named = rf"NaN or infinite values \(video {where[0]}, frame {where[1]} first\)"
            with pytest.raises(ValueError, match=named):
                random_model(pixel_values)
        else:
            outputs = random_model(pixel_values)
            assert torch.isfinite(outputs.class_queries_logits).all()


def test_padded_batch_without_pixel_mask_warns(random_model):
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    inputs = GenVISVideoProcessor(size={"shortest_edge": 40, "longest_edge": 200})(
        videos=[frames, frames[:2, :24, :40]], return_tensors="pt")  # fmt: skip
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        random_model(**inputs)  # with the mask: the padding is known
        assert caught == []
        random_model(inputs["pixel_values"])
    [warning] = caught
    assert "pixel_values looks zero-padded" in str(warning.message) and "pass the processor's pixel_mask" in str(
        warning.message)  # fmt: skip
