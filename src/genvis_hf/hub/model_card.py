"""Model cards (README.md with Hub metadata) for converted and trained GenVIS models.

    card = build_model_card(config, repo_id="genvis-r50-ytvis19", preset="genvis-r50-ytvis19",
                            provenance=checkpoint_provenance("model_final.pth", preset="genvis-r50-ytvis19"))
    card.save(model_dir / "README.md")

For a model trained with genvis_hf, pass the measured figures and what the run was:

    build_model_card(config, repo_id="me/genvis-r50-mydata", metrics={"AP": 41.2, "AP50": 63.0},
                     metrics_source="genvis-hf evaluate on valid.json", dataset="ytvis19",
                     training={"steps": 12000, "batch size": 8, "learning rate": 1e-4})

Metadata choices (the Hub has no video instance segmentation task):
- `pipeline_tag: image-segmentation`: the Hub task whose instance-segmentation subtask is closest (GenVIS
  segments every frame into instances, and tracks them); it is where segmentation models are filtered. The
  precise task is in the tags (`video-instance-segmentation`, `video-segmentation`, `instance-segmentation`,
  `object-tracking`) and in the model-index task name.
- `library_name: transformers`: the weights and configs are transformers `save_pretrained` files, loaded with
  the Auto classes once `genvis_hf` is imported (or with `trust_remote_code=True` when the code is exported).
- `model-index`: one result per metric (AP, AP50, AP75, AR1, AR10 in %, the YouTube-VIS API's), task type
  `image-segmentation` named "Video Instance Segmentation", dataset and split, and where the figures come from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

PIPELINE_TAG = "image-segmentation"
TASK_NAME = "Video Instance Segmentation"
TAGS = ["video-instance-segmentation", "video-segmentation", "instance-segmentation", "object-tracking",
        "genvis", "vita", "mask2former", "vision"]  # fmt: skip
LICENSE = "apache-2.0"
ORIGINAL_REPOSITORY = "https://github.com/miranheo/GenVIS"
PAPER = "https://arxiv.org/abs/2211.08834"
METRIC_ORDER = ("AP", "AP50", "AP75", "AR1", "AR10")

CITATION = """\
@inproceedings{GenVIS,
  title={A Generalized Framework for Video Instance Segmentation},
  author={Heo, Miran and Hwang, Sukjun and Hyun, Jeongseok and Kim, Hanjung and Oh, Seoung Wug and Lee, Joon-Young and Kim, Seon Joo},
  booktitle={CVPR},
  year={2023}
}

@inproceedings{VITA,
  title={VITA: Video Instance Segmentation via Object Token Association},
  author={Heo, Miran and Hwang, Sukjun and Oh, Seoung Wug and Lee, Joon-Young and Kim, Seon Joo},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}"""

_BACKBONE_NAMES = {"r50": "ResNet-50", "swinl": "Swin-L"}


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_provenance(checkpoint: str | Path, *, preset: str | None = None,
                          original_config: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Where a converted model comes from: the original file (name, size, sha256), the preset or original
    config it was converted with (with the YAML's sha256), and the converter (`genvis_hf` version)."""
    from .. import __version__

    checkpoint = Path(checkpoint)
    provenance: dict[str, Any] = {
        "original_checkpoint": checkpoint.name,
        "original_checkpoint_sha256": file_sha256(checkpoint),
        "original_checkpoint_bytes": checkpoint.stat().st_size,
        "converter": f"genvis_hf {__version__}",
    }
    if preset is not None:
        from ..configuration.presets import MODEL_ZOO

        provenance["preset"] = preset
        if preset in MODEL_ZOO:
            provenance["original_config"] = MODEL_ZOO[preset].original_config
            provenance["download_url"] = MODEL_ZOO[preset].download_url
    if isinstance(original_config, (str, Path)):
        provenance["original_config"] = Path(original_config).name
        provenance["original_config_sha256"] = file_sha256(original_config)
    return provenance


def _dataset_info(dataset: str | None) -> tuple[str | None, str | None]:
    """(Hub dataset id, display name) of a data set key (`ytvis19`, `ytvis21`, `ovis`) or a free name."""
    if dataset is None:
        return None, None
    from ..configuration.presets import DATASETS

    if dataset in DATASETS:
        return DATASETS[dataset]["hub_dataset"], DATASETS[dataset]["display_name"]
    return dataset, dataset


def _ordered_metrics(metrics: Mapping[str, float]) -> list[tuple[str, float]]:
    known = [(name, metrics[name]) for name in METRIC_ORDER if name in metrics]
    return known + [(name, value) for name, value in metrics.items() if name not in METRIC_ORDER]


