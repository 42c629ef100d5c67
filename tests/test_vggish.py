"""VGGish: feature extractor, encoder, AudioSet head, conversion and parity with the reference."""

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from parity_weights import deterministic_state_dict
from safetensors.torch import load_file
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

import avs_models  # noqa: F401  (registers the Auto classes)
from avs_models.models.vggish import (
    VGGishConfig,
    VGGishFeatureExtractor,
    VGGishForAudioClassification,
    VGGishModel,
)
from avs_models.models.vggish.convert_vggish_original_to_hf import convert_vggish_checkpoint, main

SILENCE = math.log(0.01)
TINY = {
    "stage_channels": [[4], [8]],
    "hidden_sizes": [16],
    "embedding_size": 8,
    "num_frames": 96,
    "num_mel_bins": 64,
    "classifier_hidden_size": 12,
    "num_labels": 5,
}

# Keys and shapes of C3N's AudioSet head checkpoint (`md_50000_iters.pth`), from its module structure.
C3N_HEAD_SPEC = [
    *[[f"emb.bn0.{name}", [128], "float32"] for name in ("weight", "bias", "running_mean", "running_var")],
    ["emb.bn0.num_batches_tracked", [], "int64"],
    ["emb.conv1.weight", [1024, 128, 1, 1], "float32"],
    ["emb.conv2.weight", [1024, 1024, 1, 1], "float32"],
    ["emb.conv3.weight", [1024, 1024, 1, 1], "float32"],
    *[
        [f"emb.bn{i}.{name}", [1024], "float32"]
        for i in (1, 2, 3)
        for name in ("weight", "bias", "running_mean", "running_var")
    ],
    *[[f"emb.bn{i}.num_batches_tracked", [], "int64"] for i in (1, 2, 3)],
    ["attention.att.weight", [1024, 1024, 1, 1], "float32"],
    ["attention.att.bias", [1024], "float32"],
    ["attention.cla.weight", [1024, 1024, 1, 1], "float32"],
    ["attention.cla.bias", [1024], "float32"],
    ["fc_final.weight", [527, 1024], "float32"],
    ["fc_final.bias", [527], "float32"],
    *[
        [f"bn_attention.{name}", [1024], "float32"]
        for name in ("weight", "bias", "running_mean", "running_var")
    ],
    ["bn_attention.num_batches_tracked", [], "int64"],
]


def chirp(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (200 + 800 * t) * t)).astype(np.float32)


# ---------------------------------------------------------------- parity with the reference


@pytest.fixture(scope="module")
def reference(parity_dir):
    folder = parity_dir / "vggish"
    return json.loads((folder / "meta.json").read_text()), load_file(folder / "tensors.safetensors")


@pytest.fixture(scope="module")
def official_checkpoints(reference, tmp_path_factory):
    meta, _ = reference
    folder = tmp_path_factory.mktemp("official")
    torch.save(deterministic_state_dict(meta["state_dict_spec"]), folder / "vggish.pth")
    torch.save(deterministic_state_dict(meta["postprocessor_state_dict_spec"]), folder / "pca.pth")
    torch.save(deterministic_state_dict(C3N_HEAD_SPEC), folder / "head.pth")
    return folder


@pytest.fixture(scope="module")
def converted_dir(official_checkpoints, tmp_path_factory):
    output = tmp_path_factory.mktemp("converted")
    main(
        [
            "--checkpoint",
            str(official_checkpoints / "vggish.pth"),
            "--pca-checkpoint",
            str(official_checkpoints / "pca.pth"),
            "--output-dir",
            str(output),
        ]
    )
    return output


def test_feature_extractor_matches_reference_examples(reference):
    _, tensors = reference
    features = VGGishFeatureExtractor()(
        tensors["waveform_16k"].numpy(), sampling_rate=16000, return_tensors="pt"
    )
    expected = tensors["log_mel_examples"]
    assert features["input_features"].shape == expected.shape == (5, 1, 96, 64)
    assert (features["input_features"] - expected).abs().max().item() < 1e-4


