"""End to end: a real video through the processor, a tiny PCMANet, the pipeline, overlays and `avs-models predict`."""

import json

import av
import numpy as np
import pytest
import torch
from media import write_frames_and_wav, write_video
from PIL import Image
from test_beats import TINY as TINY_BEATS_CONFIG
from tiny_training import TINY_MODEL
from transformers import pipeline

import avs_models  # noqa: F401  (registers the task and the Auto classes)
from avs_models import (
    C3NConfig,
    C3NForAudioVisualSegmentation,
    PCMANetConfig,
    PCMANetForAudioVisualSegmentation,
)
from avs_models.cli import main as cli_main
from avs_models.data.avss_classes import avss_id2label, avss_palette
from avs_models.models.backbones import pvt_v2_b5_backbone_config, resnet50_backbone_config
from avs_models.models.beats import BeatsFeatureExtractor
from avs_models.models.panns import PannsFeatureExtractor
from avs_models.models.vggish import VGGishFeatureExtractor
from avs_models.processing import (
    AudioVisualImageProcessor,
    AudioVisualProcessor,
    draw_legend,
    mask_palette,
    overlay_mask,
    save_gif,
    save_mp4,
    side_by_side,
)
from avs_models.processing.visualization import BINARY_COLOUR, legend_entries


def save_tiny_pcmanet(folder, num_labels: int = 1, id2label: dict | None = None):
    config = PCMANetConfig(
        backbone_config=resnet50_backbone_config(
            embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]
        ),
        hidden_size=16,
        avga_groups=4,
        qsca_num_heads=2,
        qsca_head_dim=8,
        qsca_pool_sizes=[4, 2, 1, 1],
        **({"id2label": id2label} if id2label else {"num_labels": num_labels}),
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


def save_tiny_c3n(folder, audio_config: dict | None, feature_extractor, audio_embed_dim: int = 8):
    config = C3NConfig(
        backbone_config=pvt_v2_b5_backbone_config(
            depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 1, 1]
        ),
        hidden_size=16,
        head_hidden_sizes=[8, 4],
        num_visual_classes=6,
        num_audio_classes=5,
        audio_embed_dim=audio_embed_dim,
        audio_config=audio_config,
        num_labels=1,
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
    results = segmenter(str(video), batch_size=1)
    assert [result["time"] for result in results] == pytest.approx([0.5, 1.5, 2.5])
    assert [result["start"] for result in results] == [0.0, 1.0, 2.0]
    assert all(result["mask"].shape == (36, 44) and "labels" not in result for result in results)
    everything = segmenter(str(video), threshold=1e-6)
    assert all(result["mask"].all() for result in everything)
    for threshold in (0.0, 1.0, 2, "high"):
        with pytest.raises(ValueError, match="threshold"):
            segmenter(str(video), threshold=threshold)
    with pytest.raises(TypeError, match="video path"):
        segmenter(123)


def test_batches_of_clips_and_lists_of_videos_equal_one_by_one(tmp_path):
    save_tiny_pcmanet(tmp_path / "model")
    videos = [
        str(write_video(tmp_path / f"v{seconds}.mp4", seconds=seconds, fps=2, size=(20 + 2 * seconds, 24)))
        for seconds in (3, 6, 1)
    ]
    segmenter = pipeline("audio-visual-segmentation", model=str(tmp_path / "model"))
    one_by_one = [segmenter(video) for video in videos]
    assert [len(results) for results in one_by_one] == [3, 6, 1]
    for batch_size in (2, 3, 5):
        batched = segmenter(videos, batch_size=batch_size)
        assert len(batched) == 3
        for expected, got in zip(one_by_one, batched):
            assert [r["time"] for r in got] == [r["time"] for r in expected]
            assert all(np.array_equal(r["mask"], e["mask"]) for r, e in zip(got, expected))
    streamed = list(segmenter.stream(videos[1], batch_size=2, return_frames=True))
    assert all(np.array_equal(r["mask"], e["mask"]) for r, e in zip(streamed, one_by_one[1]))
    assert [r["frame"].shape for r in streamed] == [(32, 24, 3)] * 6


