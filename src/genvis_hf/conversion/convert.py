"""Convert an original GenVIS (detectron2) checkpoint into a `save_pretrained` directory.

checkpoint.pth (+ original config YAML or preset name)
  -> GenVISConfig, state dict with every key mapped explicitly (see `key_map`)
  -> temporary directory: config.json, model.safetensors, video_preprocessor_config.json, README.md (model
     card with the conversion provenance) [+ the flat model code for trust_remote_code, `export_code=True`]
  -> reload + run check -> atomic rename to the output directory (nothing half-written on failure)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..configuration.configuration_genvis import GenVISConfig
from ..modeling.modeling_genvis import GenVISForVideoInstanceSegmentation, GenVISModel
from ..processing.video_processing_genvis import GenVISVideoProcessor
from ..utils.files import owned_name, remove_abandoned, set_file_modes
from .key_map import DROPPED_KEYS, key_rules, map_key
from .original_config import config_kwargs_from_original, processor_kwargs_from_original


class ConversionError(RuntimeError):
    """The checkpoint cannot be converted. The message is one line (for a key mismatch: counts and the first keys
    of each kind); `details` holds every offending key, one per line, when there are more."""

    def __init__(self, message: str, details: str | None = None):
        super().__init__(message)
        self.details = details


# Keys of each kind a mismatch message names before "...": the full lists can hold a thousand keys.
_SHOWN_KEYS = 3


def _backbone_of(keys) -> str | None:
    """The backbone type an original checkpoint's keys belong to (None when they do not tell)."""
    if any(k.startswith(("backbone.stem.", "backbone.res")) for k in keys):
        return "resnet"
    if any(k.startswith(("backbone.patch_embed.", "backbone.layers.")) for k in keys):
        return "swin"
    return None


@dataclass
class ConversionReport:
    output_dir: Path
    num_tensors: int
    num_parameters: int
    dropped_keys: list[str]
    config: GenVISConfig | None = None
    remote_code_files: list[str] | None = None  # with export_code: the exported module files
    remote_code_requirements: list[str] | None = None  # ... and the packages they import


def load_original_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """State dict of a detectron2 checkpoint (`{"model": state_dict, ...}` or a bare state dict), loaded with
    `weights_only=True` (no code from the file is executed)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle / zip errors of a damaged or foreign file
        raise ConversionError(f"{path}: not a loadable PyTorch checkpoint ({type(error).__name__}: {error})") from error
    state_dict = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ConversionError(f"{path}: expected a detectron2 checkpoint with a 'model' state dict of tensors")
    return state_dict


def build_config(*, preset: str | None = None, original_config: str | Path | dict | None = None,
                 **overrides) -> GenVISConfig:  # fmt: skip
    """The model config from exactly one of a preset name or an original (dumped) YAML."""
    if (preset is None) == (original_config is None):
        raise ConversionError("give exactly one of a preset name or an original config YAML")
    if preset is not None:
        try:
            return GenVISConfig.from_preset(preset, **overrides)
        except KeyError as error:
            raise ConversionError(str(error.args[0])) from error
    kwargs = config_kwargs_from_original(original_config)
    kwargs.update(overrides)
    return GenVISConfig(**kwargs)


def build_processor(*, preset: str | None = None, original_config: str | Path | dict | None = None,
                    config: GenVISConfig | None = None) -> GenVISVideoProcessor:  # fmt: skip
    """The video processor of a preset or an original YAML (test resize, mean/std, top-k), which is where those
    values live (the model config has none of them)."""
    if preset is not None:
        return GenVISVideoProcessor.from_preset(preset)
    kwargs = processor_kwargs_from_original(original_config)
    if config is not None:
        kwargs["size_divisibility"] = config.size_divisibility
    return GenVISVideoProcessor(**kwargs)


def convert_state_dict(
    original: dict[str, torch.Tensor], model: GenVISModel
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map every original key onto `model`'s state dict.

    Returns the converted state dict (our names) and the dropped loss-only keys. Raises `ConversionError`
    listing unmapped original keys, keys whose shape differs, and model keys left without a value.
    """
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    rules = key_rules(model.config.backbone_type, model.pixel_decoder.num_fpn_levels)
    converted: dict[str, torch.Tensor] = {}
    dropped, unmapped, mismatched, duplicated = [], [], [], []
    mismatched_short = []  # the summary names shape mismatches without the target key
    for key, value in original.items():
        if key in DROPPED_KEYS:
            dropped.append(key)
            continue
        target = map_key(key, rules)
        if target is None or target not in expected:
            unmapped.append(key if target is None else f"{key} (-> {target}, which this model does not have)")
        elif tuple(value.shape) != expected[target]:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {expected[target]} ({target})")
            mismatched_short.append(f"{key} {tuple(value.shape)} vs {expected[target]}")
        elif target in converted:
            duplicated.append(f"{key} -> {target}")
        else:
            converted[target] = value
    missing = sorted(set(expected) - set(converted))
    summary, details = [], []
    for title, keys, names in (("unmapped checkpoint keys", unmapped, unmapped),
                               ("shape mismatches", mismatched, mismatched_short),
                               ("keys mapped twice", duplicated, duplicated),
                               ("model keys missing from the checkpoint", missing, missing)):  # fmt: skip
        if keys:
            shown = ", ".join(names[:_SHOWN_KEYS]) + (", ..." if len(keys) > _SHOWN_KEYS else "")
            summary.append(f"{len(keys)} {title} ({shown})")
            details.append(f"{len(keys)} {title}:\n  " + "\n  ".join(keys))
    if summary:
        hint = ""
        backbone = _backbone_of(original)
        if backbone is not None and backbone != model.config.backbone_type:
            hint = f"; the checkpoint has a {backbone} backbone, the config a {model.config.backbone_type} one"
        total = sum(len(keys) for keys in (unmapped, mismatched, duplicated, missing))
        more = " (--verbose lists every key)" if total > len(summary) else ""
        raise ConversionError(f"checkpoint does not match the model config: {', '.join(summary)}{hint}{more}",
                              details="\n".join(details))  # fmt: skip
    return converted, dropped


