"""`genvis-hf train` as a transformers user expects it: started from a transformers Mask2Former, logging to
TensorBoard through Accelerate's trackers and through transformers' logging, with the converter's model card
(model-index of the final evaluation), gradient checkpointing, and `--push-to-hub` refused before training when
it cannot work."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT
from huggingface_hub import ModelCard
from test_mask2former_init import tiny_mask2former

from genvis_hf.cli import main
from genvis_hf.data import make_synthetic_dataset


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("set")
    annotations = make_synthetic_dataset(root, num_videos=2, seed=3, height=48, width=64, min_frames=3, max_frames=3)
    return root, annotations


def _train_args(tiny_set, output_dir, *extra):
    root, annotations = tiny_set
    return ["train", "--images", str(root / "JPEGImages"), "--annotations", str(annotations), "--output-dir",
            str(output_dir), "--max-steps", "2", "--batch-size", "1", "--num-frames", "2", "--input-size", "48",
            "--num-workers", "0", "--num-threads", "1", "--no-progress", "--logging-steps", "1", *extra]  # fmt: skip


def test_fine_tuning_from_a_mask2former_with_tensorboard_and_a_model_index_card(tiny_set, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mask2former_dir = tmp_path / "mask2former"
    tiny_mask2former("swin").save_pretrained(mask2former_dir)
    _, annotations = tiny_set
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("TRANSFORMERS_VERBOSITY", None)
    completed = subprocess.run(
        [sys.executable, "-m", "genvis_hf.cli", *_train_args(tiny_set, out, "--init-from-mask2former", str(mask2former_dir),
                                                              "--report-to", "tensorboard", "--gradient-checkpointing",
                                                              "--eval-annotations", str(annotations))],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    # transformers' logging carries the run's INFO lines (its handler, genvis_hf's loggers under "transformers.")
    assert (
        "initialised from Mask2Former" in completed.stderr
        and "re-initialised for another label set" in completed.stderr
    )
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2 and "AP" in summary["metrics"]

    # the run started from the Mask2Former's weights: its query features, which the 2 steps barely moved
    from safetensors.torch import load_file

    trained = load_file(out / "model.safetensors")
    start = tiny_mask2former("swin").state_dict()["model.transformer_module.queries_features.weight"]
    assert torch.allclose(trained["model.frame_decoder.query_features.weight"], start, atol=0.05)
    state = json.loads((out / "train_results.json").read_text())
    assert state["args"]["gradient_checkpointing"] and state["args"]["init_from_mask2former"] == str(mask2former_dir)

    # TensorBoard event files with the training scalars at every step and the final evaluation
    event_files = list((out / "runs").rglob("events.out.tfevents.*"))
    assert event_files
    scalars = {}
    for path in event_files:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in accumulator.Scalars(tag)]
    assert [step for step, _ in scalars["train/loss"]] == [1, 2]
    assert scalars["train/loss"][0][1] == pytest.approx(
        json.loads((out / "training_log.jsonl").read_text().splitlines()[0])["loss"], rel=1e-5
    )
    assert {"train/learning_rate", "eval/AP", "eval/AP50"} <= set(scalars)

    # the converter's card builder, with a model-index holding the final evaluation (in %)
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-segmentation" and card.data.library_name == "transformers"
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["AP"] == pytest.approx(round(100 * state["metrics"]["AP"], 2))
    assert {"AP50", "AP75", "AR1", "AR10"} <= set(results) and min(results.values()) >= 0  # no -1 "undefined"
    assert {r.dataset_split for r in card.data.eval_results} == {"held-out"}
    assert "| initialised from | Mask2Former" in card.content and "| gradient checkpointing | on |" in card.content
    assert "| test resize | shortest edge 48, longest edge at most 1333 |" in card.content


def test_push_to_hub_and_missing_trackers_are_refused_before_training(tiny_set, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(_train_args(tiny_set, tmp_path / "a", "--push-to-hub", "me/genvis-shapes")) == 1
    assert "cannot push me/genvis-shapes: offline mode is on" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # nothing ran

    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    assert main(_train_args(tiny_set, tmp_path / "b", "--report-to", "wandb")) == 1
    err = capsys.readouterr().err
    assert "--report-to wandb needs its package: pip install wandb" in err and len(err.strip().splitlines()) == 1
    assert main(_train_args(tiny_set, tmp_path / "c", "--report-to", "tensorbored")) == 1
    assert "unknown tracker (choose from tensorboard, wandb" in capsys.readouterr().err
    assert main(_train_args(tiny_set, tmp_path / "d", "--config", "tiny", "--init-from-mask2former", "x")) == 2
    assert not any((tmp_path / name).exists() for name in "bcd")


def test_genvis_loggers_follow_transformers_verbosity(monkeypatch):
    import transformers

    from genvis_hf.utils.logging import get_logger, set_command_verbosity

    logger = get_logger("genvis_hf.training.train")
    assert logger.name == "transformers.genvis_hf.training.train"
    package = get_logger("genvis_hf")
    previous = package.level
    try:
        package.setLevel(logging.NOTSET)
        transformers.logging.set_verbosity_info()
        assert logger.isEnabledFor(logging.INFO)
        transformers.logging.set_verbosity_error()
        assert not logger.isEnabledFor(logging.WARNING)
        monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
        set_command_verbosity()  # the user's choice wins over the command's default
        assert not logger.isEnabledFor(logging.INFO)
        monkeypatch.delenv("TRANSFORMERS_VERBOSITY")
        set_command_verbosity()
        assert logger.isEnabledFor(logging.INFO)
    finally:
        package.setLevel(previous)
        transformers.logging.set_verbosity_warning()
