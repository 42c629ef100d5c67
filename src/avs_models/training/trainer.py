"""A small explicit Accelerate training loop for audio-visual segmentation models.

Why not `transformers.Trainer`: resuming must reproduce an uninterrupted run bit for bit (the
clip order, the collator's augmentation draws and every RNG are part of the checkpoint here),
checkpoints must be swapped in atomically, validation needs whole-video metrics gathered across
processes, and PCMANet's per-stage losses and kept-token ratios are logged each step. All of this
is a few lines in a loop we own and would be callbacks and overrides around `Trainer`. Accelerate
still does the device placement, data sharding, gradient synchronisation and mixed precision, so
the same code runs on one CPU, several processes or GPUs (`accelerate launch`).

Runs are quiet by default: one progress bar on the main process (with the latest loss and
validation mIoU), warnings from the main process only, and no library progress bars;
`verbose=True` logs every step and Accelerate's INFO lines from every process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import AutoConfig

from avs_models.data import AVSBenchCollator, AVSBenchReader, TrainAugmentation, frames_per_clip
from avs_models.data.avss_classes import AVSS_NUM_CLASSES, avss_id2label
from avs_models.hub import push_folder, write_training_card
from avs_models.metrics import BinaryMaskMetric, SemanticSegmentationMetric, official_fscore_batch_videos
from avs_models.models.auto import AutoModelForAudioVisualSegmentation
from avs_models.models.inputs import model_inputs
from avs_models.processing import processor_for

from .config import TrainingConfig, resume_differences

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.json"
# The configuration a checkpoint was written under, compared when resuming.
TRAINING_CONFIG = "training_config.json"
EXPORTED_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


class AVSBenchSplit(Dataset):
    """One split of AVSBench, from the official layout or from an exported Parquet dataset."""

    def __init__(self, data_dir: str | Path, subset: str, split: str) -> None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"data_dir {str(data_dir)!r} is not a folder")
        exported = data_dir / subset
        if exported.is_dir() and any(exported.glob("*.parquet")):
            import datasets

            files = sorted(str(path) for path in exported.glob(f"{EXPORTED_SPLIT_NAMES[split]}-*.parquet"))
            if not files:
                raise FileNotFoundError(f"{exported} has no {EXPORTED_SPLIT_NAMES[split]}-*.parquet shards")
            self._dataset = datasets.load_dataset("parquet", data_files=files, split="train")
            self._reader, self._records = None, None
        else:
            self._reader = AVSBenchReader(data_dir, subset)
            self._records = self._reader.records(split)
            self._dataset = None
        if len(self) == 0:
            raise ValueError(f"{data_dir} has no {subset} videos in split {split!r}")

    def __len__(self) -> int:
        return len(self._dataset) if self._dataset is not None else len(self._records)

    def __getitem__(self, index: int) -> dict:
        if self._dataset is not None:
            return self._dataset[index]
        # Images come decoded (once, while checked), so the collator does not decode them again.
        return self._reader.read_example(self._records[index], decode_images=True)


class EpochPermutationSampler(torch.utils.data.Sampler):
    """Shuffles with a permutation that depends only on (seed, epoch), so a resumed run sees the
    clips in the same order; Accelerate calls `set_epoch` through the prepared data loader.

    Yields `((epoch, position), index)`: each clip carries its position in the epoch's order, so
    that the collator can seed a batch's augmentation from where the batch stands, wherever it is
    collated (a worker process, after skipped batches) — see `_PositionSeededCollator`."""

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        return iter([((self.epoch, position), index) for position, index in enumerate(order)])


class _PositionedSplit(Dataset):
    """Reads `(key, index)` items of `EpochPermutationSampler` as `(key, example)`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[tuple[int, int], int]) -> tuple[tuple[int, int], dict]:
        key, index = item
        return key, self.dataset[index]


