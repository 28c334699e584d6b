"""The model card written next to a trained model (`huggingface_hub.ModelCard`)."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData


def model_card(config, state: dict, source, args) -> str:
    """Markdown model card: what was trained on what, for how long, and how well."""
    metrics = state.get("metrics") or {}
    scalar_metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    data = ModelCardData(
        library_name="genvis_hf",
        license="apache-2.0",
        tags=["video-instance-segmentation", "genvis", "youtube-vis"],
    )
    classes = ", ".join(config.id2label[i] for i in sorted(config.id2label, key=int))
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        "# GenVIS video instance segmentation model",
        "",
        "Trained with `genvis_hf` (`genvis-hf train`). Load it with",
        "`GenVISForVideoInstanceSegmentation.from_pretrained(path)` and `GenVISVideoProcessor.from_pretrained(path)`,",
        "or run `genvis-hf evaluate --model PATH ...`.",
        "",
        "## Training data",
        "",
        f"- annotations: `{Path(state.get('train_annotations', args.annotations)).name}` "
        f"({state.get('train_videos', len(source))} videos, YouTube-VIS format)",
        f"- classes ({config.num_labels}): {classes}",
        f"- frames per sample: {config.train_num_frames} (sampling range {config.train_frame_range}), "
        f"clip length {config.clip_length}, test short edge {config.test_min_size}",
        "",
        "## Training",
        "",
        f"- configuration: `{args.config}` (backbone {config.backbone_type}"
        + (f"-{config.resnet_depth}" if config.backbone_type == "resnet" else "")
        + f", {config.num_clip_queries} clip queries), freeze_detector={config.freeze_detector}",
        f"- steps: {state['step']} x {args.batch_size} videos"
        + (f" x {args.gradient_accumulation_steps} accumulation" if args.gradient_accumulation_steps > 1 else "")
        + f", AdamW lr {args.learning_rate:g} (backbone x{args.backbone_multiplier:g}), weight decay "
        f"{args.weight_decay:g}, grad-norm clip {args.clip_grad_norm:g}, decay x{args.gamma:g} at steps "
        f"{state.get('milestones')}",
        f"- wall time: {state.get('wall_time', state.get('elapsed', 0)) / 60:.1f} min; final training loss "
        f"{state.get('final_loss')}",
        "",
        "## Evaluation",
        "",
    ]
    if scalar_metrics:
        eval_name = Path(args.eval_annotations).name if args.eval_annotations else "?"
        lines += [f"On `{eval_name}` (YouTube-VIS video AP):", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in scalar_metrics.items()]
    else:
        lines.append("No evaluation set was given at training time (`--eval-annotations`).")
    lines += ["", "## Training state", "", "```json", json.dumps(
        {k: state[k] for k in ("step", "max_steps", "milestones") if k in state}), "```", ""]
    return str(ModelCard("\n".join(lines)))


__all__ = ["model_card"]
