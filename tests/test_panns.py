"""PANNs Cnn14: log-mel front end, encoder, AudioSet classifier, conversion and feature extractor."""

import json

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from parity_weights import deterministic_state_dict
from safetensors.torch import load_file
from scipy.signal import get_window
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

import avs_models  # noqa: F401  (registers the Auto classes)
from avs_models.models.panns import (
    PannsConfig,
    PannsFeatureExtractor,
    PannsForAudioClassification,
    PannsModel,
)
from avs_models.models.panns.convert_panns_original_to_hf import convert_panns_checkpoint, main
from avs_models.models.panns.modeling_panns import slaney_mel_filters

RATE = 16000
# Cnn14_16k's front end with three narrow blocks (downsampling 4, so 480 samples are enough).
TINY = {"block_channels": [4, 8, 8], "embedding_size": 16, "num_labels": 5}
FULL_SIZE = {"block_channels": [64, 128, 256, 512, 1024, 2048], "embedding_size": 2048, "num_labels": 527}

STFT_REAL = "spectrogram_extractor.stft.conv_real.weight"
STFT_IMAGINARY = "spectrogram_extractor.stft.conv_imag.weight"
MEL_FILTERS = "logmel_extractor.melW"


def chirp(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (200 + 1500 * t) * t)).astype(np.float32)


