"""Transformers' own common model and config tests, applied to TPAVI (binary S4/MS3 and 71-class
AVSS with tiny backbones, precomputed audio embeddings)."""

import unittest

import torch
from transformers_common import ConfigTester, ModelTesterMixin, floats_tensor

from avs_models import TPAVIConfig, TPAVIForAudioVisualSegmentation
from avs_models.models.backbones import pvt_v2_b5_backbone_config, resnet50_backbone_config


class TPAVIModelTester:
    def __init__(self, parent, num_labels=1, backbone="resnet", batch_size=2, num_frames=5, image_size=32):
        self.parent = parent
        self.num_labels = num_labels
        self.backbone = backbone
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.image_size = image_size
        self.is_training = True
        self.hidden_size = 16

    def get_config(self):
        if self.backbone == "resnet":
            backbone_config = resnet50_backbone_config(
                embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]
            )
        else:
            backbone_config = pvt_v2_b5_backbone_config(
                depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 1, 1]
            )
        return TPAVIConfig(
            backbone_config=backbone_config,
            hidden_size=self.hidden_size,
            head_hidden_sizes=[8, 4],
            num_labels=self.num_labels,
            tpavi_audio_bias=self.num_labels == 1,
            avm_loss_weight=0.5,
        )

    def prepare_config_and_inputs_for_common(self):
        clip = (self.batch_size, self.num_frames)
        inputs = {
            "pixel_values": floats_tensor([*clip, 3, self.image_size, self.image_size]),
            "audio_embeds": floats_tensor([*clip, 128]),
        }
        return self.get_config(), inputs


class TPAVICommonTests(ModelTesterMixin):
    all_model_classes = (TPAVIForAudioVisualSegmentation,)
    num_labels = 1
    backbone = "resnet"
    test_resize_embeddings = False  # no token embeddings
    # the mixin runs this only for models added after 2022 unless asked: every weight must come from _init_weights
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = TPAVIModelTester(self, num_labels=self.num_labels, backbone=self.backbone)
        self.config_tester = ConfigTester(self, config_class=TPAVIConfig, has_text_modality=False)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:
            tester = self.model_tester
            shape = (tester.batch_size, tester.num_frames, tester.image_size, tester.image_size)
            # the same labels on every call: tests compare two forwards with labels
            labels = torch.randint(
                0, max(tester.num_labels, 2), shape, generator=torch.Generator().manual_seed(0)
            )
            labels = labels.to(inputs_dict["pixel_values"].device)
            inputs_dict["labels"] = labels.float() if tester.num_labels == 1 else labels
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip(reason="no token embeddings: the inputs are frames and audio embeddings")
    def test_model_get_set_embeddings(self):
        pass

    def test_hidden_states_output(self):
        # Image-shaped hidden states (the mixin's version expects (seq_length, hidden_size) tokens):
        # the 4 stage maps after TPAVI (B, T, C, h, w) and TPAVI's audio features (B, T, C).
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        tester = self.model_tester
        for through_config in (False, True):
            config.output_hidden_states = through_config
            model = TPAVIForAudioVisualSegmentation(config).eval()
            arguments = {} if through_config else {"output_hidden_states": True}
            with torch.no_grad():
                output = model(**inputs_dict, **arguments)
            sizes = [tester.image_size // stride for stride in (4, 8, 16, 32)]
            clip = [tester.batch_size, tester.num_frames]
            self.assertEqual(
                [list(m.shape) for m in output.hidden_states], [[*clip, 16, s, s] for s in sizes]
            )
            self.assertEqual([list(a.shape) for a in output.audio_hidden_states], [[*clip, 16]] * 4)

    def test_attention_outputs(self):
        # TPAVI's attention is pixel-to-frame (B, T, S, h, w), not (heads, seq, seq) of tokens.
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        tester = self.model_tester
        for through_config in (False, True):
            config.output_attentions = through_config
            model = TPAVIForAudioVisualSegmentation(config).eval()
            arguments = {} if through_config else {"output_attentions": True}
            with torch.no_grad():
                output = model(**inputs_dict, **arguments)
            clip = [tester.batch_size, tester.num_frames, 5]
            sizes = [tester.image_size // stride for stride in (4, 8, 16, 32)]
            self.assertEqual([list(a.shape) for a in output.attentions], [[*clip, s, s] for s in sizes])
            self.assertIsNone(output.hidden_states)


class TPAVIBinaryTest(TPAVICommonTests, unittest.TestCase):
    num_labels = 1


class TPAVISemanticTest(TPAVICommonTests, unittest.TestCase):
    num_labels = 71


class TPAVIPvtBackboneTest(TPAVICommonTests, unittest.TestCase):
    backbone = "pvt_v2"

    @unittest.skip(
        reason="Transformers' PvtV2EncoderLayer returns a nested tuple, which reentrant checkpointing cannot "
        "carry gradients through; the default (non-reentrant) checkpointing is tested"
    )
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass
