"""Turning AVSBench examples into model inputs.

Works on examples from `datasets.load_dataset` of an export (PIL images) and straight from
`AVSBenchReader` (image dicts). A batch holds:

- `pixel_values` `[B, T, 3, H, W]`: frames resized to `image_size`, ImageNet-normalised
- the audio, one input per second, under the feature extractor's input name: `input_features`
  `[B, T, 1, 96, 64]` (VGGish log-mel examples, the default) or `input_values` `[B, T, 16000]`
  (PANNs, BEATs)
  - or, with an `audio_encoder`, its outputs instead: `audio_embeds` `[B, T, D]` (and
    `audio_logits` `[B, T, num_classes]` when the encoder is a classifier), for models that take
    precomputed audio
- `labels` `[B, T, H, W]`: float {0, 1} for S4/MS3, long class ids for AVSS (0 where no ground truth)
- `labeled_frames` `[B, T]` bool: frames that have ground truth
- `frame_mask` `[B, T]` bool: real (not padded) frames; AVSS clips are padded to 10 frames
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from avs_models.models.audio_utils import encode_audio_segments

from .avsbench import SUBSETS, decode_wav, frames_per_clip
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainAugmentation,
    images_to_tensor,
    normalize,
    resize_frames,
    resize_labels,
    to_pil,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from avs_models.processing import AudioVisualProcessor


class AVSBenchCollator:
    """Collate function for a `torch.utils.data.DataLoader` over AVSBench examples.

    Args:
        subset: "s4", "ms3" or "avss" (decides label dtype and padding).
        image_size: output frame and label size (int or (height, width)).
        feature_extractor: the audio encoder's feature extractor, giving one input per second
            under `model_input_names[0]` (see `audio_feature_extractor_for`); defaults to
            `VGGishFeatureExtractor()`.
        augmentation: e.g. `TrainAugmentation()` for training; None for evaluation.
        seed: seeds the augmentation's random draws.
        num_frames: frames per clip in the batch; defaults to 10 for AVSS and 5 otherwise.
        mean: per-channel normalisation mean (ImageNet by default).
        std: per-channel normalisation standard deviation (ImageNet by default).
        audio_encoder: optional frozen audio model (e.g. `VGGishModel`, `PannsForAudioClassification`,
            a Transformers audio classifier)
            run on the audio inputs under `torch.no_grad()`; the batch then holds its `audio_embeds`
            (and `audio_logits` for classifiers) instead of the raw audio inputs. For models
            converted without their own audio encoder. The collator puts it in eval mode; it runs
            on its own device and the outputs come back to the CPU.

    Use it as a `DataLoader`'s `collate_fn`, or per row with `dataset.with_transform(collator.transform)`
    and the default collate function. `from_processor` builds one that prepares frames and audio
    exactly as a saved model's `AudioVisualProcessor` does at inference.
    """

    def __init__(
        self,
        subset: str,
        image_size: int | tuple[int, int] = 224,
        feature_extractor: Callable | None = None,
        augmentation: TrainAugmentation | None = None,
        seed: int | None = None,
        num_frames: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        audio_encoder: PreTrainedModel | None = None,
    ) -> None:
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
        if feature_extractor is None:
            from avs_models.models.vggish import VGGishFeatureExtractor

            feature_extractor = VGGishFeatureExtractor()
        audio_input_name = feature_extractor.model_input_names[0]
        if audio_encoder is not None and audio_encoder.main_input_name != audio_input_name:
            raise ValueError(
                f"the audio encoder ({type(audio_encoder).__name__}) takes `{audio_encoder.main_input_name}`, "
                f"but the feature extractor ({type(feature_extractor).__name__}) makes `{audio_input_name}`"
            )
        self.subset = subset
        self.image_size = image_size
        self.feature_extractor = feature_extractor
        self.augmentation = augmentation
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.num_frames = num_frames or frames_per_clip(subset)
        self.mean, self.std = mean, std
        self.audio_encoder = audio_encoder.eval() if audio_encoder is not None else None

    @classmethod
    def from_processor(
        cls,
        processor: AudioVisualProcessor,
        subset: str,
        *,
        augmentation: TrainAugmentation | None = None,
        seed: int | None = None,
        audio_encoder: PreTrainedModel | None = None,
    ) -> AVSBenchCollator:
        """A collator that resizes, normalises and featurises like `processor` (its image size,
        mean and std, feature extractor and `num_frames`), e.g. the one saved next to a model:
        `AVSBenchCollator.from_processor(AudioVisualProcessor.from_pretrained(model_dir), "s4")`."""
        image_processor = processor.image_processor
        normalizes = image_processor.do_normalize
        return cls(
            subset,
            (image_processor.size["height"], image_processor.size["width"]),
            feature_extractor=processor.feature_extractor,
            augmentation=augmentation,
            seed=seed,
            num_frames=processor.num_frames,
            mean=image_processor.image_mean if normalizes else (0.0, 0.0, 0.0),
            std=image_processor.image_std if normalizes else (1.0, 1.0, 1.0),
            audio_encoder=audio_encoder,
        )

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        items = [self._prepare(example) for example in examples]
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        if self.audio_encoder is not None:
            batch.update(self._encode_audio(batch.pop(self.feature_extractor.model_input_names[0])))
        return batch

    def transform(self, rows: dict[str, list]) -> dict[str, list[torch.Tensor]]:
        """`datasets` transform: a batch of rows (a dict of lists) -> the model inputs of each row.

        `dataset.with_transform(collator.transform)` then yields dicts of tensors that the
        default `DataLoader` collate function stacks into the batch `collator(examples)` gives.
        """
        examples = [dict(zip(rows, values)) for values in zip(*rows.values())]
        return {key: list(value.unbind(0)) for key, value in self(examples).items()}

    @torch.no_grad()
    def _encode_audio(self, audio_inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        device = next(self.audio_encoder.parameters()).device
        embeddings, logits = encode_audio_segments(
            self.audio_encoder, self.audio_encoder.main_input_name, audio_inputs.to(device)
        )
        encoded = {"audio_embeds": embeddings.float().cpu()}
        if logits is not None:
            encoded["audio_logits"] = logits.float().cpu()
        return encoded

    def _prepare(self, example: dict) -> dict[str, torch.Tensor]:
        video = example.get("video_id", "<unknown>")
        frames = resize_frames(images_to_tensor(example["frames"]), self.image_size)
        count = frames.shape[0]
        if count > self.num_frames:
            raise ValueError(f"video {video!r} has {count} frames, more than num_frames={self.num_frames}")
        label_key = "semantic_labels" if self.subset == "avss" else "masks"
        label_dtype = torch.long if self.subset == "avss" else torch.float32
        labels = torch.zeros((count, *frames.shape[-2:]), dtype=label_dtype)
        labeled = torch.zeros(count, dtype=torch.bool)
        for index, image in zip(example["mask_frame_indices"], example[label_key]):
            if not 0 <= index < count:
                raise ValueError(
                    f"video {video!r}: ground truth for frame {index}, but the clip has {count} frames"
                )
            label = torch.from_numpy(np.asarray(to_pil(image).convert("L"), dtype=np.int64))
            labels[index] = resize_labels(label[None], self.image_size)[0].to(label_dtype)
            labeled[index] = True
        if self.augmentation is not None:
            frames, labels = self.augmentation(frames, labels, self.generator)
        features = self._audio_features(example["audio"], count, video)
        padding = self.num_frames - count
        return {
            "pixel_values": _pad(normalize(frames, self.mean, self.std), padding),
            self.feature_extractor.model_input_names[0]: _pad(features, padding),
            "labels": _pad(labels, padding),
            "labeled_frames": _pad(labeled, padding),
            "frame_mask": _pad(torch.ones(count, dtype=torch.bool), padding),
        }

    def _audio_features(self, audio, count: int, video: str) -> torch.Tensor:
        waveform, sampling_rate = decode_wav(audio)
        features = self.feature_extractor(waveform, sampling_rate=sampling_rate, return_tensors="pt")[
            self.feature_extractor.model_input_names[0]
        ]
        features = torch.as_tensor(features, dtype=torch.float32)
        if features.shape[0] == 0:
            raise ValueError(f"video {video!r}: the audio is shorter than one second")
        # Clips whose audio is a little short repeat their last second, as the official preprocessing does.
        if features.shape[0] < count:
            features = torch.cat(
                [features, features[-1:].expand(count - features.shape[0], *features.shape[1:])]
            )
        return features[:count]


def _pad(tensor: torch.Tensor, padding: int) -> torch.Tensor:
    if padding == 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((padding, *tensor.shape[1:]))])