def test_pipeline_semantic_model_reports_labels(video, tmp_path):
    save_tiny_pcmanet(tmp_path, num_labels=3)
    results = pipeline("audio-visual-segmentation", model=str(tmp_path))(str(video))
    assert len(results) == 3
    for result in results:
        present = sorted(int(c) for c in np.unique(result["mask"]) if c)
        assert result["labels"] == [f"LABEL_{c}" for c in present]
        assert len(result["scores"]) == len(present) and all(0 < s <= 1 for s in result["scores"])


def test_avss_model_names_its_classes(video, tmp_path):
    model, _ = save_tiny_pcmanet(tmp_path, id2label=avss_id2label())
    assert model.config.num_labels == 71
    results = pipeline("audio-visual-segmentation", model=str(tmp_path))(str(video))
    names = set(avss_id2label().values())
    assert all(set(result["labels"]) <= names for result in results)
    assert any(result["labels"] for result in results)


def test_config_and_logits_must_agree_on_binary_or_semantic(video, tmp_path):
    save_tiny_pcmanet(tmp_path)
    segmenter = pipeline("audio-visual-segmentation", model=str(tmp_path))
    segmenter.model.config.num_labels = 2  # a config that says semantic, with one output channel
    with pytest.raises(ValueError, match="logits have 1 channel"):
        segmenter(str(video))


TINY_BEATS = {"model_type": "beats", **TINY_BEATS_CONFIG, "num_hidden_layers": 1}
TINY_PANNS = {
    "model_type": "panns_cnn14",
    "block_channels": [4, 4, 4, 4, 4, 8],
    "embedding_size": 8,
    "num_labels": 5,
}
C3N_AUDIO_ENCODERS = {
    "vggish": (TINY_VGGISH_AUDIOSET, VGGishFeatureExtractor, 8, "input_features"),
    "panns": (TINY_PANNS, PannsFeatureExtractor, 8, "input_values"),
    "beats": (TINY_BEATS, BeatsFeatureExtractor, 16, "input_values"),
}


