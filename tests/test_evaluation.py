"""`avs-models evaluate`, audio noise at a given SNR and swapped audio."""

import json

import numpy as np
import pytest
import torch
from tiny_training import TINY_MODEL
from transformers import AutoConfig

from avs_models.cli import main
from avs_models.data import decode_wav, make_synthetic_avsbench
from avs_models.data.transforms import to_pil
from avs_models.evaluation import PerturbedSplit, add_noise_at_snr, evaluate_split
from avs_models.models.auto import AutoModelForAudioVisualSegmentation
from avs_models.training import AVSBenchSplit


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_avsbench(root, "s4", 6, seed=1, image_size=32)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = AutoConfig.for_model(TINY_MODEL["model_type"], **TINY_MODEL["config"])
    folder = tmp_path_factory.mktemp("model")
    AutoModelForAudioVisualSegmentation.from_config(config).save_pretrained(folder)
    return folder


def test_noise_has_the_requested_snr():
    rng = np.random.default_rng(0)
    waveform = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32)
    noisy = add_noise_at_snr(waveform, 5.0, rng)
    measured = 10 * np.log10(
        np.mean(waveform.astype(np.float64) ** 2) / np.mean((noisy - waveform).astype(np.float64) ** 2)
    )
    assert measured == pytest.approx(5.0, abs=0.1)


def test_audio_variants(data_dir):
    split = AVSBenchSplit(data_dir, "s4", "train")
    swapped = PerturbedSplit(split, swap_audio=True)
    assert swapped[0]["audio"] == split[1]["audio"] and swapped[len(split) - 1]["audio"] == split[0]["audio"]
    noisy = PerturbedSplit(split, snr_db=0.0)
    clean_wave, rate = decode_wav(split[0]["audio"])
    noisy_wave, noisy_rate = decode_wav(noisy[0]["audio"])
    assert rate == noisy_rate and noisy_wave.shape == clean_wave.shape
    assert not np.allclose(noisy_wave, clean_wave)
    noisy_frames = PerturbedSplit(split, frame_noise_std=0.1)[0]["frames"]
    clean_pixels = np.asarray(to_pil(split[0]["frames"][0]).convert("RGB"), dtype=np.float64) / 255
    difference = np.asarray(noisy_frames[0], dtype=np.float64) / 255 - clean_pixels
    assert 0.05 < difference.std() < 0.1  # clipping at 0 and 1 trims the noise a little
    with pytest.raises(ValueError, match="frame_noise_std"):
        PerturbedSplit(split, frame_noise_std=-1)
    with pytest.raises(ValueError, match="at least 2"):
        PerturbedSplit([split[0]], swap_audio=True)