def test_converted_checkpoint_matches_reference_embeddings(converted_dir, reference):
    _, tensors = reference
    assert (converted_dir / "model.safetensors").is_file() and (
        converted_dir / "preprocessor_config.json"
    ).is_file()
    model = AutoModel.from_pretrained(converted_dir).eval()
    feature_extractor = AutoFeatureExtractor.from_pretrained(converted_dir)
    assert isinstance(model, VGGishModel) and isinstance(feature_extractor, VGGishFeatureExtractor)
    assert model.config.postprocess is False
    features = feature_extractor(tensors["waveform_16k"].numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        output = model(features["input_features"], postprocess=True)
    assert (output.embeddings - tensors["embeddings"]).abs().max().item() < 1e-4
    assert torch.equal(output.postprocessed, tensors["postprocessed"])
    with torch.no_grad():
        default_output = model(tensors["log_mel_examples"])
    assert default_output.postprocessed is None
    assert (default_output.embeddings - tensors["embeddings"]).abs().max().item() < 1e-4


def _c3n_head_logits(head: dict, postprocessed: torch.Tensor) -> torch.Tensor:
    """C3N's head in eval mode, written independently with the original key names."""

    def batch_norm(x, prefix):
        return F.batch_norm(
            x,
            head[f"{prefix}.running_mean"],
            head[f"{prefix}.running_var"],
            head[f"{prefix}.weight"],
            head[f"{prefix}.bias"],
            training=False,
            eps=1e-5,
        )

    x = ((postprocessed - 128.0) / 128.0)[:, :, None, None]  # [N, 128, time=1, 1]
    x = batch_norm(x, "emb.bn0")
    for i in (1, 2, 3):
        x = F.relu(batch_norm(F.conv2d(x, head[f"emb.conv{i}.weight"]), f"emb.bn{i}"))
    attention = torch.sigmoid(F.conv2d(x, head["attention.att.weight"], head["attention.att.bias"]))[..., 0]
    attention = attention.clamp(1e-7, 1 - 1e-7)
    values = F.conv2d(x, head["attention.cla.weight"], head["attention.cla.bias"])[..., 0]
    pooled = (attention / attention.sum(dim=2, keepdim=True) * values).sum(dim=2)
    pooled = F.relu(batch_norm(pooled, "bn_attention"))
    return F.linear(pooled, head["fc_final.weight"], head["fc_final.bias"])


def test_converted_audio_classifier_matches_c3n_head(official_checkpoints, reference, tmp_path):
    _, tensors = reference
    labels_csv = tmp_path / "class_labels_indices.csv"
    labels_csv.write_text("index,mid,display_name\n" + "".join(f"{i},/m/{i},sound {i}\n" for i in range(527)))
    convert_vggish_checkpoint(
        official_checkpoints / "vggish.pth",
        tmp_path / "classifier",
        pca_checkpoint_path=official_checkpoints / "pca.pth",
        head_checkpoint_path=official_checkpoints / "head.pth",
        labels_csv=labels_csv,
    )
    model = AutoModelForAudioClassification.from_pretrained(tmp_path / "classifier").eval()
    assert isinstance(model, VGGishForAudioClassification)
    assert model.config.num_labels == 527 and model.config.id2label[3] == "sound 3"
    with torch.no_grad():
        output = model(tensors["log_mel_examples"])
    assert output.logits.shape == (5, 527)
    assert torch.equal(output.postprocessed, tensors["postprocessed"])
    head = torch.load(official_checkpoints / "head.pth", weights_only=True)
    expected = _c3n_head_logits(head, tensors["postprocessed"])
    assert (output.logits - expected).abs().max().item() < 1e-4


# ---------------------------------------------------------------- feature extractor


def test_feature_extractor_shapes_and_batching():
    feature_extractor = VGGishFeatureExtractor()
    single = feature_extractor(chirp(5.0), sampling_rate=16000, return_tensors="pt")
    assert set(single) == {"input_features"}
    assert (
        single["input_features"].shape == (5, 1, 96, 64) and single["input_features"].dtype == torch.float32
    )
    as_list = feature_extractor(chirp(5.0).tolist(), sampling_rate=16000)["input_features"]
    as_tensor = feature_extractor(torch.from_numpy(chirp(5.0)), sampling_rate=16000)["input_features"]
    np.testing.assert_allclose(as_list, single["input_features"].numpy(), atol=1e-6)
    np.testing.assert_allclose(as_tensor, single["input_features"].numpy(), atol=1e-6)

    batch = feature_extractor([chirp(5.0), chirp(2.5)], sampling_rate=16000, return_tensors="pt")
    assert batch["input_features"].shape == (2, 5, 1, 96, 64)
    assert batch["attention_mask"].tolist() == [[1] * 5, [1, 1, 0, 0, 0]]
    assert torch.equal(batch["input_features"][0], single["input_features"])
    torch.testing.assert_close(batch["input_features"][1, 2:], torch.full((3, 1, 96, 64), SILENCE))


def test_num_segments_pads_with_silence_or_trims():
    feature_extractor = VGGishFeatureExtractor()
    full = feature_extractor(chirp(5.0), sampling_rate=16000)["input_features"]
    trimmed = feature_extractor(chirp(5.0), sampling_rate=16000, num_segments=3)["input_features"]
    np.testing.assert_array_equal(trimmed, full[:3])
    padded = feature_extractor(chirp(0.5), sampling_rate=16000, num_segments=2)["input_features"]
    assert padded.shape == (2, 1, 96, 64)
    np.testing.assert_allclose(padded[1], SILENCE, atol=1e-6)
    fixed = VGGishFeatureExtractor(num_segments=7)
    assert fixed(chirp(5.0), sampling_rate=16000)["input_features"].shape == (7, 1, 96, 64)
    with pytest.raises(ValueError, match="num_segments"):
        feature_extractor(chirp(5.0), sampling_rate=16000, num_segments=0)


def test_integer_pcm_stereo_and_silence():
    feature_extractor = VGGishFeatureExtractor()
    pcm = (chirp(2.0) * 32767).astype(np.int16)
    from_int = feature_extractor(pcm, sampling_rate=16000)["input_features"]
    from_float = feature_extractor(pcm / 32768.0, sampling_rate=16000)["input_features"]
    np.testing.assert_allclose(from_int, from_float, atol=1e-6)

    left, right = chirp(2.0), 0.3 * chirp(2.0)[::-1].copy()
    mono = feature_extractor((left + right) / 2, sampling_rate=16000)["input_features"]
    for stereo in (np.stack([left, right], axis=1), np.stack([left, right], axis=0)):
        np.testing.assert_allclose(
            feature_extractor(stereo, sampling_rate=16000)["input_features"], mono, atol=1e-4
        )

    silent = feature_extractor(np.zeros(16000, dtype=np.float32), sampling_rate=16000)["input_features"]
    np.testing.assert_allclose(silent, SILENCE, atol=1e-6)


def test_resampling_other_rates(reference):
    from scipy.signal import resample_poly

    _, tensors = reference
    waveform_44k = resample_poly(tensors["waveform_16k"].numpy().astype(np.float64), 441, 160)
    features = VGGishFeatureExtractor()(waveform_44k, sampling_rate=44100.0)["input_features"]
    assert features.shape == (5, 1, 96, 64)
    # Resampling twice is not the identity: close to the reference, not equal.
    assert np.abs(features - tensors["log_mel_examples"].numpy()).mean() < 0.02
    assert VGGishFeatureExtractor()(chirp(3.0, rate=8000), sampling_rate=8000)["input_features"].shape == (
        3,
        1,
        96,
        64,
    )


@pytest.mark.parametrize(
    ("audio", "kwargs", "error", "match"),
    [
        (chirp(2.0), {}, ValueError, "sampling_rate"),
        (chirp(2.0), {"sampling_rate": 0}, ValueError, "sampling_rate"),
        (chirp(2.0), {"sampling_rate": -16000}, ValueError, "sampling_rate"),
        (chirp(2.0), {"sampling_rate": 16000.5}, ValueError, "sampling_rate"),
        (chirp(2.0), {"sampling_rate": True}, ValueError, "sampling_rate"),
        (np.zeros(0, dtype=np.float32), {"sampling_rate": 16000}, ValueError, "empty"),
        ([], {"sampling_rate": 16000}, ValueError, "empty"),
        (np.zeros((2, 2, 16000), dtype=np.float32), {"sampling_rate": 16000}, ValueError, "1-D"),
        (np.float32(0.5), {"sampling_rate": 16000}, ValueError, "1-D"),
        (chirp(0.9), {"sampling_rate": 16000}, ValueError, "too short"),
        (np.array([np.nan] * 16000), {"sampling_rate": 16000}, ValueError, "NaN"),
        (np.ones(16000, dtype=bool), {"sampling_rate": 16000}, TypeError, "dtype"),
        (chirp(2.0), {"sampling_rate": 16000, "padding": True}, TypeError, "padding"),
    ],
)
def test_feature_extractor_errors(audio, kwargs, error, match):
    with pytest.raises(error, match=match):
        VGGishFeatureExtractor()(audio, **kwargs)


def test_feature_extractor_round_trip(tmp_path):
    feature_extractor = VGGishFeatureExtractor(num_segments=5)
    feature_extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["feature_extractor_type"] == "VGGishFeatureExtractor" and "mel_filters" not in saved
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vggish"}))
    reloaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert isinstance(reloaded, VGGishFeatureExtractor) and reloaded.num_segments == 5
    np.testing.assert_array_equal(
        reloaded(chirp(2.0), sampling_rate=16000)["input_features"],
        feature_extractor(chirp(2.0), sampling_rate=16000)["input_features"],
    )


# ---------------------------------------------------------------- models


def test_auto_classes_resolve_vggish_and_round_trip(tmp_path):
    config = AutoConfig.for_model("vggish", postprocess=True, **TINY)
    assert isinstance(config, VGGishConfig)
    model = AutoModel.from_config(config).eval()
    assert isinstance(model, VGGishModel)
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    features = torch.randn(2, 3, 1, 96, 64)
    with torch.no_grad():
        before, after = model(features), reloaded(features)
    assert before.embeddings.shape == before.postprocessed.shape == (2, 3, 8)
    assert torch.equal(before.embeddings, after.embeddings) and torch.equal(
        before.postprocessed, after.postprocessed
    )


def test_batched_and_flat_inputs_agree():
    model = VGGishModel(VGGishConfig(**TINY)).eval()
    features = torch.randn(2, 3, 1, 96, 64)
    with torch.no_grad():
        batched = model(features, postprocess=True)
        flat = model(features.flatten(0, 1), postprocess=True)
    assert flat.embeddings.shape == (6, 8)
    torch.testing.assert_close(batched.embeddings.flatten(0, 1), flat.embeddings)
    assert torch.all((flat.postprocessed >= 0) & (flat.postprocessed <= 255))
    assert torch.equal(flat.postprocessed, flat.postprocessed.round())
    (embeddings,) = model(features, return_dict=False)  # tuples leave out the absent `postprocessed`
    assert embeddings.shape == (2, 3, 8)


@pytest.mark.parametrize(
    ("features", "error", "match"),
    [
        (torch.randn(1, 96, 64), ValueError, r"\[N, 1, 96, 64\]"),
        (torch.randn(2, 1, 95, 64), ValueError, r"\[B, T, 1, 96, 64\]"),
        (torch.randn(2, 2, 96, 64), ValueError, "input_features"),
        (torch.zeros(2, 1, 96, 64, dtype=torch.long), TypeError, "float"),
        (np.zeros((2, 1, 96, 64), dtype=np.float32), TypeError, "torch.Tensor"),
    ],
)
def test_model_input_errors(features, error, match):
    with pytest.raises(error, match=match):
        VGGishModel(VGGishConfig(**TINY))(features)


def test_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        VGGishConfig(num_frames=90)
    with pytest.raises(ValueError, match="quantize_min"):
        VGGishConfig(quantize_min=2.0, quantize_max=-2.0)
    with pytest.raises(ValueError, match="stage_channels"):
        VGGishConfig(stage_channels=[])
    assert VGGishConfig().num_labels == 527


def test_audio_classification_shapes_loss_and_round_trip(tmp_path):
    model = VGGishForAudioClassification(VGGishConfig(**TINY)).eval()
    features = torch.randn(2, 3, 1, 96, 64)
    labels = torch.randint(0, 2, (2, 3, 5)).float()
    with torch.no_grad():
        output = model(features, labels=labels)
    assert output.logits.shape == (2, 3, 5) and output.embeddings.shape == (2, 3, 8)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    with pytest.raises(ValueError, match="labels"):
        model(features, labels=labels[:, :, :2])
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, VGGishForAudioClassification)
    with torch.no_grad():
        assert torch.equal(reloaded(features).logits, output.logits)
    # The encoder alone loads from the classifier's folder.
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(encoder(features).embeddings, output.embeddings)


