"""Evaluating a trained model on an AVSBench split, optionally with noisy or swapped audio."""

from __future__ import annotations

import io

import numpy as np
import soundfile
import torch
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from avs_models.data import AVSBenchCollator, decode_wav, frames_per_clip
from avs_models.data.transforms import to_pil
from avs_models.inference_optimization import InferenceModel, optimize_for_inference
from avs_models.metrics import BinaryMaskMetric
from avs_models.models.inputs import model_inputs
from avs_models.models.labels import is_semantic_segmentation
from avs_models.processing import AudioVisualProcessor, processor_for
from avs_models.training.trainer import (
    AVSBenchSplit,
    _WithVideoInfo,
    evaluate_model,
    make_metric,
)


def add_noise_at_snr(waveform: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise to a signal (a waveform, or a frame's pixels) so that signal power /
    noise power is `snr_db` decibels."""
    signal_power = float(np.mean(np.square(waveform, dtype=np.float64)))
    noise_power = signal_power / (10 ** (snr_db / 10))
    noise = rng.normal(0.0, np.sqrt(noise_power), size=waveform.shape)
    return (waveform + noise).astype(np.float32)


def _wav_bytes(waveform: np.ndarray, sampling_rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, waveform, sampling_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


class PerturbedSplit(Dataset):
    """A split with perturbed inputs: Gaussian noise on the audio at `snr_db`, each clip given the
    audio of the next clip (`swap_audio`, a cyclic shift, so no clip keeps its own sound), and/or
    Gaussian noise on the frames (pixel values in [0, 1], clipped back to that range), either at a
    signal-to-noise ratio `frame_snr_db` per frame (C3N's Table VII) or of standard deviation
    `frame_noise_std`."""

    def __init__(
        self,
        dataset: Dataset,
        snr_db: float | None = None,
        swap_audio: bool = False,
        frame_noise_std: float | None = None,
        seed: int = 0,
        frame_snr_db: float | None = None,
    ):
        if swap_audio and len(dataset) < 2:
            raise ValueError("swap_audio needs at least 2 clips")
        if frame_noise_std is not None and frame_noise_std < 0:
            raise ValueError(f"frame_noise_std must be >= 0, got {frame_noise_std}")
        if frame_noise_std is not None and frame_snr_db is not None:
            raise ValueError("pass frame_noise_std or frame_snr_db, not both")
        self.dataset, self.snr_db, self.swap_audio, self.seed = dataset, snr_db, swap_audio, seed
        self.frame_noise_std, self.frame_snr_db = frame_noise_std, frame_snr_db

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        example = dict(self.dataset[index])
        if self.swap_audio:
            example["audio"] = self.dataset[(index + 1) % len(self.dataset)]["audio"]
        if self.snr_db is not None:
            waveform, sampling_rate = decode_wav(example["audio"])
            noisy = add_noise_at_snr(waveform, self.snr_db, np.random.default_rng([self.seed, index]))
            example["audio"] = {"bytes": _wav_bytes(noisy, sampling_rate)}
        if self.frame_noise_std is not None or self.frame_snr_db is not None:
            rng = np.random.default_rng([self.seed, index, 1])
            example["frames"] = [self._noisy_frame(frame, rng) for frame in example["frames"]]
        return example

    def _noisy_frame(self, frame, rng: np.random.Generator) -> Image.Image:
        pixels = np.asarray(to_pil(frame).convert("RGB"), dtype=np.float64) / 255
        if self.frame_snr_db is not None:
            noisy = add_noise_at_snr(pixels, self.frame_snr_db, rng)
        else:
            noisy = pixels + rng.normal(0.0, self.frame_noise_std, size=pixels.shape)
        return Image.fromarray((np.clip(noisy, 0, 1) * 255).round().astype(np.uint8))


def evaluate_split(
    model,
    data_dir,
    subset: str,
    split: str = "test",
    *,
    processor: AudioVisualProcessor | None = None,
    image_size: int = 224,
    batch_size: int = 1,
    definition: str = "official",
    fscore_batch_videos: int | None = None,
    snr_db: float | None = None,
    swap_audio: bool = False,
    frame_noise_std: float | None = None,
    frame_snr_db: float | None = None,
    accelerator: Accelerator | None = None,
    progress: bool = False,
    precision: str = "fp32",
    compile: bool = False,
    calibration=None,
) -> dict:
    """Metrics of `model` on one split (see `avs_models.metrics` for the definitions).

    Frames and audio are prepared by `processor` (e.g. the `AudioVisualProcessor` saved with the
    model), or by default at `image_size` with the model's audio feature extractor. `batch_size`
    is the data loader's; the official binary F-score is maximised per batch of
    `fscore_batch_videos` videos (default: the model family's official test batch,
    `avs_models.metrics.OFFICIAL_FSCORE_BATCH_VIDEOS`), whatever the loader's batch size.

    `precision` and `compile` run the model through `optimize_for_inference` (int8 calibrates on
    `calibration`, or on the int8 program saved with the model, or on synthetic clips of the
    processor); `model` may also be an `InferenceModel` already. The result records both.
    """
    processor = processor or processor_for(
        model.config, image_size=image_size, num_frames=frames_per_clip(subset)
    )
    accelerator = accelerator or Accelerator()
    if precision != "fp32" or compile:
        # On the device it will run on: fp16 is for GPUs, int8 for CPUs, and compiled code is per device.
        model = optimize_for_inference(
            model.to(accelerator.device), precision, compile, processor=processor, calibration=calibration
        )
    dataset = PerturbedSplit(
        AVSBenchSplit(data_dir, subset, split),
        snr_db=snr_db,
        swap_audio=swap_audio,
        frame_noise_std=frame_noise_std,
        frame_snr_db=frame_snr_db,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=_WithVideoInfo(AVSBenchCollator.from_processor(processor, subset)),
    )
    prepared_model, loader = accelerator.prepare(model, loader)
    metric = make_metric(subset, model, definition, fscore_batch_videos)
    result = evaluate_model(prepared_model, loader, accelerator, metric, progress=progress)
    if isinstance(metric, BinaryMaskMetric):
        result["per_category"] = metric.compute(per_category=True)["per_category"]
    result.update(
        {
            "subset": subset,
            "split": split,
            "snr_db": snr_db,
            "swap_audio": swap_audio,
            "frame_noise_std": frame_noise_std,
            "frame_snr_db": frame_snr_db,
            "precision": model.precision if isinstance(model, InferenceModel) else "fp32",
            "compiled": isinstance(model, InferenceModel) and model.compiled,
        }
    )
    return result


@torch.no_grad()
def perturbed_examples(
    model,
    data_dir,
    subset: str,
    split: str,
    perturbations: dict[str, dict],
    *,
    processor: AudioVisualProcessor | None = None,
    image_size: int = 224,
    index: int = 0,
    frame: int = 0,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """One frame of clip `index` under each perturbation (name -> `PerturbedSplit` keywords, `{}` for
    none), as the model received it (noisy for frame noise), with the mask it predicted: the frame
    strips of C3N's Fig. 10. Returns `(name, frame [H, W, 3] uint8, mask [h, w])` per perturbation;
    the masks are foreground (any class) at the model's input size."""
    processor = processor or processor_for(
        model.config, image_size=image_size, num_frames=frames_per_clip(subset)
    )
    collator = AVSBenchCollator.from_processor(processor, subset)
    data = AVSBenchSplit(data_dir, subset, split)
    if not 0 <= index < len(data):
        raise ValueError(f"index must be in [0, {len(data) - 1}] (clips of the {split} split), got {index}")
    examples = []
    for name, perturbation in perturbations.items():
        example = PerturbedSplit(data, **perturbation)[index]
        if not 0 <= frame < len(example["frames"]):
            raise ValueError(f"frame must be in [0, {len(example['frames']) - 1}], got {frame}")
        batch = {
            key: value.to(model.device) if isinstance(value, torch.Tensor) else value
            for key, value in collator([example]).items()
        }
        mask = predict_masks(model, batch)[0, frame].cpu().numpy() > 0
        picture = np.asarray(to_pil(example["frames"][frame]).convert("RGB"))
        examples.append((name, picture, mask.astype(np.uint8)))
    return examples


def format_table(rows: list[dict], label: str = "setting") -> str:
    """A plain-text table of `{label, "miou", "fscore", ...}` rows; "F batch" is the number of
    videos per official F-score batch (`-` where no batch enters the F-score)."""
    table = [[label, "mIoU", "F-score", "F batch", "frames"]]
    for row in rows:
        batch = row.get("fscore_batch_videos")
        table.append(
            [
                str(row[label]),
                f"{row['miou']:.4f}",
                f"{row['fscore']:.4f}",
                "-" if batch is None else str(batch),
                str(row.get("num_frames", 0)),
            ]
        )
    return _aligned(table)


def format_category_comparison(results: dict[str, dict]) -> str:
    """Per-category mIoU and F-score of several models side by side: `results` maps a model's
    name to an `evaluate_split` result with `"per_category"`; models are numbered as listed."""
    categories = sorted({name for result in results.values() for name in result.get("per_category", {})})
    table = [
        ["category"]
        + [f"{column} {number}" for number in range(1, len(results) + 1) for column in ("mIoU", "F")]
    ]
    for category in categories:
        cells = [category]
        for result in results.values():
            scores = result.get("per_category", {}).get(category)
            cells += ["-", "-"] if scores is None else [f"{scores['miou']:.4f}", f"{scores['fscore']:.4f}"]
        table.append(cells)
    return _aligned(table)


def _aligned(table: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths))
        )
        for row in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def describe_definition(result: dict) -> str:
    """One line naming the definition a result was computed with."""
    if result.get("fscore_batch_videos") is not None:
        batch = result["fscore_batch_videos"]
        return (
            f"{result['definition']} definition (F-score: maximum over thresholds per test batch of "
            f"{batch} video{'s' if batch > 1 else ''}, mean over batches)"
        )
    return f"{result['definition']} definition"


@torch.no_grad()
def predict_masks(model, batch: dict) -> torch.Tensor:
    """Binary masks `[B, T, H, W]` (S4/MS3) or class ids (AVSS) for a collated batch."""
    model.eval()
    logits = model(**model_inputs(batch)).logits
    return logits.argmax(dim=2) if is_semantic_segmentation(model.config) else (logits[:, :, 0] > 0).long()
