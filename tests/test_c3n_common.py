"""Transformers' own common model and config tests, applied to C3N (tiny PVT-v2, precomputed audio).

A few mixin tests assume a text or sequence model (token embeddings, `(seq_len, hidden)` hidden
states, per-layer attention heads); each is overridden below, either with the same check for
C3N's own shapes or with a skip and its reason.
"""

import copy
import unittest

import torch
from transformers_common import ConfigTester, ModelTesterMixin, floats_tensor

from avs_models.models.backbones import pvt_v2_b5_backbone_config
from avs_models.models.c3n import C3NConfig, C3NForAudioVisualSegmentation


class C3NModelTester:
    def __init__(self, parent, batch_size=2, num_frames=2, image_size=32):
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.image_size = image_size
        self.is_training = True
        self.hidden_sizes = [8, 16, 24, 32]
        self.hidden_size = 16
        self.num_visual_classes = 10
        self.num_audio_classes = 7
        self.audio_embed_dim = 12

    def get_config(self):
        return C3NConfig(
            backbone_config=pvt_v2_b5_backbone_config(
                depths=[1, 1, 1, 1], hidden_sizes=self.hidden_sizes, num_attention_heads=[1, 1, 1, 1]
            ),
            hidden_size=self.hidden_size,
            head_hidden_sizes=[8, 4],
            num_visual_classes=self.num_visual_classes,
            num_audio_classes=self.num_audio_classes,
            audio_embed_dim=self.audio_embed_dim,
        )

    def prepare_config_and_inputs_for_common(self):
        clip = (self.batch_size, self.num_frames)
        inputs = {
            "pixel_values": floats_tensor([*clip, 3, self.image_size, self.image_size]),
            "audio_embeds": floats_tensor([*clip, self.audio_embed_dim]),
            "audio_logits": floats_tensor([*clip, self.num_audio_classes], scale=4.0),
        }
        return self.get_config(), inputs

    def stage_sizes(self) -> list[int]:
        """Side of each backbone stage's map (stride 4, 8, 16, 32)."""
        return [self.image_size // stride for stride in (4, 8, 16, 32)]


class C3NCommonTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (C3NForAudioVisualSegmentation,)
    test_resize_embeddings = False  # no token embeddings

    def setUp(self):
        self.model_tester = C3NModelTester(self)
        self.config_tester = ConfigTester(self, config_class=C3NConfig, has_text_modality=False)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:
            tester = self.model_tester
            shape = (tester.batch_size, tester.num_frames, tester.image_size, tester.image_size)
            # the same labels on every call: some mixin tests compare two forwards with labels
            inputs_dict["labels"] = torch.randint(
                0, 2, shape, generator=torch.Generator().manual_seed(0)
            ).float()
        return inputs_dict

    def test_config(self):
        tester = self.config_tester
        tester.create_and_test_config_common_properties()
        tester.create_and_test_config_to_json_string()
        tester.create_and_test_config_to_json_file()
        tester.create_and_test_config_from_and_save_pretrained()
        tester.create_and_test_config_from_and_save_pretrained_subfolder()
        tester.create_and_test_config_from_and_save_pretrained_composite()
        # create_and_test_config_with_num_labels is left out: it builds a 5-label config, which C3N
        # (binary only) refuses; tests/test_c3n.py checks that refusal.
        tester.check_config_arguments_init()
        tester.create_and_test_config_from_pretrained_custom_kwargs()
        tester.check_config_can_be_init_without_params()

    def _outputs_asking_for(self, flag: str):
        """The outputs of a forward with `flag` (`output_hidden_states` / `output_attentions`) passed as
        an argument, then set in the config."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        for from_config in (False, True):
            config = copy.deepcopy(config)
            setattr(config, flag, from_config)
            model = C3NForAudioVisualSegmentation(config).eval()
            with torch.no_grad():
                yield model(**inputs, **({} if from_config else {flag: True}))

    def test_hidden_states_output(self):
        # The mixin expects (seq_len, hidden) states; C3N's are clip feature maps.
        tester = self.model_tester
        clip = (tester.batch_size, tester.num_frames)
        decoder_sizes = [2 * size for size in reversed(tester.stage_sizes())]
        for outputs in self._outputs_asking_for("output_hidden_states"):
            self.assertEqual(
                [tuple(state.shape) for state in outputs.hidden_states],
                [
                    (*clip, width, size, size)
                    for width, size in zip(tester.hidden_sizes, tester.stage_sizes())
                ],
            )
            self.assertEqual(
                [tuple(state.shape) for state in outputs.decoder_hidden_states],
                [(*clip, tester.hidden_size, size, size) for size in decoder_sizes],
            )
            self.assertIsNone(outputs.attentions)

    def test_attention_outputs(self):
        # The mixin expects per-layer (heads, seq_len, seq_len) weights; C3N's attentions are CCAM's
        # spatial maps, one per backbone stage, plus the consensus's top classes.
        tester = self.model_tester
        clip = (tester.batch_size, tester.num_frames)
        for outputs in self._outputs_asking_for("output_attentions"):
            self.assertEqual(
                [tuple(attention.shape) for attention in outputs.attentions],
                [(*clip, size, size) for size in tester.stage_sizes()],
            )
            self.assertEqual(tuple(outputs.consensus_top_visual_classes.shape), (*clip, 5))
            self.assertEqual(tuple(outputs.consensus_top_pair_scores.shape), (*clip, 5, 5))
            self.assertIsNone(outputs.hidden_states)

    @unittest.skip(reason="C3N takes pixel values and audio: it has no token embeddings to get or set")
    def test_model_get_set_embeddings(self):
        pass

    @unittest.skip(
        reason="the mixin watches the backbone's first GradientCheckpointingLayer (PvtV2EncoderLayer), which C3N "
        "runs block by block (CCAM needs each stage's last block output); tests/test_c3n.py checks C3N's "
        "checkpointing: same loss and gradients"
    )
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(reason="same as test_training_gradient_checkpointing (use_reentrant=False is its default)")
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(
        reason="reentrant checkpointing forbids torch.autograd.grad inside forward (CCAM); C3N refuses it with a "
        "message, tested in tests/test_c3n.py"
    )
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass
