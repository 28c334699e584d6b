"""Shared test helpers: where `../shared` is, and tiny GenVIS configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The read-only `shared/` folder beside the repository (override with GENVIS_SHARED_DIR)."""
    candidates = [os.environ.get("GENVIS_SHARED_DIR"), REPO_ROOT.parent / "shared", "/work/shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "fixtures" / "genvis_reference").is_dir():
            return Path(candidate)
    raise FileNotFoundError(
        "shared/fixtures/genvis_reference not found beside the repository; set GENVIS_SHARED_DIR to the shared folder"
    )


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return shared_dir() / "fixtures" / "genvis_reference"


def tiny_config_kwargs(**overrides) -> dict:
    """A GenVIS small enough to run in a fraction of a second on a CPU (same shape as the fixtures' models)."""
    kwargs = dict(
        resnet_width_per_group=8,
        resnet_stem_out_channels=16,
        resnet_res2_out_channels=32,
        pixel_decoder_dim=64,
        mask_dim=64,
        pixel_decoder_encoder_layers=2,
        frame_decoder_hidden_dim=64,
        frame_decoder_ffn_dim=128,
        frame_decoder_layers=3,
        num_frame_queries=20,
        object_hidden_dim=64,
        object_ffn_dim=128,
        object_encoder_layers=2,
        object_decoder_layers=2,
        num_clip_queries=10,
        num_labels=7,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # a test that runs single-threaded must not change later tests' numerics
