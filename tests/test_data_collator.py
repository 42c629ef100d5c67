"""Collated AVSBench batches have the shapes and values the models take."""

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from avs_models.data import (
    AVSBenchCollator,
    AVSBenchReader,
    TrainAugmentation,
    decode_wav,
    export_avsbench,
    make_synthetic_avsbench,
)
from avs_models.data.transforms import IMAGENET_MEAN, IMAGENET_STD, color_jitter, normalize, resize_labels
from avs_models.models.vggish import VGGishFeatureExtractor

SIZE = 32


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    make_synthetic_avsbench(root, "s4", 5, seed=2, image_size=48)
    make_synthetic_avsbench(root, "avss", 6, seed=2, image_size=48)
    return root


@pytest.fixture(scope="module")
def feature_extractor():
    return VGGishFeatureExtractor()


def test_s4_train_batch_from_load_dataset(raw_dir, tmp_path, feature_extractor):
    export_avsbench(raw_dir, tmp_path, subsets=["s4"], progress=False)
    train = datasets.load_dataset(str(tmp_path), "s4", split="train")
    collate = AVSBenchCollator("s4", image_size=SIZE, feature_extractor=feature_extractor)
    batch = collate([train[0], train[1]])
    assert batch["pixel_values"].shape == (2, 5, 3, SIZE, SIZE)
    assert batch["input_features"].shape == (2, 5, 1, 96, 64)
    assert batch["labels"].shape == (2, 5, SIZE, SIZE) and batch["labels"].dtype == torch.float32
    assert batch["labeled_frames"].tolist() == [[True, False, False, False, False]] * 2
    assert batch["frame_mask"].all()
    assert set(batch["labels"].unique().tolist()) == {0.0, 1.0}
    assert batch["labels"][:, 1:].eq(0).all() and batch["labels"][:, 0].sum() > 0
    # The log-mel is the extractor's own output for that wav.
    waveform, rate = decode_wav(train[0]["audio"])
    expected = feature_extractor(waveform, sampling_rate=rate, return_tensors="pt")["input_features"]
    assert torch.allclose(batch["input_features"][0], expected[:5].float())


def test_avss_batch_pads_to_ten_frames(raw_dir, feature_extractor):
    reader = AVSBenchReader(raw_dir, "avss")
    examples = [example for _, example in reader.iter_examples("train")][:3]
    assert [e["label_set"] for e in examples] == ["v1s", "v1m", "v2"]
    batch = AVSBenchCollator("avss", image_size=SIZE, feature_extractor=feature_extractor)(examples)
    assert batch["pixel_values"].shape == (3, 10, 3, SIZE, SIZE)
    assert batch["input_features"].shape == (3, 10, 1, 96, 64)
    assert batch["labels"].shape == (3, 10, SIZE, SIZE) and batch["labels"].dtype == torch.long
    assert batch["frame_mask"].sum(1).tolist() == [5, 5, 10]
    assert batch["labeled_frames"].sum(1).tolist() == [1, 5, 10]
    assert not batch["labeled_frames"][~batch["frame_mask"]].any()
    assert batch["pixel_values"][0, 5:].eq(0).all() and batch["input_features"][0, 5:].eq(0).all()
    assert batch["labels"].max() <= 70 and batch["labels"][2].gt(0).any()


def test_flip_moves_frames_and_labels_together(raw_dir, feature_extractor):
    example = next(AVSBenchReader(raw_dir, "avss").iter_examples("val"))[1]
    plain = AVSBenchCollator("avss", image_size=SIZE, feature_extractor=feature_extractor)([example])
    flip_only = TrainAugmentation(brightness=0, contrast=0, saturation=0, flip_probability=1.0)
    flipped = AVSBenchCollator(
        "avss", image_size=SIZE, feature_extractor=feature_extractor, augmentation=flip_only
    )([example])
    assert torch.allclose(flipped["pixel_values"], plain["pixel_values"].flip(-1), atol=1e-6)
    assert torch.equal(flipped["labels"], plain["labels"].flip(-1))
    assert not torch.equal(flipped["labels"], plain["labels"])


def test_augmentation_is_seeded(raw_dir, feature_extractor):
    example = next(AVSBenchReader(raw_dir, "s4").iter_examples("train"))[1]

    def run(seed):
        collate = AVSBenchCollator(
            "s4",
            image_size=SIZE,
            feature_extractor=feature_extractor,
            augmentation=TrainAugmentation(),
            seed=seed,
        )
        return [collate([example])["pixel_values"] for _ in range(3)]

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_transform_helpers():
    frames = torch.rand(2, 3, 8, 8)
    normalised = normalize(frames)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(normalised * std + mean, frames, atol=1e-6)
    assert torch.allclose(color_jitter(frames, 1.0, 1.0, 1.0), frames, atol=1e-6)
    gray = color_jitter(frames, 1.0, 1.0, 0.0)
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-6)
    labels = torch.from_numpy(np.array([[[0, 3], [7, 70]]]))
    assert resize_labels(labels, 4).unique().tolist() == [0, 3, 7, 70]
    with pytest.raises(ValueError, match="brightness"):
        TrainAugmentation(brightness=1.5)


