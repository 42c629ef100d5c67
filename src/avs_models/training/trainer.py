"""A small explicit Accelerate training loop for audio-visual segmentation models.

Why not `transformers.Trainer`: resuming must reproduce an uninterrupted run bit for bit (the
clip order, the collator's augmentation draws and every RNG are part of the checkpoint here),
checkpoints must be swapped in atomically, validation needs whole-video metrics gathered across
processes, and PCMANet's per-stage losses and kept-token ratios are logged each step. All of this
is a few lines in a loop we own and would be callbacks and overrides around `Trainer`. Accelerate
still does the device placement, data sharding, gradient synchronisation and mixed precision, so
the same code runs on one CPU, several processes or GPUs (`accelerate launch`).
"""

from __future__ import annotations

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
from transformers import AutoConfig

from avs_models.data import AVSBenchCollator, AVSBenchReader, TrainAugmentation, frames_per_clip
from avs_models.data.avss_classes import AVSS_NUM_CLASSES, avss_id2label
from avs_models.metrics import BinaryMaskMetric, SemanticSegmentationMetric
from avs_models.models.auto import AutoModelForAudioVisualSegmentation
from avs_models.processing import processor_for

from .config import TrainingConfig

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
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
        return self._reader.read_example(self._records[index])


class EpochPermutationSampler(torch.utils.data.Sampler):
    """Shuffles with a permutation that depends only on (seed, epoch), so a resumed run sees the
    clips in the same order; Accelerate calls `set_epoch` through the prepared data loader."""

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


class _PerBatchSeededCollator:
    """Reseeds the collator's augmentation generator from (seed, epoch, process, batch number)
    before each batch. Accelerate's loader fetches one batch ahead, so a generator carried from
    batch to batch could not be checkpointed at the right point; a per-batch seed needs no state."""

    def __init__(self, collator: AVSBenchCollator, seed: int, process_index: int) -> None:
        self.collator, self.seed, self.process_index = collator, seed, process_index
        self.epoch, self.next_batch = 0, 0

    def start_epoch(self, epoch: int, first_batch: int) -> None:
        self.epoch, self.next_batch = epoch, first_batch

    def __call__(self, examples: list[dict]) -> dict:
        if self.collator.generator is not None:
            key = (
                (self.seed * 1_000_003 + self.epoch) * 1_009 + self.process_index
            ) * 1_000_003 + self.next_batch
            self.collator.generator.manual_seed(key % (2**63))
        self.next_batch += 1
        return self.collator(examples)


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
    if spec.get("name_or_path"):
        return AutoModelForAudioVisualSegmentation.from_pretrained(
            spec["name_or_path"], **spec.get("config", {})
        )
    model_config = AutoConfig.for_model(spec.get("model_type", "pcmanet"), **(spec.get("config") or {}))
    return AutoModelForAudioVisualSegmentation.from_config(model_config)


def build_optimizer(config: TrainingConfig, model) -> torch.optim.Optimizer:
    options = dict(config.optimizer)
    name = options.pop("name", "adam").lower()
    learning_rate = float(options.pop("learning_rate", 1e-4))
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    return optimizer_class(parameters, lr=learning_rate, **options)


def make_metric(subset: str, model, definition: str = "official"):
    if subset == "avss":
        return SemanticSegmentationMetric(num_classes=model.config.num_labels, definition=definition)
    return BinaryMaskMetric(definition)


MODEL_INPUTS = ("pixel_values", "input_features", "input_values", "audio_embeds", "frame_mask")


