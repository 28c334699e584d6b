"""GenVISVideoProcessor pre-processing (normalise, pad, batch) and the resize rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genvis_hf import GenVISVideoProcessor
from genvis_hf.processing.video_processing_genvis import resized_shape


def test_normalise_pad_and_mask_match_the_original_arithmetic():
    processor = GenVISVideoProcessor()
    video = torch.randint(0, 256, (2, 3, 45, 70), dtype=torch.uint8)
    out = processor(videos=[video], do_resize=False, return_tensors="pt")
    assert out["pixel_values"].shape == (1, 2, 3, 64, 96) and out["pixel_values"].dtype == torch.float32
    mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    assert torch.equal(out["pixel_values"][0, :, :, :45, :70], (video.float() - mean) / std)
    assert out["pixel_values"][0, :, :, 45:].abs().sum() == 0 and out["pixel_values"][0, :, :, :, 70:].abs().sum() == 0
    assert out["pixel_mask"][0, :, :45, :70].all() and out["pixel_mask"].sum() == 2 * 45 * 70


@pytest.mark.parametrize("layout", ["THWC_numpy", "TCHW_tensor", "frame_list"])
def test_input_layouts_give_the_same_pixels(layout):
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    reference = GenVISVideoProcessor()(videos=[frames], do_resize=False, return_tensors="pt")["pixel_values"]
    video = {"THWC_numpy": frames, "TCHW_tensor": torch.from_numpy(frames).permute(0, 3, 1, 2),
             "frame_list": [f for f in frames]}[layout]  # fmt: skip
    out = GenVISVideoProcessor()(videos=[video], do_resize=False, return_tensors="pt")["pixel_values"]
    assert torch.equal(out, reference)


def test_videos_of_different_sizes_and_lengths_are_batched_with_a_mask():
    videos = [torch.zeros(4, 3, 40, 50, dtype=torch.uint8), torch.zeros(2, 3, 70, 33, dtype=torch.uint8)]
    out = GenVISVideoProcessor()(videos=videos, do_resize=False, return_tensors="pt")
    assert out["pixel_values"].shape == (2, 4, 3, 96, 64)
    assert out["pixel_mask"][1, 2:].sum() == 0 and out["pixel_mask"][1, :2].sum() == 2 * 70 * 33


@pytest.mark.parametrize(
    "size, expected",
    [((720, 1280), (360, 640)), ((480, 640), (360, 480)), ((1080, 1920), (360, 640)), ((360, 2000), (240, 1333)),
     ((101, 99), (367, 360)), ((576, 768), (360, 480))],
)  # fmt: skip
def test_resize_rule_of_detectron2(size, expected):
    assert resized_shape(*size, shortest_edge=360, longest_edge=1333) == expected


def test_resize_uses_pil_bilinear_on_uint8():
    from PIL import Image

    frame = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    out = GenVISVideoProcessor(do_normalize=False)(videos=[frame[None]], return_tensors="pt")["pixel_values"]
    expected = np.array(Image.fromarray(frame).resize((480, 360), Image.BILINEAR))
    assert out.shape[-2:] == (384, 480)  # 360 padded to a multiple of 32
    assert torch.equal(out[0, 0, :, :360], torch.from_numpy(expected).permute(2, 0, 1).float())
