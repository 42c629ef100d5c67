"""Real-world videos through the processor: frames and audio paired by timestamps, the rule for partial
seconds, rotation, frame rates, sample rates, channels and containers, and the errors of bad files."""

import logging
import re
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from media import beeps, frame_brightness, write_frames_and_wav, write_video

from avs_models.models.vggish import VGGishFeatureExtractor
from avs_models.processing import AudioVisualImageProcessor, AudioVisualProcessor, VideoReader, read_video


def make_processor(**kwargs) -> AudioVisualProcessor:
    return AudioVisualProcessor(AudioVisualImageProcessor(size=16), VGGishFeatureExtractor(), **kwargs)


def loudness_per_second(inputs) -> np.ndarray:
    """Loudest log-mel value of each real second of a processor output."""
    features = inputs["input_features"][inputs["frame_mask"].bool()]
    return features.flatten(1).amax(dim=1).numpy()


def loudest_seconds(inputs) -> list[int]:
    loudness = loudness_per_second(inputs)
    return np.flatnonzero(loudness > loudness.min() + 2.0).tolist()


def chosen_frames(clip) -> list[int]:
    """Index of the written frame each chosen frame shows (from its brightness)."""
    levels = {frame_brightness(index): index for index in range(40)}
    return [levels[min(levels, key=lambda level: abs(level - float(frame.mean())))] for frame in clip.frames]


@pytest.mark.parametrize("second", [0, 3, 6])
def test_a_beep_at_second_k_lands_in_window_k(tmp_path, second):
    video = write_video(tmp_path / "beep.mp4", seconds=8, fps=2, audio=beeps(8, 22050, (second,)))
    inputs = make_processor(num_frames=5)(video)
    assert inputs["frame_mask"].sum() == 8
    assert loudest_seconds(inputs) == [second]


def test_audio_starting_late_is_paired_by_timestamps(tmp_path, caplog):
    # The audio stream starts 2 s after the video: second 3 of the video holds the beep, seconds 0-1 are silent.
    audio = beeps(4, 22050, (3,), start=2.0)
    video = write_video(tmp_path / "late_audio.mp4", seconds=6, fps=2, audio_start=2.0, audio=audio)
    with caplog.at_level(logging.WARNING):
        inputs = make_processor(num_frames=3)(video)
    assert inputs["frame_mask"].sum() == 6
    assert loudest_seconds(inputs) == [3]
    silence = float(np.log(0.01))
    assert loudness_per_second(inputs)[:2] == pytest.approx([silence, silence], abs=1e-3)
    assert "covers 4.05 s of the 6.00 s" in caplog.text


def test_video_starting_late_counts_seconds_from_its_first_frame(tmp_path):
    # Video from 1.5 s to 6.5 s, audio from 0: second k spans [1.5 + k, 2.5 + k); the beep plays in second 2.
    video = write_video(
        tmp_path / "late_video.mp4", seconds=5, fps=4, video_start=1.5, audio=beeps(6.5, 22050, (3.5,))
    )
    clip = read_video(video)
    assert len(clip.frames) == 5 and clip.start_time == pytest.approx(1.5)
    assert clip.frame_times == pytest.approx([1.5 + k + 0.75 for k in range(5)])
    assert chosen_frames(clip) == [4 * k + 3 for k in range(5)]
    inputs = make_processor(num_frames=5)(video)
    assert loudest_seconds(inputs) == [2]
    assert inputs["second_starts"][0].tolist() == pytest.approx([1.5 + k for k in range(5)])


def test_variable_frame_rate_gives_one_frame_per_second(tmp_path):
    times = [0.0, 0.1, 0.5, 0.55, 1.3, 2.0, 2.9, 3.0, 4.5, 6.0, 6.01, 7.7, 9.8]
    clip = read_video(write_video(tmp_path / "vfr.mp4", seconds=10, frame_times=times))
    assert len(clip.frames) == 10
    # The frame on screen just before the end of each second (a frame at exactly k + 1 belongs to the next).
    assert clip.frame_times == pytest.approx([0.55, 1.3, 2.9, 3.0, 4.5, 4.5, 6.01, 7.7, 7.7, 9.8])
    assert chosen_frames(clip) == [3, 4, 6, 7, 8, 8, 10, 11, 11, 12]


