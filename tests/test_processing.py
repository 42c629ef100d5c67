"""AudioVisualProcessor: real videos, frame folders and arrays in; clips, masks and round trips out."""

import math

import numpy as np
import pytest
import torch
from media import frame_brightness, tone, write_frames_and_wav, write_video
from PIL import Image
from transformers import AutoProcessor

import avs_models  # noqa: F401  (registers the Auto classes)
from avs_models.models.vggish import VGGishFeatureExtractor
from avs_models.processing import (
    AudioVisualImageProcessor,
    AudioVisualProcessor,
    read_audio_file,
    read_frame_folder,
    read_video,
)

SILENCE = math.log(0.01)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def make_processor(**kwargs) -> AudioVisualProcessor:
    return AudioVisualProcessor(AudioVisualImageProcessor(size=32), VGGishFeatureExtractor(), **kwargs)


def grey_level(pixel_values: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of `[..., 3, H, W]` frames and return their mean grey level (0-255)."""
    return ((pixel_values * IMAGENET_STD + IMAGENET_MEAN) * 255).mean(dim=(-3, -2, -1))


@pytest.fixture(scope="module")
def six_second_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", seconds=6, silent_seconds=(2,))


def test_video_frames_at_the_end_of_each_second(six_second_video):
    clip = read_video(six_second_video)
    # 4 fps: the frame shown just before second k + 1 is frame 4k + 3, at 0.75 s into the second.
    assert clip.frame_times == pytest.approx([k + 0.75 for k in range(6)])
    assert [round(float(frame.mean())) for frame in clip.frames] == pytest.approx(
        [frame_brightness(4 * k + 3) for k in range(6)], abs=2
    )
    assert clip.frames[0].shape == (48, 64, 3)
    assert clip.sampling_rate == 16000 and abs(clip.audio_duration - 6.0) < 0.1
    middle = read_video(six_second_video, frame_time=0.5)
    assert middle.frame_times == pytest.approx([k + 0.25 for k in range(6)])


def test_video_to_clips_end_to_end(six_second_video):
    processor = make_processor(num_frames=3)
    inputs = processor(six_second_video)
    assert inputs["pixel_values"].shape == (2, 3, 3, 32, 32)
    assert inputs["input_features"].shape == (2, 3, 1, 96, 64)
    assert inputs["frame_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]
    assert inputs["original_sizes"].tolist() == [[[48, 64]] * 3] * 2
    assert inputs["frame_times"].flatten().tolist() == pytest.approx([k + 0.75 for k in range(6)])
    levels = grey_level(inputs["pixel_values"]).flatten()
    assert levels.tolist() == pytest.approx([frame_brightness(4 * k + 3) for k in range(6)], abs=2)
    # Audio windowing: second 2 (clip 0, frame 2) is silent, the others carry the tone. (Example k
    # covers 0.96 k .. 0.96 k + 0.975 s, so the silent one still catches a little of the tone.)
    means = inputs["input_features"].flatten(0, 1).flatten(1).mean(dim=1)
    assert means[2] < SILENCE + 0.3
    assert all(means[k] > SILENCE + 0.8 for k in (0, 1, 3, 4, 5))


def test_long_video_splits_into_padded_clips(tmp_path):
    video = write_video(tmp_path / "long.mp4", seconds=23, fps=2, size=(16, 16))
    inputs = make_processor()(video)
    assert inputs["pixel_values"].shape == (5, 5, 3, 32, 32)
    assert inputs["input_features"].shape == (5, 5, 1, 96, 64)
    assert inputs["frame_mask"].tolist() == [[1] * 5] * 4 + [[1, 1, 1, 0, 0]]
    assert inputs["frame_times"][4].tolist() == pytest.approx([20.5, 21.5, 22.5, -1, -1])
    # Audio ends at 23 s: the last example (3.84 s into the clip onwards) is padding silence.
    torch.testing.assert_close(inputs["input_features"][4, 4], torch.full((1, 96, 64), SILENCE))
    dropped = make_processor(pad_last_clip=False)(video)
    assert dropped["pixel_values"].shape[0] == 4 and bool(dropped["frame_mask"].all())


def test_frame_folder_with_wav_and_arrays_agree(tmp_path):
    frames_dir, wav = write_frames_and_wav(tmp_path, seconds=10)
    processor = make_processor()
    from_files = processor(frames_dir=frames_dir, audio_path=wav)
    assert from_files["pixel_values"].shape == (2, 5, 3, 32, 32)
    # Natural order: 2.png comes before 10.png.
    expected = [frame_brightness(index) for index in range(10)]
    assert grey_level(from_files["pixel_values"]).flatten().tolist() == pytest.approx(expected, abs=1)

    frames = [np.full((40, 30, 3), frame_brightness(index), dtype=np.uint8) for index in range(10)]
    as_arrays = processor(frames=frames, audio=tone(10, 16000), sampling_rate=16000)
    torch.testing.assert_close(as_arrays["pixel_values"], from_files["pixel_values"])
    torch.testing.assert_close(as_arrays["input_features"], from_files["input_features"], atol=1e-3, rtol=0)
    as_pil = processor(
        frames=[Image.fromarray(f) for f in frames], audio=tone(10, 16000), sampling_rate=16000
    )
    torch.testing.assert_close(as_pil["pixel_values"], as_arrays["pixel_values"])
    as_tensors = processor(
        frames=[torch.from_numpy(f).permute(2, 0, 1) for f in frames],
        audio=tone(10, 16000),
        sampling_rate=16000,
    )
    torch.testing.assert_close(as_tensors["pixel_values"], as_arrays["pixel_values"])


def test_frame_folder_follows_exif_orientation(tmp_path):
    # Phone cameras store a portrait photo landscape with an EXIF orientation: 6 = turn 90 degrees clockwise.
    frames_dir, wav = write_frames_and_wav(tmp_path, seconds=2, size=(30, 40))
    for path in frames_dir.iterdir():
        image = np.array(Image.open(path))
        image[:8, :8] = 255  # a white top-left corner, to check the turn
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(image).save(path.with_suffix(".jpg"), exif=exif, quality=95)
        path.unlink()
    frames = read_frame_folder(frames_dir)
    assert frames[0].shape == (40, 30, 3)
    assert frames[0][:8, -8:].mean() > 200 and frames[0][:8, :8].mean() < 150  # the corner went top-right
    inputs = make_processor(num_frames=2)(frames_dir=frames_dir, audio_path=wav)
    assert inputs["original_sizes"][0, 0].tolist() == [40, 30]


def test_sound_files_beyond_libsndfile_are_read_by_ffmpeg(tmp_path):
    # A phone's voice memo (AAC in an .m4a) with a folder of frames, as a wav would be.
    frames_dir, wav = write_frames_and_wav(tmp_path, seconds=3, rate=22050)
    memo = write_video(tmp_path / "memo.mp4", seconds=3, audio_rate=22050, with_video=False)
    memo = memo.rename(tmp_path / "memo.m4a")
    waveform, rate = read_audio_file(memo)
    # AAC's padding past the end is cut: the stream's own length.
    assert rate == 22050 and waveform.shape == (3 * 22050,)
    expected, _ = read_audio_file(wav)
    assert np.abs(waveform[2048:-2048] - expected[2048:-2048]).max() < 0.02  # lossy, but the same tone
    processor = make_processor(num_frames=3)
    from_memo = processor(frames_dir=frames_dir, audio_path=memo)
    from_wav = processor(frames_dir=frames_dir, audio_path=wav)
    # The tone's band agrees; AAC's quantisation noise only moves the near-silent bands.
    loudest = [inputs["input_features"].flatten(2).amax(dim=-1) for inputs in (from_memo, from_wav)]
    torch.testing.assert_close(*loudest, atol=0.05, rtol=0)


def test_frame_folder_of_mixed_sizes_is_an_error(tmp_path):
    frames_dir, wav = write_frames_and_wav(tmp_path, seconds=3, size=(30, 40))
    Image.new("RGB", (20, 10)).save(frames_dir / "3.png")
    with pytest.raises(ValueError, match=r"frames/3\.png is 20x10 but 1\.png is 40x30: .* one size"):
        make_processor()(frames_dir=frames_dir, audio_path=wav)


def test_silent_audio_is_valid():
    frames = [np.zeros((20, 20, 3), dtype=np.uint8)] * 5
    inputs = make_processor()(frames=frames, audio=np.zeros(5 * 16000), sampling_rate=16000)
    torch.testing.assert_close(inputs["input_features"], torch.full((1, 5, 1, 96, 64), SILENCE))


def test_processor_round_trip(tmp_path):
    processor = make_processor(num_frames=3, frame_time=0.5, pad_last_clip=False)
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, AudioVisualProcessor)
    assert (reloaded.num_frames, reloaded.frame_time, reloaded.pad_last_clip) == (3, 0.5, False)
    assert reloaded.image_processor.size == {"height": 32, "width": 32}
    assert isinstance(reloaded.feature_extractor, VGGishFeatureExtractor)
    frames = [np.full((20, 24, 3), 100, dtype=np.uint8)] * 3
    audio = tone(3, 16000)
    torch.testing.assert_close(
        reloaded(frames=frames, audio=audio, sampling_rate=16000)["pixel_values"],
        processor(frames=frames, audio=audio, sampling_rate=16000)["pixel_values"],
    )


def test_post_process_masks_binary_and_semantic():
    processor = make_processor()
    logits = torch.full((1, 2, 1, 4, 4), -5.0)
    logits[0, 0, 0, :2] = 5.0  # top half on in frame 0
    sizes = torch.tensor([[[8, 6], [8, 6]]])
    masks = processor.post_process_masks(logits, original_sizes=sizes, frame_mask=torch.tensor([[1, 0]]))
    assert len(masks) == 1 and len(masks[0]) == 1
    assert masks[0][0].shape == (8, 6) and masks[0][0].dtype == np.uint8
    assert masks[0][0][:4].all() and not masks[0][0][4:].any()

    semantic = torch.zeros(1, 1, 3, 2, 2)
    semantic[0, 0, 2, 0, 0] = 3.0
    semantic[0, 0, 1, 1, 1] = 3.0
    class_map = processor.post_process_masks(semantic)[0][0]
    assert class_map.tolist() == [[2, 0], [0, 1]]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "no input"),
        ({"frames": [], "audio": np.zeros(16000), "sampling_rate": 16000}, ValueError, "empty"),
        (
            {"frames": [np.zeros((8, 8, 3), np.uint8)] * 2, "audio": np.zeros(32000)},
            ValueError,
            "sampling_rate",
        ),
        ({"frames": [np.zeros((8, 8, 3), np.uint8)] * 2}, ValueError, "audio"),
        (
            {
                "frames": [np.zeros((8, 8, 3), np.uint8)] * 5,
                "audio": np.zeros(2 * 16000),
                "sampling_rate": 16000,
            },
            ValueError,
            "video is 3.00 s longer than the audio",
        ),
        (
            {
                "frames": [np.zeros((8, 8, 3), np.uint8)] * 2,
                "audio": np.zeros(5 * 16000),
                "sampling_rate": 16000,
            },
            ValueError,
            "audio is 3.00 s longer than the video",
        ),
        (
            {
                "frames": [np.zeros((8, 8), np.uint8)] * 2,
                "audio": np.zeros(2 * 16000),
                "sampling_rate": 16000,
            },
            ValueError,
            r"\[H, W, 3\]",
        ),
        (
            {"frames": ["not a frame"] * 2, "audio": np.zeros(2 * 16000), "sampling_rate": 16000},
            TypeError,
            "frame",
        ),
    ],
)
def test_processor_input_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_processor()(**kwargs)


def test_video_file_errors(tmp_path):
    processor = make_processor()
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        processor(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 10)
    with pytest.raises(ValueError, match="cannot read video file"):
        processor(garbage)
    with pytest.raises(ValueError, match="no audio track"):
        processor(write_video(tmp_path / "mute.mp4", seconds=2, with_audio=False))
    with pytest.raises(ValueError, match="no video stream"):
        processor(write_video(tmp_path / "audio_only.mp4", seconds=2, with_video=False))
    with pytest.raises(ValueError, match="less than one clip"):
        make_processor(pad_last_clip=False)(write_video(tmp_path / "short.mp4", seconds=2))


def test_video_whose_audio_ends_early_gets_silence_and_a_warning(tmp_path, caplog):
    # A file's streams carry timestamps: the seconds after its audio ends are silent, not an error.
    video = write_video(tmp_path / "short_audio.mp4", seconds=4, audio_seconds=1.5)
    with caplog.at_level("WARNING"):
        inputs = make_processor(num_frames=4)(video)
    assert "covers 1.5" in caplog.text and "of the 4.00 s of video" in caplog.text
    means = inputs["input_features"][0].flatten(1).mean(dim=1)
    assert means[0] > SILENCE + 0.8
    torch.testing.assert_close(means[2:], torch.full((2,), SILENCE))
