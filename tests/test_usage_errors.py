"""Bad options, output folders and model folders of `genvis-hf segment`: one line naming the problem, found
before any video is read or any model work starts; exit code 2 for usage errors, 1 for a model that cannot be
used. (Issue 21 cases 5, 6, 8 and 9.)"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from genvis_hf import GenVISConfig
from genvis_hf.assets import demo_video_path, tiny_model_path
from genvis_hf.cli import main

DEMO = str(demo_video_path())


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--top-k", "-1", "argument --top-k: expected a positive integer, got '-1'"),
        ("--clip-length", "-1", "argument --clip-length: expected a positive integer, got '-1'"),
        ("--clip-length", "0", "argument --clip-length: expected a positive integer, got '0'"),
        ("--threshold", "2", "argument --threshold: expected a score threshold in [0, 1), got '2'"),
        ("--max-frames", "0", "argument --max-frames: expected a positive integer, got '0'"),
        ("--fps", "inf", "argument --fps: expected a number > 0, got 'inf'"),
        ("--overlay-threshold", "-0.5", "argument --overlay-threshold: expected a number in [0, 1], got '-0.5'"),
        ("--device", "gpu7", "argument --device: 'gpu7' is not a device"),
    ],
)
def test_bad_option_values_are_usage_errors(tmp_path, capsys, option, value, expected):
    with pytest.raises(SystemExit) as stop:
        main(["segment", DEMO, "--output-dir", str(tmp_path / "out"), option, value])
    assert stop.value.code == 2
    line = _one_error_line(capsys)
    assert line.startswith("genvis-hf segment: error: ") and expected in line, line
    assert not (tmp_path / "out").exists()


def test_unavailable_device_is_a_usage_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: a missing device cannot be shown")
    with pytest.raises(SystemExit) as stop:
        main(["segment", DEMO, "--output-dir", str(tmp_path), "--device", "cuda"])
    assert stop.value.code == 2
    assert "'cuda': this machine (or this torch build) has no cuda device" in _one_error_line(capsys)


def test_output_dir_that_is_a_file_is_found_before_segmenting(tmp_path, capsys, monkeypatch):
    from genvis_hf import segment_command

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(segment_command, "load_model_and_processor", no_model)
    (tmp_path / "afile").write_text("x")
    assert main(["segment", DEMO, "--output-dir", str(tmp_path / "afile"), "--no-progress"]) == 2
    assert _one_error_line(capsys) == f"error: --output-dir {tmp_path / 'afile'}: exists and is not a folder"
    assert main(["segment", DEMO, "--output-dir", str(tmp_path / "afile" / "sub"), "--no-progress"]) == 2
    assert "cannot be created, " in _one_error_line(capsys)
    assert (tmp_path / "afile").read_text() == "x"


def test_current_directory_is_named_after_its_folder(tmp_path, capsys, monkeypatch):
    frames = tmp_path / "my_clip"
    shutil.copytree(demo_video_path(), frames)
    monkeypatch.chdir(frames)
    assert main(["segment", ".", "--output-dir", str(tmp_path / "out"), "--no-progress", "--max-frames", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["my_clip.json"]
    entries = json.loads((tmp_path / "out" / "my_clip.json").read_text())
    assert entries and {entry["video_id"] for entry in entries} == {"my_clip"}
    assert main(["segment", "/", "--output-dir", str(tmp_path / "out2")]) == 2
    assert "input /: has no name to give its output files" in capsys.readouterr().err


def _model_copy(tmp_path, name: str):
    folder = tmp_path / name
    shutil.copytree(tiny_model_path(), folder)
    for path in [folder, *folder.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def _break_model(folder, damage: str) -> None:
    weights = folder / "model.safetensors"
    if damage == "truncated weights":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 3])
    elif damage in ("wrong shape", "missing and unknown weights"):
        state = load_file(weights)
        key = sorted(state)[5]
        if damage == "wrong shape":
            state[key] = torch.zeros(3, 3)
        else:
            del state[key]
            state["model.extra.weight"] = torch.zeros(2)
        save_file(state, weights, metadata={"format": "pt"})
    elif damage == "negative query count":
        config = json.loads((folder / "config.json").read_text())
        config["num_clip_queries"] = -5
        (folder / "config.json").write_text(json.dumps(config))
    elif damage == "config is not json":
        (folder / "config.json").write_text("{not json")
    elif damage == "no config":
        (folder / "config.json").unlink()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncated weights", "the model cannot be loaded (SafetensorError: "),
        (
            "wrong shape",
            (
                "the weights do not match config.json: 1 weights of another shape than config.json gives "
                "(model.backbone.stages.0.0.conv2.norm.weight (3, 3) vs (16,))"
            ),
        ),
        (
            "missing and unknown weights",
            (
                "1 weights missing from the file (model.backbone.stages.0.0.conv2.norm.weight)"
                "; 1 weights the model does not have (model.extra.weight)"
            ),
        ),
        ("negative query count", "invalid config.json: num_clip_queries must be an integer >= 1, got -5"),
        ("config is not json", "config.json cannot be read ("),
        ("no config", "a folder without config.json"),
    ],
)
def test_damaged_model_folders_are_one_line_errors(tmp_path, capsys, damage, expected):
    folder = _model_copy(tmp_path, "model")
    _break_model(folder, damage)
    out = tmp_path / "out"
    assert main(["segment", DEMO, "--model", str(folder), "--output-dir", str(out), "--no-progress"]) == 1
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {folder}: ") and expected in line, line
    assert not out.exists()


@pytest.mark.parametrize("field", ["num_frame_queries", "num_clip_queries", "mask_dim", "size_divisibility"])
@pytest.mark.parametrize("value", [-5, 0, 2.5, "10"])
def test_config_rejects_sizes_out_of_range(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be an integer >= 1, got {value!r}$"):
        GenVISConfig(**{field: value})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"test_topk": 0}, "test_topk must be an integer >= 1, got 0"),
    ({"size": {"shortest_edge": -5, "longest_edge": 1333}}, "size['shortest_edge'] must be an integer >= 1, got -5"),
    ({"image_std": [1.0, 0.0, 1.0]}, "image_std must be positive, got [1.0, 0.0, 1.0]"),
    ({"image_mean": [1.0, 2.0]}, "image_mean must have 3 values (R, G, B), got [1.0, 2.0]"),
])  # fmt: skip
def test_processor_rejects_values_out_of_range(kwargs, message):
    from genvis_hf import GenVISVideoProcessor

    with pytest.raises(ValueError) as raised:
        GenVISVideoProcessor(**kwargs)
    assert str(raised.value) == message


def test_make_synthetic_checks_its_frame_range_and_output(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["make-synthetic", str(tmp_path / "afile"), "--videos", "1"]) == 2
    expected = f"error: OUTPUT_DIR {tmp_path / 'afile'}: exists and is not a folder"
    assert capsys.readouterr().err.splitlines() == [expected]
    assert main(["make-synthetic", str(tmp_path / "set"), "--min-frames", "5", "--max-frames", "2"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: --min-frames 5 is more than --max-frames 2"]
    assert not (tmp_path / "set").exists()


def _evaluate_args(tmp_path, **overrides) -> list[str]:
    from genvis_hf.assets import demo_annotations_path

    options = {
        "--model": str(tiny_model_path()),
        "--images": str(demo_video_path().parent),
        "--annotations": str(demo_annotations_path()),
        "--output-dir": str(tmp_path / "eval"),
        "--cache-dir": str(tmp_path / "cache"),
        **overrides,
    }
    return ["evaluate", *[item for pair in options.items() for item in pair]]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--annotations", "missing.json", "error: --annotations missing.json: does not exist"),
        ("--images", "missing_folder", "error: --images missing_folder: not a folder"),
        ("--output-dir", "afile", "error: --output-dir afile: exists and is not a folder"),
        ("--output-dir", "afile/sub", "error: --output-dir afile/sub: cannot be created, "),
    ],
)
def test_evaluate_checks_its_files_before_loading_the_model(tmp_path, capsys, monkeypatch, option, value, expected):
    from genvis_hf import model_loading

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(model_loading, "load_model_and_processor", no_model)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(_evaluate_args(tmp_path, **{option: value})) == 2
    assert _one_error_line(capsys).startswith(expected)
    assert not (tmp_path / "eval").exists() and not (tmp_path / "cache").exists()


def test_evaluate_option_values_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*_evaluate_args(tmp_path), "--num-threads", "0"])
    assert stop.value.code == 2
    assert "argument --num-threads: expected a positive integer, got '0'" in _one_error_line(capsys)


def test_evaluate_with_a_damaged_model_or_annotation_file_is_one_line(tmp_path, capsys):
    folder = _model_copy(tmp_path, "model")
    _break_model(folder, "wrong shape")
    assert main(_evaluate_args(tmp_path, **{"--model": str(folder)})) == 1
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {folder}: the weights do not match config.json"), line
    no_videos = tmp_path / "no_videos.json"
    no_videos.write_text(json.dumps({"categories": [{"id": 1, "name": "a"}], "videos": [], "annotations": []}))
    assert main(_evaluate_args(tmp_path, **{"--annotations": str(no_videos)})) == 1
    assert _one_error_line(capsys) == f"error: {no_videos}: no videos"
    assert not (tmp_path / "eval").exists()
