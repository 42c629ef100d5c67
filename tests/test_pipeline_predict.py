"""End to end: a real video through the processor, a tiny PCMANet, the pipeline, overlays and `avs-models predict`."""

import json

import av
import numpy as np
import pytest
import torch
from media import write_video
from PIL import Image
from transformers import pipeline

import avs_models  # noqa: F401  (registers the task and the Auto classes)
from avs_models import (
    C3NConfig,
    C3NForAudioVisualSegmentation,
    PCMANetConfig,
    PCMANetForAudioVisualSegmentation,
)
from avs_models.cli import main as cli_main
from avs_models.data.avss_classes import avss_palette
from avs_models.models.backbones import pvt_v2_b5_backbone_config, resnet50_backbone_config
from avs_models.models.panns import PannsFeatureExtractor
from avs_models.models.vggish import VGGishFeatureExtractor
from avs_models.processing import (
    AudioVisualImageProcessor,
    AudioVisualProcessor,
    overlay_mask,
    save_gif,
    save_mp4,
)


def save_tiny_pcmanet(folder, num_labels: int = 1):
    config = PCMANetConfig(
        backbone_config=resnet50_backbone_config(
            embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]
        ),
        hidden_size=16,
        avga_groups=4,
        qsca_num_heads=2,
        qsca_head_dim=8,
        qsca_pool_sizes=[4, 2, 1, 1],
        num_labels=num_labels,
        audio_config={"model_type": "vggish", "stage_channels": [[4], [8]], "hidden_sizes": [16]},
    )
    torch.manual_seed(0)
    model = PCMANetForAudioVisualSegmentation(config).eval()
    model.save_pretrained(folder)
    processor = AudioVisualProcessor(
        AudioVisualImageProcessor(size=32), VGGishFeatureExtractor(), num_frames=2
    )
    processor.save_pretrained(folder)
    return model, processor


def save_tiny_c3n(folder, audio_config: dict | None, feature_extractor):
    config = C3NConfig(
        backbone_config=pvt_v2_b5_backbone_config(
            depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 1, 1]
        ),
        hidden_size=16,
        head_hidden_sizes=[8, 4],
        num_visual_classes=6,
        num_audio_classes=5,
        audio_embed_dim=8,
        audio_config=audio_config,
    )
    torch.manual_seed(0)
    model = C3NForAudioVisualSegmentation(config).eval()
    model.set_label_similarity(torch.rand(6, 5))
    model.save_pretrained(folder)
    AudioVisualProcessor(AudioVisualImageProcessor(size=32), feature_extractor, num_frames=2).save_pretrained(
        folder
    )
    return model


TINY_VGGISH_AUDIOSET = {
    "model_type": "vggish",
    "stage_channels": [[4], [8]],
    "hidden_sizes": [16],
    "embedding_size": 8,
    "classifier_hidden_size": 8,
    "num_labels": 5,
}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=3, fps=2, size=(36, 44))


def test_processor_and_model_end_to_end(video, tmp_path):
    model, processor = save_tiny_pcmanet(tmp_path)
    inputs = processor(video)
    assert inputs["pixel_values"].shape == (2, 2, 3, 32, 32)
    with torch.no_grad():
        logits = model(
            pixel_values=inputs["pixel_values"],
            input_features=inputs["input_features"],
            frame_mask=inputs["frame_mask"],
        ).logits
    assert logits.shape == (2, 2, 1, 32, 32)
    masks = processor.post_process_masks(logits, inputs["original_sizes"], inputs["frame_mask"])
    assert [len(clip_masks) for clip_masks in masks] == [2, 1]
    assert all(mask.shape == (36, 44) and set(np.unique(mask)) <= {0, 1} for clip in masks for mask in clip)
    expected = (torch.sigmoid(logits[0, 0, 0]) > 0.5).numpy()
    resized_back = np.asarray(Image.fromarray(masks[0][0] * 255).resize((32, 32), Image.NEAREST)) > 0
    assert (resized_back == expected).mean() > 0.9


def test_pipeline_binary_model(video, tmp_path):
    save_tiny_pcmanet(tmp_path)
    segmenter = pipeline("audio-visual-segmentation", model=str(tmp_path))
    results = segmenter(str(video), clip_batch_size=1, show_progress=False)
    assert [result["time"] for result in results] == pytest.approx([0.5, 1.5, 2.5])
    assert all(result["mask"].shape == (36, 44) and "labels" not in result for result in results)
    everything = segmenter(str(video), threshold=0.0, show_progress=False)
    assert all(result["mask"].all() for result in everything)
    with pytest.raises(ValueError, match="clip_batch_size"):
        segmenter(str(video), clip_batch_size=0)
    with pytest.raises(TypeError, match="video path"):
        segmenter(123)