# ---------------------------------------------------------------- conversion errors


def test_conversion_errors(official_checkpoints, tmp_path):
    vggish = official_checkpoints / "vggish.pth"
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convert_vggish_checkpoint(tmp_path / "missing.pth", tmp_path / "out")
    with pytest.raises(ValueError, match="pca_checkpoint_path"):
        convert_vggish_checkpoint(vggish, tmp_path / "out", postprocess=True)
    with pytest.raises(ValueError, match="pca_checkpoint_path"):
        convert_vggish_checkpoint(
            vggish, tmp_path / "out", head_checkpoint_path=official_checkpoints / "head.pth"
        )

    state_dict = torch.load(vggish, weights_only=True)
    state_dict["features.99.weight"] = torch.zeros(1)
    torch.save(state_dict, tmp_path / "unexpected.pth")
    with pytest.raises(ValueError, match=r"unexpected keys.*features\.99\.weight"):
        convert_vggish_checkpoint(tmp_path / "unexpected.pth", tmp_path / "out")
    del state_dict["features.99.weight"], state_dict["embeddings.4.bias"]
    torch.save(state_dict, tmp_path / "incomplete.pth")
    with pytest.raises(ValueError, match=r"missing \['fc_layers\.2\.bias'\]"):
        convert_vggish_checkpoint(tmp_path / "incomplete.pth", tmp_path / "out")

    torch.save({"pca_eigen_vectors": torch.eye(128)}, tmp_path / "pca_incomplete.pth")
    with pytest.raises(ValueError, match="pca_means"):
        convert_vggish_checkpoint(
            vggish, tmp_path / "out", pca_checkpoint_path=tmp_path / "pca_incomplete.pth"
        )


def _rewrite_numpy_module_path(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite the pickled numpy module path, as in a checkpoint written with numpy 1."""
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info.filename)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info, data in entries:
            target.writestr(info, data.replace(old, new) if info.filename.endswith("data.pkl") else data)


def test_pca_parameters_as_numpy_arrays_load_weights_only(tmp_path):
    from avs_models.models.vggish.convert_vggish_original_to_hf import convert_pca_state_dict, load_checkpoint

    eigen_vectors = np.random.default_rng(0).standard_normal((128, 128))
    means = np.arange(128, dtype=np.float64)
    for numpy_path in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
        path = tmp_path / "pca.pth"
        torch.save({"pca_eigen_vectors": eigen_vectors, "pca_means": means}, path)
        _rewrite_numpy_module_path(path, b"numpy._core.multiarray", numpy_path)
        buffers = convert_pca_state_dict(load_checkpoint(path), VGGishConfig())
        assert buffers["postprocessor.pca_means"].shape == (128, 1)
        assert buffers["postprocessor.pca_means"].dtype == torch.float32
        np.testing.assert_allclose(
            buffers["postprocessor.pca_eigen_vectors"].numpy(), eigen_vectors, rtol=1e-6
        )