def test_evaluate_command_prints_table_and_json(data_dir, model_dir, tmp_path, capsys):
    output = tmp_path / "result.json"
    argv = [
        "evaluate", str(model_dir), str(data_dir), "--subset", "s4", "--split", "train", "--image-size", "32",
        "--per-category", "--noise-snr", "0", "--frame-noise", "0.2", "--json", str(output),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "audio noise 0 dB" in printed and "frame noise std 0.2" in printed
    results = json.loads(output.read_text())
    model = AutoModelForAudioVisualSegmentation.from_pretrained(model_dir)
    direct = evaluate_split(model, data_dir, "s4", "train", image_size=32)
    assert results["clean"]["miou"] == pytest.approx(direct["miou"])
    assert results["clean"]["fscore"] == pytest.approx(direct["fscore"])
    assert results["clean"]["num_videos"] == 4 and results["clean"]["definition"] == "official"
    assert set(results["clean"]["per_category"]) == {
        str(c) for c in {r.group for r in split_records(data_dir)}
    }


def split_records(data_dir):
    from avs_models.data import AVSBenchReader

    return AVSBenchReader(data_dir, "s4").records("train")


def test_evaluate_command_errors(tmp_path, data_dir, model_dir, capsys):
    assert main(["evaluate", str(tmp_path / "none"), str(data_dir)]) == 2
    assert f"error: MODEL_DIR '{tmp_path / 'none'}' is not a folder" in capsys.readouterr().err
    assert main(["evaluate", str(model_dir), str(model_dir), str(data_dir)]) == 2
    assert f"error: MODEL_DIR given more than once: {model_dir}" in capsys.readouterr().err


def test_evaluate_command_prepares_inputs_with_the_saved_processor(data_dir, model_dir, tmp_path, capsys):
    from avs_models import VGGishFeatureExtractor
    from avs_models.processing import AudioVisualImageProcessor, AudioVisualProcessor

    folder = tmp_path / "model"
    model = AutoModelForAudioVisualSegmentation.from_pretrained(model_dir)
    model.save_pretrained(folder)
    # Frames scaled to [0, 1] only: a different input from the default ImageNet normalisation.
    processor = AudioVisualProcessor(
        AudioVisualImageProcessor(size=24, do_normalize=False), VGGishFeatureExtractor()
    )
    processor.save_pretrained(folder)
    output = tmp_path / "result.json"
    assert main(["evaluate", str(folder), str(data_dir), "--split", "train", "--json", str(output)]) == 0
    clean = json.loads(output.read_text())["clean"]
    saved = evaluate_split(
        model, data_dir, "s4", "train", processor=AudioVisualProcessor.from_pretrained(folder)
    )
    default = evaluate_split(model, data_dir, "s4", "train", image_size=24)
    assert clean["miou"] == pytest.approx(saved["miou"]) and clean["fscore"] == pytest.approx(saved["fscore"])
    assert (clean["miou"], clean["fscore"]) != pytest.approx((default["miou"], default["fscore"]))


def test_fscore_batch_videos_defaults_to_the_family_and_can_be_set(data_dir, model_dir, tmp_path, capsys):
    model = AutoModelForAudioVisualSegmentation.from_pretrained(model_dir)
    default = evaluate_split(model, data_dir, "s4", "train", image_size=32)
    assert default["fscore_batch_videos"] == 1  # PCMANet's official test batch
    # the loader's batch size does not change the official F-score's batches
    loader_batches = evaluate_split(model, data_dir, "s4", "train", image_size=32, batch_size=3)
    assert loader_batches["fscore"] == default["fscore"] and loader_batches["miou"] == default["miou"]
    output = tmp_path / "result.json"
    argv = ["evaluate", str(model_dir), str(data_dir), "--split", "train", "--image-size", "32"]
    assert main([*argv, "--fscore-batch-videos", "2", "--json", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "per test batch of 2 videos" in printed
    clean = json.loads(output.read_text())["clean"]
    paired = evaluate_split(model, data_dir, "s4", "train", image_size=32, fscore_batch_videos=2)
    assert clean["fscore_batch_videos"] == 2 and clean["fscore"] == pytest.approx(paired["fscore"])
    assert paired["fscore"] != pytest.approx(default["fscore"])
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--fscore-batch-videos", "0"])
    assert exit_info.value.code == 2
    assert "must be a positive integer, got 0" in capsys.readouterr().err


def test_evaluate_command_compares_several_models(data_dir, model_dir, tmp_path, capsys):
    torch.manual_seed(1)
    other = tmp_path / "other"
    config = AutoConfig.for_model(TINY_MODEL["model_type"], **TINY_MODEL["config"])
    AutoModelForAudioVisualSegmentation.from_config(config).save_pretrained(other)
    output = tmp_path / "comparison.json"
    argv = ["evaluate", str(model_dir), str(other), str(data_dir), "--split", "train", "--image-size", "32"]
    assert main([*argv, "--per-category", "--json", str(output)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(output.read_text())
    assert list(results) == [str(model_dir), str(other)]
    for folder in (model_dir, other):
        model = AutoModelForAudioVisualSegmentation.from_pretrained(folder)
        direct = evaluate_split(model, data_dir, "s4", "train", image_size=32)
        assert results[str(folder)]["clean"]["miou"] == pytest.approx(direct["miou"])
        assert f"1 {model_dir}" in printed and f"2 {other}" in printed
    assert results[str(model_dir)]["clean"]["miou"] != results[str(other)]["clean"]["miou"]
    categories = {str(r.group) for r in split_records(data_dir)}
    assert set(results[str(other)]["clean"]["per_category"]) == categories
    assert "mIoU 1" in printed and "F 2" in printed
    assert all(any(line.startswith(category) for line in printed.splitlines()) for category in categories)