class _PositionSeededCollator:
    """Seeds the collator's augmentation generator from (seed, epoch, position of the batch's first
    clip) before collating. The seed needs no state carried from batch to batch, so batches give
    the same draws in worker processes, in any order, and after a resume skips the first batches
    of an epoch (Accelerate's loader also fetches one batch ahead, which carried state could not
    checkpoint at the right point)."""

    def __init__(self, collator: AVSBenchCollator, seed: int) -> None:
        self.collator, self.seed = collator, seed

    def __call__(self, items: list[tuple[tuple[int, int], dict]]) -> dict:
        (epoch, position), _ = items[0]
        if self.collator.generator is not None:
            key = (self.seed * 1_000_003 + epoch) * 1_000_000_007 + position
            self.collator.generator.manual_seed(key % (2**63))
        return self.collator([example for _, example in items])


class _WithVideoInfo:
    """Collates with the wrapped collator and adds the clips' ids and categories (not tensors)."""

    def __init__(self, collator: AVSBenchCollator) -> None:
        self.collator = collator

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collator(examples)
        batch["video_ids"] = [example.get("video_id") for example in examples]
        batch["categories"] = [example.get("category", example.get("label_set")) for example in examples]
        return batch


def build_model(config: TrainingConfig):
    spec = config.model
    overrides_of_spec = spec.get("config") or {}
    if (
        config.subset == "avss"
        and not spec.get("name_or_path")
        and "id2label" not in overrides_of_spec
        and overrides_of_spec.get("num_labels", AVSS_NUM_CLASSES) == AVSS_NUM_CLASSES
    ):
        # A 71-class AVSS model names its classes, so masks and legends show names, not LABEL_n.
        spec = {**spec, "config": {**overrides_of_spec, "id2label": avss_id2label()}}
    overrides = spec.get("config") or {}
    if spec.get("name_or_path"):
        model_config = AutoConfig.from_pretrained(spec["name_or_path"], **overrides)
    else:
        model_config = AutoConfig.for_model(spec.get("model_type", "pcmanet"), **overrides)
    if config.drop_path_rate is not None:
        _set_backbone_drop_path_rate(model_config, config.drop_path_rate)
    if spec.get("name_or_path"):
        return AutoModelForAudioVisualSegmentation.from_pretrained(spec["name_or_path"], config=model_config)
    return AutoModelForAudioVisualSegmentation.from_config(model_config)


def _set_backbone_drop_path_rate(model_config, rate: float) -> None:
    backbone = getattr(model_config, "backbone_config", None)
    if backbone is None or not hasattr(backbone, "drop_path_rate"):
        kind = "no backbone_config" if backbone is None else f"a {backbone.model_type} backbone"
        raise ValueError(
            f"drop_path_rate={rate} needs a vision backbone with stochastic depth (PVT-v2, Swin); "
            f"the {model_config.model_type} model has {kind}: set drop_path_rate to null"
        )
    backbone.drop_path_rate = float(rate)


def build_optimizer(config: TrainingConfig, model) -> torch.optim.Optimizer:
    options = dict(config.optimizer)
    name = options.pop("name", "adam").lower()
    learning_rate = float(options.pop("learning_rate", 1e-4))
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    return optimizer_class(parameters, lr=learning_rate, **options)


def make_metric(subset: str, model, definition: str = "official", fscore_batch_videos: int | None = None):
    """The metric for `subset`; binary F-scores are batched as `model`'s family's official test
    script does unless `fscore_batch_videos` is given."""
    if subset == "avss":
        return SemanticSegmentationMetric(num_classes=model.config.num_labels, definition=definition)
    if fscore_batch_videos is None:
        fscore_batch_videos = official_fscore_batch_videos(model.config.model_type)
    return BinaryMaskMetric(definition, fscore_batch_videos=fscore_batch_videos)


