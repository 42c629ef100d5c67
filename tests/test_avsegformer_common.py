"""Transformers' own common model and config tests, applied to AVSegFormer (binary and 71 classes).

A mixin test is switched off only by a mixin flag or an overriding `skipTest` with its reason. The
output-introspection tests are overridden (as Transformers does for Mask2Former): AVSegFormer
returns backbone, encoder and decoder states and four kinds of attention maps, not one
`hidden_states` / `attentions` pair of a token model.
"""

import copy
import unittest

import torch
from tiny_training import TINY_AVSEGFORMER
from transformers_common import ConfigTester, ModelTesterMixin, floats_tensor

from avs_models import AVSegFormerConfig, AVSegFormerForAudioVisualSegmentation


class AVSegFormerModelTester:
    def __init__(self, parent, num_labels=1, batch_size=2, num_frames=2, image_size=32):
        self.parent = parent
        self.num_labels = num_labels
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.image_size = image_size
        self.is_training = True
        config = TINY_AVSEGFORMER["config"]
        self.hidden_size = config["hidden_size"]
        self.num_queries = config["num_queries"]
        self.num_hidden_layers = config["encoder_layers"]
        self.num_decoder_layers = config["decoder_layers"]
        self.num_attention_heads = config["encoder_attention_heads"]
        # Encoder tokens: stages 2-4 of a 32x32 frame (4x4, 2x2 and 1x1).
        self.seq_length = 4 * 4 + 2 * 2 + 1

    def get_config(self) -> AVSegFormerConfig:
        kwargs = copy.deepcopy(TINY_AVSEGFORMER["config"])
        kwargs.pop("audio_config")  # the common tests feed `audio_embeds`
        return AVSegFormerConfig(**kwargs, num_labels=self.num_labels)

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_frames, 3, self.image_size, self.image_size])
        audio_embeds = floats_tensor([self.batch_size, self.num_frames, 128])
        return self.get_config(), {"pixel_values": pixel_values, "audio_embeds": audio_embeds}


class AVSegFormerCommonTests(ModelTesterMixin):
    all_model_classes = (AVSegFormerForAudioVisualSegmentation,)
    num_labels = 1
    test_resize_embeddings = False  # no token embeddings
    # Run the init check (the mixin dates models by their copyright year).
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = AVSegFormerModelTester(self, num_labels=self.num_labels)
        self.config_tester = ConfigTester(self, config_class=AVSegFormerConfig, has_text_modality=False)

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:
            tester = self.model_tester
            shape = (tester.batch_size, tester.num_frames, tester.image_size, tester.image_size)
            generator = torch.Generator().manual_seed(0)  # the same labels on every call
            inputs_dict["labels"] = torch.randint(0, max(tester.num_labels, 2), shape, generator=generator)
        return inputs_dict

    def _check_outputs(self, outputs, hidden_states: bool, attentions: bool):
        tester = self.model_tester
        frames = tester.batch_size * tester.num_frames
        if not hidden_states:
            self.assertIsNone(outputs.encoder_hidden_states)
        else:
            self.assertEqual(len(outputs.backbone_hidden_states), 4)
            self.assertEqual(len(outputs.encoder_hidden_states), tester.num_hidden_layers + 1)
            self.assertEqual(len(outputs.decoder_hidden_states), tester.num_decoder_layers + 1)
            self.assertEqual(
                outputs.encoder_hidden_states[0].shape, (frames, tester.seq_length, tester.hidden_size)
            )
            self.assertEqual(
                outputs.decoder_hidden_states[0].shape, (frames, tester.num_queries, tester.hidden_size)
            )
        if not attentions:
            self.assertIsNone(outputs.cross_attentions)
        else:
            heads, queries = tester.num_attention_heads, tester.num_queries
            self.assertEqual(len(outputs.encoder_attentions), tester.num_hidden_layers)
            self.assertEqual(outputs.encoder_attentions[0].shape[:3], (frames, tester.seq_length, heads))
            self.assertEqual(len(outputs.cross_attentions), tester.num_decoder_layers)
            self.assertEqual(outputs.cross_attentions[0].shape, (frames, heads, queries, tester.seq_length))
            self.assertEqual(outputs.decoder_attentions[0].shape, (frames, heads, queries, queries))
            self.assertEqual(outputs.mixer_attentions.shape[:2], (frames, heads))

    def test_hidden_states_output(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = AVSegFormerForAudioVisualSegmentation(config).eval()
        with torch.no_grad():
            self._check_outputs(
                model(**inputs, output_hidden_states=True), hidden_states=True, attentions=False
            )
        config.output_hidden_states = True  # the config's default is honoured too
        model = AVSegFormerForAudioVisualSegmentation(config).eval()
        with torch.no_grad():
            self._check_outputs(model(**inputs), hidden_states=True, attentions=False)

    def test_attention_outputs(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = AVSegFormerForAudioVisualSegmentation(config).eval()
        with torch.no_grad():
            self._check_outputs(model(**inputs, output_attentions=True), hidden_states=False, attentions=True)
        config.output_attentions = True
        model = AVSegFormerForAudioVisualSegmentation(config).eval()
        with torch.no_grad():
            outputs = model(**inputs, output_hidden_states=True)
        self._check_outputs(outputs, hidden_states=True, attentions=True)

    def test_retain_grad_hidden_states_attentions(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        config.output_hidden_states = config.output_attentions = True
        model = AVSegFormerForAudioVisualSegmentation(config)
        outputs = model(**inputs)
        kept = [
            outputs.backbone_hidden_states[0],
            outputs.encoder_hidden_states[0],
            outputs.decoder_hidden_states[0],
            outputs.encoder_attentions[0],
            outputs.decoder_attentions[0],
            outputs.cross_attentions[0],
            outputs.mixer_attentions,
        ]
        for tensor in kept:
            tensor.retain_grad()
        outputs.logits.flatten()[0].backward()
        for tensor in kept:
            self.assertIsNotNone(tensor.grad)

    @unittest.skip(reason="no token embeddings: the model takes frames and audio embeddings")
    def test_model_get_set_embeddings(self):
        pass


class AVSegFormerBinaryTest(AVSegFormerCommonTests, unittest.TestCase):
    num_labels = 1


class AVSegFormerSemanticTest(AVSegFormerCommonTests, unittest.TestCase):
    num_labels = 71