def test_pipeline_semantic_model_reports_labels(video, tmp_path):
    save_tiny_pcmanet(tmp_path, num_labels=3)
    results = pipeline("audio-visual-segmentation", model=str(tmp_path))(str(video), show_progress=False)
    assert len(results) == 3
    for result in results:
        present = sorted(int(c) for c in np.unique(result["mask"]) if c)
        assert result["labels"] == [f"LABEL_{c}" for c in present]
        assert len(result["scores"]) == len(present) and all(0 < s <= 1 for s in result["scores"])


def test_pipeline_runs_c3n_with_its_audio_encoder(video, tmp_path):
    model = save_tiny_c3n(tmp_path, TINY_VGGISH_AUDIOSET, VGGishFeatureExtractor())
    results = pipeline("audio-visual-segmentation", model=str(tmp_path))(str(video), show_progress=False)
    assert [result["time"] for result in results] == pytest.approx([0.5, 1.5, 2.5])
    inputs = AudioVisualProcessor.from_pretrained(tmp_path)(video)
    with torch.no_grad():
        logits = model(pixel_values=inputs["pixel_values"], input_features=inputs["input_features"]).logits
    masks = AudioVisualProcessor.from_pretrained(tmp_path).post_process_masks(
        logits, inputs["original_sizes"], inputs["frame_mask"]
    )
    assert all(np.array_equal(r["mask"], m) for r, m in zip(results, [m for clip in masks for m in clip]))


def test_pipeline_feeds_waveform_segments_to_a_panns_encoder(video, tmp_path):
    audio_config = {
        "model_type": "panns_cnn14",
        "block_channels": [4, 4, 4, 4, 4, 8],
        "embedding_size": 8,
        "num_labels": 5,
    }
    model = save_tiny_c3n(tmp_path, audio_config, PannsFeatureExtractor())
    inputs = AudioVisualProcessor.from_pretrained(tmp_path)(video)
    assert inputs["input_values"].shape == (2, 2, 16000) and "input_features" not in inputs
    results = pipeline("audio-visual-segmentation", model=str(tmp_path))(str(video), show_progress=False)
    with torch.no_grad():
        logits = model(pixel_values=inputs["pixel_values"], input_values=inputs["input_values"]).logits
    expected = (torch.sigmoid(logits[0, 1, 0]) > 0.5).numpy()
    resized_back = np.asarray(Image.fromarray(results[1]["mask"] * 255).resize((32, 32), Image.NEAREST)) > 0
    assert len(results) == 3 and (resized_back == expected).mean() > 0.9


def test_pipeline_needs_a_model_with_an_audio_encoder(video, tmp_path):
    save_tiny_c3n(tmp_path, None, VGGishFeatureExtractor())
    with pytest.raises(ValueError, match="no audio encoder"):
        pipeline("audio-visual-segmentation", model=str(tmp_path))(str(video), show_progress=False)


def test_overlay_colours_and_errors():
    frame = np.full((4, 4, 3), 100, dtype=np.uint8)
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0], mask[1, 1] = 1, 2
    overlay = overlay_mask(frame, mask, alpha=1.0)
    palette = avss_palette(3)
    assert overlay[0, 0].tolist() == palette[1].tolist() and overlay[1, 1].tolist() == palette[2].tolist()
    assert overlay[3, 3].tolist() == [100, 100, 100]
    with pytest.raises(ValueError, match="frame's size"):
        overlay_mask(frame, np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        overlay_mask(frame[..., 0], mask)


def test_gif_and_mp4_with_audio(tmp_path):
    overlays = [np.full((20, 30, 3), level, dtype=np.uint8) for level in (0, 120, 240)]
    gif = Image.open(save_gif(overlays, tmp_path / "o.gif"))
    assert gif.n_frames == 3 and gif.info["duration"] == 1000
    mp4 = save_mp4(overlays, tmp_path / "o.mp4", np.zeros(3 * 16000, dtype=np.float32), 16000)
    with av.open(str(mp4)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        assert sum(1 for _ in container.decode(video=0)) == 3
    with pytest.raises(ValueError, match="no frames"):
        save_gif([], tmp_path / "empty.gif")


def test_predict_command_writes_masks_overlays_and_summary(video, tmp_path):
    save_tiny_pcmanet(tmp_path / "model")
    out = tmp_path / "out"
    assert cli_main(["predict", str(tmp_path / "model"), str(video), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_frames"] == 3 and summary["model_type"] == "pcmanet"
    assert [frame["time"] for frame in summary["frames"]] == pytest.approx([0.5, 1.5, 2.5])
    for frame in summary["frames"]:
        mask = np.asarray(Image.open(out / frame["mask"]))
        assert mask.shape == (36, 44) and set(np.unique(mask)) <= {0, 255}
        assert frame["foreground_fraction"] == pytest.approx((mask > 0).mean())
        assert Image.open(out / frame["overlay"]).size == (44, 36)
    assert Image.open(out / "overlay.gif").n_frames == 3
    with av.open(str(out / "overlay.mp4")) as container:
        assert len(container.streams.audio) == 1
    with pytest.raises(FileNotFoundError, match="model folder"):
        cli_main(["predict", str(tmp_path / "missing"), str(video), "--out", str(out)])
