"""Training end to end: `Trainer` out of the box, the Accelerate loop's exact resumption after SIGKILL, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO_ROOT, tiny_config_kwargs

from genvis_hf import GenVISConfig, GenVISForVideoInstanceSegmentation, GenVISVideoProcessor
from genvis_hf.data import (
    ClipAugmentation,
    GenVISDataCollator,
    VideoClipDataset,
    VideoEvalDataset,
    load_ytvis,
    make_synthetic_dataset,
)
from genvis_hf.training.hf_trainer import make_compute_metrics, trainer_arguments
from genvis_hf.training.optim import parameter_groups, warmup_multistep_factor
from genvis_hf.utils.files import file_mode


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_set")
    annotations = make_synthetic_dataset(root, num_videos=3, seed=5, height=48, width=64, min_frames=3, max_frames=4)
    return root, annotations


def _config(**overrides) -> GenVISConfig:
    kwargs = tiny_config_kwargs(num_labels=4, train_num_points=128, freeze_detector=False, train_num_frames=2,
                                train_frame_range=2,
                                deformable_attention_backend="torch")  # fmt: skip
    kwargs.update(overrides)
    return GenVISConfig(**kwargs)


def test_optimizer_groups_and_schedule():
    model = GenVISForVideoInstanceSegmentation(_config())
    groups = parameter_groups(model, lr=1.0, weight_decay=0.05, backbone_multiplier=0.1)
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_id[id(named["model.backbone.stem.conv1.conv.weight"])] == (0.1, 0.05)
    assert by_id[id(named["model.object_decoder.query_features.weight"])] == (1.0, 0.0)  # embedding
    assert by_id[id(named["model.object_decoder.decoder_norm.weight"])] == (1.0, 0.0)  # norm
    assert by_id[id(named["model.object_decoder.class_predictor.weight"])] == (1.0, 0.05)
    assert len(by_id) == sum(p.numel() > 0 for p in model.parameters())
    assert warmup_multistep_factor(0, 10, [100], 0.1, 0.01) == pytest.approx(0.01)
    assert warmup_multistep_factor(5, 10, [100], 0.1, 0.01) == pytest.approx(0.505)
    assert warmup_multistep_factor(100, 10, [100], 0.1, 0.01) == pytest.approx(0.1)


def test_trainer_lowers_the_loss_and_evaluates_with_the_metric(tiny_set, tmp_path):
    from transformers import Trainer, TrainingArguments

    torch.set_num_threads(1)
    root, annotations = tiny_set
    config = _config()
    model = GenVISForVideoInstanceSegmentation(config)
    processor = GenVISVideoProcessor(size={"shortest_edge": 48, "longest_edge": 96})
    source = load_ytvis(annotations, root / "JPEGImages", cache_dir=str(tmp_path / "cache"))
    # One clip of each video, no augmentation: the loss must go down on a fixed set.
    train_set = VideoClipDataset(source, 2, 0, ClipAugmentation((48,), 96, flip_prob=0, crop_prob=0))
    eval_set = VideoEvalDataset(source, 48, 96)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=14, learning_rate=1e-3, per_device_train_batch_size=3,
        per_device_eval_batch_size=2, logging_steps=1, save_strategy="no", use_cpu=True, seed=0,
        lr_scheduler_type="constant", **trainer_arguments(),
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=args, data_collator=GenVISDataCollator.from_processor(processor), train_dataset=train_set,
        eval_dataset=eval_set, compute_metrics=make_compute_metrics(processor, source, config),
    )  # fmt: skip
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 14
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_AP", "eval_AP50"} <= set(metrics)
    assert 0.0 <= metrics["eval_AP"] <= 1.0


def _cli(*args, **popen):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "genvis_hf.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)  # fmt: skip


def _losses(output_dir) -> dict[int, tuple[float, list[int]]]:
    """step -> (loss, video ids) from the JSON-lines log; a later line for the same step wins (resumed run)."""
    entries = {}
    for line in (output_dir / "training_log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        entries[entry["step"]] = (entry["loss"], entry["videos"])
    return entries


def test_sigkill_after_a_checkpoint_resumes_with_the_same_data_and_losses(tiny_set, tmp_path):
    root, annotations = tiny_set
    config_path = tmp_path / "config.json"
    _config().to_json_file(config_path)
    common = ["train", "--config", str(config_path), "--images", str(root / "JPEGImages"), "--annotations",
              str(annotations), "--max-steps", "6", "--save-steps", "3", "--logging-steps", "1", "--batch-size", "2",
              "--input-size", "48",
              "--num-workers", "0", "--num-threads", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = _cli(*common, "--output-dir", str(reference_dir))
    victim = _cli(*common, "--output-dir", str(killed_dir))
    checkpoint = killed_dir / "checkpoints" / "step_3" / "trainer_state.json"
    deadline = time.time() + 240
    while not checkpoint.is_file() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert checkpoint.is_file(), victim.communicate()[0][-3000:]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed_dir / "config.json").exists()  # it died before the end
    # What a kill between writing a checkpoint's state file and its rename leaves: resume ignores and removes it
    shutil.copytree(checkpoint.parent, killed_dir / "checkpoints" / "step_5.tmp", dirs_exist_ok=True)

    # a resumed run is the checkpoint's run: another --max-steps is ignored, with a warning
    resumed = _cli(*[a if a != "6" else "7" for a in common], "--output-dir", str(killed_dir), "--resume")
    out_resumed, out_reference = resumed.communicate(timeout=300)[0], reference.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out_resumed[-3000:]
    assert reference.returncode == 0, out_reference[-3000:]
    assert "resumed from" in out_resumed
    expected, actual = _losses(reference_dir), _losses(killed_dir)
    assert sorted(actual) == list(range(1, 7))
    for step in range(4, 7):  # the steps after the checkpoint, run by the resumed process
        assert actual[step][1] == expected[step][1]  # same videos in the same order
        assert actual[step][0] == pytest.approx(expected[step][0], abs=1e-6, rel=0)
    summary = json.loads(out_resumed.strip().splitlines()[-1])
    assert summary["step"] == 6
    assert (killed_dir / "model.safetensors").is_file() and (killed_dir / "README.md").is_file()
    assert "step_5.tmp, left by a run killed while saving" in out_resumed
    assert "these are ignored: max_steps=7 (the checkpoint's: 6)" in out_resumed
    assert sorted(p.name for p in (killed_dir / "checkpoints").iterdir()) == ["step_3", "step_6"]
    for name in ("model.safetensors", "config.json"):  # transformers writes the weights 0600: published 0644
        assert (killed_dir / name).stat().st_mode & 0o777 == file_mode(), name
    for path in (killed_dir / "checkpoints" / "step_6").iterdir():  # accelerate's weights too
        assert path.stat().st_mode & 0o777 == file_mode(), path.name
    assert "| training data | `annotations.json` (3 videos" in (killed_dir / "README.md").read_text()