@pytest.mark.parametrize(("seconds", "expected"), [(7.4, 7), (7.6, 8), (0.5, 1), (3.0, 3)])
def test_partial_last_second_counts_when_at_least_half_covered(tmp_path, seconds, expected):
    video = write_video(tmp_path / "partial.mp4", seconds=seconds, fps=10, size=(16, 16))
    inputs = make_processor(num_frames=2)(video)
    assert int(inputs["frame_mask"].sum()) == expected
    real_times = inputs["frame_times"][inputs["frame_mask"].bool()]
    # Each second shows the frame before its end; a partial last second shows the video's last frame.
    assert float(real_times[-1]) == pytest.approx(min(expected, seconds) - 0.1)


def test_too_short_video_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"too short: 0\.40 s of video, at least 0\.5 s"):
        make_processor()(write_video(tmp_path / "short.mp4", seconds=0.4, fps=10))


def test_rotation_metadata_is_applied(tmp_path):
    video = write_video(tmp_path / "phone.mp4", seconds=2, size=(48, 64), rotation=90, marker=True)
    clip = read_video(video)
    # Stored 48 x 64 with a white top-left corner; a player turns it 90 degrees counter-clockwise.
    frame = clip.frames[0]
    assert frame.shape == (64, 48, 3)
    assert frame[-8:, :8].mean() > 200 and frame[:8, :8].mean() < 150 and frame[-8:, -8:].mean() < 150
    inputs = make_processor()(video)
    assert inputs["original_sizes"][0, 0].tolist() == [64, 48]


def test_non_square_pixels_are_shown_square(tmp_path):
    # Stored 48 x 64 with pixels 3/2 as wide as high (anamorphic DV, broadcast): a player shows 48 x 96.
    video = write_video(
        tmp_path / "anamorphic.mp4", seconds=2, size=(48, 64), sample_aspect_ratio=Fraction(3, 2), marker=True
    )
    frame = read_video(video).frames[0]
    assert frame.shape == (48, 96, 3)
    assert frame[:10, :22].mean() > 200 and frame[:10, 26:40].mean() < 150  # the marker, stretched too
    assert make_processor()(video)["original_sizes"][0, 0].tolist() == [48, 96]


def test_non_square_pixels_are_stretched_before_rotation(tmp_path):
    video = write_video(
        tmp_path / "both.mp4", seconds=2, size=(48, 64), sample_aspect_ratio=Fraction(3, 2), rotation=90
    )
    assert read_video(video).frames[0].shape == (96, 48, 3)


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (44100, 1), (48000, 2)])
def test_sample_rates_and_stereo_pair_by_time(tmp_path, rate, channels):
    video = write_video(
        tmp_path / f"r{rate}.mp4", seconds=4, audio_rate=rate, channels=channels, audio=beeps(4, rate, (2,))
    )
    clip = read_video(video)
    assert clip.sampling_rate == 16000 and len(clip.waveform) == 4 * 16000
    assert loudest_seconds(make_processor(num_frames=4)(video)) == [2]


@pytest.mark.parametrize("suffix", [".webm", ".mkv", ".mov", ".avi"])
def test_other_containers(tmp_path, suffix):
    rate = 48000 if suffix == ".webm" else 22050  # Opus runs at 48 kHz
    video = write_video(tmp_path / f"clip{suffix}", seconds=4, audio_rate=rate, audio=beeps(4, rate, (1,)))
    inputs = make_processor(num_frames=4)(video)
    assert int(inputs["frame_mask"].sum()) == 4 and loudest_seconds(inputs) == [1]
    assert inputs["original_sizes"][0, 0].tolist() == [48, 64]


def test_windows_equal_the_whole_clip(tmp_path):
    video = write_video(
        tmp_path / "long.mp4", seconds=13, fps=3, audio_rate=44100, audio=beeps(13, 44100, (4, 11))
    )
    whole = read_video(video)
    windows = list(VideoReader(video).windows(seconds_per_window=4))
    assert [len(window.frames) for window in windows] == [4, 4, 4, 1]
    assert [window.first_second for window in windows] == [0, 4, 8, 12]
    np.testing.assert_array_equal(np.concatenate([window.waveform for window in windows]), whole.waveform)
    processor = make_processor(num_frames=2)
    pieces = list(processor.iter_clips(video, clips_per_window=3, return_frames=True))
    together = processor(video)
    for key in ("pixel_values", "input_features", "frame_mask", "frame_times", "second_starts"):
        torch.testing.assert_close(torch.cat([piece[key] for piece in pieces]), together[key], rtol=0, atol=0)
    assert sum(len(piece["frames"]) for piece in pieces) == 13 and pieces[0]["frames"][0].shape == (48, 64, 3)