def test_collator_errors(raw_dir, feature_extractor):
    with pytest.raises(ValueError, match="subset"):
        AVSBenchCollator("s5", feature_extractor=feature_extractor)
    collate = AVSBenchCollator("s4", image_size=SIZE, feature_extractor=feature_extractor)
    with pytest.raises(ValueError, match="empty"):
        collate([])
    example = next(AVSBenchReader(raw_dir, "s4").iter_examples("train"))[1]
    example["mask_frame_indices"] = [7]
    with pytest.raises(ValueError, match="frame 7"):
        collate([example])


def test_collator_from_processor_prepares_like_the_processor(raw_dir):
    """Training batches and inference inputs come from one preprocessing: the processor's."""
    from avs_models.processing import AudioVisualImageProcessor, AudioVisualProcessor

    processor = AudioVisualProcessor(
        AudioVisualImageProcessor(
            size={"height": 24, "width": 40}, image_mean=[0.5] * 3, image_std=[0.25] * 3
        ),
        VGGishFeatureExtractor(),
    )
    collate = AVSBenchCollator.from_processor(processor, "s4")
    assert collate.num_frames == processor.num_frames == 5
    example = next(AVSBenchReader(raw_dir, "s4").iter_examples("test"))[1]
    batch = collate([example])
    waveform, rate = decode_wav(example["audio"])
    frames = [Image.open(io.BytesIO(frame["bytes"])) for frame in example["frames"]]
    expected = processor(frames=frames, audio=waveform, sampling_rate=rate)
    assert batch["pixel_values"].shape == (1, 5, 3, 24, 40)
    assert torch.allclose(batch["pixel_values"], expected["pixel_values"], atol=1e-6)
    assert torch.allclose(batch["input_features"], expected["input_features"].float(), atol=1e-6)
    unnormalised = AudioVisualProcessor(
        AudioVisualImageProcessor(size=24, do_normalize=False), VGGishFeatureExtractor()
    )
    pixels = AVSBenchCollator.from_processor(unnormalised, "s4")([example])["pixel_values"]
    assert pixels.min() >= 0 and pixels.max() <= 1


def test_dataset_transform_gives_the_collated_batch(raw_dir, tmp_path, feature_extractor):
    export_avsbench(raw_dir, tmp_path, subsets=["avss"], progress=False)
    train = datasets.load_dataset(str(tmp_path), "avss", split="train")
    collate = AVSBenchCollator("avss", image_size=SIZE, feature_extractor=feature_extractor)
    expected = collate([train[0], train[1], train[2]])
    loader = torch.utils.data.DataLoader(train.with_transform(collate.transform), batch_size=3)
    batch = next(iter(loader))
    assert batch.keys() == expected.keys()
    assert all(torch.equal(batch[key], expected[key]) for key in expected)


def test_audio_encoder_turns_audio_into_embeddings_for_a_model_without_one(raw_dir, feature_extractor):
    """A C3N fed the collator's embeddings and logits equals the same C3N holding the encoder."""
    from tiny_training import TINY_C3N

    from avs_models.models.c3n import C3NConfig, C3NForAudioVisualSegmentation

    torch.manual_seed(0)
    with_encoder = C3NForAudioVisualSegmentation(C3NConfig(**TINY_C3N["config"])).eval()
    without_config = {key: value for key, value in TINY_C3N["config"].items() if key != "audio_config"}
    without_encoder = C3NForAudioVisualSegmentation(C3NConfig(**without_config)).eval()
    missing, unexpected = without_encoder.load_state_dict(with_encoder.state_dict(), strict=False)
    assert not missing and all(key.startswith("audio_encoder.") for key in unexpected)

    examples = [example for _, example in AVSBenchReader(raw_dir, "s4").iter_examples("train")][:2]
    raw = AVSBenchCollator("s4", image_size=SIZE, feature_extractor=feature_extractor)(examples)
    encoder = with_encoder.audio_encoder.train()
    collate = AVSBenchCollator(
        "s4", image_size=SIZE, feature_extractor=feature_extractor, audio_encoder=encoder
    )
    assert not encoder.training, "the collator runs its encoder in eval mode"
    encoded = collate(examples)
    assert "input_features" not in encoded
    assert encoded["audio_embeds"].shape == (2, 5, 8) and encoded["audio_logits"].shape == (2, 5, 5)
    inputs = ("pixel_values", "frame_mask")
    with torch.no_grad():
        reference = with_encoder(**{key: raw[key] for key in (*inputs, "input_features")}).logits
        logits = without_encoder(
            **{key: encoded[key] for key in (*inputs, "audio_embeds", "audio_logits")}
        ).logits
    assert torch.allclose(logits, reference, atol=1e-5)

    from avs_models.models.panns import PannsConfig, PannsModel

    with pytest.raises(ValueError, match="takes `input_values`.*makes `input_features`"):
        AVSBenchCollator("s4", feature_extractor=feature_extractor, audio_encoder=PannsModel(PannsConfig()))