def _check_converted(output_dir: Path, model: GenVISForVideoInstanceSegmentation) -> None:
    """Reload the written directory and check it has the same weights and gives the same outputs."""
    reloaded = GenVISForVideoInstanceSegmentation.from_pretrained(output_dir).eval()
    original_state = model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        if not torch.equal(tensor, original_state[name]):
            raise ConversionError(f"reloaded weight {name} differs from the converted one")
    generator = torch.Generator().manual_seed(0)
    clip = min(model.config.clip_length, 2)
    frames = torch.randn(1, clip + 1, 3, 64, 96, generator=generator)
    with torch.no_grad():
        expected = model(frames).class_queries_logits
        actual = reloaded(frames).class_queries_logits
    if not torch.isfinite(actual).all():
        raise ConversionError("the converted model produced non-finite outputs")
    if not torch.allclose(expected, actual, atol=1e-5, rtol=1e-5):
        raise ConversionError("the reloaded model's outputs differ from the converted model's")


def _replace_directory(source: Path, destination: Path, overwrite: bool) -> None:
    """Move the finished `source` directory to `destination` with renames only."""
    if destination.exists():
        if not overwrite:
            raise ConversionError(f"output directory {destination} already exists (pass overwrite=True / --overwrite)")
        backup = destination.with_name(owned_name(f".{destination.name}.old-"))
        os.replace(destination, backup)
        os.replace(source, destination)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(source, destination)


def convert_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    preset: str | None = None,
    original_config: str | Path | dict | None = None,
    overwrite: bool = False,
    verify: bool = True,
    config_overrides: dict | None = None,
    model_card: bool = True,
    repo_id: str | None = None,
    export_code: bool = False,
) -> ConversionReport:
    """Convert `checkpoint` and write a `from_pretrained` directory at `output_dir`, atomically.

    Args:
        checkpoint: the original `model_final.pth` (detectron2 format).
        output_dir: directory to create; on any failure it is left untouched (or absent).
        preset / original_config: exactly one: a preset name (`genvis-r50-ytvis19`, ...) or the resolved
            detectron2 YAML the checkpoint was trained with.
        overwrite: replace an existing `output_dir`.
        verify: reload the written files and run the model once before publishing the directory (and, with
            `export_code`, check that the exported code gives the package's outputs exactly).
        model_card: write README.md (`genvis_hf.hub.build_model_card`): metadata, the preset's Model Zoo
            figures, usage, citation, and the provenance (checkpoint sha256, converter version).
        repo_id: the name the card's usage snippets load (default: the preset, else the output directory name).
        export_code: also write the model code and `auto_map` (`genvis_hf.hub.export_remote_code`), so that
            `trust_remote_code=True` loads the directory without genvis_hf.
    """
    output_dir = Path(output_dir)
    config = build_config(preset=preset, original_config=original_config, **(config_overrides or {}))
    original = load_original_state_dict(checkpoint)
    with torch.device("meta"):
        skeleton = GenVISModel(config)
    converted, dropped = convert_state_dict(original, skeleton)
    del skeleton

    with torch.device("meta"):  # every tensor comes from the checkpoint: skip random initialisation
        model = GenVISForVideoInstanceSegmentation(config)
    model.load_state_dict({f"model.{k}": v for k, v in converted.items()}, strict=True, assign=True)
    model.eval()

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging_prefix = f".{output_dir.name}.tmp-"
    for prefix in (staging_prefix, f".{output_dir.name}.old-"):  # left by a conversion killed with SIGKILL
        remove_abandoned(output_dir.parent, prefix)
    staging = output_dir.parent / owned_name(staging_prefix)
    umask = os.umask(0)
    os.umask(umask)
    staging.mkdir(mode=0o777 & ~umask)  # published with the usual permissions
    export = None
    try:
        model.save_pretrained(staging, safe_serialization=True)
        processor = build_processor(preset=preset, original_config=original_config, config=config)
        processor.save_pretrained(staging)
        if export_code:
            from ..hub.remote_code import RemoteCodeExportError, export_remote_code

            try:
                export = export_remote_code(staging, validate=verify)
            except RemoteCodeExportError as error:
                raise ConversionError(f"exporting the model code failed: {error}") from error
        if model_card:
            from ..hub.model_card import build_model_card, checkpoint_provenance, write_model_card

            provenance = checkpoint_provenance(
                checkpoint,
                preset=preset,
                original_config=original_config if isinstance(original_config, (str, Path)) else None,
            )
            card = build_model_card(config, repo_id=repo_id or preset or output_dir.name, preset=preset,
                                    processor=processor, provenance=provenance, remote_code=export_code,
                                    remote_code_requirements=export.requirements if export else None)  # fmt: skip
            write_model_card(card, staging)
        if verify:
            _check_converted(staging, model)
        set_file_modes(staging)  # transformers writes model.safetensors 0600; the other files are 0644
        _replace_directory(staging, output_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ConversionReport(
        output_dir=output_dir,
        num_tensors=len(converted),
        num_parameters=sum(p.numel() for p in model.parameters()),
        dropped_keys=dropped,
        config=config,
        remote_code_files=export.files if export else None,
        remote_code_requirements=export.requirements if export else None,
    )