def noisy_waveforms(count: int, samples: int = RATE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(count * 1000 + samples)
    return 0.1 * torch.randn(count, samples, generator=generator)


def official_cnn14_spec(block_channels, embedding_size, num_labels, window_size=512, num_mel_bins=64):
    """`[key, shape, dtype]` of the official `Cnn14_16k` state dict (module order), for any block widths."""

    def batch_norm(prefix, size):
        return [
            *[
                [f"{prefix}.{name}", [size], "float32"]
                for name in ("weight", "bias", "running_mean", "running_var")
            ],
            [f"{prefix}.num_batches_tracked", [], "int64"],
        ]

    frequency_bins = window_size // 2 + 1
    spec = [
        [STFT_REAL, [frequency_bins, 1, window_size], "float32"],
        [STFT_IMAGINARY, [frequency_bins, 1, window_size], "float32"],
        [MEL_FILTERS, [frequency_bins, num_mel_bins], "float32"],
        *batch_norm("bn0", num_mel_bins),
    ]
    in_channels = 1
    for index, channels in enumerate(block_channels, start=1):
        spec += [
            [f"conv_block{index}.conv1.weight", [channels, in_channels, 3, 3], "float32"],
            [f"conv_block{index}.conv2.weight", [channels, channels, 3, 3], "float32"],
            *batch_norm(f"conv_block{index}.bn1", channels),
            *batch_norm(f"conv_block{index}.bn2", channels),
        ]
        in_channels = channels
    spec += [
        ["fc1.weight", [embedding_size, in_channels], "float32"],
        ["fc1.bias", [embedding_size], "float32"],
        ["fc_audioset.weight", [num_labels, embedding_size], "float32"],
        ["fc_audioset.bias", [num_labels], "float32"],
    ]
    return spec


def torchlibrosa_style_front_end(window_size=512) -> dict[str, torch.Tensor]:
    """STFT kernels built as torchlibrosa builds them: a complex DFT matrix times a periodic Hann window."""
    samples = np.arange(window_size)
    dft = np.exp(-2j * np.pi * np.outer(samples, samples) / window_size)
    kernels = (dft[:, : window_size // 2 + 1] * get_window("hann", window_size, fftbins=True)[:, None]).T
    return {
        STFT_REAL: torch.tensor(kernels.real[:, None, :], dtype=torch.float32),
        STFT_IMAGINARY: torch.tensor(kernels.imag[:, None, :], dtype=torch.float32),
        MEL_FILTERS: torch.tensor(
            slaney_mel_filters(RATE, window_size, 64, 50.0, 8000.0), dtype=torch.float32
        ),
    }


def official_state_dict(sizes: dict) -> dict[str, torch.Tensor]:
    state_dict = deterministic_state_dict(official_cnn14_spec(**sizes))
    state_dict.update(torchlibrosa_style_front_end())
    return state_dict


def official_cnn14_forward(state: dict, waveforms: torch.Tensor, hop_size: int = 160):
    """The official Cnn14_16k forward in eval mode, written out with the original key names."""

    def batch_norm(x, prefix):
        return F.batch_norm(
            x,
            state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"],
            state[f"{prefix}.weight"],
            state[f"{prefix}.bias"],
            training=False,
        )

    half_window = state[STFT_REAL].shape[-1] // 2
    x = F.pad(waveforms[:, None, :], (half_window, half_window), mode="reflect")
    real = F.conv1d(x, state[STFT_REAL], stride=hop_size)
    imaginary = F.conv1d(x, state[STFT_IMAGINARY], stride=hop_size)
    power = (real**2 + imaginary**2).transpose(1, 2)[:, None]  # [N, 1, frames, bins]
    x = 10.0 * torch.log10(torch.clamp(torch.matmul(power, state[MEL_FILTERS]), min=1e-10))
    x = batch_norm(x.transpose(1, 3), "bn0").transpose(1, 3)
    num_blocks = sum(key.endswith(".conv1.weight") for key in state)
    for index in range(1, num_blocks + 1):
        for layer in (1, 2):
            x = F.conv2d(x, state[f"conv_block{index}.conv{layer}.weight"], padding=1)
            x = F.relu(batch_norm(x, f"conv_block{index}.bn{layer}"))
        if index < num_blocks:
            x = F.avg_pool2d(x, kernel_size=2)
    x = x.mean(dim=3)
    x = x.max(dim=2).values + x.mean(dim=2)
    embedding = F.relu(F.linear(x, state["fc1.weight"], state["fc1.bias"]))
    clipwise_output = torch.sigmoid(
        F.linear(embedding, state["fc_audioset.weight"], state["fc_audioset.bias"])
    )
    return embedding, clipwise_output


def numpy_log_mel(waveform: np.ndarray, mel_filters: np.ndarray, window_size=512, hop_size=160) -> np.ndarray:
    """Reference log-mel in float64: centred frames, np.fft.rfft of each windowed frame, power, mel, dB."""
    padded = np.pad(waveform.astype(np.float64), window_size // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, window_size)[::hop_size]
    power = np.abs(np.fft.rfft(frames * get_window("hann", window_size, fftbins=True), axis=-1)) ** 2
    return 10.0 * np.log10(np.maximum(power @ mel_filters, 1e-10))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official")
    state_dict = official_state_dict(TINY)
    torch.save({"iteration": 10000, "model": state_dict}, folder / "Cnn14_tiny.pth")
    return folder / "Cnn14_tiny.pth", state_dict


# ---------------------------------------------------------------- log-mel front end


def test_mel_filters_match_librosa_slaney_filters():
    # Non-zero weights of three bands of `librosa.filters.mel(sr=16000, n_fft=512, n_mels=64,
    # fmin=50, fmax=8000)` (librosa 0.11, float64): the filter bank Cnn14_16k was trained with.
    expected = {
        0: ([2, 3, 4], [0.0060018387, 0.0210064355, 0.0078134859]),
        10: ([17, 18, 19], [0.0119481996, 0.0168717217, 0.0018671249]),
        31: ([52, 53, 54, 55, 56], [0.0016297235, 0.0066685202, 0.0117073169, 0.0085425432, 0.003735398]),
    }
    filters = slaney_mel_filters(RATE, 512, 64, 50.0, 8000.0)
    assert filters.shape == (257, 64)
    for band, (bins, weights) in expected.items():
        assert np.flatnonzero(filters[:, band]).tolist() == bins
        np.testing.assert_allclose(filters[bins, band], weights, atol=1e-10)
    # The last band ends at 8000 Hz, the Nyquist bin, where its weight falls to zero.
    assert filters[-1].max() == 0.0 and filters[-2, -1] > 0.0


def test_front_end_matches_numpy_dft_reference():
    model = PannsModel(PannsConfig(**TINY)).eval()
    waveforms = noisy_waveforms(2)
    waveforms[1] = torch.from_numpy(chirp(1.0))
    with torch.no_grad():
        log_mel = model.log_mel(waveforms)
    assert log_mel.shape == (2, 1, 101, 64)
    mel_filters = slaney_mel_filters(RATE, 512, 64, 50.0, 8000.0)
    for index in range(2):
        expected = numpy_log_mel(waveforms[index].numpy(), mel_filters)
        actual = log_mel[index, 0].numpy()
        # float32 rounding of the STFT is relative to the loudest bins: compare in dB within 60 dB of the
        # peak, and in power everywhere.
        audible = expected > expected.max() - 60.0
        assert audible.mean() > 0.1
        np.testing.assert_allclose(actual[audible], expected[audible], atol=2e-3)
        peak_power = 10.0 ** (expected.max() / 10.0)
        np.testing.assert_allclose(
            10.0 ** (actual / 10.0), 10.0 ** (expected / 10.0), rtol=1e-5, atol=1e-8 * peak_power
        )


def test_converted_front_end_keeps_the_checkpoint_kernels(tiny_checkpoint, tmp_path):
    _, state_dict = tiny_checkpoint
    # A change far below the converter's tolerance shows whether the checkpoint's kernels are used.
    perturbed = dict(state_dict)
    perturbed[STFT_REAL] = state_dict[STFT_REAL].clone()
    perturbed[STFT_REAL][5, 0, 100] += 2e-6
    torch.save(perturbed, tmp_path / "bare_state_dict.pth")
    convert_panns_checkpoint(tmp_path / "bare_state_dict.pth", tmp_path / "converted")
    saved = load_file(tmp_path / "converted" / "model.safetensors")
    assert torch.equal(
        saved["panns.log_mel.stft_kernels"], torch.cat([perturbed[STFT_REAL], perturbed[STFT_IMAGINARY]])
    )
    assert torch.equal(saved["panns.log_mel.mel_filters"], state_dict[MEL_FILTERS])

    converted = AutoModelForAudioClassification.from_pretrained(tmp_path / "converted").eval()
    computed = PannsModel(PannsConfig(**TINY)).eval()
    assert torch.equal(converted.panns.log_mel.stft_kernels, saved["panns.log_mel.stft_kernels"])
    assert not torch.equal(converted.panns.log_mel.stft_kernels, computed.log_mel.stft_kernels)
    waveforms = noisy_waveforms(3)
    with torch.no_grad():
        from_checkpoint, from_config = converted.panns.log_mel(waveforms), computed.log_mel(waveforms)
    torch.testing.assert_close(from_checkpoint, from_config, atol=1e-3, rtol=0)


# ---------------------------------------------------------------- conversion


def test_converted_checkpoint_matches_official_forward(tiny_checkpoint, tmp_path):
    checkpoint, state_dict = tiny_checkpoint
    labels_csv = tmp_path / "class_labels_indices.csv"
    labels_csv.write_text("index,mid,display_name\n" + "".join(f"{i},/m/{i},sound {i}\n" for i in range(5)))
    main(
        [
            "--checkpoint",
            str(checkpoint),
            "--output-dir",
            str(tmp_path / "hf"),
            "--labels-csv",
            str(labels_csv),
        ]
    )
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    model = AutoModelForAudioClassification.from_pretrained(tmp_path / "hf").eval()
    feature_extractor = AutoFeatureExtractor.from_pretrained(tmp_path / "hf")
    assert isinstance(model, PannsForAudioClassification) and isinstance(
        feature_extractor, PannsFeatureExtractor
    )
    assert model.config.block_channels == [4, 8, 8] and model.config.embedding_size == 16
    assert model.config.id2label[3] == "sound 3"

    waveforms = feature_extractor(
        chirp(2.0) + 0.05 * noisy_waveforms(1, 32000)[0].numpy(), sampling_rate=RATE
    )
    inputs = torch.from_numpy(waveforms["input_values"])
    with torch.no_grad():
        output = model(inputs)
    embedding, clipwise_output = official_cnn14_forward(state_dict, inputs)
    assert output.logits.shape == (2, 5) and output.embeddings.shape == (2, 16)
    assert (output.embeddings - embedding).abs().max().item() < 1e-5
    assert (torch.sigmoid(output.logits) - clipwise_output).abs().max().item() < 1e-5


def test_checkpoint_without_classifier_gives_encoder(tiny_checkpoint, tmp_path):
    _, state_dict = tiny_checkpoint
    encoder_only = {key: value for key, value in state_dict.items() if not key.startswith("fc_audioset.")}
    torch.save({"model": encoder_only}, tmp_path / "encoder.pth")
    model = convert_panns_checkpoint(tmp_path / "encoder.pth", tmp_path / "hf")
    assert type(model) is PannsModel
    reloaded = AutoModel.from_pretrained(tmp_path / "hf").eval()
    waveforms = noisy_waveforms(2)
    with torch.no_grad():
        embeddings = reloaded(waveforms).embeddings
    torch.testing.assert_close(
        embeddings, official_cnn14_forward(state_dict, waveforms)[0], atol=1e-5, rtol=0
    )


def test_training_checkpoint_with_numpy_sampler_state_loads(tiny_checkpoint, tmp_path):
    _, state_dict = tiny_checkpoint
    sampler = {"indexes": np.arange(10), "pointer": np.int64(3), "queue": [np.array([1, 2], dtype=np.int32)]}
    torch.save({"iteration": 5, "model": state_dict, "sampler": sampler}, tmp_path / "training.pth")
    model = convert_panns_checkpoint(tmp_path / "training.pth", tmp_path / "hf")
    assert torch.equal(model.classifier.weight, state_dict["fc_audioset.weight"])


def test_conversion_errors(tiny_checkpoint, tmp_path):
    checkpoint, state_dict = tiny_checkpoint
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convert_panns_checkpoint(tmp_path / "missing.pth", tmp_path / "out")

    def save(state, name):
        torch.save(state, tmp_path / name)
        return tmp_path / name

    with pytest.raises(ValueError, match=r"unexpected keys.*spec_augmenter\.weight"):
        convert_panns_checkpoint(
            save({**state_dict, "spec_augmenter.weight": torch.zeros(1)}, "extra.pth"), tmp_path
        )
    incomplete = {key: value for key, value in state_dict.items() if key != "conv_block2.bn1.running_var"}
    with pytest.raises(ValueError, match=r"missing \['panns\.conv_blocks\.1\.norm1\.running_var'\]"):
        convert_panns_checkpoint(save(incomplete, "incomplete.pth"), tmp_path / "out")
    without_mel = {key: value for key, value in state_dict.items() if key != MEL_FILTERS}
    with pytest.raises(ValueError, match=r"missing key.*logmel_extractor\.melW"):
        convert_panns_checkpoint(save(without_mel, "no_mel.pth"), tmp_path / "out")
    with pytest.raises(ValueError, match="mel filters differ.*fmax=7000.0: pass the sample rate"):
        convert_panns_checkpoint(checkpoint, tmp_path / "out", fmax=7000.0)
    with pytest.raises(ValueError, match="STFT kernels differ"):
        convert_panns_checkpoint(
            save({**state_dict, STFT_REAL: 2 * state_dict[STFT_REAL]}, "bad_stft.pth"), tmp_path / "out"
        )
    with pytest.raises(ValueError, match="state dict of tensors"):
        convert_panns_checkpoint(save({"model": [1, 2]}, "not_a_state_dict.pth"), tmp_path / "out")
    with pytest.raises(ValueError, match="weights-only"):
        convert_panns_checkpoint(
            save({"model": state_dict, "config": PannsConfig()}, "pickled.pth"), tmp_path
        )

    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("index,mid,display_name\n0,/m/0,speech\n")
    with pytest.raises(ValueError, match="names 1 classes but the classifier has 5"):
        convert_panns_checkpoint(checkpoint, tmp_path / "out", labels_csv=labels_csv)
    encoder_only = {key: value for key, value in state_dict.items() if not key.startswith("fc_audioset.")}
    with pytest.raises(ValueError, match="labels only apply"):
        convert_panns_checkpoint(save(encoder_only, "encoder.pth"), tmp_path / "out", labels_csv=labels_csv)


# ---------------------------------------------------------------- models


def test_leading_dims_hidden_states_and_tuples():
    model = PannsModel(PannsConfig(**TINY)).eval()
    waveforms = noisy_waveforms(6)
    with torch.no_grad():
        flat = model(waveforms, output_hidden_states=True)
        batched = model(waveforms.reshape(2, 3, RATE), output_hidden_states=True)
    assert flat.embeddings.shape == (6, 16) and batched.embeddings.shape == (2, 3, 16)
    torch.testing.assert_close(batched.embeddings.flatten(0, 1), flat.embeddings)
    assert [tuple(state.shape) for state in batched.hidden_states] == [
        (2, 3, 1, 101, 64),
        (2, 3, 4, 50, 32),
        (2, 3, 8, 25, 16),
        (2, 3, 8, 25, 16),  # the last block does not pool
    ]
    assert torch.all(flat.embeddings >= 0)  # after the ReLU
    with torch.no_grad():
        assert model(waveforms).hidden_states is None
        (embeddings,) = model(waveforms, return_dict=False)
    assert torch.equal(embeddings, flat.embeddings)


def test_shortest_accepted_input():
    config = PannsConfig(**TINY)
    assert config.min_num_samples == 480  # 4 STFT frames: two 2x2 pools leave one
    model = PannsModel(config).eval()
    with torch.no_grad():
        assert model(noisy_waveforms(2, 480)).embeddings.shape == (2, 16)
    with pytest.raises(ValueError, match="at least 480 "):
        model(noisy_waveforms(2, 479))


def test_auto_classes_resolve_panns_and_round_trip(tmp_path):
    config = AutoConfig.for_model("panns_cnn14", **TINY)
    assert isinstance(config, PannsConfig)
    model = AutoModelForAudioClassification.from_config(config).eval()
    assert isinstance(model, PannsForAudioClassification)
    model.save_pretrained(tmp_path)
    assert "panns.log_mel.mel_filters" in load_file(tmp_path / "model.safetensors")
    reloaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    waveforms = noisy_waveforms(4).reshape(2, 2, RATE)
    with torch.no_grad():
        before, after = model(waveforms), reloaded(waveforms)
    assert before.logits.shape == (2, 2, 5) and before.embeddings.shape == (2, 2, 16)
    assert torch.equal(before.logits, after.logits) and torch.equal(before.embeddings, after.embeddings)
    # The encoder alone loads from the classifier's folder.
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is PannsModel
    with torch.no_grad():
        assert torch.equal(encoder(waveforms).embeddings, before.embeddings)


def test_loss_and_training_mode():
    model = PannsForAudioClassification(PannsConfig(**TINY))
    waveforms = noisy_waveforms(4).reshape(2, 2, RATE)
    labels = torch.tensor([[[1.0, 0, 0, 1, 0], [0, 0, 0, 0, 1]], [[0, 1, 0, 0, 0], [1, 1, 1, 0, 0]]])
    output = model(waveforms, labels=labels)
    expected = F.binary_cross_entropy_with_logits(output.logits, labels)
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    assert model.panns.conv_blocks[0].conv1.weight.grad.abs().sum() > 0
    # The front end's buffers are fixed, not trained.
    assert all(not name.startswith("panns.log_mel") for name, _ in model.named_parameters())
    with pytest.raises(ValueError, match=r"`labels` must have shape \(2, 2, 5\)"):
        model(waveforms, labels=labels[..., :3])


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        (torch.zeros(RATE), ValueError, r"\[N, samples\] or \[B, T, samples\]"),
        (torch.zeros(1, 2, 3, RATE), ValueError, r"\[N, samples\]"),
        (torch.zeros(2, 100), ValueError, "too short"),
        (torch.zeros(0, RATE), ValueError, "empty"),
        (torch.zeros(2, RATE, dtype=torch.int16), TypeError, "float"),
        (np.zeros((2, RATE), dtype=np.float32), TypeError, "torch.Tensor"),
    ],
)
def test_model_input_errors(values, error, match):
    with pytest.raises(error, match=match):
        PannsModel(PannsConfig(**TINY))(values)


def test_config_defaults_and_errors():
    config = PannsConfig()
    assert config.num_labels == 527 and config.block_channels == [64, 128, 256, 512, 1024, 2048]
    assert (config.sample_rate, config.window_size, config.hop_size, config.num_mel_bins) == (
        16000,
        512,
        160,
        64,
    )
    assert config.downsampling == 32 and config.num_frequency_bins == 257
    with pytest.raises(ValueError, match="fmax"):
        PannsConfig(fmax=9000.0)
    with pytest.raises(ValueError, match="fmin"):
        PannsConfig(fmin=8000.0)
    with pytest.raises(ValueError, match="block_channels"):
        PannsConfig(block_channels=[])
    with pytest.raises(ValueError, match="num_mel_bins"):
        PannsConfig(num_mel_bins=16)
    with pytest.raises(ValueError, match="hop_size"):
        PannsConfig(hop_size=0)
    with pytest.raises(ValueError, match="hidden_dropout"):
        PannsConfig(hidden_dropout=1.0)


# ---------------------------------------------------------------- feature extractor


def test_feature_extractor_segments_a_wav_file(tmp_path):
    waveform = chirp(3.5)
    path = tmp_path / "clip.wav"
    soundfile.write(path, waveform, RATE, subtype="PCM_16")
    as_float, rate = soundfile.read(path, dtype="float32")
    as_int16, _ = soundfile.read(path, dtype="int16")
    feature_extractor = PannsFeatureExtractor()
    segments = feature_extractor(as_float, sampling_rate=rate, return_tensors="pt")["input_values"]
    assert segments.shape == (3, RATE) and segments.dtype == torch.float32  # the last half second is dropped
    np.testing.assert_array_equal(segments.numpy(), as_float[: 3 * RATE].reshape(3, RATE))
    np.testing.assert_array_equal(
        feature_extractor(as_int16, sampling_rate=rate)["input_values"], segments.numpy()
    )
    assert np.abs(segments.numpy() - waveform[: 3 * RATE].reshape(3, RATE)).max() < 1 / 32768 + 1e-7

    model = PannsForAudioClassification(PannsConfig(**TINY)).eval()
    with torch.no_grad():
        assert model(segments).logits.shape == (3, 5)


def test_num_segments_matches_the_c3n_loader_layout():
    """C3N loads 5 s, pads with zeros or trims, and views the waveform as [5, 16000]."""

    def c3n_layout(waveform):
        padded = np.zeros(5 * RATE)
        padded[: min(len(waveform), 5 * RATE)] = waveform[: 5 * RATE]
        return torch.Tensor(padded).view(5, -1).numpy()

    feature_extractor = PannsFeatureExtractor(num_segments=5)
    for seconds in (3.2, 5.0, 6.7):
        waveform = chirp(seconds)
        segments = feature_extractor(waveform, sampling_rate=RATE)["input_values"]
        np.testing.assert_array_equal(segments, c3n_layout(waveform))
    assert PannsFeatureExtractor()(chirp(0.3), sampling_rate=RATE, num_segments=2)["input_values"].shape == (
        2,
        RATE,
    )


def test_batches_stereo_and_resampling():
    feature_extractor = PannsFeatureExtractor()
    batch = feature_extractor([chirp(3.0), chirp(1.2)], sampling_rate=RATE, return_tensors="pt")
    assert batch["input_values"].shape == (2, 3, RATE)
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert torch.equal(batch["input_values"][1, 1:], torch.zeros(2, RATE))
    single = feature_extractor(chirp(1.0), sampling_rate=RATE, return_attention_mask=True)
    assert single["attention_mask"].tolist() == [1]

    left, right = chirp(2.0), 0.3 * chirp(2.0)[::-1].copy()
    mono = feature_extractor((left + right) / 2, sampling_rate=RATE)["input_values"]
    for stereo in (np.stack([left, right], axis=1), np.stack([left, right], axis=0)):
        np.testing.assert_allclose(
            feature_extractor(stereo, sampling_rate=RATE)["input_values"], mono, atol=1e-6
        )

    tone = np.sin(2 * np.pi * 440 * np.arange(3 * 44100) / 44100)
    resampled = feature_extractor(tone, sampling_rate=44100)["input_values"]
    assert resampled.shape == (3, RATE)
    expected = np.sin(2 * np.pi * 440 * np.arange(3 * RATE) / RATE).reshape(3, RATE)
    assert np.abs(resampled[:, 1000:-1000] - expected[:, 1000:-1000]).max() < 1e-3


@pytest.mark.parametrize(
    ("audio", "kwargs", "error", "match"),
    [
        (chirp(2.0), {}, ValueError, "sampling_rate"),
        (chirp(2.0), {"sampling_rate": 0}, ValueError, "sampling_rate"),
        (chirp(2.0), {"sampling_rate": 16000.5}, ValueError, "sampling_rate"),
        (np.zeros(0, dtype=np.float32), {"sampling_rate": RATE}, ValueError, "empty"),
        ([], {"sampling_rate": RATE}, ValueError, "empty"),
        (chirp(0.5), {"sampling_rate": RATE}, ValueError, "too short.*num_segments"),
        (np.zeros((2, 2, RATE), dtype=np.float32), {"sampling_rate": RATE}, ValueError, "1-D"),
        (np.array([np.nan] * RATE), {"sampling_rate": RATE}, ValueError, "NaN"),
        (chirp(2.0), {"sampling_rate": RATE, "num_segments": 0}, ValueError, "num_segments"),
        (chirp(2.0), {"sampling_rate": RATE, "padding": True}, TypeError, "padding"),
    ],
)
def test_feature_extractor_errors(audio, kwargs, error, match):
    with pytest.raises(error, match=match):
        PannsFeatureExtractor()(audio, **kwargs)


def test_feature_extractor_round_trip(tmp_path):
    with pytest.raises(ValueError, match="segment_length"):
        PannsFeatureExtractor(segment_length=0)
    feature_extractor = PannsFeatureExtractor(num_segments=5)
    feature_extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["feature_extractor_type"] == "PannsFeatureExtractor" and saved["segment_length"] == RATE
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "panns_cnn14"}))
    reloaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert isinstance(reloaded, PannsFeatureExtractor) and reloaded.num_segments == 5
    assert reloaded(chirp(2.0), sampling_rate=RATE)["input_values"].shape == (5, RATE)