@pytest.mark.parametrize("encoder", sorted(C3N_AUDIO_ENCODERS))
def test_c3n_predicts_end_to_end_with_each_audio_encoder(video, tmp_path, encoder):
    audio_config, extractor, width, audio_key = C3N_AUDIO_ENCODERS[encoder]
    model = save_tiny_c3n(tmp_path / "model", audio_config, extractor(), audio_embed_dim=width)
    processor = AudioVisualProcessor.from_pretrained(tmp_path / "model")
    inputs = processor(video)
    results = pipeline("audio-visual-segmentation", model=str(tmp_path / "model"))(str(video))
    assert [result["time"] for result in results] == pytest.approx([0.5, 1.5, 2.5])
    logits = model(pixel_values=inputs["pixel_values"], **{audio_key: inputs[audio_key]}).logits.detach()
    expected = processor.post_process_masks(logits, inputs["original_sizes"], inputs["frame_mask"])
    assert all(np.array_equal(r["mask"], m) for r, m in zip(results, [m for clip in expected for m in clip]))

    out = tmp_path / "out"
    assert cli_main(["predict", str(tmp_path / "model"), str(video), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_frames"] == 3 and summary["model_type"] == "c3n" and summary["threshold"] == 0.5
    for frame, result in zip(summary["frames"], results):
        assert np.array_equal(np.asarray(Image.open(out / frame["mask"])) > 0, result["mask"] > 0)


def test_pipeline_needs_a_model_with_an_audio_encoder(video, tmp_path):
    save_tiny_c3n(tmp_path, None, VGGishFeatureExtractor())
    with pytest.raises(ValueError, match="no audio encoder"):
        pipeline("audio-visual-segmentation", model=str(tmp_path))(str(video))


def test_overlay_colours_outline_and_errors():
    frame = np.full((4, 4, 3), 100, dtype=np.uint8)
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0], mask[1, 1] = 1, 2
    overlay = overlay_mask(frame, mask, alpha=1.0, outline=False)
    palette = avss_palette(3)
    assert overlay[0, 0].tolist() == palette[1].tolist() and overlay[1, 1].tolist() == palette[2].tolist()
    assert overlay[3, 3].tolist() == [100, 100, 100]
    binary = overlay_mask(frame, (mask > 0).astype(np.uint8), alpha=1.0, outline=False)
    assert binary[0, 0].tolist() == list(BINARY_COLOUR)
    with pytest.raises(ValueError, match="frame's size"):
        overlay_mask(frame, np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        overlay_mask(frame[..., 0], mask)
    with pytest.raises(ValueError, match="alpha"):
        overlay_mask(frame, mask, alpha=1.5)


@pytest.mark.parametrize("level", [10, 245])
def test_outline_stays_visible_on_dark_and_bright_frames(level):
    frame = np.full((60, 60, 3), level, dtype=np.uint8)
    mask = np.zeros((60, 60), dtype=np.uint8)
    mask[20:40, 20:40] = 1
    overlay = overlay_mask(frame, mask, alpha=0.5).astype(int)
    # Across the border: a white line in a black halo, so one of them contrasts with any background.
    across = overlay[15:25, 30]
    assert (across >= 250).all(axis=-1).any() and (across <= 5).all(axis=-1).any()
    inside = overlay[30, 30]
    assert abs(inside - level).max() >= 60  # the fill differs clearly from the background


def test_legend_and_side_by_side():
    frame = np.full((120, 160, 3), 30, dtype=np.uint8)
    mask = np.zeros((120, 160), dtype=np.uint8)
    mask[60:, 80:] = 7
    palette = mask_palette(71)
    with_legend = draw_legend(overlay_mask(frame, mask), legend_entries(mask, avss_id2label(), palette))
    assert with_legend.shape == frame.shape
    corner = with_legend[:20, :60]
    assert (np.abs(corner.astype(int) - palette[7]).sum(axis=-1) < 10).any()  # the swatch
    assert (corner > 200).all(axis=-1).any()  # white text
    strip = side_by_side(frame, with_legend)
    assert strip.shape == (120, 2 * 160 + 4, 3)


def test_gif_and_mp4_with_audio(tmp_path):
    overlays = [np.full((20, 30, 3), level, dtype=np.uint8) for level in (0, 120, 240)]
    gif = Image.open(save_gif(overlays, tmp_path / "o.gif"))
    assert gif.n_frames == 3 and gif.info["duration"] == 1000
    gif.seek(1)
    assert np.abs(np.asarray(gif.convert("RGB")).astype(int) - 120).max() <= 2
    stereo = np.stack([np.zeros(3 * 44100), np.full(3 * 44100, 0.1)], axis=1).astype(np.float32)
    mp4 = save_mp4(overlays, tmp_path / "o.mp4", stereo, 44100)
    with av.open(str(mp4)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        audio = container.streams.audio[0]
        assert (audio.codec_context.sample_rate, audio.codec_context.channels) == (44100, 2)
        assert sum(1 for _ in container.decode(video=0)) == 3
    with pytest.raises(ValueError, match="no frames"):
        save_gif([], tmp_path / "empty.gif")


@pytest.mark.parametrize(
    ("suffix", "rate", "channels", "codec"),
    [
        (".mp4", 22050, 1, "aac"),
        (".webm", 48000, 2, "opus"),
        (".mov", 44100, 2, "aac"),
        (".avi", 48000, 1, "aac"),
        (".avi", 16000, 2, "aac"),
    ],
)
def test_predict_keeps_the_videos_own_audio(tmp_path, suffix, rate, channels, codec):
    save_tiny_pcmanet(tmp_path / "model")
    video = write_video(
        tmp_path / f"clip{suffix}", seconds=3, fps=2, size=(36, 44), audio_rate=rate, channels=channels
    )
    out = tmp_path / "out"
    assert cli_main(["predict", str(tmp_path / "model"), str(video), "--out", str(out)]) == 0
    with av.open(str(out / "overlay.mp4")) as container:
        audio = container.streams.audio[0]
        # AAC and Opus are copied as they are; PCM (mov, avi) does not fit MP4 and is re-encoded at its
        # rate and channels, also where AVI leaves the channel order unnamed.
        assert audio.codec_context.name == codec
        assert (audio.codec_context.sample_rate, audio.codec_context.channels) == (rate, channels)
        assert float(audio.duration * audio.time_base) == pytest.approx(3.0, abs=0.05)


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
        assert sum(1 for _ in container.decode(video=0)) == 3


def test_predict_never_mixes_with_an_earlier_prediction(tmp_path, capsys):
    save_tiny_pcmanet(tmp_path / "model")
    long_video = write_video(tmp_path / "long.mp4", seconds=4, fps=2, size=(36, 44))
    short_video = write_video(tmp_path / "short.mp4", seconds=2, fps=2, size=(36, 44))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    assert cli_main(["predict", str(tmp_path / "model"), str(long_video), "--out", str(out)]) == 0
    assert len(list((out / "masks").iterdir())) == 4
    capsys.readouterr()
    assert cli_main(["predict", str(tmp_path / "model"), str(short_video), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "already holds a prediction (masks, overlays, overlay.gif, overlay.mp4, summary.json)" in error
    assert "--overwrite" in error and len(list((out / "masks").iterdir())) == 4
    assert (
        cli_main(["predict", str(tmp_path / "model"), str(short_video), "--out", str(out), "--overwrite"])
        == 0
    )
    assert sorted(path.name for path in (out / "masks").iterdir()) == ["mask_0000.png", "mask_0001.png"]
    assert len(list((out / "overlays").iterdir())) == 2
    assert json.loads((out / "summary.json").read_text())["num_frames"] == 2
    assert (out / "notes.txt").read_text() == "the user's own file"


def test_predict_several_videos_each_into_its_own_folder(tmp_path):
    save_tiny_pcmanet(tmp_path / "model")
    videos = [
        write_video(tmp_path / "a.mp4", seconds=2, fps=2, size=(36, 44)),
        write_video(tmp_path / "b.mkv", seconds=3, fps=2, size=(44, 36)),
    ]
    out = tmp_path / "out"
    assert cli_main(["predict", str(tmp_path / "model"), *map(str, videos), "--out", str(out)]) == 0
    for video, seconds, size in zip(videos, (2, 3), ((44, 36), (36, 44))):
        summary = json.loads((out / video.stem / "summary.json").read_text())
        assert summary["input"] == str(video)
        assert summary["num_frames"] == seconds
        masks = sorted((out / video.stem / "masks").iterdir())
        assert len(masks) == seconds and Image.open(masks[0]).size == size
    # The same masks as one video at a time.
    alone = tmp_path / "alone"
    assert cli_main(["predict", str(tmp_path / "model"), str(videos[1]), "--out", str(alone)]) == 0
    for mask in sorted((alone / "masks").iterdir()):
        assert np.array_equal(
            np.asarray(Image.open(mask)), np.asarray(Image.open(out / "b" / "masks" / mask.name))
        )


def test_several_inputs_are_all_checked_before_any_is_written(tmp_path, capsys):
    save_tiny_pcmanet(tmp_path / "model")
    good = write_video(tmp_path / "good.mp4", seconds=2, fps=2, size=(36, 44))
    mute = write_video(tmp_path / "mute.mp4", seconds=2, with_audio=False)
    same_name = write_video((tmp_path / "other").mkdir() or tmp_path / "other" / "good.mp4", seconds=2)
    frames_dir, _ = write_frames_and_wav(tmp_path, seconds=2)
    out = tmp_path / "out"
    model = str(tmp_path / "model")
    for inputs, message in [
        ([good, mute], "mute.mp4 has no audio track"),
        ([good, same_name], f"{good} and {same_name} would both write to {out / 'good'}: "),
        ([good, frames_dir], "frames is a folder of frames: predict it alone, with --audio"),
    ]:
        assert cli_main(["predict", model, *map(str, inputs), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_predict_rotated_video_and_side_by_side(tmp_path):
    save_tiny_pcmanet(tmp_path / "model")
    video = write_video(tmp_path / "phone.mp4", seconds=2, size=(36, 44), rotation=90, marker=True)
    out = tmp_path / "out"
    assert (
        cli_main(["predict", str(tmp_path / "model"), str(video), "--out", str(out), "--side-by-side"]) == 0
    )
    assert Image.open(out / "masks" / "mask_0000.png").size == (36, 44)  # upright: 44 high, 36 wide
    strip = np.asarray(Image.open(out / "overlays" / "frame_0001.png"))
    assert strip.shape == (44, 2 * 36 + 4, 3)
    assert (
        strip[-6:, :6].mean() > 200 and strip[:6, :6].mean() < 150
    )  # the frame, turned as a player shows it


def test_predict_frames_folder_with_audio(tmp_path):
    save_tiny_pcmanet(tmp_path / "model")
    frames_dir, wav = write_frames_and_wav(tmp_path, seconds=3, rate=8000)
    out = tmp_path / "out"
    assert (
        cli_main(
            ["predict", str(tmp_path / "model"), str(frames_dir), "--audio", str(wav), "--out", str(out)]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_frames"] == 3 and summary["audio"] == str(wav)
    assert [frame["time"] for frame in summary["frames"]] == [1.0, 2.0, 3.0]
    with av.open(str(out / "overlay.mp4")) as container:
        assert container.streams.audio[0].codec_context.sample_rate == 8000


def test_avss_predict_writes_class_ids_and_a_legend(video, tmp_path):
    save_tiny_pcmanet(tmp_path / "model", id2label=avss_id2label())
    out = tmp_path / "out"
    assert cli_main(["predict", str(tmp_path / "model"), str(video), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"] is None and summary["num_labels"] == 71
    names = set(avss_id2label().values())
    assert all(set(frame["labels"]) <= names for frame in summary["frames"])
    mask = np.asarray(Image.open(out / summary["frames"][0]["mask"]))
    assert mask.max() < 71


def test_avss_converters_and_training_name_the_71_classes():
    from avs_models.models.pcmanet.convert_pcmanet_original_to_hf import config_from_official_state_dict
    from avs_models.training import TrainingConfig
    from avs_models.training.trainer import build_model

    official = {
        "resnet.conv1.weight": torch.zeros(1),
        "conv1.0.weight": torch.zeros(256, 8),
        "avga1.seq1.0.weight": torch.zeros(8, 32),
        "output_conv1.3.weight": torch.zeros(71, 8),
    }
    assert config_from_official_state_dict(official).id2label == avss_id2label()
    official["output_conv1.3.weight"] = torch.zeros(1, 8)
    assert config_from_official_state_dict(official).num_labels == 1
    tiny = {**TINY_MODEL["config"], "num_labels": 71}
    model = build_model(TrainingConfig(subset="avss", model={"model_type": "pcmanet", "config": tiny}))
    assert model.config.id2label[13] == "cello" and model.config.num_labels == 71
    binary = build_model(
        TrainingConfig(subset="ms3", model={"model_type": "pcmanet", "config": {**tiny, "num_labels": 1}})
    )
    assert binary.config.num_labels == 1
