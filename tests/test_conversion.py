"""The converter: key coverage of the real released checkpoints, failure modes, atomic output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

from genvis_hf import GenVISConfig, GenVISModel
from genvis_hf.cli import main
from genvis_hf.configuration.presets import PRESETS
from genvis_hf.conversion import ConversionError, convert_checkpoint, convert_state_dict
from genvis_hf.conversion.key_map import DROPPED_KEYS, key_rules, map_key
from genvis_hf.utils.files import file_mode

# Each preset against the key list of its real checkpoint. Semi-online and YouTube-VIS 2021 models have the
# same keys as their YouTube-VIS 2019 twin (REFERENCE.md); Swin-L OVIS differs from Swin-L YouTube-VIS 2019
# only in the class heads (25 + 1 instead of 40 + 1 outputs).
KEY_FILES = {
    "genvis-r50-ytvis19": "genvis_R50_ytvis2019_online.json",
    "genvis-r50-ytvis21": "genvis_R50_ytvis2019_online.json",
    "genvis-r50-ovis": "genvis_R50_ovis_online.json",
    "genvis-swinl-ytvis19": "genvis_SWIN-L_ytvis2019_online.json",
    "genvis-swinl-ytvis21": "genvis_SWIN-L_ytvis2019_online.json",
    "genvis-swinl-ovis": "genvis_SWIN-L_ytvis2019_online.json",
}


def _key_list(fixtures_dir, preset: str) -> list[dict]:
    entries = json.loads((fixtures_dir / "keys" / KEY_FILES[preset.replace("-semi-online", "")]).read_text())["keys"]
    if preset.startswith("genvis-swinl-ovis"):
        entries = [dict(e, shape=[26, *e["shape"][1:]]) if "class_embed" in e["key"] else e for e in entries]
    return entries


def _meta_model(preset: str) -> GenVISModel:
    with torch.device("meta"):
        return GenVISModel(GenVISConfig.from_preset(preset))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_released_key_maps_to_a_tensor_of_the_same_shape(fixtures_dir, preset):
    model = _meta_model(preset)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    rules = key_rules(model.config.backbone_type, model.pixel_decoder.num_fpn_levels)
    covered = set()
    for entry in _key_list(fixtures_dir, preset):
        if entry["key"] in DROPPED_KEYS:
            continue
        target = map_key(entry["key"], rules)
        assert target in expected, f"{entry['key']} maps to {target}, not a tensor of the model"
        assert expected[target] == tuple(entry["shape"]), f"{entry['key']} -> {target}: shape mismatch"
        assert target not in covered, f"two original keys map to {target}"
        covered.add(target)
    assert covered == set(expected), f"model tensors left unmapped: {sorted(set(expected) - covered)}"


@pytest.mark.parametrize("preset", ["genvis-r50-ovis", "genvis-swinl-ytvis19-semi-online"])
def test_convert_state_dict_accepts_a_checkpoint_shaped_like_the_release(fixtures_dir, preset):
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    fake = {
        e["key"]: torch.empty(e["shape"], dtype=dtypes[e["dtype"]], device="meta")
        for e in _key_list(fixtures_dir, preset)
    }
    converted, dropped = convert_state_dict(fake, _meta_model(preset))
    assert sorted(dropped) == sorted(DROPPED_KEYS)
    assert len(converted) == len(fake) - len(DROPPED_KEYS)


def test_preset_parameter_counts_match_the_released_models(fixtures_dir):
    for preset, key_file in [("genvis-r50-ytvis19", "genvis_R50_ytvis2019_online.json"),
                             ("genvis-swinl-ytvis19", "genvis_SWIN-L_ytvis2019_online.json")]:  # fmt: skip
        expected = json.loads((fixtures_dir / "keys" / key_file).read_text())["num_parameters"]
        assert sum(p.numel() for p in _meta_model(preset).parameters()) == expected


@pytest.fixture
def fixture_checkpoint(fixtures_dir, tmp_path):
    """The r50_online fixture checkpoint's state dict and config path."""
    fixture = fixtures_dir / "r50_online"
    payload = torch.load(fixture / "model_final.pth", map_location="cpu", weights_only=True)
    return payload, fixture / "config.yaml"


def _run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "convert_checkpoint.py"), *args],
                          capture_output=True, text=True)  # fmt: skip


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_bad_checkpoint_fails_naming_the_key_and_leaves_no_output(fixture_checkpoint, tmp_path, change):
    payload, config = fixture_checkpoint
    state = payload["model"]
    if change == "missing":
        key = "vita_module.pre_memory_embed_k.weight"
        del state[key]
    elif change == "extra":
        key = "vita_module.unexpected_head.weight"
        state[key] = torch.zeros(3)
    else:
        key = "sem_seg_head.predictor.class_embed.bias"
        state[key] = torch.zeros(7)
    checkpoint = tmp_path / "model_final.pth"
    torch.save(payload, checkpoint)
    output = tmp_path / "converted"
    completed = _run_script("--checkpoint", str(checkpoint), "--config", str(config), "--output", str(output))
    assert completed.returncode != 0
    expected_name = "object_decoder.memory_key_projection.weight" if change == "missing" else key
    assert expected_name in completed.stderr, completed.stderr
    assert "Traceback" not in completed.stderr
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model_final.pth"], "temporary files left behind"