@torch.no_grad()
def evaluate_model(model, dataloader, accelerator: Accelerator, metric, progress: bool = False) -> dict:
    """Run `model` over `dataloader` (prepared by `accelerator`) and fill `metric` on every process."""
    model.eval()
    for batch in tqdm(dataloader, desc="eval", disable=not (progress and accelerator.is_main_process)):
        logits = model(**{key: batch[key] for key in MODEL_INPUTS if key in batch}).logits
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
    """Trains `config.model` on `config.data_dir`; see `train` for the entry point."""

    def __init__(self, config: TrainingConfig, accelerator: Accelerator | None = None) -> None:
        if config.data_dir is None:
            raise ValueError("data_dir is not set: pass data_dir=PATH (official layout or exported dataset)")
        self.config = config
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
        self.model = build_model(config)
        self.optimizer = build_optimizer(config, self.model)
        augmentation = TrainAugmentation(**config.augmentation) if config.augmentation else None
        # Saved next to the model, so that the pipeline prepares inputs as in training; the
        # training and evaluation collators prepare frames and audio through it.
        self.processor = processor_for(
            self.model.config, image_size=config.image_size, num_frames=frames_per_clip(config.subset)
        )
        self.train_collator = _PerBatchSeededCollator(
            AVSBenchCollator.from_processor(
                self.processor, config.subset, augmentation=augmentation, seed=config.seed
            ),
            config.seed,
            self.accelerator.process_index,
        )
        eval_collator = AVSBenchCollator.from_processor(self.processor, config.subset)
        self.train_set = AVSBenchSplit(config.data_dir, config.subset, "train")
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=config.batch_size,
            sampler=EpochPermutationSampler(len(self.train_set), config.seed),
            collate_fn=self.train_collator,
            num_workers=config.num_workers,
        )
        self.val_loader = None
        if config.validation_split:
            val_set = AVSBenchSplit(config.data_dir, config.subset, config.validation_split)
            self.val_loader = DataLoader(
                val_set, batch_size=config.eval_batch_size, collate_fn=_WithVideoInfo(eval_collator)
            )
        self.model, self.optimizer, self.train_loader = self.accelerator.prepare(
            self.model, self.optimizer, self.train_loader
        )
        if self.val_loader is not None:
            self.val_loader = self.accelerator.prepare(self.val_loader)
        self.state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_miou": None, "history": []}
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
            (temporary / "trainer_state.json").write_text(json.dumps(self.state, indent=1))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            pointer = root / f".{LATEST}.tmp"
            pointer.write_text(name)
            os.replace(pointer, root / LATEST)
            logger.info("checkpoint %s written (step %d)", final, self.state["global_step"])
        accelerator.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path | None = None) -> None:
        root = self.output_dir / CHECKPOINTS
        if path is None:
            if not (root / LATEST).is_file():
                raise FileNotFoundError(f"--resume: no checkpoint under {root} (missing {root / LATEST})")
            path = root / (root / LATEST).read_text().strip()
        self.accelerator.load_state(str(path))
        self.state = json.loads((path / "trainer_state.json").read_text())
        logger.info(
            "resumed from %s at epoch %d, step %d", path, self.state["epoch"], self.state["global_step"]
        )

    def _save_model(self, name: str) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            temporary, final = self.output_dir / f".tmp-{name}", self.output_dir / name
            shutil.rmtree(temporary, ignore_errors=True)
            self.accelerator.unwrap_model(self.model).save_pretrained(temporary)
            self.processor.save_pretrained(temporary)
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
        self.accelerator.wait_for_everyone()

    def _log(self, values: dict) -> None:
        self.state["history"].append(values)
        if self.accelerator.log_with:
            self.accelerator.log(
                {k: v for k, v in values.items() if isinstance(v, (int, float))}, step=values["step"]
            )

    def train(self, resume: bool = False) -> dict:
        config, accelerator = self.config, self.accelerator
        if resume:
            self.load_checkpoint()
        steps_per_epoch = len(self.train_loader)
        progress = tqdm(
            total=steps_per_epoch * config.num_epochs,
            initial=self.state["global_step"],
            desc="train",
            disable=not accelerator.is_main_process,
        )
        started = time.perf_counter()
        for epoch in range(self.state["epoch"], config.num_epochs):
            self.train_loader.set_epoch(epoch)
            loader = self.train_loader
            self.train_collator.start_epoch(epoch, self.state["step_in_epoch"])
            if self.state["step_in_epoch"]:
                loader = accelerator.skip_first_batches(loader, self.state["step_in_epoch"])
            self.model.train()
            for batch in loader:
                outputs = self.model(**batch)
                accelerator.backward(outputs.loss)
                self.optimizer.step()
                self.optimizer.zero_grad()
                self.state["step_in_epoch"] += 1
                self.state["global_step"] += 1
                progress.update(1)
                step = self.state["global_step"]
                if step % config.logging_steps == 0 or step == 1:
                    self._log_step(outputs, epoch, step, started)
                if config.checkpoint_steps and step % config.checkpoint_steps == 0:
                    self.save_checkpoint(f"step-{step}")
            self.state["epoch"], self.state["step_in_epoch"] = epoch + 1, 0
            if self.val_loader is not None:
                self._validate(epoch)
            self.save_checkpoint(f"epoch-{epoch + 1}")
        progress.close()
        self._save_model("final")
        unwrapped = accelerator.unwrap_model(self.model)
        checksum = weights_checksum(unwrapped)
        # One line per process: data-parallel replicas must end with identical weights.
        (self.output_dir / f"weights_checksum_process{accelerator.process_index}.txt").write_text(checksum)
        if accelerator.is_main_process:
            (self.output_dir / "trainer_state.json").write_text(json.dumps(self.state, indent=1))
            if config.push_to_hub:
                unwrapped.push_to_hub(config.push_to_hub)
                self.processor.push_to_hub(config.push_to_hub)
        accelerator.end_training()
        return self.state

    def _log_step(self, outputs, epoch: int, step: int, started: float) -> None:
        loss = self.accelerator.reduce(outputs.loss.detach(), reduction="mean").item()
        values = {
            "step": step,
            "epoch": epoch,
            "loss": loss,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "steps_per_second": step / max(time.perf_counter() - started, 1e-9),
        }
        for name in ("stage_losses", "kept_token_ratios"):
            value = getattr(outputs, name, None)
            if value is not None:
                values[name] = [round(float(item), 5) for item in torch.as_tensor(value).flatten().tolist()]
        self._log(values)
        if self.accelerator.is_main_process:
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
            logger.info("epoch %d validation (%s definition): %s", epoch + 1, result["definition"], scores)
        if self.state["best_miou"] is None or result["miou"] > self.state["best_miou"]:
            self.state["best_miou"] = result["miou"]
            self._save_model("best")


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


def train(config: TrainingConfig, resume: bool = False) -> dict:
    """Train as `config` says; returns the trainer state (history of logged values, best mIoU)."""
    return Trainer(config).train(resume=resume)
