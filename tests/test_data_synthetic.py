"""The synthetic set: the audio decides which object is the target."""

import numpy as np
import pytest

from avs_models.data.avsbench import SYNTHETIC_CATEGORIES
from avs_models.data.synthetic import (
    SAMPLING_RATE,
    kind_sound,
    make_synthetic_avsbench,
    render_audio,
    render_frame,
    sample_scene,
)


def _dominant_frequency(signal: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(signal))
    return float(np.fft.rfftfreq(signal.size, 1 / SAMPLING_RATE)[spectrum.argmax()])


def test_same_frames_different_audio_give_different_masks():
    scene = sample_scene(np.random.default_rng(0), num_frames=5, num_objects=3, image_size=64)
    first = np.zeros((5, 3), dtype=bool)
    first[:, 0] = True
    second = np.zeros((5, 3), dtype=bool)
    second[:, 1] = True
    frames = [render_frame(scene, t) for t in range(5)]
    audio_first = render_audio(scene, first, np.random.default_rng(1))
    audio_second = render_audio(scene, second, np.random.default_rng(1))
    # Identical frames, different audio ...
    assert np.abs(audio_first - audio_second).max() > 0.1
    for t, (image, object_map) in enumerate(frames):
        assert np.array_equal(image, render_frame(scene, t)[0])
        mask_first = np.isin(object_map, np.flatnonzero(first[t]))
        mask_second = np.isin(object_map, np.flatnonzero(second[t]))
        # ... and a different right answer: the two masks are disjoint and both non-empty.
        assert mask_first.any() and mask_second.any() and not (mask_first & mask_second).any()


def test_each_second_sounds_like_its_sounding_objects():
    scene = sample_scene(np.random.default_rng(5), num_frames=3, num_objects=2, image_size=64)
    sounding = np.array([[True, False], [False, True], [False, False]])
    audio = render_audio(scene, sounding, np.random.default_rng(2))
    seconds = audio.reshape(3, SAMPLING_RATE)
    for t, index in ((0, 0), (1, 1)):
        alone = kind_sound(int(scene.kinds[index]), np.random.default_rng(9))
        assert abs(_dominant_frequency(seconds[t]) - _dominant_frequency(alone)) < 60 or SYNTHETIC_CATEGORIES[
            scene.kinds[index]
        ].startswith("synthetic-noise")
        assert np.sqrt((seconds[t] ** 2).mean()) > 0.05
    assert np.sqrt((seconds[2] ** 2).mean()) < 0.01, "a second with no sounding object is (nearly) silent"


def test_kinds_sound_different():
    fingerprints = []
    for kind in range(len(SYNTHETIC_CATEGORIES)):
        spectrum = np.abs(np.fft.rfft(kind_sound(kind, np.random.default_rng(0))))
        bands = np.add.reduceat(spectrum, np.arange(0, spectrum.size, 250))
        fingerprints.append(bands / bands.sum())
    fingerprints = np.array(fingerprints)
    distances = np.abs(fingerprints[:, None] - fingerprints[None]).sum(-1)
    assert distances[~np.eye(len(fingerprints), dtype=bool)].min() > 0.3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subset": "s5"}, "subset"),
        ({"num_videos": 0}, "num_videos"),
        ({"image_size": 8}, "image_size"),
        ({"num_objects": (1, 3)}, "num_objects"),
    ],
)
def test_bad_generator_arguments(tmp_path, kwargs, message):
    arguments = {"out_dir": tmp_path, "subset": "s4", "num_videos": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_synthetic_avsbench(**arguments)


def test_who_sounds_when():
    """S4: one object sounds the whole clip; MS3/AVSS-multi: several, changing from second to second."""
    from avs_models.data.synthetic import sample_sounding

    for seed in range(50):
        rng = np.random.default_rng(seed)
        single = sample_sounding(rng, "single", num_frames=5, num_objects=4)
        assert single.sum(axis=1).tolist() == [1] * 5 and single.any(axis=0).sum() == 1
        multi = sample_sounding(rng, "multi", num_frames=10, num_objects=3)
        assert multi.any(axis=1).all(), "every second has a sounding object"
        assert multi.any(axis=0).sum() >= 2, "the clip has at least two sources"
        assert len({row.tobytes() for row in multi}) >= 2, "the sounding set changes over time"