def test_frames_folder_and_wav_follow_the_same_rule(tmp_path):
    frames_dir, wav = write_frames_and_wav(tmp_path, seconds=6, rate=8000, audio=beeps(6, 8000, (4,)))
    inputs = make_processor(num_frames=3)(frames_dir=frames_dir, audio_path=wav)
    assert loudest_seconds(inputs) == [4]
    assert inputs["second_starts"].flatten().tolist() == [0, 1, 2, 3, 4, 5]
    assert inputs["frame_times"].flatten().tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: write_video(d / "mute.mp4", seconds=2, with_audio=False), "has no audio track"),
        (lambda d: write_video(d / "sound.mp4", seconds=2, with_video=False), "has no video stream"),
        (
            lambda d: (d / "notes.mp4").write_bytes(b"not a video at all" * 20) and d / "notes.mp4",
            "cannot read video file",
        ),
        (lambda d: d / "missing.mp4", "video file not found"),
        (lambda d: d, "is a folder, not a video file"),
    ],
)
def test_bad_video_files(tmp_path, make, match):
    with pytest.raises((ValueError, OSError), match=match):
        make_processor()(make(tmp_path))


def test_truncated_web_video_warns_and_keeps_what_decodes(tmp_path, caplog):
    # Web videos keep their index first ("faststart"): a download cut short still opens and decodes
    # up to where its data stops. Cut after the last packet before 3 s.
    video = write_video(tmp_path / "full.mp4", seconds=6, fps=4, faststart=True)
    with av.open(str(video)) as container:
        packets = sorted(
            (packet.pos, float(packet.pts * packet.time_base))
            for packet in container.demux()
            if packet.pts is not None
        )
    cut = next(position for position, time in packets if time > 3.0)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(video.read_bytes()[:cut])
    with caplog.at_level(logging.WARNING):
        clip = read_video(truncated)
    assert len(clip.frames) == 3
    assert re.search(
        r"cut\.mp4 stops after 3\.\d\d s though its header says 6\.00 s: the file may be truncated",
        caplog.text,
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_video(video)
    assert "truncated" not in caplog.text


def test_damaged_packet_is_an_error_saying_how_far_it_got(tmp_path):
    video = write_video(tmp_path / "full.mp4", seconds=6, fps=4, faststart=True)
    with av.open(str(video)) as container:
        packet = next(
            packet
            for packet in container.demux(audio=0)
            if packet.pts is not None and packet.pts * packet.time_base > 3.0
        )
        cut = packet.pos + packet.size // 2  # the file ends inside this AAC packet
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(video.read_bytes()[:cut])
    with pytest.raises(
        ValueError, match=r"cannot decode .*damaged\.mp4 after [23]\.\d\d s of video: .*truncated"
    ):
        read_video(damaged)


def test_several_audio_tracks_use_the_first_and_say_so(tmp_path, caplog):
    first = write_video(tmp_path / "a.mp4", seconds=3, audio=beeps(3, 22050, (0,)))
    second = write_video(tmp_path / "b.mp4", seconds=3, audio=beeps(3, 22050, (2,)))
    both = tmp_path / "two_tracks.mp4"
    with av.open(str(first)) as a, av.open(str(second)) as b, av.open(str(both), "w") as out:
        streams = {
            (name, stream.index): out.add_stream_from_template(stream)
            for name, source in (("a", a), ("b", b))
            for stream in source.streams
            if name == "a" or stream.type == "audio"
        }
        for name, source in (("a", a), ("b", b)):
            for packet in source.demux():
                if packet.dts is not None and (name, packet.stream.index) in streams:
                    packet.stream = streams[name, packet.stream.index]
                    out.mux(packet)
    with caplog.at_level(logging.WARNING):
        inputs = make_processor(num_frames=3)(both)
    assert "two_tracks.mp4 has 2 audio tracks; using the first (track 0)" in caplog.text
    assert loudest_seconds(inputs) == [0]


def test_truncated_video(tmp_path):
    video = write_video(tmp_path / "full.mp4", seconds=4)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot read video file .*truncated.mp4"):
        make_processor()(truncated)
