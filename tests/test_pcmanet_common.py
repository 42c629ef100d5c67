"""Transformers' own common tests (`ModelTesterMixin`, `ConfigTester`) applied to PCMANet, binary and
71 classes, on tiny configs; plus the checks those mixins leave to accelerators or do not make:
half precision, forced CPU and disk offloading on CPU, initialisation of every buffer.

A mixin test is switched off only by a mixin flag or an overriding `skip` with its reason.
"""

from __future__ import annotations

import copy
import unittest

import pytest
import torch
from accelerate import cpu_offload
from transformers_common import ConfigTester, ModelTesterMixin, floats_tensor

from test_pcmanet import clip_inputs, confident_model, tiny_config, tiny_model

from avs_models import PCMANetConfig, PCMANetForAudioVisualSegmentation

NUM_STAGES = 4


class PCMANetModelTester:
    """`tiny_config` (a one-layer-per-stage ResNet of widths 8-32, `C = 16`, 4 AVGA groups, 2 QSCA
    heads of width 8) on 2 clips of 2 frames of 32 x 32."""

    def __init__(self, parent, num_labels: int):
        self.parent = parent
        self.num_labels = num_labels
        self.batch_size = 2
        self.num_frames = 2
        self.image_size = 32
        self.is_training = True
        # One hidden state and one AVGA map per stage, two kinds of hidden states (backbone and
        # decoder maps). The first of each is stage 1's at stride 4, `(B, T, C, 8, 8)` and
        # `(B, T, g, 8, 8)`: the mixin reads the last two dims as (seq_length, hidden_size) and the
        # last three as (num_attention_heads, seq_length, key_length).
        self.num_hidden_layers = NUM_STAGES
        self.expected_num_hidden_layers = NUM_STAGES
        self.num_hidden_states_types = 2
        self.num_attention_heads = tiny_config().avga_groups
        self.seq_length = self.hidden_size = self.image_size // 4

    def get_config(self) -> PCMANetConfig:
        return tiny_config(num_labels=self.num_labels)

    def prepare_config_and_inputs_for_common(self):
        shape = [self.batch_size, self.num_frames]
        pixel_values = floats_tensor([*shape, 3, self.image_size, self.image_size])
        audio_embeds = floats_tensor([*shape, 128])
        return self.get_config(), {"pixel_values": pixel_values, "audio_embeds": audio_embeds}

    def labels(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        shape = (self.batch_size, self.num_frames, self.image_size, self.image_size)
        return torch.randint(max(self.num_labels, 2), shape, generator=generator)


class PCMANetModelTestMixin:
    """What `ModelTesterMixin` knows about Transformers' own segmentation models, told about PCMANet:
    its labels are `(B, T, H, W)` masks or class maps (Transformers builds labels only for the
    classes of its own task mappings)."""

    all_model_classes = (PCMANetForAudioVisualSegmentation,)
    test_resize_embeddings = False  # no token embeddings
    test_can_init_all_missing_weights_before_2023 = True  # run the init check (the mixin dates models by copyright)
    # Some parameters get no gradient by design, as in the official model: QSCA 1's folded key/value
    # projection only updates the audio state, which no later stage reads, and the official scatter
    # of the kept tokens' attention outputs is gradient-free (`qsca_detach_selected_tokens`), so
    # the visual queries of QSCA 1-3 get none either.
    test_all_params_have_gradient = False
    num_labels: int

    def setUp(self):
        self.model_tester = PCMANetModelTester(self, self.num_labels)
        self.config_tester = ConfigTester(
            self, config_class=PCMANetConfig, has_text_modality=False, common_properties=["num_labels"]
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels:
            inputs_dict["labels"] = self.model_tester.labels()
        return inputs_dict

    @unittest.skip(reason="PCMANet always has four stages; the tiny backbone has one layer per stage")
    def test_num_layers_is_small(self):
        pass

    @unittest.skip(reason="no token embeddings: the model takes frames and audio embeddings")
    def test_model_get_set_embeddings(self):
        pass


class PCMANetBinaryModelTest(PCMANetModelTestMixin, ModelTesterMixin, unittest.TestCase):
    num_labels = 1


class PCMANetSemanticModelTest(PCMANetModelTestMixin, ModelTesterMixin, unittest.TestCase):
    num_labels = 71


# ---------------------------------------------------------------- beyond the mixins


def masks(model, logits: torch.Tensor) -> torch.Tensor:
    return logits > 0 if model.config.num_labels == 1 else logits.argmax(dim=2)


def test_every_buffer_is_set_by_init_weights():
    """All weights missing: `_init_weights` alone sets every parameter and buffer, BatchNorm counters included."""
    config = tiny_model().config
    model = PCMANetForAudioVisualSegmentation.from_pretrained(None, config=config, state_dict={})
    batch_norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert batch_norms
    for module in batch_norms:
        assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
        assert torch.equal(module.running_var, torch.ones_like(module.running_var))
        assert module.num_batches_tracked.item() == 0
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert tensor.device.type == "cpu", name
        assert torch.isfinite(tensor.float()).all(), name


TEST_CLIP = clip_inputs(batch=1, frames=2)


@pytest.fixture(scope="module", params=[1, 71], ids=["binary", "71-classes"])
def fitted_model(request) -> PCMANetForAudioVisualSegmentation:
    """A tiny model fitted for a few steps to `TEST_CLIP` (a square mask), so that its masks are
    decisive as a trained model's are: a random model's logits crowd around the decision boundary,
    where any rounding flips a pixel."""
    model = tiny_model(num_labels=request.param).train()
    labels = torch.zeros(1, 2, 64, 64, dtype=torch.long)
    labels[..., 16:48, 16:48] = 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(6):
        loss = model(**TEST_CLIP, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_masks_agree_with_fp32(fitted_model, dtype, tmp_path):
    model = fitted_model
    with torch.no_grad():
        reference = model(**TEST_CLIP)
        assert 0 < reference.kept_token_ratios.min() < 1, "the confidence masks select some tokens"
        half = copy.deepcopy(model).to(dtype)
        cast = half(**TEST_CLIP)  # fp32 inputs are cast to the model's dtype
        model.save_pretrained(tmp_path)
        loaded = PCMANetForAudioVisualSegmentation.from_pretrained(tmp_path, dtype=dtype).eval()
        assert loaded.dtype == dtype
        from_pretrained = loaded(**TEST_CLIP)
        with torch.autocast("cpu", dtype=dtype):
            autocast = model(**TEST_CLIP)
    for output in (cast, from_pretrained, autocast):
        assert output.logits.dtype == dtype
        assert torch.isfinite(output.logits).all()
        agreement = (masks(model, output.logits) == masks(model, reference.logits)).float().mean().item()
        assert agreement >= 0.99, agreement


def test_fp16_avga_survives_an_all_zero_channel_group():
    """AVGA divides by a group's norm: F.normalize's 1e-12 floor is 0 in fp16, which made 0/0."""
    model = tiny_model()
    with torch.no_grad():
        first_group = slice(0, model.config.hidden_size // model.config.avga_groups)
        grouped_conv = model.grouped_attention[0].grouped_conv.convolution
        grouped_conv.weight[first_group] = 0
        grouped_conv.bias[first_group] = 0
        output = model.to(torch.float16)(**clip_inputs(), output_attentions=True)
    assert torch.isfinite(output.logits).all()
    assert torch.all(output.attentions[0][:, :, 0] == 0), "a zero group has zero similarity"


def _offloaded_outputs_match(model, offloaded, inputs):
    with torch.no_grad():
        expected = model(**inputs, output_attentions=True)
        actual = offloaded(**inputs, output_attentions=True)
    torch.testing.assert_close(actual.logits, expected.logits)
    for ours, theirs in zip(actual.attentions, expected.attentions):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(actual.kept_token_ratios, expected.kept_token_ratios)


def test_cpu_offloading_gives_the_same_outputs():
    """Weights on the meta device, loaded by Accelerate's hooks module by module at each forward."""
    model = confident_model()
    offloaded = cpu_offload(copy.deepcopy(model), execution_device=torch.device("cpu"))
    assert any(parameter.device.type == "meta" for parameter in offloaded.parameters())
    _offloaded_outputs_match(model, offloaded, clip_inputs())


def test_disk_offloading_with_a_tiny_memory_budget_gives_the_same_outputs(tmp_path):
    model = confident_model()
    model.save_pretrained(tmp_path / "model")
    offloaded = PCMANetForAudioVisualSegmentation.from_pretrained(
        tmp_path / "model", device_map="auto", max_memory={"cpu": 20_000}, offload_folder=tmp_path / "offload"
    ).eval()
    assert "disk" in set(offloaded.hf_device_map.values())
    _offloaded_outputs_match(model, offloaded, clip_inputs())