def _usage(repo_id: str, remote_code: bool, requirements: list[str] | None) -> str:
    text = f"""\
## How to use

With the `genvis_hf` package installed (it registers GenVIS with transformers' Auto classes and adds the
`video-instance-segmentation` pipeline, which streams a video of any length clip by clip):

```python
import genvis_hf  # registers GenVIS with transformers: Auto classes and the video-instance-segmentation pipeline
from transformers import pipeline

segmenter = pipeline("video-instance-segmentation", model="{repo_id}")
instances = segmenter("video.mp4")  # a video file, a directory of frames, or a list of RGB frames
for instance in instances:  # masks as per-frame RLEs (memory flat in the video's length); decode what you need
    masks = genvis_hf.decode_masks(instance["segmentations"])  # bool [frames, H, W]
    print(instance["label"], round(instance["score"], 3), tuple(masks.shape))
```

The same with the model and processor in hand (`masks()` is bool `[instances, frames, H, W]`; results also
convert to YouTube-VIS JSON with `to_ytvis_results()`):

```python
from genvis_hf import AutoModelForVideoInstanceSegmentation
from transformers import AutoVideoProcessor

model = AutoModelForVideoInstanceSegmentation.from_pretrained("{repo_id}")
processor = AutoVideoProcessor.from_pretrained("{repo_id}")
video = model.segment_video("video.mp4", processor, progress=False)
print(video.label_names, video.scores, video.masks().shape)
```
"""
    if remote_code:
        extra = [name for name in requirements or () if name not in ("torch", "transformers")]
        needs = f" (besides torch and transformers it needs {', '.join(f'`{n}`' for n in extra)})" if extra else ""
        text += f"""
Without `genvis_hf`: the repository carries the model code (pure PyTorch deformable attention), so
transformers loads it with `trust_remote_code=True`{needs}:

```python
import torch
from transformers import AutoModel, AutoVideoProcessor

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoVideoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
inputs = processor(videos="video.mp4", return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
video = processor.post_process_video_instance_segmentation(outputs)[0]  # masks at the model's input size
print(video["scores"], video["labels"], video["masks"].shape)
```
"""
    return text


def _preset_processor(preset: str | None):
    if preset is None:
        return None
    from ..processing.video_processing_genvis import GenVISVideoProcessor

    return GenVISVideoProcessor.from_preset(preset)


def _processor_rows(processor) -> list[str]:
    if processor is None:
        return []
    size = processor.size
    return [f"| test resize | shortest edge {size['shortest_edge']}, longest edge at most {size['longest_edge']} |",
            f"| instances per video | top {processor.test_topk} |"]  # fmt: skip