def test_failure_after_staging_leaves_no_directory(fixture_checkpoint, tmp_path, monkeypatch):
    payload, config = fixture_checkpoint
    checkpoint = tmp_path / "model_final.pth"
    torch.save(payload, checkpoint)
    import genvis_hf.conversion.convert as convert_module

    def broken_check(*_args, **_kwargs):
        raise ConversionError("simulated failure while verifying")

    monkeypatch.setattr(convert_module, "_check_converted", broken_check)
    with pytest.raises(ConversionError, match="simulated"):
        convert_checkpoint(checkpoint, tmp_path / "out", original_config=config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_final.pth"]


def test_existing_output_is_kept_unless_overwrite(fixture_checkpoint, tmp_path):
    payload, config = fixture_checkpoint
    checkpoint = tmp_path / "model_final.pth"
    torch.save(payload, checkpoint)
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("user data")
    with pytest.raises(ConversionError, match="already exists"):
        convert_checkpoint(checkpoint, output, original_config=config, verify=False)
    assert (output / "keep.txt").read_text() == "user data"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)  # fmt: skip
    (tmp_path / f".out.tmp-{int(dead.stdout)}-0a0b").mkdir()  # staging of a conversion killed with SIGKILL
    convert_checkpoint(checkpoint, output, original_config=config, verify=False, overwrite=True)
    assert sorted(p.name for p in output.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "video_preprocessor_config.json",
    ]
    # published with the permissions of a new file: transformers writes model.safetensors 0600
    assert {p.name: p.stat().st_mode & 0o777 for p in output.iterdir()} == dict.fromkeys(
        ["README.md", "config.json", "model.safetensors", "video_preprocessor_config.json"], file_mode()
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_final.pth", "out"]


def test_existing_output_is_found_before_converting(tmp_path, monkeypatch, capsys):
    import genvis_hf.conversion.convert as convert_module

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted before checking the output folder")

    monkeypatch.setattr(convert_module, "convert_checkpoint", no_conversion)
    (tmp_path / "out").mkdir()
    (tmp_path / "file").write_text("x")
    checkpoint = str(tmp_path / "file")
    assert main(["convert", "--checkpoint", checkpoint, "--preset", "genvis-r50-ytvis19", "--output",
                 str(tmp_path / "out")]) == 2  # fmt: skip
    assert capsys.readouterr().err.splitlines() == [
        f"error: --output {tmp_path / 'out'}: already exists (pass --overwrite to replace it)"
    ]
    assert main(["convert", "--checkpoint", checkpoint, "--preset", "genvis-r50-ytvis19", "--output",
                 str(tmp_path / "file")]) == 2  # fmt: skip
    assert "exists and is not a folder" in capsys.readouterr().err


def test_preset_mismatch_is_summarised_in_one_line(fixtures_dir, tmp_path, capsys):
    """The R-50 fixture checkpoint with a Swin-L preset: 1,262 offending keys. The error is one line with the
    counts, the first keys and a hint; --verbose adds the full list."""
    arguments = ["convert", "--checkpoint", str(fixtures_dir / "r50_online" / "model_final.pth"), "--preset",
                 "genvis-swinl-ytvis19", "--output", str(tmp_path / "out"), "--no-verify"]  # fmt: skip
    assert main(arguments) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: checkpoint does not match the model config: 265 unmapped checkpoint keys "
                           "(backbone.stem.conv1.weight, ")  # fmt: skip
    assert ", 201 shape mismatches (" in line and ", 796 model keys missing from the checkpoint (" in line
    assert line.endswith("; the checkpoint has a resnet backbone, the config a swin one (--verbose lists every key)")
    assert main([*arguments, "--verbose"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == line and len(lines) == 1 + 3 + 265 + 201 + 796
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_unknown_preset_and_missing_checkpoint_are_one_line_errors(tmp_path):
    completed = _run_script("--checkpoint", str(tmp_path / "nope.pth"), "--preset", "genvis-r50-ytvis19",
                            "--output", str(tmp_path / "o"))  # fmt: skip
    assert completed.returncode == 1 and "checkpoint not found" in completed.stderr
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    completed = _run_script("--checkpoint", str(tmp_path / "garbage.pth"), "--preset", "genvis-r50-nope")
    assert completed.returncode == 2 and "--preset: Unknown GenVIS preset" in completed.stderr  # a usage error
    assert "Traceback" not in completed.stderr


def test_yaml_config_reads_the_fixture_settings(fixtures_dir):
    from genvis_hf.conversion import (
        config_kwargs_from_original,
        processor_kwargs_from_original,
    )

    kwargs = config_kwargs_from_original(fixtures_dir / "r50_semi_online" / "config.yaml")
    config = GenVISConfig(**kwargs)
    assert (config.clip_length, config.num_frame_queries, config.num_clip_queries) == (3, 20, 10)
    assert (config.frame_decoder_layers, config.pixel_decoder_encoder_layers, config.num_labels) == (3, 2, 40)
    assert config.id2label[0] == "person" and config.id2label[39] == "tennis_racket"
    assert (config.resnet_width_per_group, config.resnet_stem_out_channels) == (8, 16)
    assert (config.train_num_frames, config.train_frame_range) == (15, 12)
    processor = processor_kwargs_from_original(fixtures_dir / "r50_semi_online" / "config.yaml")
    assert processor["test_topk"] == 10 and processor["size_divisibility"] == 32
    assert processor["image_mean"] == [123.675, 116.28, 103.53]
