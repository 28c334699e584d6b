"""GenVIS training on Accelerate (`genvis-hf train`, `scripts/train.py`, `accelerate launch [--multi_gpu] ...`).

The loop: AdamW (backbone LR multiplier, no decay on norms/embeddings), warm-up + step schedule, full-model
gradient clipping, mixed precision where the device has it, gradient accumulation, `accelerator.save_state`
checkpoints every `--save-steps` (and at the end), `--resume`, a progress bar and a JSON-lines log. At the end
the model, its video processor and a model card are written to the output folder (`save_pretrained`; each file
is written to a temporary name and renamed into place), after an evaluation when `--eval-annotations` is given.

Exact resumption: sample k of the run is `(video index, seed)` from `SeededSampler` (a per-epoch permutation
and a per-position seed, so augmentation is a function of the position), and every micro-batch reseeds torch,
numpy and random from (seed, step, micro-batch); a run killed after a checkpoint and resumed therefore sees the
same batches and computes the same losses as an uninterrupted one.

Three recipes: fine-tuning a model with pretrained weights (a `save_pretrained` folder) follows the original
(lr 5e-5, backbone x0.1, 10 warm-up steps at factor 1, decay x0.1 at 2/3 of the steps); starting from a
transformers Mask2Former (`--init-from-mask2former`: pretrained detector, new object decoder) is the same with
lr 1e-4 and the whole model trained; training from scratch (a preset or config.json, e.g. `--config tiny`) uses
lr 1e-3, backbone x1, 100 warm-up steps from 0.01 and decays at 65% and 90% of the steps.

Logs go through transformers' logging (`TRANSFORMERS_VERBOSITY`), to `training_log.jsonl`, and to the
Accelerate trackers named by `--report-to` (TensorBoard event files in `OUT/runs/`). The output's model card is
`genvis_hf.hub.build_model_card`'s, with a model-index of the final evaluation; `--push-to-hub ORG/NAME` uploads
the output (without its checkpoints) after training, and is refused before training when it cannot work. Without `--max-steps` the run is limited by `--time-budget` (default 19 minutes):
it measures its own speed and sets the number of steps (and the schedule) to fit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..utils.logging import get_logger, set_command_verbosity

logger = get_logger(__name__)

TINY_NAMES = ("tiny", "genvis-tiny")
STATE_FILE = "trainer_state.json"
CHECKPOINTS_DIR = "checkpoints"
FINAL_TMP_PREFIX = ".final-"


# ---------------------------------------------------------------------------------------------- arguments
@dataclass
class TrainArguments:
    images: str
    annotations: str
    output_dir: str
    config: str = "tiny"
    init_from_mask2former: str | None = None
    eval_images: str | None = None
    eval_annotations: str | None = None
    coco_images: str | None = None
    coco_annotations: str | None = None
    max_steps: int | None = None
    time_budget: float | None = None  # minutes; default 19 when max_steps is not given
    batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    learning_rate: float | None = None
    backbone_multiplier: float | None = None
    weight_decay: float = 0.05
    clip_grad_norm: float = 0.01
    warmup_steps: int | None = None
    warmup_factor: float | None = None
    decay_fractions: list[float] | None = None
    gamma: float = 0.1
    num_frames: int | None = None
    frame_range: int | None = None
    input_size: int | None = None
    freeze_detector: bool | None = None
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"
    num_workers: int | None = None
    num_threads: int | None = None
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    eval_steps: int | None = None
    resume: str | None = None
    seed: int = 0
    cache_dir: str | None = None
    report_to: list[str] = field(default_factory=list)
    push_to_hub: str | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- sampling
class SeededSampler(Sampler):
    """Yields `(video index, sample seed)` for positions 0..num_samples-1: epoch e visits the videos in a
    permutation drawn from (seed, e); the sample seed is a function of (seed, position) only."""

    def __init__(self, num_items: int, num_samples: int, seed: int):
        if num_items == 0:
            raise ValueError("the training set has no videos")
        self.num_items, self.num_samples, self.seed = num_items, num_samples, seed
        self._epoch, self._permutation = -1, None

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        for position in range(self.num_samples):
            epoch, k = divmod(position, self.num_items)
            if epoch != self._epoch:
                self._epoch = epoch
                self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            yield int(self._permutation[k]), int(np.random.default_rng([self.seed, 7919, position]).integers(2**62))


def seed_everything(*keys: int) -> None:
    seed = int(np.random.default_rng(list(keys)).integers(2**31))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- model
def _median_short_edge(source) -> int:
    sample = source.videos.select_columns(["height", "width"])[: min(len(source.videos), 1000)]
    return int(statistics.median(min(h, w) for h, w in zip(sample["height"], sample["width"])))


def build_model(args: TrainArguments, source):
    """(model, processor, recipe): a tiny/preset/config.json model with fresh weights (recipe "scratch"), a
    pretrained folder ("finetune"; the class heads re-initialised when the data set has another number of classes),
    or a transformers Mask2Former's detector with a new object decoder ("mask2former"). The processor holds the
    input size and normalisation (the model's own for a folder, the preset's, or the default)."""
    from ..configuration.configuration_genvis import GenVISConfig
    from ..configuration.presets import TINY_PRESET
    from ..modeling.modeling_genvis import GenVISForVideoInstanceSegmentation
    from ..processing.video_processing_genvis import GenVISVideoProcessor

    id2label = source.id2label
    labels = {"num_labels": len(id2label), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    spec = args.config
    path = Path(spec)
    if args.init_from_mask2former:
        from ..conversion.mask2former import init_from_mask2former

        model, report = init_from_mask2former(args.init_from_mask2former, **labels)
        logger.info("initialised from Mask2Former %s: %s", args.init_from_mask2former, report.summary())
        processor, recipe = GenVISVideoProcessor(size_divisibility=model.config.size_divisibility), "mask2former"
    elif path.is_dir() and (path / "config.json").is_file():
        model = GenVISForVideoInstanceSegmentation.from_pretrained(path, ignore_mismatched_sizes=True, **labels)
        processor = GenVISVideoProcessor.from_model_config(model.config)
        has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
        recipe = "finetune" if has_weights else "scratch"
    else:
        if spec in TINY_NAMES:
            config = GenVISConfig.from_preset(TINY_PRESET, **labels)
            processor = GenVISVideoProcessor.from_preset(TINY_PRESET)
            if args.input_size is None:
                # Small frames train fast: the data set's median short edge, within [96, 160].
                processor.size["shortest_edge"] = int(min(160, max(96, round(_median_short_edge(source) / 8) * 8)))
        elif path.suffix == ".json" and path.is_file():
            config = GenVISConfig.from_json_file(str(path))
            config.update(labels)
            config.num_labels = labels["num_labels"]
            processor = GenVISVideoProcessor(size_divisibility=config.size_divisibility)
        else:
            config = GenVISConfig.from_preset(spec, **labels)
            processor = GenVISVideoProcessor.from_preset(spec)
        model = GenVISForVideoInstanceSegmentation(config)
        recipe = "scratch"
    if args.input_size is not None:
        processor.size["shortest_edge"] = int(args.input_size)
    if args.freeze_detector is not None:
        model.apply_freeze_detector(args.freeze_detector)
    elif recipe == "scratch" and model.config.freeze_detector:
        logger.warning("training from scratch: freeze_detector turned off (there is no pretrained detector)")
        model.apply_freeze_detector(False)
    if args.gradient_checkpointing:
        # transformers' standard API (the 5.x name of gradient_checkpointing_enable): backbone blocks, deformable
        # encoder layers and frame/object decoder layers recompute their activations in the backward pass
        model.activation_checkpointing_enable()
    if args.num_frames is not None:
        model.config.train_num_frames = args.num_frames
    if args.frame_range is not None:
        model.config.train_frame_range = args.frame_range
    return model, processor, recipe


def recipe_defaults(args: TrainArguments, recipe: str, device_type: str) -> TrainArguments:
    """Fill the arguments left at None with the recipe's values ("scratch", "finetune" or "mask2former"; see the
    module docstring)."""
    pick = (lambda scratch, finetune: scratch) if recipe == "scratch" else (lambda scratch, finetune: finetune)
    args.learning_rate = args.learning_rate if args.learning_rate is not None else (
        1e-4 if recipe == "mask2former" else pick(1e-3, 5e-5))  # fmt: skip
    args.backbone_multiplier = args.backbone_multiplier if args.backbone_multiplier is not None else pick(1.0, 0.1)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else pick(100, 10)
    args.warmup_factor = args.warmup_factor if args.warmup_factor is not None else pick(0.01, 1.0)
    args.decay_fractions = args.decay_fractions if args.decay_fractions is not None else pick([0.65, 0.9], [2 / 3])
    args.batch_size = args.batch_size if args.batch_size is not None else (2 if device_type == "cpu" else 8)
    cpus = os.cpu_count() or 1
    if args.num_workers is None:
        args.num_workers = 1 if device_type == "cpu" and cpus <= 4 else min(4, max(0, cpus - 1))
    if args.max_steps is None and args.time_budget is None:
        args.time_budget = 19.0
    return args


# ---------------------------------------------------------------------------------------------- schedule
class StepSchedule:
    """Warm-up + multi-step decay whose total length can be re-estimated (time-budget runs)."""

    def __init__(self, max_steps: int, warmup_steps: int, warmup_factor: float, decay_fractions, gamma: float):
        self.warmup_steps, self.warmup_factor, self.gamma = warmup_steps, warmup_factor, gamma
        self.decay_fractions = list(decay_fractions)
        self.set_max_steps(max_steps)

    def set_max_steps(self, max_steps: int) -> None:
        self.max_steps = int(max_steps)
        self.milestones = [round(f * self.max_steps) for f in self.decay_fractions]

    def __call__(self, step: int) -> float:
        from .optim import warmup_multistep_factor

        return warmup_multistep_factor(step, self.warmup_steps, self.milestones, self.gamma, self.warmup_factor)


# ---------------------------------------------------------------------------------------------- checkpoints
def _checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first: `step_N` folders with their state file (a `step_N.tmp` left by a
    process killed while saving is not one)."""
    folder = output_dir / CHECKPOINTS_DIR
    found = [p for p in folder.glob("step_*") if re.fullmatch(r"step_\d+", p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def remove_unfinished_saves(output_dir: Path) -> list[Path]:
    """Remove what a run killed while saving left in `output_dir`: `checkpoints/step_N.tmp` folders and the final
    model's temporary folder (one run per output folder: a concurrent run's would be removed too)."""
    from ..utils.files import remove_abandoned

    removed = [p for p in (output_dir / CHECKPOINTS_DIR).glob("step_*.tmp") if p.is_dir()]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed + remove_abandoned(output_dir, FINAL_TMP_PREFIX)


def save_checkpoint(accelerator, output_dir: Path, state: dict, keep: int) -> Path:
    """`accelerator.save_state` into checkpoints/step_N (written as step_N.tmp, renamed when complete)."""
    from ..utils.files import set_file_modes

    final = output_dir / CHECKPOINTS_DIR / f"step_{state['step']}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)  # every process writes its own files (e.g. its RNG state) into it
    try:
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()  # every process has written its part (e.g. its RNG state) before the rename
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
            set_file_modes(tmp)  # accelerate writes model.safetensors 0600, the rest 0644
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in _checkpoints(output_dir)[:-keep] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:  # SIGTERM (see genvis_hf.cli), Ctrl-C, a full disk: no half-written checkpoint stays
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return final


def _resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    if resume is None:
        return None
    if resume in ("latest", "auto", "true", "1"):
        found = _checkpoints(output_dir)
        if not found:
            if resume == "auto":
                return None
            raise FileNotFoundError(f"--resume latest: no checkpoint under {output_dir / 'checkpoints'}")
        return found[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no {STATE_FILE})")
    return path


# ---------------------------------------------------------------------------------------------- final save
def save_final_model(model, processor, output_dir: Path, card_text: str) -> None:
    """`save_pretrained` model + processor + README.md into `output_dir`, each file written under a temporary
    folder first and renamed into place (config.json last, so a folder with a config is always complete). Files
    get the permissions of a new file (0644 under umask 022; transformers writes model.safetensors 0600)."""
    from ..utils.files import owned_name, set_file_modes

    tmp = output_dir / owned_name(FINAL_TMP_PREFIX)
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(card_text)
        set_file_modes(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        names.sort(key=lambda n: n == "config.json")
        for name in names:
            os.replace(tmp / name, output_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- the loop
def train(args: TrainArguments) -> dict:
    """Run training; returns the final state (step, losses, metrics)."""
    from ..utils.extras import require_extra

    require_extra("train", "genvis-hf train")
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration
    from tqdm.auto import tqdm

    from ..data import ClipAugmentation, GenVISDataCollator, VideoClipDataset, default_train_sizes, load_ytvis
    from ..data.checks import check_trainable
    from ..data.ytvis import load_coco_as_videos
    from .optim import build_optimizer
    from .trackers import LOGGING_SUBDIR, hyperparameters, resolve_trackers

    start_time = time.time()
    output_dir = Path(args.output_dir)
    trackers = resolve_trackers(args.report_to)  # before anything runs: an uninstalled tracker is one line
    if args.push_to_hub:
        from ..hub.push import check_push_possible

        check_push_possible(args.push_to_hub)  # offline / no token / bad repo id: refused before training
    cuda = torch.cuda.is_available()
    mixed_precision = args.mixed_precision
    if mixed_precision == "auto":
        mixed_precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=False),
        # A clip whose memory holds a single entry gives its read weights no gradient (softmax over one value):
        # short samples leave a few parameters unused in some steps.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / LOGGING_SUBDIR)),
    )
    device_type = accelerator.device.type
    if device_type == "cpu":
        # Small ops on a small machine: one compute thread per process is much faster than oversubscribed ones.
        cpus = os.cpu_count() or 1
        torch.set_num_threads(args.num_threads or max(1, min(4, cpus // 2)))
    elif args.num_threads:
        torch.set_num_threads(args.num_threads)

    logger.info("process %d of %d on %s, mixed precision %s", accelerator.process_index, accelerator.num_processes,
                accelerator.device, mixed_precision)  # fmt: skip
    # The data is checked before the output folder or the model is made (data.checks: one line per problem).
    source = load_ytvis(args.annotations, args.images, cache_dir=args.cache_dir)
    check_trainable(source)
    if args.eval_annotations:
        load_ytvis(args.eval_annotations, args.eval_images, cache_dir=args.cache_dir)
    if args.coco_annotations:
        load_coco_as_videos(args.coco_annotations, args.coco_images, cache_dir=args.cache_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        for leftover in remove_unfinished_saves(output_dir):
            logger.info("removed %s, left by a run killed while saving", leftover)
    accelerator.wait_for_everyone()
    resume_from = _resolve_resume(args.resume, output_dir)
    resumed_state = json.loads((resume_from / STATE_FILE).read_text()) if resume_from else None
    if resumed_state is not None:
        # The run's arguments (schedule, batch, seeds) come from the checkpoint, so the resumed run is the same run.
        saved = resumed_state["args"]
        ignored = [f"{key}={getattr(args, key)} (the checkpoint's: {saved.get(key)})" for key in ("max_steps", "time_budget")
                   if getattr(args, key) is not None and getattr(args, key) != saved.get(key)]  # fmt: skip
        if ignored:
            logger.warning("resuming continues the checkpoint's run, so these are ignored: %s", ", ".join(ignored))
        for key in ("batch_size", "gradient_accumulation_steps", "learning_rate", "backbone_multiplier",
                    "warmup_steps", "warmup_factor", "decay_fractions", "gamma", "seed", "num_frames",
                    "frame_range", "input_size", "config", "freeze_detector", "clip_grad_norm", "weight_decay",
                    "max_steps", "time_budget", "init_from_mask2former"):  # fmt: skip
            setattr(args, key, saved.get(key))
    seed_everything(args.seed)  # the initial weights of a model trained from scratch
    model, processor, recipe = build_model(args, source)
    args = recipe_defaults(args, recipe, device_type)
    config = model.config
    if resumed_state is not None:
        processor.size["shortest_edge"] = resumed_state["test_min_size"]

    sizes = default_train_sizes(processor.size["shortest_edge"])
    augmentation = ClipAugmentation(min_sizes=sizes, max_size=processor.size["longest_edge"])
    dataset = VideoClipDataset(source, config.train_num_frames, config.train_frame_range, augmentation)
    if args.coco_annotations:
        from torch.utils.data import ConcatDataset

        coco = load_coco_as_videos(args.coco_annotations, args.coco_images, cache_dir=args.cache_dir)
        dataset = ConcatDataset([dataset, VideoClipDataset(coco, config.train_num_frames, 0, augmentation)])

    world = accelerator.num_processes
    samples_per_step = args.batch_size * args.gradient_accumulation_steps * world
    planned_steps = args.max_steps if args.max_steps is not None else 10**6
    sampler = SeededSampler(len(dataset), planned_steps * samples_per_step, args.seed)
    loader = DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, collate_fn=GenVISDataCollator.from_processor(processor),
        num_workers=args.num_workers, persistent_workers=args.num_workers > 0,
    )  # fmt: skip
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, args.backbone_multiplier)
    schedule = StepSchedule(planned_steps if args.max_steps is not None else 1000, args.warmup_steps,
                            args.warmup_factor, args.decay_fractions, args.gamma)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    step, elapsed_before, history = 0, 0.0, []
    if resumed_state is not None:
        accelerator.load_state(str(resume_from))
        step = int(resumed_state["step"])
        elapsed_before = float(resumed_state.get("elapsed", 0.0))
        schedule.set_max_steps(resumed_state["max_steps"])
        history = resumed_state.get("recent_losses", [])
        logger.info("resumed from %s at step %d", resume_from, step)
    budget = args.time_budget * 60.0 if args.time_budget is not None else None
    budgeted = args.max_steps is None
    if not budgeted:
        schedule.set_max_steps(args.max_steps)

    model.train()
    if trackers:
        accelerator.init_trackers(output_dir.name or "genvis", config=hyperparameters(state_args(args)))
    batches = iter(accelerator.skip_first_batches(loader, step * args.gradient_accumulation_steps) if step else loader)
    log_path = output_dir / "training_log.jsonl"
    progress = tqdm(total=schedule.max_steps, initial=step, disable=not (args.progress and accelerator.is_main_process),
                    mininterval=5.0, dynamic_ncols=True, desc="train")  # fmt: skip
    run_start = time.time()
    step_times: list[float] = []
    last_loss = None

    def state(step: int) -> dict:
        return {
            "step": step, "max_steps": schedule.max_steps, "milestones": schedule.milestones,
            "elapsed": elapsed_before + time.time() - run_start, "test_min_size": processor.size["shortest_edge"],
            "recent_losses": history[-50:], "args": state_args(args),
            "train_videos": len(source), "train_annotations": str(Path(args.annotations).resolve()),
        }  # fmt: skip

    stopped_by_budget = False
    while step < schedule.max_steps:
        tick = time.time()
        loss_sum, videos = 0.0, []
        for micro in range(args.gradient_accumulation_steps):
            batch = next(batches)
            videos += [int(label["video_id"]) for label in batch["labels"] if "video_id" in label]
            seed_everything(args.seed, step, micro, accelerator.process_index)
            with accelerator.accumulate(model):
                outputs = model(
                    pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"], labels=batch["labels"]
                )
                loss = outputs.loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.clip_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.clip_grad_norm)
                optimizer.step()
                scheduler.step() if accelerator.sync_gradients else None
                optimizer.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach()) / args.gradient_accumulation_steps
        step += 1
        last_loss = loss_sum
        history.append(round(loss_sum, 6))
        step_times.append(time.time() - tick)
        progress.update(1)
        if accelerator.is_main_process and (step % args.logging_steps == 0 or step == 1):
            entry = {"step": step, "loss": loss_sum, "lr": scheduler.get_last_lr()[0],
                     "step_time": statistics.mean(step_times[-args.logging_steps:]),
                     "elapsed": round(elapsed_before + time.time() - run_start, 1), "videos": videos}  # fmt: skip
            progress.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{entry['lr']:.2e}")
            accelerator.log({"train/loss": loss_sum, "train/learning_rate": entry["lr"],
                             "train/step_time": entry["step_time"]}, step=step)  # fmt: skip
            with open(log_path, "a") as handle:
                handle.write(json.dumps(entry) + "\n")
            if not progress.disable and not sys.stderr.isatty():
                logger.info("step %d/%d loss %.4f lr %.2e %.2fs/step", step, schedule.max_steps, loss_sum,
                            entry["lr"], entry["step_time"])  # fmt: skip

        if budgeted:
            used = elapsed_before + time.time() - start_time
            # Re-estimate the run length from the recent speed until the first decay is near.
            recent = statistics.median(step_times[-50:])
            remaining = budget - used
            if step >= 20 and (step == 20 or step % 50 == 0) and step < 0.6 * schedule.max_steps:
                schedule.set_max_steps(max(step + 1, step + int(remaining / recent * 0.97)))
                progress.total = schedule.max_steps
            elif step == schedule.max_steps and remaining > 3 * recent:
                # Faster than estimated: use the rest of the budget at the final learning rate.
                schedule.max_steps = step + int(remaining / recent * 0.95)
                progress.total = schedule.max_steps
            if used >= budget:
                stopped_by_budget = step < schedule.max_steps
                break
        if args.save_steps and step % args.save_steps == 0 and step < schedule.max_steps:
            save_checkpoint(accelerator, output_dir, state(step), args.save_total_limit)
        if args.eval_steps and args.eval_annotations and step % args.eval_steps == 0 and accelerator.is_main_process:
            metrics = _evaluate_during_training(accelerator.unwrap_model(model), args, processor)
            accelerator.log({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
            model.train()
    progress.close()
    if stopped_by_budget:
        logger.info("time budget reached at step %d", step)
    final_state = state(step)
    save_checkpoint(accelerator, output_dir, final_state, args.save_total_limit)

    metrics = None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.eval()
        if args.eval_annotations:
            metrics = _evaluate_during_training(unwrapped, args, processor)
            accelerator.log({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
        final_state.update({"final_loss": last_loss, "metrics": metrics, "stopped_by_time_budget": stopped_by_budget,
                            "wall_time": time.time() - start_time})  # fmt: skip
        card = training_model_card(config, processor, final_state, args, recipe)
        save_final_model(unwrapped, processor, output_dir, str(card))
        (output_dir / "train_results.json").write_text(json.dumps(final_state, indent=1))
        logger.info("saved the model to %s (step %d, %.1f min)", output_dir, step, (time.time() - start_time) / 60)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        from ..hub.push import push_to_hub

        # the model, its processor, card and logs; not the resumable checkpoints
        pushed = push_to_hub(output_dir, args.push_to_hub, exclude=[f"{CHECKPOINTS_DIR}/*"])
        final_state["pushed"] = pushed.commit_url
        logger.info("pushed to %s: %s", pushed.repo_id, pushed.commit_url)
    return final_state


def state_args(args: TrainArguments) -> dict:
    """The run's arguments as recorded in checkpoints and reported to trackers."""
    return {k: v for k, v in asdict(args).items() if k != "extra"}


def training_model_card(config, processor, state: dict, args: TrainArguments, recipe: str):
    """The output's model card: `genvis_hf.hub.build_model_card` (the converter's) with what the run was and, as
    model-index, the final evaluation's figures (YouTube-VIS API, in %)."""
    from ..hub.model_card import build_model_card

    # -1 is the evaluator's "no ground truth in this area range": not a figure to publish
    metrics = {k: round(100 * v, 2) for k, v in (state.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and v >= 0}  # fmt: skip
    eval_file = Path(args.eval_annotations) if args.eval_annotations else None
    dataset = (eval_file.parent.name if eval_file.stem == "annotations" else eval_file.stem) if eval_file else None
    start = {"scratch": f"random weights (`--config {args.config}`)", "finetune": f"`{args.config}` (fine-tuned)",
             "mask2former": f"Mask2Former `{args.init_from_mask2former}` (backbone, pixel decoder, frame decoder)"}[recipe]  # fmt: skip
    schedule = (
        f"AdamW lr {args.learning_rate:g} (backbone x{args.backbone_multiplier:g}), weight decay {args.weight_decay:g}"
    )
    training = {
        "trained with": "`genvis-hf train`",
        "initialised from": start,
        "training data": f"`{Path(state.get('train_annotations', args.annotations)).name}` "
                         f"({state.get('train_videos', '?')} videos, YouTube-VIS format)",
        "frames per sample": f"{config.train_num_frames} (sampling range {config.train_frame_range})",
        "steps": f"{state['step']} x {args.batch_size} videos"
                 + (f" x {args.gradient_accumulation_steps} accumulated" if args.gradient_accumulation_steps > 1 else ""),
        "optimiser": f"{schedule}, grad-norm clip {args.clip_grad_norm:g}, decay x{args.gamma:g} at steps "
                     f"{state.get('milestones')}",
        "trained parts": "object decoder only (freeze_detector)" if config.freeze_detector else "the whole model",
        "gradient checkpointing": "on" if args.gradient_checkpointing else "off",
        "wall time": f"{state.get('wall_time', state.get('elapsed', 0)) / 60:.1f} min",
        "final training loss": f"{state.get('final_loss')}",
    }  # fmt: skip
    return build_model_card(
        config, repo_id=args.push_to_hub or Path(args.output_dir).name, processor=processor, metrics=metrics or None,
        metrics_source=f"`genvis-hf train`'s final evaluation on `{eval_file.name}`" if eval_file else None,
        dataset=dataset, dataset_split="held-out", training=training,
    )  # fmt: skip


def _evaluate_during_training(model, args: TrainArguments, processor) -> dict:
    from ..data import load_ytvis
    from .evaluate import evaluate_model

    was_training = model.training
    model.eval()
    source = load_ytvis(args.eval_annotations, args.eval_images, cache_dir=args.cache_dir)
    metrics = evaluate_model(model, processor, source)
    logger.info("evaluation: %s", json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}))
    model.train(was_training)
    return metrics


# ---------------------------------------------------------------------------------------------- CLI
def _check_config_spec(spec: str) -> None:
    from ..configuration.presets import PRESETS
    from ..utils.cli_checks import UsageError

    path = Path(spec)
    if spec in TINY_NAMES or spec in PRESETS or (path.is_dir() and (path / "config.json").is_file()) \
            or (path.suffix == ".json" and path.is_file()):  # fmt: skip
        return
    raise UsageError(f"--config {spec}: not 'tiny', a preset name ({', '.join(sorted(PRESETS)[:3])}, ...), a "
                     "config.json or a save_pretrained folder")  # fmt: skip


def _original_message(error: BaseException) -> str:
    """The message of an error raised in a DataLoader worker (torch re-raises it in the main process with the
    worker's whole traceback as its text): the last line, without the exception's class name."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if ": " in last else last


def _failed(output_dir: str, created: bool) -> int:
    """Exit code 1, removing the output folder this run created when it stopped before writing anything into it
    (a run that saved checkpoints keeps them, for --resume)."""
    folder = Path(output_dir)
    if created and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return 1


def add_train_command(parser: argparse.ArgumentParser):
    from ..utils.cli_checks import (
        non_negative_float,
        non_negative_int,
        positive_float,
        positive_int,
    )

    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--images", required=True, help="folder the annotation file's frame paths are relative to")
    parser.add_argument("--annotations", required=True, help="YouTube-VIS-format training annotations JSON")
    parser.add_argument(
        "--config",
        default=None,
        help="tiny (default) | a preset name | config.json | a save_pretrained folder (fine-tune)",
    )
    parser.add_argument(
        "--init-from-mask2former",
        metavar="DIR_OR_NAME",
        default=None,
        help="start from a transformers Mask2FormerForUniversalSegmentation (a directory or a Hub name, "
        "e.g. facebook/mask2former-swin-large-coco-instance): its backbone, pixel decoder and "
        "frame decoder, with a new object decoder (instead of --config)",
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--max-steps", type=positive_int, default=None, help="optimiser steps (default: fit --time-budget)"
    )
    parser.add_argument(
        "--time-budget",
        type=positive_float,
        default=None,
        help="minutes of training when --max-steps is not given (default 19)",
    )
    parser.add_argument("--eval-images", default=None)
    parser.add_argument("--eval-annotations", default=None, help="evaluate at the end (and every --eval-steps)")
    parser.add_argument("--eval-steps", type=positive_int, default=None)
    parser.add_argument("--coco-images", default=None)
    parser.add_argument("--coco-annotations", default=None, help="COCO-format images added as pseudo-videos")
    parser.add_argument(
        "--batch-size", type=positive_int, default=None, help="videos per device and step (CPU 2, GPU 8)"
    )
    parser.add_argument("--gradient-accumulation-steps", type=positive_int, default=1)
    parser.add_argument("--learning-rate", type=positive_float, default=None)
    parser.add_argument("--backbone-multiplier", type=non_negative_float, default=None)
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.05)
    parser.add_argument("--clip-grad-norm", type=non_negative_float, default=0.01, help="full-model gradient-norm clip")
    parser.add_argument("--warmup-steps", type=non_negative_int, default=None)
    parser.add_argument("--num-frames", type=positive_int, default=None, help="frames per training sample")
    parser.add_argument(
        "--frame-range", type=non_negative_int, default=None, help="sampling range around the reference"
    )
    parser.add_argument(
        "--input-size", type=positive_int, default=None, help="test-time short edge (training: 0.8-1.2x)"
    )
    parser.add_argument("--freeze-detector", choices=["true", "false"], default=None)
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute layer activations in the backward pass: less memory, ~15%% slower steps",
    )
    parser.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], default="auto")
    parser.add_argument("--num-workers", type=non_negative_int, default=None)
    parser.add_argument("--num-threads", type=positive_int, default=None, help="torch threads per process on CPU")
    parser.add_argument("--save-steps", type=non_negative_int, default=500)
    parser.add_argument("--save-total-limit", type=non_negative_int, default=2)
    parser.add_argument("--logging-steps", type=positive_int, default=10)
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="resume from the latest checkpoint in --output-dir, or from the given folder",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="datasets cache folder")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--report-to",
        nargs="+",
        default=[],
        metavar="TRACKER",
        help="Accelerate trackers to log to: tensorboard (event files in OUTPUT_DIR/runs), wandb, "
        "trackio, comet_ml, mlflow, clearml, dvclive, aim, swanlab, all, none (default)",
    )
    parser.add_argument(
        "--push-to-hub",
        metavar="ORG/NAME",
        default=None,
        help="upload the trained model (not its checkpoints) to this Hub repo, in one commit",
    )

    def handler(ns: argparse.Namespace) -> int:
        from ..conversion.mask2former import Mask2FormerInitError
        from ..evaluation.errors import YTVISFormatError
        from ..hub.push import HubPushError
        from ..processing.video_io import VideoInputError
        from ..utils.cli_checks import UsageError, check_output_dir
        from .trackers import TrackerError

        set_command_verbosity()
        try:  # options and the output folder before any data or model work (exit code 2)
            if ns.init_from_mask2former and ns.config:
                raise UsageError("give either --config or --init-from-mask2former, not both")
            check_output_dir(ns.output_dir)
            if ns.config:
                _check_config_spec(ns.config)
            if bool(ns.coco_annotations) != bool(ns.coco_images):
                raise UsageError("--coco-annotations and --coco-images go together")
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        args = TrainArguments(
            images=ns.images, annotations=ns.annotations, output_dir=ns.output_dir, config=ns.config or "tiny",
            init_from_mask2former=ns.init_from_mask2former, report_to=ns.report_to, push_to_hub=ns.push_to_hub,
            eval_images=ns.eval_images or ns.images if ns.eval_annotations else None,
            eval_annotations=ns.eval_annotations, coco_images=ns.coco_images, coco_annotations=ns.coco_annotations,
            max_steps=ns.max_steps, time_budget=ns.time_budget, batch_size=ns.batch_size,
            gradient_accumulation_steps=ns.gradient_accumulation_steps, learning_rate=ns.learning_rate,
            backbone_multiplier=ns.backbone_multiplier, weight_decay=ns.weight_decay, clip_grad_norm=ns.clip_grad_norm,
            warmup_steps=ns.warmup_steps, num_frames=ns.num_frames, frame_range=ns.frame_range,
            input_size=ns.input_size,
            freeze_detector=None if ns.freeze_detector is None else ns.freeze_detector == "true",
            gradient_checkpointing=ns.gradient_checkpointing,
            mixed_precision=ns.mixed_precision, num_workers=ns.num_workers, num_threads=ns.num_threads,
            save_steps=ns.save_steps, save_total_limit=ns.save_total_limit, logging_steps=ns.logging_steps,
            eval_steps=ns.eval_steps, resume=ns.resume, seed=ns.seed, cache_dir=ns.cache_dir,
            progress=not ns.no_progress,
        )  # fmt: skip
        created = not Path(ns.output_dir).exists()
        try:
            final = train(args)
        except (TrackerError, HubPushError, Mask2FormerInitError) as error:
            print(f"error: {error}", file=sys.stderr)
            return _failed(ns.output_dir, created)
        except (YTVISFormatError, VideoInputError, FileNotFoundError) as error:  # bad data, a missing checkpoint
            print(f"error: {_original_message(error)}", file=sys.stderr)
            return _failed(ns.output_dir, created)
        summary = {"step": final["step"], "final_loss": final.get("final_loss"), "output_dir": str(args.output_dir)}
        if final.get("metrics"):
            summary["metrics"] = {k: v for k, v in final["metrics"].items() if not isinstance(v, dict)}
        print(json.dumps(summary))
        return 0

    return handler


__all__ = ["SeededSampler", "StepSchedule", "TrainArguments", "add_train_command", "build_model", "train"]
