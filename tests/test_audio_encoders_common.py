"""Transformers' own common tests (`ModelTesterMixin`, `ConfigTester`, the feature-extraction mixins)
applied to the audio encoders VGGish, PANNs Cnn14 and BEATs, on tiny configs, plus the checks the
mixins leave to accelerators (half precision, forced offloading on CPU).

A mixin test is switched off only by a mixin flag or an overriding `skipTest` with its reason.
"""

from __future__ import annotations

import contextlib
import copy
import unittest

import numpy as np
import pytest
import torch
from transformers_common import (
    ConfigTester,
    ModelTesterMixin,
    SequenceFeatureExtractionTestMixin,
    floats_tensor,
)

from avs_models import (
    BeatsConfig,
    BeatsFeatureExtractor,
    BeatsForAudioClassification,
    BeatsModel,
    PannsConfig,
    PannsFeatureExtractor,
    PannsForAudioClassification,
    PannsModel,
    VGGishConfig,
    VGGishFeatureExtractor,
    VGGishForAudioClassification,
    VGGishModel,
)

BATCH_SIZE = 3
NUM_LABELS = 5


# ---------------------------------------------------------------- model testers


class VGGishModelTester:
    """Two convolution stages over 16 x 16 log-mel examples, one hidden fully connected layer."""

    def __init__(self, parent, batch_size=BATCH_SIZE, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.is_training = is_training
        self.num_frames = 16
        self.num_mel_bins = 16
        self.stage_channels = [[4], [8, 8]]
        self.hidden_sizes = [32]
        self.embedding_size = 16
        # `hidden_states`: every stage's output, then every fully connected layer's; the first is
        # `[N, 4, 8, 8]`, whose last two dims the mixin reads as (seq_length, hidden_size).
        self.num_hidden_layers = len(self.stage_channels)
        self.expected_num_hidden_layers = len(self.stage_channels) + len(self.hidden_sizes) + 1
        self.seq_length = self.num_frames // 2
        self.hidden_size = self.num_mel_bins // 2

    def get_config(self) -> VGGishConfig:
        return VGGishConfig(
            num_frames=self.num_frames,
            num_mel_bins=self.num_mel_bins,
            stage_channels=self.stage_channels,
            hidden_sizes=self.hidden_sizes,
            embedding_size=self.embedding_size,
            classifier_hidden_size=16,
            num_labels=NUM_LABELS,
        )

    def prepare_config_and_inputs_for_common(self):
        features = floats_tensor([self.batch_size, 1, self.num_frames, self.num_mel_bins])
        return self.get_config(), {"input_features": features}


class PannsModelTester:
    """Two convolution blocks over an 8-band log-mel of 160-sample waveforms (21 frames)."""

    def __init__(self, parent, batch_size=BATCH_SIZE, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.is_training = is_training
        self.num_samples = 160
        self.hop_size = 8
        self.block_channels = [4, 8]
        # `hidden_states`: the normalised log-mel `[N, 1, frames, mel]`, then every block's output.
        self.num_hidden_layers = len(self.block_channels)
        self.seq_length = self.num_samples // self.hop_size + 1
        self.hidden_size = 8  # mel bands

    def get_config(self) -> PannsConfig:
        return PannsConfig(
            window_size=32,
            hop_size=self.hop_size,
            num_mel_bins=self.hidden_size,
            block_channels=self.block_channels,
            embedding_size=16,
            num_labels=NUM_LABELS,
        )

    def prepare_config_and_inputs_for_common(self):
        waveforms = floats_tensor([self.batch_size, self.num_samples]) * 2 - 1
        return self.get_config(), {"input_values": waveforms}


class BeatsModelTester:
    """Two Transformer layers of width 16 over 4 patch tokens (8 fbank frames x 8 mel bins, 4x4 patches)."""

    def __init__(self, parent, batch_size=BATCH_SIZE, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.is_training = is_training
        self.num_hidden_layers = 2
        self.num_attention_heads = 2
        self.hidden_size = 16
        self.num_samples = 400 + 160 * 7  # 8 fbank frames of 25 ms every 10 ms
        self.seq_length = 4

    def get_config(self) -> BeatsConfig:
        return BeatsConfig(
            num_mel_bins=8,
            patch_size=4,
            patch_embedding_dim=8,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=32,
            positional_conv_kernel_size=4,
            positional_conv_groups=2,
            relative_position_buckets=8,
            relative_position_max_distance=16,
            num_labels=NUM_LABELS,
        )

    def prepare_config_and_inputs_for_common(self):
        waveforms = floats_tensor([self.batch_size, self.num_samples]) * 2 - 1
        return self.get_config(), {"input_values": waveforms}


# ---------------------------------------------------------------- the mixin, adapted to audio encoders


class AudioEncoderModelTestMixin:
    """What `ModelTesterMixin` knows about Transformers' own audio classifiers, told about ours.

    - `_prepare_for_class(return_labels=True)` gives the multi-hot `labels` our classifiers take
      (Transformers only builds labels for the classes in its own task mappings).
    - The training tests run on the classifiers only: Transformers leaves out its base models
      (those in `MODEL_MAPPING_NAMES`, which have no loss), and ours are not in that table.
    """

    test_resize_embeddings = False  # no token embeddings
    test_can_init_all_missing_weights_before_2023 = True  # run the init check (the mixin dates models by copyright)
    base_model_class: type
    classifier_class: type

    def setUp(self):
        self.model_tester = self.model_tester_class(self)
        self.config_tester = ConfigTester(
            self, config_class=self.config_class, has_text_modality=False, common_properties=[]
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels and model_class is self.classifier_class:
            generator = torch.Generator().manual_seed(0)
            shape = (self.model_tester.batch_size, NUM_LABELS)
            inputs_dict["labels"] = torch.randint(2, shape, generator=generator).float()
        return inputs_dict

    @contextlib.contextmanager
    def _classes_with_a_loss(self):
        all_model_classes = self.all_model_classes
        self.all_model_classes = (self.classifier_class,)
        try:
            yield
        finally:
            self.all_model_classes = all_model_classes

    def test_training(self):
        with self._classes_with_a_loss():
            super().test_training()

    def check_training_gradient_checkpointing(self, gradient_checkpointing_kwargs=None):
        with self._classes_with_a_loss():
            super().check_training_gradient_checkpointing(gradient_checkpointing_kwargs)

    @unittest.skip(reason="no token embeddings: the encoders take log-mel features or waveforms")
    def test_model_get_set_embeddings(self):
        pass


class VGGishModelTest(AudioEncoderModelTestMixin, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (VGGishModel, VGGishForAudioClassification)
    base_model_class, classifier_class = VGGishModel, VGGishForAudioClassification
    config_class = VGGishConfig
    model_tester_class = VGGishModelTester
    has_attentions = False  # a CNN


class PannsModelTest(AudioEncoderModelTestMixin, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (PannsModel, PannsForAudioClassification)
    base_model_class, classifier_class = PannsModel, PannsForAudioClassification
    config_class = PannsConfig
    model_tester_class = PannsModelTester
    has_attentions = False  # a CNN


class BeatsModelTest(AudioEncoderModelTestMixin, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (BeatsModel, BeatsForAudioClassification)
    base_model_class, classifier_class = BeatsModel, BeatsForAudioClassification
    config_class = BeatsConfig
    model_tester_class = BeatsModelTester


# ---------------------------------------------------------------- feature extractors


class SegmentFeatureExtractionTester:
    """Inputs for the feature-extraction mixins: `batch_size` sequences of growing length, of samples
    (`feature_size=1`, the waveform extractors) or of `feature_size`-wide frames (VGGish's log-mel).

    The sequence mixin exercises `pad`, which the extractors inherit from `SequenceFeatureExtractor`
    with their own `padding_value` and `return_attention_mask`.
    """

    def __init__(self, parent, feature_size, padding_value, batch_size=7, min_seq_length=40, max_seq_length=100):
        self.parent = parent
        self.feature_size = feature_size
        self.padding_value = padding_value
        self.batch_size = batch_size
        self.min_seq_length = min_seq_length
        self.max_seq_length = max_seq_length
        self.seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
        self.sampling_rate = 16000

    def prepare_feat_extract_dict(self) -> dict:
        return {
            "feature_size": self.feature_size,
            "sampling_rate": self.sampling_rate,
            "padding_value": self.padding_value,
            "return_attention_mask": False,
            "num_segments": 3,
        }

    def prepare_inputs_for_common(self, equal_length=False, numpify=False):
        generator = np.random.default_rng(0)
        lengths = (
            [self.max_seq_length] * self.batch_size
            if equal_length
            else [self.min_seq_length + index * self.seq_length_diff for index in range(self.batch_size)]
        )
        shape = (lambda length: (length,)) if self.feature_size == 1 else (lambda length: (length, self.feature_size))
        sequences = [generator.uniform(-1, 1, shape(length)) for length in lengths]
        return sequences if numpify else [sequence.tolist() for sequence in sequences]


class VGGishFeatureExtractionTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = VGGishFeatureExtractor

    def setUp(self):
        # Padding with 0 (not VGGish's default, the log-mel of silence): the mixin's check of padded
        # sums compares them with a length that differs from the longest input's, which only 0 satisfies.
        self.feat_extract_tester = SegmentFeatureExtractionTester(self, feature_size=64, padding_value=0.0)


class PannsFeatureExtractionTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = PannsFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = SegmentFeatureExtractionTester(self, feature_size=1, padding_value=0.0)


class BeatsFeatureExtractionTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = BeatsFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = SegmentFeatureExtractionTester(self, feature_size=1, padding_value=0.0)


# ---------------------------------------------------------------- checks the mixins leave to accelerators

TESTERS = {
    VGGishModel: VGGishModelTester,
    VGGishForAudioClassification: VGGishModelTester,
    PannsModel: PannsModelTester,
    PannsForAudioClassification: PannsModelTester,
    BeatsModel: BeatsModelTester,
    BeatsForAudioClassification: BeatsModelTester,
}
# Per-dtype tolerance of the outputs against float32 (relative to the output's scale).
HALF_PRECISION_TOLERANCES = {torch.float16: 1e-2, torch.bfloat16: 5e-2}


def tiny_model_and_inputs(model_class, batch_size=BATCH_SIZE, seed=0):
    config, inputs = TESTERS[model_class](None, batch_size=batch_size).prepare_config_and_inputs_for_common()
    torch.manual_seed(seed)
    return model_class(config).eval(), inputs


def main_outputs(output) -> dict[str, torch.Tensor]:
    return {name: output[name] for name in ("logits", "embeddings") if output.get(name) is not None}


def assert_close_to_reference(actual: dict, expected: dict, tolerance: float) -> None:
    assert actual.keys() == expected.keys()
    for name, reference in expected.items():
        assert torch.isfinite(actual[name]).all(), f"{name} has non-finite values"
        scale = reference.abs().max().clamp(min=1.0)
        error = (actual[name].float() - reference).abs().max() / scale
        assert error <= tolerance, f"{name}: relative error {error:.2e} > {tolerance:.0e}"


@pytest.mark.parametrize("model_class", list(TESTERS), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_outputs_are_finite_and_agree_with_float32(model_class, dtype, tmp_path):
    model, inputs = tiny_model_and_inputs(model_class)
    with torch.no_grad():
        expected = main_outputs(model(**inputs))
        model.save_pretrained(tmp_path)
        # `.to(dtype)`, and `from_pretrained(dtype=...)` with float32 inputs (the model casts them).
        converted = copy.deepcopy(model).to(dtype)
        loaded = model_class.from_pretrained(tmp_path, dtype=dtype).eval()
        for half_model in (converted, loaded):
            assert_close_to_reference(main_outputs(half_model(**inputs)), expected, HALF_PRECISION_TOLERANCES[dtype])
        # Autocast on a float32 model (bfloat16 is the CPU autocast type).
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = main_outputs(model(**inputs))
    assert_close_to_reference(autocast, expected, HALF_PRECISION_TOLERANCES[torch.bfloat16])


def test_panns_front_end_stays_float32_in_half_precision(tmp_path):
    model, _ = tiny_model_and_inputs(PannsModel)
    model.save_pretrained(tmp_path)
    loaded = PannsModel.from_pretrained(tmp_path, dtype=torch.float16)
    assert loaded.log_mel.stft_kernels.dtype == loaded.log_mel.mel_filters.dtype == torch.float32
    assert loaded.conv_blocks[0].conv1.weight.dtype == torch.float16
    # A waveform at full scale: its STFT power (about 3e5 here) overflows float16.
    waveform = torch.sin(torch.arange(160) * 0.3)[None]
    with torch.no_grad():
        assert torch.isfinite(loaded(waveform).embeddings).all()


@pytest.mark.parametrize("model_class", list(TESTERS), ids=lambda cls: cls.__name__)
def test_forced_disk_offloading_gives_the_same_outputs(model_class, tmp_path):
    model, inputs = tiny_model_and_inputs(model_class)
    with torch.no_grad():
        expected = main_outputs(model(**inputs))
    model.save_pretrained(tmp_path / "model")
    model_size = model.get_memory_footprint()
    offloaded = model_class.from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": model_size // 3},
        offload_folder=tmp_path / "offload",
    ).eval()
    assert "disk" in set(offloaded.hf_device_map.values()), offloaded.hf_device_map
    with torch.no_grad():
        actual = main_outputs(offloaded(**inputs))
    for name, reference in expected.items():
        torch.testing.assert_close(actual[name], reference, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("model_class", list(TESTERS), ids=lambda cls: cls.__name__)
def test_hidden_states_with_leading_dims_receive_gradients(model_class):
    model, inputs = tiny_model_and_inputs(model_class, batch_size=4)
    name, value = next(iter(inputs.items()))
    clips = value.reshape(2, 2, *value.shape[1:])  # [B, T, ...]: two clips of two segments
    wants_attentions = model_class in (BeatsModel, BeatsForAudioClassification)
    output = model(**{name: clips}, output_hidden_states=True, output_attentions=wants_attentions)
    recorded = [*output.hidden_states, *(getattr(output, "attentions", None) or ())]
    for state in recorded:
        assert state.shape[:2] == (2, 2)
        state.retain_grad()
    main_outputs(output).popitem()[1].sum().backward()
    assert all(state.grad is not None for state in recorded)


@pytest.mark.parametrize("model_class", [VGGishForAudioClassification, PannsForAudioClassification, BeatsForAudioClassification], ids=lambda cls: cls.__name__)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(model_class):
    model, inputs = tiny_model_and_inputs(model_class)
    model.train()
    labels = torch.randint(2, (BATCH_SIZE, NUM_LABELS), generator=torch.Generator().manual_seed(0)).float()

    def loss_and_gradients():
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout (and BEATs layerdrop) draws in both runs
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    reference_state = copy.deepcopy(model.state_dict())
    loss, gradients = loss_and_gradients()
    model.load_state_dict(reference_state)  # batch norm running statistics moved in training mode
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    checkpointed_loss, checkpointed_gradients = loss_and_gradients()
    torch.testing.assert_close(checkpointed_loss, loss)
    assert checkpointed_gradients.keys() == gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(checkpointed_gradients[name], gradient, msg=name)


def test_missing_batch_norm_counters_are_initialised(tmp_path):
    """Official checkpoints often lack `num_batches_tracked`: loading must set the counters, not
    leave uninitialised memory."""
    from safetensors.torch import load_file, save_file

    model, _ = tiny_model_and_inputs(PannsForAudioClassification)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file(
        {key: value for key, value in weights.items() if not key.endswith("num_batches_tracked")},
        tmp_path / "model.safetensors",
        metadata={"format": "pt"},
    )
    loaded = PannsForAudioClassification.from_pretrained(tmp_path)
    counters = {name: int(buffer) for name, buffer in loaded.named_buffers() if name.endswith("num_batches_tracked")}
    assert counters and set(counters.values()) == {0}
