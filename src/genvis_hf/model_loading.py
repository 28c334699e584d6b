"""A GenVIS model and its processor for a command, checked before any video is read: a folder (or installed name)
that is not a complete, matching GenVIS model is one line naming the folder and the problem, never a traceback
or a model whose missing weights were silently initialised at random."""

from __future__ import annotations

from pathlib import Path

from .utils.messages import one_line

# How many keys an error message names before "..." (the full lists can hold hundreds).
_SHOWN_KEYS = 3


class ModelLoadError(ValueError):
    """The model folder or name cannot be used; the message is one line naming it."""


def _examples(keys) -> str:
    keys = sorted(str(k) for k in keys)
    return ", ".join(keys[:_SHOWN_KEYS]) + (", ..." if len(keys) > _SHOWN_KEYS else "")


def _weight_problems(info: dict) -> list[str]:
    problems = []
    if info.get("missing_keys"):
        problems.append(
            f"{len(info['missing_keys'])} weights missing from the file ({_examples(info['missing_keys'])})"
        )
    if info.get("mismatched_keys"):
        shapes = [f"{key} {tuple(saved)} vs {tuple(expected)}" for key, saved, expected in info["mismatched_keys"]]
        problems.append(f"{len(shapes)} weights of another shape than config.json gives ({_examples(shapes)})")
    if info.get("unexpected_keys"):
        problems.append(f"{len(info['unexpected_keys'])} weights the model does not have "
                        f"({_examples(info['unexpected_keys'])})")  # fmt: skip
    if info.get("error_msgs"):
        problems.append(f"{len(info['error_msgs'])} loading errors ({_examples(info['error_msgs'])})")
    return problems


def load_model_and_processor(source: str, device: str = "cpu"):
    """`(model, processor)` from a `save_pretrained` folder or an installed name, in eval mode on `device`.

    Raises `ModelLoadError` (one line) for a folder without config.json, a config that is not a valid GenVIS
    config (e.g. a negative query count), a damaged weights file, or weights that do not match the config
    (missing, of another shape, or unknown).
    """
    import transformers
    from transformers import AutoVideoProcessor

    from .auto import AutoModelForVideoInstanceSegmentation
    from .configuration.configuration_genvis import GenVISConfig

    path = Path(source)
    if path.exists() and not (path / "config.json").is_file():
        what = "a folder without config.json" if path.is_dir() else "a file, not a model folder"
        raise ModelLoadError(f"{source}: {what} (give a save_pretrained folder or an installed model name)")
    try:
        config_dict, _ = GenVISConfig.get_config_dict(source)
    except (OSError, ValueError) as error:  # ValueError: json.JSONDecodeError, an invalid repo id
        if path.exists():
            raise ModelLoadError(f"{source}: config.json cannot be read ({one_line(error)})") from error
        raise ModelLoadError(
            f"{source}: not a model folder or an installed model name (convert a released checkpoint with "
            f"`genvis-hf convert --checkpoint FILE --preset NAME --install`) [{one_line(error, 200)}]"
        ) from error
    if config_dict.get("model_type") != GenVISConfig.model_type:
        raise ModelLoadError(f"{source}: config.json is for model type {config_dict.get('model_type')!r}, "
                             f"not {GenVISConfig.model_type!r}")  # fmt: skip
    try:
        config = GenVISConfig.from_dict(config_dict)
    except (ValueError, TypeError) as error:
        raise ModelLoadError(f"{source}: invalid config.json: {error}") from error

    verbosity, bar = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # its multi-line load report is replaced by the one line below
    transformers.logging.disable_progress_bar()
    try:
        model, info = AutoModelForVideoInstanceSegmentation.from_pretrained(
            source, config=config, output_loading_info=True, ignore_mismatched_sizes=True
        )
        processor = AutoVideoProcessor.from_pretrained(source)
    except Exception as error:  # a damaged file fails in safetensors, torch or transformers, in many types
        raise ModelLoadError(f"{source}: the model cannot be loaded ({one_line(error)})") from error
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bar:
            transformers.logging.enable_progress_bar()
    problems = _weight_problems(info)
    if problems:
        raise ModelLoadError(f"{source}: the weights do not match config.json: {'; '.join(problems)}")
    return model.to(device).eval(), processor