@torch.no_grad()
def evaluate_model(model, dataloader, accelerator: Accelerator, metric, progress: bool = False) -> dict:
    """Run `model` over `dataloader` (prepared by `accelerator`) and fill `metric` on every process."""
    model.eval()
    for batch in tqdm(dataloader, desc="eval", disable=not (progress and accelerator.is_main_process)):
        logits = model(**model_inputs(batch)).logits
        if isinstance(metric, BinaryMaskMetric):
            logits = logits[:, :, 0]
        logits, labels, labeled = accelerator.gather_for_metrics(
            (logits.contiguous(), batch["labels"], batch["labeled_frames"])
        )
        if isinstance(metric, BinaryMaskMetric):
            info = accelerator.gather_for_metrics(
                list(zip(batch["video_ids"], batch["categories"])), use_gather_object=True
            )
            metric.update(logits, labels, labeled, [i for i, _ in info], [c for _, c in info])
        else:
            metric.update(logits, labels, labeled)
    return metric.compute()


def weights_checksum(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Trainer:
    """Trains `config.model` on `config.data_dir`; see `train` for the entry point.

    `verbose=False` (the default) shows one progress bar and no library progress bars; `True`
    also shows the bars of model loading and dataset reading."""

    def __init__(
        self, config: TrainingConfig, accelerator: Accelerator | None = None, verbose: bool = False
    ) -> None:
        if config.data_dir is None:
            raise ValueError("data_dir is not set: pass data_dir=PATH (official layout or exported dataset)")
        self.config, self.verbose = config, verbose
        self.output_dir = Path(config.output_dir)
        self.accelerator = accelerator or Accelerator(
            cpu=_launched_without_accelerators(),
            kwargs_handlers=[
                DistributedDataParallelKwargs(find_unused_parameters=config.ddp_find_unused_parameters)
            ],
            mixed_precision=config.mixed_precision,
            log_with=config.report_to if config.report_to and _tensorboard_available() else None,
            project_dir=str(self.output_dir / "logs"),
        )
        set_seed(config.seed)
        with library_progress_bars(verbose):
            self.model = build_model(config)
        self.optimizer = build_optimizer(config, self.model)
        augmentation = TrainAugmentation(**config.augmentation) if config.augmentation else None
        # Saved next to the model, so that the pipeline prepares inputs as in training; the
        # training and evaluation collators prepare frames and audio through it.
        self.processor = processor_for(
            self.model.config, image_size=config.image_size, num_frames=frames_per_clip(config.subset)
        )
        train_collator = _PositionSeededCollator(
            AVSBenchCollator.from_processor(
                self.processor, config.subset, augmentation=augmentation, seed=config.seed
            ),
            config.seed,
        )
        eval_collator = AVSBenchCollator.from_processor(self.processor, config.subset)
        self.num_workers = (
            config.num_workers
            if config.num_workers is not None
            else default_num_workers(self.accelerator.num_processes)
        )
        loading = {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            # Worker seeds come from this generator, not from the global RNG (which resuming restores).
            "generator": torch.Generator().manual_seed(config.seed),
        }
        with library_progress_bars(verbose):
            self.train_set = AVSBenchSplit(config.data_dir, config.subset, "train")
            val_set = (
                AVSBenchSplit(config.data_dir, config.subset, config.validation_split)
                if config.validation_split
                else None
            )
        self.train_loader = DataLoader(
            _PositionedSplit(self.train_set),
            batch_size=config.batch_size,
            sampler=EpochPermutationSampler(len(self.train_set), config.seed),
            collate_fn=train_collator,
            **loading,
        )
        self.val_loader = None
        if val_set is not None:
            self.val_loader = DataLoader(
                val_set,
                batch_size=config.eval_batch_size,
                collate_fn=_WithVideoInfo(eval_collator),
                **loading,
            )
        self.model, self.optimizer, self.train_loader = self.accelerator.prepare(
            self.model, self.optimizer, self.train_loader
        )
        if self.val_loader is not None:
            self.val_loader = self.accelerator.prepare(self.val_loader)
        self.progress, self.progress_values = None, {}
        self.state = {
            "epoch": 0,
            "step_in_epoch": 0,
            "global_step": 0,
            "best_miou": None,
            "best_checkpoint": None,
            "history": [],
        }
        if self.accelerator.log_with:
            self.accelerator.init_trackers(
                "avs_models", config={"subset": config.subset, "seed": config.seed}
            )

    # ----- checkpoints: written to a temporary folder, then renamed into place
    def save_checkpoint(self, name: str) -> Path:
        accelerator = self.accelerator
        root = self.output_dir / CHECKPOINTS
        temporary = root / f".tmp-{name}"
        final = root / name
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))
        if accelerator.is_main_process:
            (temporary / TRAINER_STATE).write_text(json.dumps(self.state, indent=1))
            (temporary / TRAINING_CONFIG).write_text(json.dumps(self._run_identity(), indent=1))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            pointer = root / f".{LATEST}.tmp"
            pointer.write_text(name)
            os.replace(pointer, root / LATEST)
            logger.info("checkpoint %s written (step %d)", final, self.state["global_step"])
            self._prune_checkpoints(keep=name)
        accelerator.wait_for_everyone()
        return final

    def _prune_checkpoints(self, keep: str) -> None:
        """Delete all but the newest `save_total_limit` checkpoints and the best one (main process,
        after `latest` points at the new one, so a kill while deleting loses nothing needed)."""
        root = self.output_dir / CHECKPOINTS
        for stale in root.glob(".tmp-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        limit = self.config.save_total_limit
        if limit is None:
            return
        folders = [path for path in root.iterdir() if path.is_dir() and (path / TRAINER_STATE).is_file()]
        newest_first = sorted(folders, key=_checkpoint_step, reverse=True)
        kept = {keep, self.state["best_checkpoint"]} | {path.name for path in newest_first[:limit]}
        for path in newest_first:
            if path.name not in kept:
                shutil.rmtree(path)
                logger.info("checkpoint %s deleted (save_total_limit=%d)", path, limit)

    def _run_identity(self) -> dict:
        """The training configuration plus the number of processes: what a resume must match."""
        return {**self.config.to_dict(), "num_processes": self.accelerator.num_processes}

    def load_checkpoint(self, path: Path | None = None, ignore_config_changes: bool = False) -> None:
        root = self.output_dir / CHECKPOINTS
        if path is None:
            if not (root / LATEST).is_file():
                raise FileNotFoundError(f"--resume: no checkpoint under {root} (missing {root / LATEST})")
            path = root / (root / LATEST).read_text().strip()
        if not ignore_config_changes:
            self._check_resumable(path)
        self.accelerator.load_state(str(path))
        self.state = {"best_checkpoint": None, **json.loads((path / TRAINER_STATE).read_text())}
        logger.info(
            "resumed from %s at epoch %d, step %d", path, self.state["epoch"], self.state["global_step"]
        )

    def _check_resumable(self, path: Path) -> None:
        saved_file = path / TRAINING_CONFIG
        if not saved_file.is_file():
            raise ValueError(
                f"cannot resume from {path}: it holds no {TRAINING_CONFIG} (written by an older version), so "
                "its training configuration cannot be compared; pass --resume-ignore-config to resume anyway"
            )
        differences = resume_differences(json.loads(saved_file.read_text()), self._run_identity())
        if differences:
            raise ValueError(
                f"cannot resume from {path}: the training configuration differs from the checkpoint's in "
                f"{len(differences)} setting(s) that change the run (checkpoint -> now): "
                + "; ".join(differences)
                + ". Restore them to continue the same run, or pass --resume-ignore-config to resume anyway "
                "(the result then matches no uninterrupted run)."
            )

    def _save_model(self, name: str) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            temporary, final = self.output_dir / f".tmp-{name}", self.output_dir / name
            shutil.rmtree(temporary, ignore_errors=True)
            # No "Writing model shards" bar breaking into the training bar.
            with library_progress_bars(False):
                self.accelerator.unwrap_model(self.model).save_pretrained(temporary)
            self.processor.save_pretrained(temporary)
            write_training_card(temporary, self.config.to_dict(), self.state)
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
        self.accelerator.wait_for_everyone()

    def _log(self, values: dict) -> None:
        self.state["history"].append(values)
        if self.accelerator.log_with:
            scalars = {k: v for k, v in values.items() if isinstance(v, (int, float))}
            # Per-stage lists (PCMANet's stage losses and kept-token ratios): a curve per stage.
            for key, value in values.items():
                if isinstance(value, list):
                    scalars.update({f"{key}/{index}": item for index, item in enumerate(value)})
            self.accelerator.log(scalars, step=values["step"])

    def train(self, resume: bool = False, ignore_config_changes: bool = False) -> dict:
        """Run the remaining epochs. `resume` continues from `checkpoints/latest` after checking
        that its training configuration matches this one (`RESUME_MUST_MATCH`), unless
        `ignore_config_changes`."""
        if resume:
            self.load_checkpoint(ignore_config_changes=ignore_config_changes)
        # Log lines are written above the progress bar instead of through it.
        with logging_redirect_tqdm():
            return self._train()

    def _train(self) -> dict:
        config, accelerator = self.config, self.accelerator
        steps_per_epoch = len(self.train_loader)
        self.progress = tqdm(
            total=steps_per_epoch * config.num_epochs,
            initial=self.state["global_step"],
            desc="train",
            disable=not accelerator.is_main_process,
        )
        started = time.perf_counter()
        for epoch in range(self.state["epoch"], config.num_epochs):
            self.train_loader.set_epoch(epoch)
            loader = self.train_loader
            if self.state["step_in_epoch"]:
                loader = accelerator.skip_first_batches(loader, self.state["step_in_epoch"])
            self.model.train()
            frozen_backbone = self._backbone_parameters() if epoch < config.freeze_backbone_epochs else []
            for batch in loader:
                outputs = self.model(**batch)
                accelerator.backward(outputs.loss)
                # As AVSegFormer's requires_grad=False: the optimizer skips parameters without a
                # gradient (no update, no weight decay, no moment), and their moments start when
                # the backbone thaws. Set after the backward so that DDP's graph never changes.
                for parameter in frozen_backbone:
                    parameter.grad = None
                self.optimizer.step()
                self.optimizer.zero_grad()
                self.state["step_in_epoch"] += 1
                self.state["global_step"] += 1
                self.progress.update(1)
                step = self.state["global_step"]
                if step % config.logging_steps == 0 or step == 1:
                    self._log_step(outputs, epoch, step, started)
                if config.checkpoint_steps and step % config.checkpoint_steps == 0:
                    self.save_checkpoint(f"step-{step}")
            self.state["epoch"], self.state["step_in_epoch"] = epoch + 1, 0
            if self.val_loader is not None:
                self._validate(epoch)
            self.save_checkpoint(f"epoch-{epoch + 1}")
        self.progress.close()
        self._save_model("final")
        unwrapped = accelerator.unwrap_model(self.model)
        checksum = weights_checksum(unwrapped)
        # One line per process: data-parallel replicas must end with identical weights.
        (self.output_dir / f"weights_checksum_process{accelerator.process_index}.txt").write_text(checksum)
        if accelerator.is_main_process:
            (self.output_dir / TRAINER_STATE).write_text(json.dumps(self.state, indent=1))
            if config.push_to_hub:  # the final model, processor, code and card, as `avs-models push` sends them
                push_folder(self.output_dir / "final", config.push_to_hub)
        accelerator.end_training()
        return self.state

    def _backbone_parameters(self) -> list[torch.nn.Parameter]:
        backbone = getattr(self.accelerator.unwrap_model(self.model), "backbone", None)
        if backbone is None:
            raise ValueError(
                f"freeze_backbone_epochs={self.config.freeze_backbone_epochs}: the model has no vision backbone "
                "(`model.backbone`) to freeze"
            )
        return list(backbone.parameters())

    def _log_step(self, outputs, epoch: int, step: int, started: float) -> None:
        loss = self.accelerator.reduce(outputs.loss.detach(), reduction="mean").item()
        values = {
            "step": step,
            "epoch": epoch,
            "loss": loss,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "steps_per_second": step / max(time.perf_counter() - started, 1e-9),
        }
        # The terms of a combined loss (AVSegFormer's mask_loss and mix_loss, TPAVI's
        # segmentation_loss and avm_loss), averaged over processes like the loss.
        for name, value in outputs.items():
            if name.endswith("_loss") and value is not None and value.numel() == 1:
                values[name] = self.accelerator.reduce(value.detach().float(), reduction="mean").item()
        for name in ("stage_losses", "kept_token_ratios"):
            value = getattr(outputs, name, None)
            if value is not None:
                values[name] = [round(float(item), 5) for item in torch.as_tensor(value).flatten().tolist()]
        self._log(values)
        if self.accelerator.is_main_process:
            self.progress.set_postfix(self._postfix(loss=f"{loss:.4f}"), refresh=False)
            logger.info("step %d: %s", step, values)

    def _validate(self, epoch: int) -> None:
        metric = make_metric(self.config.subset, self.accelerator.unwrap_model(self.model))
        result = evaluate_model(self.model, self.val_loader, self.accelerator, metric)
        scores = {
            "step": self.state["global_step"],
            "epoch": epoch,
            "val_miou": result["miou"],
            "val_fscore": result["fscore"],
        }
        self._log(scores)
        if self.accelerator.is_main_process:
            self.progress.set_postfix(self._postfix(val_miou=f"{result['miou']:.4f}"))
            logger.info("epoch %d validation (%s definition): %s", epoch + 1, result["definition"], scores)
        if self.state["best_miou"] is None or result["miou"] > self.state["best_miou"]:
            self.state["best_miou"] = result["miou"]
            # The checkpoint written at the end of this epoch, kept by the checkpoint pruning.
            self.state["best_checkpoint"] = f"epoch-{epoch + 1}"
            self._save_model("best")

    def _postfix(self, **latest: str) -> dict:
        """The progress bar's latest loss and validation mIoU."""
        self.progress_values.update(latest)
        return self.progress_values


def default_num_workers(num_processes: int) -> int:
    """DataLoader workers per training process when `num_workers` is null: the CPU cores available
    to this job shared among its processes, at most 4 each, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores // max(1, num_processes)))


def _checkpoint_step(path: Path) -> int:
    return json.loads((path / TRAINER_STATE).read_text())["global_step"]


@contextlib.contextmanager
def library_progress_bars(enabled: bool):
    """Transformers', the Hub's and Datasets' progress bars on or off for a block, then as before."""
    import datasets
    import transformers

    before = (transformers.utils.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled())
    if not enabled:
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if before[0]:
            transformers.utils.logging.enable_progress_bar()
        if before[1]:
            datasets.enable_progress_bars()


def configure_logging(verbose: bool = False) -> None:
    """Console logging of a training command: with `verbose`, INFO lines (every logged step,
    checkpoints, Accelerate's messages) from every process, each line naming its process; by
    default warnings and errors only, from the main process only (the others print errors).
    Python warnings go through logging too, so the other processes' duplicates are dropped."""
    rank = int(os.environ.get("RANK", "0"))
    if verbose:
        level, line = logging.INFO, f"%(asctime)s [process {rank}] %(levelname)s %(name)s: %(message)s"
    else:
        level, line = (logging.WARNING if rank == 0 else logging.ERROR), "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=line, force=True)
    logging.captureWarnings(True)


def _launched_without_accelerators() -> bool:
    # `accelerate launch --multi_gpu` on a machine without GPUs starts several processes, but
    # Accelerate only joins them (gloo, MULTI_CPU) when asked for the CPU; otherwise each
    # process would train alone on the whole data set.
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return (
        several and not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available())
    )


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        logger.warning("report_to=tensorboard but tensorboard is not installed; logging to the console only")
        return False
    return True


def train(
    config: TrainingConfig, resume: bool = False, ignore_config_changes: bool = False, verbose: bool = False
) -> dict:
    """Train as `config` says; returns the trainer state (history of logged values, best mIoU).

    `resume` continues from the latest checkpoint if its training configuration matches (or
    regardless, with `ignore_config_changes`); `verbose` shows library progress bars too."""
    return Trainer(config, verbose=verbose).train(resume=resume, ignore_config_changes=ignore_config_changes)
