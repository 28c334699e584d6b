"""Files shipped inside the package: the trained `genvis-tiny` model and a synthetic demo video.

- `tiny_model_path()`: a `save_pretrained` folder (config.json, model.safetensors, video_preprocessor_config.json,
  README.md model card) of `genvis-tiny` trained from scratch on synthetic shapes (`genvis-hf make-synthetic`):
  classes circle, square, triangle, cross. Load with `GenVISForVideoInstanceSegmentation.from_pretrained(path)`.
- `demo_video_path()`: a folder of JPEG frames (`00000.jpg`, ...) of one held-out synthetic video, with its
  ground truth in `demo_annotations_path()` (YouTube-VIS format, `file_names` relative to the folder's parent).
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent


def tiny_model_path() -> Path:
    return ASSETS_DIR / "genvis-tiny"


def demo_video_path() -> Path:
    return ASSETS_DIR / "demo" / "shapes"


def demo_annotations_path() -> Path:
    return ASSETS_DIR / "demo" / "annotations.json"


def demo_frames():
    """The demo video as a uint8 `[T, H, W, 3]` numpy array."""
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(demo_video_path().glob("*.jpg"))])


__all__ = ["ASSETS_DIR", "demo_annotations_path", "demo_frames", "demo_video_path", "tiny_model_path"]
