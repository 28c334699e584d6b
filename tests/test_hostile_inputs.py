"""Hostile inputs, generated: every one gets a right answer or one clear error line, never a traceback from deep
inside or a silently wrong result (issue 21). Random truncation points of videos, model files and annotation
files; random frame sizes and bit depths; random option values, parsed and run; random bad model inputs.

Example counts are small (the suite runs on 2 CPU cores); inputs are tiny synthetic videos and frames, the
bundled tiny model and the bundled demo frames."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import tiny_config_kwargs
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from genvis_hf import GenVISConfig, GenVISModel, GenVISVideoProcessor
from genvis_hf.assets import demo_frames, tiny_model_path
from genvis_hf.cli import build_parser
from genvis_hf.data import load_ytvis, make_synthetic_dataset
from genvis_hf.data.dataset import read_frame
from genvis_hf.evaluation.errors import YTVISFormatError
from genvis_hf.inference import segment_video
from genvis_hf.model_loading import ModelLoadError, load_model_and_processor
from genvis_hf.processing.video_io import VideoInputError, VideoReader, read_video

FEW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=120, deadline=None)


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# ------------------------------------------------------------------------------------------- truncated videos
def _write_video(path: Path, container: str, codec: str, options: dict | None = None) -> None:
    """24 frames of 64x48 moving noise (H.264 with B-frames in MP4 with its index first; MPEG-4 in AVI)."""
    base = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with av.open(str(path), mode="w", format=container, options=options or {}) as output:
        stream = output.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(24):
            picture = av.VideoFrame.from_ndarray(np.roll(base, 3 * index, axis=1), format="rgb24")
            for packet in stream.encode(picture):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


@pytest.fixture(scope="module")
def small_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    videos = {}
    for suffix, container, codec, options in [(".mp4", "mp4", "libx264", {"movflags": "faststart"}),
                                              (".avi", "avi", "mpeg4", None)]:  # fmt: skip
        path = folder / f"small{suffix}"
        _write_video(path, container, codec, options)
        reader = VideoReader(path)
        frames = list(reader)
        videos[suffix] = (path, frames, dict(zip(reader.frame_times, frames)))
    return folder, videos


@SOME
@given(suffix=st.sampled_from([".mp4", ".avi"]), fraction=st.floats(0.0, 1.0, exclude_max=True))
@example(suffix=".mp4", fraction=0.5)
@example(suffix=".avi", fraction=0.5)
def test_truncated_video_gives_its_decodable_frames_or_one_line(small_videos, suffix, fraction):
    folder, videos = small_videos
    source, full, by_time = videos[suffix]
    data = source.read_bytes()
    with tempfile.NamedTemporaryFile(suffix=suffix, dir=folder) as handle:
        handle.write(data[: int(len(data) * fraction)])
        handle.flush()
        for allow in (True, False):
            try:
                reader = VideoReader(handle.name, allow_truncated=allow)
                frames = list(reader)
            except VideoInputError as error:
                assert _one_line(error).startswith(handle.name)
                continue
            # Never a half-decoded frame: each frame is the complete file's frame of the same time.
            assert len(frames) <= len(full)
            for time, frame in zip(reader.frame_times, frames):
                assert np.array_equal(frame, by_time[time])
            if len(frames) < len(full) - 2:  # the duration check allows two frames of slack (headers round)
                assert allow and reader.truncated


# ------------------------------------------------------------------------------------------- bit depths
def _png16(path: Path, values: np.ndarray) -> None:
    """A 16-bit-per-channel PNG (PIL cannot write RGB48): values uint16 [H, W, C], C = 1, 2, 3 or 4."""
    height, width, channels = values.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))  # fmt: skip


KINDS = ["L", "RGB", "RGBA", "LA", "P", "1", "I;16 png", "I;16 tiff", "I tiff", "F tiff", "RGB48 png", "RGBA64 png",
         "LA32 png"]  # fmt: skip


def _frame_file(folder: Path, kind: str, rgb: np.ndarray, noise: np.ndarray) -> tuple[Path, np.ndarray, int]:
    """Write `rgb` (uint8 [H, W, 3]) as an image of `kind`; returns the file, the RGB it must read as, and the
    tolerance (16-bit and float encodings round to the nearest 8-bit value)."""
    gray = rgb[..., 0]
    gray_rgb = np.repeat(gray[..., None], 3, axis=-1)
    wide = (rgb.astype(np.int64) * 257 + noise).clip(0, 65535)  # a 16-bit image whose 8-bit value is rgb
    path = folder / f"frame.{'tiff' if kind.endswith('tiff') else 'png'}"
    if kind in ("L", "RGB"):
        Image.fromarray(gray if kind == "L" else rgb).save(path)
        return path, gray_rgb if kind == "L" else rgb, 0
    if kind in ("RGBA", "LA"):
        alpha = noise.astype(np.uint8)[..., :1]
        if kind == "RGBA":
            Image.fromarray(np.concatenate([rgb, alpha], axis=-1)).save(path)
            return path, rgb, 0
        Image.fromarray(np.stack([gray, alpha[..., 0]], axis=-1), mode="LA").save(path)
        return path, gray_rgb, 0
    if kind == "P":
        image = Image.fromarray(rgb).convert("P")
        image.save(path)
        return path, np.asarray(image.convert("RGB")), 0
    if kind == "1":
        Image.fromarray(gray > 127).save(path)
        return path, np.repeat(np.where(gray > 127, 255, 0).astype(np.uint8)[..., None], 3, axis=-1), 0
    if kind in ("I;16 png", "I;16 tiff"):
        Image.fromarray(wide[..., 0].astype(np.uint16)).save(path)
        return path, gray_rgb, 1
    if kind == "I tiff":
        Image.fromarray(wide[..., 0].astype(np.int32)).save(path)
        return path, gray_rgb, 1
    if kind == "F tiff":
        Image.fromarray(gray.astype(np.float32) / 255).save(path)
        return path, gray_rgb, 1
    channels = {"RGB48 png": 3, "RGBA64 png": 4, "LA32 png": 2}[kind]
    values = np.concatenate([wide, wide[..., :1]], axis=-1)[..., :channels] if channels != 2 else wide[..., :2]
    _png16(path, values.astype(np.uint16))
    expected = rgb if channels >= 3 else np.repeat(rgb[..., :1], 3, axis=-1)
    return path, expected, 1


@SOME
@given(kind=st.sampled_from(KINDS), height=st.integers(1, 24), width=st.integers(1, 24), seed=st.integers(0, 2**16))
@example(kind="I;16 png", height=24, width=24, seed=0)
def test_frames_of_any_size_and_bit_depth_read_as_their_8_bit_values(tmp_path_factory, kind, height, width, seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    noise = rng.integers(-128, 129, (height, width, 3))
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    try:
        path, expected, tolerance = _frame_file(folder, kind, rgb, noise)
        for frame in (read_video(folder)[0], read_frame(str(path))):  # frames folder, training frame
            assert frame.shape == (height, width, 3)
            assert np.abs(frame.astype(np.int64) - expected).max() <= tolerance, kind
    finally:
        shutil.rmtree(folder)


# ------------------------------------------------------------------------------------------- option values
def _text(values):
    return st.one_of(values.map(str), st.sampled_from(["nan", "inf", "-inf", "-0", "1e999", "", "abc", "0x10"]))


NUMBERS = st.one_of(st.integers(-5, 40), st.floats(allow_nan=True, allow_infinity=True, width=32))
SEGMENT_RULES = {  # option -> the values it must accept (anything else: one-line usage error, exit 2)
    "--top-k": lambda v: isinstance(v, int) and v >= 1,
    "--clip-length": lambda v: isinstance(v, int) and v >= 1,
    "--max-frames": lambda v: isinstance(v, int) and v >= 1,
    "--fps": lambda v: math.isfinite(v) and v > 0,
    "--threshold": lambda v: 0 <= v < 1,
    "--overlay-threshold": lambda v: 0 <= v <= 1,
}
TRAIN_RULES = {
    "--max-steps": lambda v: isinstance(v, int) and v >= 1,
    "--batch-size": lambda v: isinstance(v, int) and v >= 1,
    "--logging-steps": lambda v: isinstance(v, int) and v >= 1,
    "--save-steps": lambda v: isinstance(v, int) and v >= 0,
    "--num-workers": lambda v: isinstance(v, int) and v >= 0,
    "--learning-rate": lambda v: math.isfinite(v) and v > 0,
    "--weight-decay": lambda v: math.isfinite(v) and v >= 0,
    "--time-budget": lambda v: math.isfinite(v) and v > 0,
}
MAKE_SYNTHETIC_RULES = {option: lambda v: isinstance(v, int) and v >= 1
                        for option in ("--videos", "--height", "--width", "--min-frames", "--max-frames")}  # fmt: skip
RULES = {"segment": (SEGMENT_RULES, ["x.mp4", "--output-dir", "out"]),
         "train": (TRAIN_RULES, ["--images", "i", "--annotations", "a.json", "--output-dir", "out"]),
         "make-synthetic": (MAKE_SYNTHETIC_RULES, ["out"])}  # fmt: skip


def _parse(command: str, arguments: list[str]):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            return build_parser(command).parse_args([command, *arguments]), None
        except SystemExit as stop:
            assert stop.code == 2
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"genvis-hf {command}: error: argument "), lines
    return None, lines[0]


@MANY
@given(command=st.sampled_from(sorted(RULES)), data=st.data(), text=_text(NUMBERS))
def test_random_option_values_are_accepted_in_range_or_refused_in_one_line(command, data, text):
    rules, required = RULES[command]
    option = data.draw(st.sampled_from(sorted(rules)))
    args, error = _parse(command, [*required, f"{option}={text}"])
    if args is None:
        assert option in error
    else:
        assert rules[option](getattr(args, option[2:].replace("-", "_"))), (option, text)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, processor = load_model_and_processor(str(tiny_model_path()))
    return model, processor, demo_frames()[:4]


@FEW
@given(top_k=st.integers(1, 30), threshold=st.floats(0, 0.99), clip_length=st.integers(1, 5),
       max_frames=st.integers(1, 5))  # fmt: skip
def test_accepted_option_values_give_results_that_honour_them(tiny, top_k, threshold, clip_length, max_frames):
    model, processor, frames = tiny
    result = segment_video(model, processor, list(frames), top_k=top_k, threshold=threshold,
                           clip_length=clip_length, max_frames=max_frames, progress=False)  # fmt: skip
    scores = result.scores.tolist()
    assert result.num_frames == min(max_frames, len(frames)) and len(scores) <= top_k
    assert scores == sorted(scores, reverse=True)
    candidates = model.config.num_clip_queries * model.config.num_labels  # (query, class) pairs
    assert all(score > threshold for score in scores) if threshold > 0 else len(scores) == min(top_k, candidates)
    assert result.masks().shape == (len(scores), result.num_frames, *frames.shape[1:3])


@FEW
@given(height=st.integers(1, 48), width=st.integers(1, 48), count=st.integers(1, 3), seed=st.integers(0, 99))
@example(height=1, width=48, count=1, seed=0)
def test_frames_of_random_sizes_are_segmented_at_their_size(tiny, height, width, count, seed):
    model, processor, _ = tiny
    frames = np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    result = segment_video(model, processor, frames, progress=False)
    assert result.masks().shape[1:] == (count, height, width) and torch.isfinite(result.scores).all()


# ------------------------------------------------------------------------------------------- damaged model files
@FEW
@given(name=st.sampled_from(["model.safetensors", "config.json", "video_preprocessor_config.json"]),
       fraction=st.floats(0.0, 1.0, exclude_max=True))  # fmt: skip
def test_truncated_model_files_are_one_line_errors(tmp_path_factory, name, fraction):
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "model"
    shutil.copytree(tiny_model_path(), folder)
    try:
        path = folder / name
        path.chmod(0o644)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data.rstrip()) * fraction)])  # a cut inside the content (JSON ends in "}\n")
        with pytest.raises(ModelLoadError) as error:
            load_model_and_processor(str(folder))
        assert _one_line(error.value).startswith(f"{folder}: ")
    finally:
        shutil.rmtree(folder.parent)


# ------------------------------------------------------------------------------------------- annotation files
@pytest.fixture(scope="module")
def data_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(root, num_videos=2, seed=3, height=32, width=40, min_frames=2, max_frames=3)
    return root


# (item, key) -> must the key be present; the keys training reads are checked, the others are free.
ANNOTATION_KEYS = {
    ("top", "videos"): True, ("top", "categories"): True, ("top", "annotations"): False,
    ("video", "id"): True, ("video", "file_names"): True, ("video", "height"): True, ("video", "width"): True,
    ("video", "length"): False,
    ("annotation", "id"): True, ("annotation", "video_id"): True, ("annotation", "category_id"): True,
    ("annotation", "iscrowd"): False, ("annotation", "segmentations"): False, ("annotation", "areas"): False,
    ("category", "id"): True, ("category", "name"): False,
}  # fmt: skip
CHECKED = {key for key in ANNOTATION_KEYS if key != ("annotation", "areas") and key != ("category", "name")}


@SOME
@given(cut=st.floats(0.0, 1.0, exclude_max=True), change=st.sampled_from([None, *sorted(ANNOTATION_KEYS)]),
       delete=st.booleans())  # fmt: skip
def test_truncated_or_mangled_annotations_load_or_are_one_line_errors(data_set, tmp_path_factory, cut, change, delete):
    """A truncated file, or one whose first video/annotation/category lost a key or got a string for it: the data
    set loads only when that key is optional or unused, else one line names the file (and the item)."""
    text = (data_set / "annotations.json").read_text().strip()
    if change is None:
        text, valid = text[: int(len(text) * cut)], False
    else:
        data = json.loads(text)
        where, key = change
        item = {"top": data, "video": data["videos"][0], "annotation": data["annotations"][0],
                "category": data["categories"][0]}[where]  # fmt: skip
        if delete:
            item.pop(key, None)
        else:
            item[key] = "x"
        text = json.dumps(data)
        valid = not ANNOTATION_KEYS[change] if delete else change not in CHECKED
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "annotations.json"
    path.write_text(text)
    try:
        if valid:
            assert len(load_ytvis(path, data_set / "JPEGImages", cache_dir=str(path.parent / "cache"))) == 2
        else:
            with pytest.raises(YTVISFormatError) as error:
                load_ytvis(path, data_set / "JPEGImages", cache_dir=str(path.parent / "cache"))
            assert _one_line(error.value).startswith(str(path.resolve()))
    finally:
        shutil.rmtree(path.parent)


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
