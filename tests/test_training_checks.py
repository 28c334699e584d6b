"""Bad training data and options: one line naming the file and the item, checked before the output folder or
the model is made; a frame that cannot be decoded stops training with one line naming it (issue 21 cases 4
and 7)."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import tiny_config_kwargs

from genvis_hf import GenVISConfig
from genvis_hf.cli import main
from genvis_hf.data import make_synthetic_dataset
from genvis_hf.training.train import (
    STATE_FILE,
    _checkpoints,
    _resolve_resume,
    remove_unfinished_saves,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def data_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    annotations = make_synthetic_dataset(root, num_videos=3, seed=5, height=48, width=64, min_frames=3, max_frames=4)
    return root, annotations


def _copy(data_set, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(data_set[0], root)
    return root, json.loads((root / "annotations.json").read_text())


def _train(tmp_path, root, *extra: str) -> int:
    config = tmp_path / "config.json"
    GenVISConfig(**tiny_config_kwargs(num_labels=4, train_num_points=128, freeze_detector=False, train_num_frames=2,
                                      train_frame_range=2, deformable_attention_backend="torch")).to_json_file(config)  # fmt: skip
    return main(["train", "--config", str(config), "--images", str(root / "JPEGImages"), "--annotations",
                 str(root / "annotations.json"), "--output-dir", str(tmp_path / "out"), "--max-steps", "2",
                 "--input-size", "48",
                 "--batch-size", "2", "--num-threads", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache"),
                 *extra])  # fmt: skip


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("error:")]


def _break(data: dict, root, problem: str) -> str:
    """Damage the data set; returns the part of the expected message after the annotation file's path."""
    video = data["videos"][1]
    if problem == "missing frame":
        frame = (root / "JPEGImages" / video["file_names"][2]).resolve()
        frame.unlink()
        return f"videos[1] (id={video['id']}) frame 2: frame file {frame} does not exist"
    if problem == "no annotations":
        data["annotations"] = []
        return "no (non-crowd) annotations in its 3 videos: nothing to train on"
    if problem == "no videos":
        data["videos"], data["annotations"] = [], []
        return "no videos"
    if problem == "unknown category":
        data["annotations"][0]["category_id"] = 99
        return f"annotations[0] (id={data['annotations'][0]['id']}): unknown category_id 99"
    if problem == "length mismatch":
        video["length"] += 2
        listed = len(video["file_names"])
        return f"videos[1] (id={video['id']}): 'length' is {video['length']} but it lists {listed} file_names"
    raise AssertionError(problem)


@pytest.mark.parametrize("problem", ["missing frame", "no annotations", "no videos", "unknown category",
                                     "length mismatch"])  # fmt: skip
def test_bad_data_is_one_line_before_any_work(data_set, tmp_path, capsys, problem):
    root, data = _copy(data_set, tmp_path)
    expected = _break(data, root, problem)
    (root / "annotations.json").write_text(json.dumps(data))
    assert _train(tmp_path, root) == 1
    assert _error_lines(capsys) == [f"error: {(root / 'annotations.json').resolve()}: {expected}"]
    assert not (tmp_path / "out").exists()  # found before the output folder (and the model) was made


def test_annotations_that_are_not_json(data_set, tmp_path, capsys):
    root, _ = _copy(data_set, tmp_path)
    (root / "annotations.json").write_text('{"videos": [')
    assert _train(tmp_path, root) == 1
    [line] = _error_lines(capsys)
    assert line.startswith(f"error: {(root / 'annotations.json').resolve()}: not valid JSON (")


def test_undecodable_frame_stops_training_naming_the_file(data_set, tmp_path, capsys):
    """Frames are decoded while training (in a DataLoader worker here): the one line names the file."""
    root, data = _copy(data_set, tmp_path)
    for name in data["videos"][1]["file_names"]:  # every frame of one video, so that a sample meets one
        path = root / "JPEGImages" / name
        path.write_bytes(path.read_bytes()[:300])
    assert _train(tmp_path, root, "--num-workers", "1") == 1
    [line] = _error_lines(capsys)
    assert line.startswith(f"error: {root / 'JPEGImages' / data['videos'][1]['file_names'][0].rsplit('/', 1)[0]}/")
    assert line.endswith("could not be read (Truncated File Read)"), line
    assert not (tmp_path / "out").exists()  # the run made it and wrote nothing into it: removed


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--config", "genvis-r51"], "error: --config genvis-r51: not 'tiny', a preset name"),
        (["--coco-annotations", "coco.json"], "error: --coco-annotations and --coco-images go together"),
        (["--logging-steps", "0"], "argument --logging-steps: expected a positive integer, got '0'"),
        (["--batch-size", "-2"], "argument --batch-size: expected a positive integer, got '-2'"),
        (["--learning-rate", "nan"], "argument --learning-rate: expected a number > 0, got 'nan'"),
    ],
)
def test_bad_options_are_usage_errors(data_set, tmp_path, capsys, options, expected):
    root, _ = data_set
    try:
        code = main(["train", "--images", str(root / "JPEGImages"), "--annotations", str(root / "annotations.json"),
                     "--output-dir", str(tmp_path / "out"), *options])  # fmt: skip
    except SystemExit as stop:  # argparse
        code = stop.code
    assert code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert expected in line
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file(data_set, tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    assert _train(tmp_path, data_set[0]) == 2
    expected = f"error: --output-dir {tmp_path / 'out'}: exists and is not a folder"
    assert capsys.readouterr().err.splitlines() == [expected]


def test_resume_skips_and_removes_checkpoints_left_half_saved(tmp_path):
    for name in ("step_2", "step_4", "step_6.tmp"):  # step_6.tmp: killed between its state file and its rename
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / STATE_FILE).write_text("{}")
    (tmp_path / "checkpoints" / "step_x").mkdir()
    assert [p.name for p in _checkpoints(tmp_path)] == ["step_2", "step_4"]  # was: ValueError int('6.tmp')
    assert _resolve_resume("latest", tmp_path).name == "step_4"
    assert [p.name for p in remove_unfinished_saves(tmp_path)] == ["step_6.tmp"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2", "step_4", "step_x"]


def test_interrupted_checkpoint_save_leaves_no_temporary_folder(tmp_path):
    class InterruptedAccelerator:
        is_main_process = True

        def wait_for_everyone(self):
            pass

        def save_state(self, folder):
            (tmp_path / "checkpoints" / "step_3.tmp" / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt  # what SIGTERM raises too (genvis_hf.cli.Terminated is a SystemExit)

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(InterruptedAccelerator(), tmp_path, {"step": 3}, keep=2)
    assert list((tmp_path / "checkpoints").iterdir()) == []