def build_model_card(
    config,
    *,
    repo_id: str,
    preset: str | None = None,
    processor=None,
    metrics: Mapping[str, float] | None = None,
    metrics_source: str | None = None,
    metrics_source_url: str | None = None,
    dataset: str | None = None,
    dataset_split: str = "validation",
    training: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    remote_code: bool = False,
    remote_code_requirements: list[str] | None = None,
    title: str | None = None,
    summary: str | None = None,
) -> ModelCard:
    """A model card for a GenVIS model directory.

    Args:
        config: the model's `GenVISConfig` (architecture summary, classes).
        repo_id: the name the usage snippets load (`genvis-r50-ytvis19`, `org/name`, or a directory path).
        preset: a released model (`genvis_hf.configuration.presets.MODEL_ZOO`): title, data set, and, unless
            `metrics` is given, the authors' Model Zoo figures.
        processor: the model's `GenVISVideoProcessor` (test resize and top-k rows); default: the preset's, else
            none of those rows.
        metrics: figures to report, name -> value as it should read (YouTube-VIS API %: `AP`, `AP50`, `AP75`,
            `AR1`, `AR10`; other names are reported after those). Overrides the preset's.
        metrics_source / metrics_source_url: where the figures come from (shown in the card and model-index).
        dataset: data set key (`ytvis19`, `ytvis21`, `ovis`) or a Hub dataset id; default: the preset's.
        dataset_split: the split the figures are on.
        training: for a trained model, what the run was (name -> value, shown as a table).
        provenance: for a converted model, `checkpoint_provenance(...)`.
        remote_code: the directory carries the exported model code: add the `trust_remote_code` snippet.
        remote_code_requirements: the packages that code imports (`RemoteCodeExport.requirements`), named there.
        title / summary: override the heading and the first paragraph.
    """
    from ..configuration.presets import MODEL_ZOO

    entry = MODEL_ZOO.get(preset) if preset else None
    if metrics is None and entry is not None:
        metrics = entry.metrics
        metrics_source = metrics_source or "GenVIS authors' Model Zoo (the data set's evaluation server, %)"
        metrics_source_url = metrics_source_url or f"{ORIGINAL_REPOSITORY}#model-zoo"
    dataset = dataset or (entry.dataset if entry else None)
    dataset_id, dataset_name = _dataset_info(dataset)
    eval_results = []
    if metrics and dataset_id:
        eval_results = [
            EvalResult(
                task_type=PIPELINE_TAG,
                task_name=TASK_NAME,
                dataset_type=dataset_id,
                dataset_name=dataset_name,
                dataset_split=dataset_split,
                metric_type=name,
                metric_name=name,
                metric_value=float(value),
                # the Hub wants a source as name + url: without a url it is named in the card text only
                source_name=metrics_source if metrics_source_url else None,
                source_url=metrics_source_url,
            )
            for name, value in _ordered_metrics(metrics)
        ]
    tags = (
        list(TAGS) + ([dataset] if dataset and dataset not in TAGS else []) + (["custom_code"] if remote_code else [])
    )
    card_data = ModelCardData(
        license=LICENSE,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=tags,
        datasets=[dataset_id] if dataset_id else None,
        model_name=repo_id.rstrip("/").split("/")[-1],
        eval_results=eval_results or None,
    )

    backbone = (f"Swin (embed dim {config.swin_embed_dim}, depths {list(config.swin_depths)})"
                if config.backbone_type == "swin" else f"ResNet-{config.resnet_depth}")  # fmt: skip
    mode = "online" if config.clip_length == 1 else f"semi-online (clips of {config.clip_length} frames)"
    if title is None:
        title = (f"GenVIS {_BACKBONE_NAMES[entry.backbone]} {dataset_name} ({entry.mode})" if entry
                 else f"GenVIS {repo_id.rstrip('/').split('/')[-1]}")  # fmt: skip
    if summary is None:
        summary = (
            "GenVIS (*A Generalized Framework for Video Instance Segmentation*, CVPR 2023, built on VITA and "
            "Mask2Former) segments, classifies and tracks every object of a video: per-frame queries are "
            "aggregated into clip-level object queries that are carried from clip to clip with a memory, so the "
            "same query follows the same object through the whole video."
        )
        if entry is not None:
            summary += (f" These are the authors' released {dataset_name} weights ({_BACKBONE_NAMES[entry.backbone]}, "
                        f"{entry.mode}), "
                        "converted to the Hugging Face format with `genvis_hf`; they give the same predictions as "
                        "the original code.")  # fmt: skip
    classes = [config.id2label[i] for i in sorted(config.id2label, key=int)]
    sections = [
        f"# {title}",
        summary,
        f"Paper: [{PAPER}]({PAPER}). Original code and weights: [{ORIGINAL_REPOSITORY}]({ORIGINAL_REPOSITORY}).",
        "## Model\n\n"
        + "\n".join(
            [
                "| | |",
                "|---|---|",
                f"| backbone | {backbone} |",
                f"| inference | {mode} |",
                f"| queries | {config.num_frame_queries} per frame, {config.num_clip_queries} per clip |",
                *_processor_rows(processor if processor is not None else _preset_processor(preset)),
                f"| classes ({len(classes)}) | {', '.join(classes)} |",
            ]
        ),
        _usage(repo_id, remote_code, remote_code_requirements).rstrip(),
    ]
    if metrics:
        rows = ["| metric | value |", "|---|---|"] + [
            f"| {name} | {value:g} |" for name, value in _ordered_metrics(metrics)
        ]
        where = f"{dataset_name} {dataset_split}" if dataset_name else dataset_split
        source = f" Source: [{metrics_source}]({metrics_source_url})." if metrics_source and metrics_source_url else (
            f" Source: {metrics_source}." if metrics_source else "")  # fmt: skip
        sections.append(f"## Evaluation\n\nOn {where}.{source}\n\n" + "\n".join(rows))
    if training:
        sections.append("## Training\n\n" + "\n".join(
            ["| | |", "|---|---|"] + [f"| {key} | {value} |" for key, value in training.items()]))  # fmt: skip
    if provenance:
        labels = {
            "original_checkpoint": "original checkpoint", "original_checkpoint_sha256": "original checkpoint sha256",
            "original_checkpoint_bytes": "original checkpoint size (bytes)", "download_url": "downloaded from",
            "preset": "preset", "original_config": "original config",
            "original_config_sha256": "original config sha256", "converter": "converted with",
        }  # fmt: skip
        rows = ["| | |", "|---|---|"] + [
            f"| {labels.get(key, key)} | {f'`{value}`' if 'sha256' in key or key == 'original_checkpoint' else value} |"
            for key, value in provenance.items()
        ]
        sections.append(
            "## Conversion\n\nConverted from the original detectron2 checkpoint with `genvis-hf convert` (every "
            "key mapped explicitly; the converted model was reloaded and run before it was written).\n\n"
            + "\n".join(rows)
        )
    sections.append(
        "## License\n\nApache-2.0, as the original GenVIS release (portions of the original code come from "
        "Mask2Former, MIT License)."
    )
    sections.append(f"## Citation\n\n```bibtex\n{CITATION}\n```")
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    return ModelCard(content)


def write_model_card(card: ModelCard, model_dir: str | Path) -> Path:
    """Save `card` as `model_dir/README.md` (the file the Hub renders)."""
    path = Path(model_dir) / "README.md"
    card.save(path)
    return path


def card_code_blocks(card: ModelCard | str, language: str = "python") -> list[str]:
    """The fenced code blocks of a card's text, in order (what its usage snippets are)."""
    import re

    text = card.content if isinstance(card, ModelCard) else card
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