# ---------------------------------------------------------------- full size


@pytest.mark.slow
def test_full_size_cnn14_16k_conversion_matches_official_forward(tmp_path):
    state_dict = official_state_dict(FULL_SIZE)
    torch.save({"model": state_dict}, tmp_path / "Cnn14_16k.pth")
    model = convert_panns_checkpoint(tmp_path / "Cnn14_16k.pth", tmp_path / "hf")
    assert model.config.to_dict()["block_channels"] == FULL_SIZE["block_channels"]
    assert sum(parameter.numel() for parameter in model.parameters()) == 80_753_615
    reloaded = AutoModelForAudioClassification.from_pretrained(tmp_path / "hf").eval()
    waveforms = torch.from_numpy(np.stack([chirp(1.0), 0.2 * noisy_waveforms(1)[0].numpy()]))
    with torch.no_grad():
        output = reloaded(waveforms[None])  # [B=1, T=2, 16000]
    embedding, clipwise_output = official_cnn14_forward(state_dict, waveforms)
    assert output.embeddings.shape == (1, 2, 2048) and output.logits.shape == (1, 2, 527)
    assert (output.embeddings[0] - embedding).abs().max().item() < 1e-4
    assert (torch.sigmoid(output.logits[0]) - clipwise_output).abs().max().item() < 1e-4
