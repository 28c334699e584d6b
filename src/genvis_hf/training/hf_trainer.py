"""`transformers.Trainer` with GenVIS: no Trainer subclass is needed.

    model = GenVISForVideoInstanceSegmentation(config)            # or .from_pretrained(...)
    processor = GenVISVideoProcessor.from_preset("genvis-r50-ytvis19")  # or .from_pretrained(...): resize, mean/std
    short, long = processor.size["shortest_edge"], processor.size["longest_edge"]
    collator = GenVISDataCollator.from_processor(processor)
    train_set = VideoClipDataset(load_ytvis(ann, images), config.train_num_frames, config.train_frame_range,
                                 ClipAugmentation(default_train_sizes(short), long))
    eval_set = VideoEvalDataset(load_ytvis(eval_ann, eval_images), short, long)
    args = TrainingArguments(output_dir, **trainer_arguments(), max_steps=..., learning_rate=...)
    trainer = Trainer(model=model, args=args, data_collator=collator, train_dataset=train_set,
                      eval_dataset=eval_set,
                      compute_metrics=make_compute_metrics(processor, eval_set.source))
    trainer.train(); trainer.evaluate()   # eval_AP, eval_AP50, ...

`trainer_arguments()` holds the settings that make evaluation work on per-video label dicts of different sizes:
`remove_unused_columns=False` (the collator needs every field), `label_names=["labels"]`,
`batch_eval_metrics=True` (the metric is updated batch by batch: no concatenation of predictions of different
shapes, nothing held for the whole set) and `eval_do_concat_batches=False`. `Trainer` leaves out of the
predictions the outputs named in `config.keys_to_ignore_at_inference`; `outputs_from_predictions` rebuilds a
`GenVISModelOutput` from the rest for post-processing.
"""

from __future__ import annotations

from dataclasses import fields

import torch


def trainer_arguments(**overrides) -> dict:
    """`TrainingArguments` keywords GenVIS needs (merge with your own)."""
    arguments = {
        "remove_unused_columns": False,
        "label_names": ["labels"],
        "batch_eval_metrics": True,
        "eval_do_concat_batches": False,
        "dataloader_pin_memory": False,
        "report_to": "none",
    }
    arguments.update(overrides)
    return arguments


def outputs_from_predictions(predictions, config):
    """The `GenVISModelOutput` whose values `Trainer` passed as `EvalPrediction.predictions` (a tuple of the
    non-None output fields, in field order, without `loss` and `config.keys_to_ignore_at_inference`)."""
    from ..modeling.modeling_genvis import GenVISModelOutput

    ignored = set(config.keys_to_ignore_at_inference) | {"loss"}
    names = [f.name for f in fields(GenVISModelOutput) if f.name not in ignored]
    if isinstance(predictions, torch.Tensor):
        predictions = (predictions,)
    present = [n for n in names if n in ("class_queries_logits", "mask_embeddings", "mask_features", "video_lengths",
                                         "num_clips", "clip_lengths", "image_sizes", "padded_image_sizes")]  # fmt: skip
    if len(predictions) != len(present):
        raise ValueError(f"expected {len(present)} prediction tensors ({present}), got {len(predictions)}")
    return GenVISModelOutput(**dict(zip(present, predictions)))


def make_compute_metrics(processor, ground_truth_source, config=None):
    """A `compute_metrics(eval_prediction, compute_result)` for `batch_eval_metrics=True`: post-processes each
    batch's videos into YouTube-VIS results (masks at each video's `original_size` label) and, on the last batch,
    returns the video AP of everything seen against `ground_truth_source` (a `VideoDataset`) or its annotation
    file. Only videos that were evaluated are scored (a subset of the set can be evaluated)."""
    import json
    from pathlib import Path

    from ..processing.rle import masks_to_rle
    from .evaluate import ytvis_metrics

    annotations_path = getattr(ground_truth_source, "annotations_path", ground_truth_source)
    label_to_category = getattr(ground_truth_source, "label_to_category_id", None)
    state = {"results": [], "videos": set()}

    def compute_metrics(eval_prediction, compute_result: bool = True):
        nonlocal label_to_category
        model_config = config
        if model_config is None:
            from ..configuration.configuration_genvis import GenVISConfig

            model_config = GenVISConfig
        outputs = outputs_from_predictions(eval_prediction.predictions, model_config)
        labels = eval_prediction.label_ids
        labels = labels if isinstance(labels, (list, tuple)) else [labels]
        sizes = [tuple(int(s) for s in label["original_size"]) for label in labels]
        if label_to_category is None:
            categories = sorted(json.loads(Path(annotations_path).read_text())["categories"], key=lambda c: c["id"])
            label_to_category = {i: int(c["id"]) for i, c in enumerate(categories)}
        for label, video in zip(labels, processor.post_process_video_instance_segmentation(outputs, sizes)):
            video_id = int(label["video_id"])
            state["videos"].add(video_id)
            for score, cls, masks in zip(video["scores"], video["labels"], video["masks"]):
                state["results"].append({
                    "video_id": video_id, "category_id": label_to_category[int(cls)], "score": float(score),
                    "segmentations": masks_to_rle(masks),
                })  # fmt: skip
        if not compute_result:
            return {}
        ground_truth = json.loads(Path(annotations_path).read_text())
        ground_truth["videos"] = [v for v in ground_truth["videos"] if v["id"] in state["videos"]]
        ground_truth["annotations"] = [a for a in ground_truth["annotations"] if a["video_id"] in state["videos"]]
        metrics = ytvis_metrics(ground_truth, state["results"])
        state["results"], state["videos"] = [], set()
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}

    return compute_metrics


__all__ = ["make_compute_metrics", "outputs_from_predictions", "trainer_arguments"]
