"""Reading every supported input form, and one clear error (naming file and frame) for every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_dir
from PIL import Image

from genvis_hf.processing.video_io import AtomicOutput, VideoInputError, VideoReader, read_video, write_video

TREE = shared_dir() / "data" / "videos" / "tree.avi"
BOX = shared_dir() / "data" / "videos" / "box.mp4"


@pytest.fixture(scope="module")
def tree_frames():
    return read_video(TREE)


def test_video_file_decodes_every_frame(tree_frames):
    assert tree_frames.shape == (68, 240, 320, 3) and tree_frames.dtype == np.uint8
    reader = VideoReader(TREE)
    assert reader.name == "tree" and reader.fps == pytest.approx(15.0, rel=1e-3)


def test_frames_directory_in_natural_order(tmp_path, tree_frames):
    for index in [10, 2, 1, 0]:  # written out of order, names whose lexical order is wrong
        Image.fromarray(tree_frames[index]).save(tmp_path / f"frame_{index}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    frames = read_video(tmp_path)
    assert np.array_equal(frames, tree_frames[[0, 1, 2, 10]])


@pytest.mark.parametrize("form", ["pil_list", "hwc_numpy", "chw_tensor", "float_0_1", "float_0_255", "gray", "rgba"])
def test_in_memory_forms(form, tree_frames):
    frames = tree_frames[:3]
    expected = frames.astype(np.float32)
    video = {
        "pil_list": [Image.fromarray(f) for f in frames],
        "hwc_numpy": frames,
        "chw_tensor": torch.from_numpy(frames).permute(0, 3, 1, 2),
        "float_0_1": frames.astype(np.float32) / 255,
        "float_0_255": frames.astype(np.float32),
        "gray": frames[..., 0],
        "rgba": np.concatenate([frames, np.full((*frames.shape[:3], 1), 7, np.uint8)], -1),
    }[form]
    if form == "gray":
        video = list(video)  # a list of 2-D frames
        expected = np.repeat(frames[..., :1], 3, -1).astype(np.float32)
    out = read_video(video).astype(np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-3)


def test_bad_inputs_give_one_line_errors(tmp_path, tree_frames):
    cases = {}
    (tmp_path / "text.mp4").write_text("this is not a video")
    cases["not a video"] = (tmp_path / "text.mp4", "not a readable video")
    cases["missing"] = (tmp_path / "missing.mp4", "no such file")
    (tmp_path / "empty_dir").mkdir()
    cases["empty dir"] = (tmp_path / "empty_dir", "no image frames")
    cases["zero frames"] = ([], "no frames")
    mixed = [tree_frames[0], tree_frames[1], np.zeros((100, 100, 3), np.uint8)]
    cases["size change"] = (mixed, "video frame 2: size 100x100 differs")
    (tmp_path / "broken_frames").mkdir()
    Image.fromarray(tree_frames[0]).save(tmp_path / "broken_frames" / "0.png")
    (tmp_path / "broken_frames" / "1.png").write_bytes(b"garbage")
    cases["unreadable image"] = (tmp_path / "broken_frames", "1.png: frame 1 could not be read")
    cases["five channels"] = ([np.zeros((8, 8, 5), np.uint8)], "5 channels")
    for name, (source, message) in cases.items():
        with pytest.raises(VideoInputError) as error:
            read_video(source)
        assert message in str(error.value), f"{name}: {error.value}"
        assert "\n" not in str(error.value)


def test_truncated_copies(tmp_path):
    data = TREE.read_bytes()
    truncated_avi = tmp_path / "tree_half.avi"
    truncated_avi.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoInputError, match=r"tree_half.avi: the file ends inside the data of frame 35: it looks "
                                              r"truncated \(allow_truncated=True / --allow-truncated"):  # fmt: skip
        read_video(truncated_avi)
    reader = VideoReader(truncated_avi, allow_truncated=True)
    frames = list(reader)
    assert len(frames) == 35 and reader.truncated  # the cut frame 35 is not returned half-decoded
    assert np.array_equal(np.stack(frames), read_video(TREE, max_frames=35))

    data = BOX.read_bytes()  # H.264 in MP4 with its index at the start: the frames before the cut decode
    truncated_mp4 = tmp_path / "box_half.mp4"
    truncated_mp4.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoInputError, match=r"box_half.mp4: the file ends inside the data of frame \d+: it looks "
                                              r"truncated"):  # fmt: skip
        read_video(truncated_mp4)
    reader = VideoReader(truncated_mp4, allow_truncated=True)
    count = sum(1 for _ in reader)
    assert 200 < count < 455 and reader.truncated


def test_damaged_file_of_the_samples_decodes(tmp_path):
    """Megamind_bugy.avi has corrupted data that the decoder conceals: all 270 frames are returned (documented)."""
    reader = VideoReader(shared_dir() / "data" / "videos" / "Megamind_bugy.avi", max_frames=12)
    assert len(list(reader)) == 12


def test_atomic_writes_leave_nothing_on_failure(tmp_path):
    def failing_frames():
        yield np.zeros((32, 48, 3), np.uint8)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "out.mp4", failing_frames())
    with pytest.raises(RuntimeError), AtomicOutput(tmp_path / "out.json") as temp:
        temp.write_text("[")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    path = write_video(tmp_path / "ok.mp4", (np.full((33, 47, 3), i * 20, np.uint8) for i in range(5)), fps=5)
    assert len(read_video(path)) == 5


def test_variable_frame_rate_timing_is_kept(tmp_path):
    """tree.avi stores 68 of its 444 frame slots at 15 fps (29.6 s): written back, frames keep their times."""
    reader = VideoReader(TREE, max_frames=12)
    frames = list(reader)
    source_times = reader.frame_times[:12]
    assert source_times[0] == 0.0 and source_times[11] > 11 / 15 + 1  # gaps: not 12 frames at 15 fps
    mp4 = write_video(tmp_path / "vfr.mp4", iter(frames), fps=15.0, timestamps=reader.frame_times)
    gif = write_video(tmp_path / "vfr.gif", iter(frames), fps=15.0, timestamps=source_times)
    written = VideoReader(mp4)
    assert len(list(written)) == 12
    np.testing.assert_allclose(written.frame_times, source_times, atol=1e-3)
    import av

    with av.open(str(mp4)) as container:  # the last frame lasts one source frame (1/15 s)
        assert container.duration / 1e6 == pytest.approx(source_times[-1] + 1 / 15, abs=0.01)
    with Image.open(gif) as image:
        delays = []
        for index in range(image.n_frames):
            image.seek(index)
            delays.append(image.info["duration"])
    assert sum(delays) == pytest.approx(1000 * (source_times[-1] + 1 / 15), abs=10)
    constant = VideoReader(write_video(tmp_path / "cfr.mp4", iter(frames), fps=4.0))
    list(constant)
    np.testing.assert_allclose(constant.frame_times, np.arange(12) / 4.0, atol=1e-3)


def test_sixteen_bit_frames_read_as_their_eight_bit_values(tmp_path, tree_frames):
    """PIL's convert("RGB") clips 16-bit grayscale to 255 (the frames read all white); they must read as the
    8-bit frames they encode, in a frames folder and as training frames."""
    from genvis_hf.data.dataset import read_frame

    gray = tree_frames[:3, :, :, 1]
    (tmp_path / "gray8").mkdir()
    (tmp_path / "gray16").mkdir()
    for index, frame in enumerate(gray):
        Image.fromarray(frame).save(tmp_path / "gray8" / f"{index}.png")
        Image.fromarray(frame.astype(np.uint16) * 257).save(tmp_path / "gray16" / f"{index}.png")
    with Image.open(tmp_path / "gray16" / "0.png") as image:
        assert image.mode == "I;16"
    expected = np.repeat(gray[..., None], 3, axis=-1)
    assert np.array_equal(read_video(tmp_path / "gray16"), expected)
    assert np.array_equal(read_video(tmp_path / "gray8"), expected)
    assert np.array_equal(read_frame(str(tmp_path / "gray16" / "1.png")), expected[1])
    floats = Image.fromarray(gray[0].astype(np.float32) / 255)  # mode F, 0-1
    assert np.abs(read_video([floats]).astype(np.float32) - expected[:1]).max() < 1e-3
    with pytest.raises(VideoInputError, match=r"float pixels outside 0\.\.255"):
        read_video([np.full((4, 4, 3), 300.0, np.float32)])
