"""C3N with tiny PVT-v2 / Swin backbones: Auto classes, save/load, CCAM, consensus, loss, input errors."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from media import write_video
from PIL import Image
from safetensors.torch import load_file, save_file
from test_beats import TINY as TINY_BEATS
from transformers import ASTConfig, AutoConfig, AutoModel, pipeline

from avs_models import AutoModelForAudioVisualSegmentation, VGGishConfig, VGGishForAudioClassification
from avs_models.cli import main as cli_main
from avs_models.models.backbones import pvt_v2_b5_backbone_config, swin_base_backbone_config
from avs_models.models.beats import BeatsFeatureExtractor
from avs_models.models.c3n import (
    C3NConfig,
    C3NForAudioVisualSegmentation,
    compute_label_similarity,
    load_official_similarity_matrix,
)
from avs_models.models.c3n.convert_c3n_original_to_hf import main as convert_main
from avs_models.models.label_names import AUDIOSET_CLASSES, IMAGENET_1K_CLASSES
from avs_models.models.labels import is_semantic_segmentation
from avs_models.models.panns import PannsFeatureExtractor
from avs_models.models.vggish import VGGishFeatureExtractor
from avs_models.processing import AudioVisualImageProcessor, AudioVisualProcessor

NUM_VISUAL, NUM_AUDIO, AUDIO_DIM = 10, 7, 12


def tiny_config(backbone="pvt_v2", **overrides):
    if backbone == "pvt_v2":
        backbone_config = pvt_v2_b5_backbone_config(
            depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 1, 1]
        )
    else:
        backbone_config = swin_base_backbone_config(
            embed_dim=8, depths=[1, 2, 1, 2], num_heads=[1, 1, 1, 1], image_size=64, window_size=4
        )
    kwargs = {
        "backbone_config": backbone_config,
        "hidden_size": 16,
        "head_hidden_sizes": [8, 4],
        "num_visual_classes": NUM_VISUAL,
        "num_audio_classes": NUM_AUDIO,
        "audio_embed_dim": AUDIO_DIM,
    }
    kwargs.update(overrides)
    return C3NConfig(**kwargs)


def tiny_model(backbone="pvt_v2", seed=0, **overrides):
    torch.manual_seed(seed)
    model = C3NForAudioVisualSegmentation(tiny_config(backbone, **overrides))
    model.set_label_similarity(torch.rand(NUM_VISUAL, NUM_AUDIO))
    # a visual head with large weights so the consensus is not decided by a near tie
    with torch.no_grad():
        model.visual_classifier.weight.mul_(50)
    return model.eval()


def tiny_inputs(batch=2, frames=3, height=64, width=64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(batch, frames, 3, height, width, generator=generator),
        "audio_embeds": torch.randn(batch, frames, AUDIO_DIM, generator=generator),
        "audio_logits": 3 * torch.randn(batch, frames, NUM_AUDIO, generator=generator),
    }


def test_auto_classes_build_c3n(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, C3NConfig)
    assert type(AutoModel.from_config(config)) is C3NForAudioVisualSegmentation
    assert type(AutoModelForAudioVisualSegmentation.from_config(config)) is C3NForAudioVisualSegmentation


def test_default_config_is_pvt_v2_b5():
    config = C3NConfig()
    assert config.backbone_config.model_type == "pvt_v2"
    assert list(config.backbone_config.depths) == [3, 6, 40, 3]
    assert config.backbone_config.to_dict() == pvt_v2_b5_backbone_config().to_dict()
    assert (config.consensus_audio_exponent, config.consensus_visual_exponent) == (0.1, 0.1)
    assert config.ccam_weight_normalization == "l2"


@pytest.mark.parametrize("backbone", ["pvt_v2", "swin"])
@pytest.mark.parametrize("batch,frames,height,width", [(2, 3, 64, 64), (1, 2, 64, 96)])
def test_output_shapes_any_batch_and_frames(backbone, batch, frames, height, width):
    model = tiny_model(backbone)
    with torch.no_grad():
        output = model(**tiny_inputs(batch, frames, height, width))
    assert output.logits.shape == (batch, frames, 1, height, width)
    assert output.unified_labels.shape == (batch, frames)
    assert output.visual_logits.shape == (batch, frames, NUM_VISUAL)
    assert [w.shape[-1] for w in output.ccam_weights] == list(model.backbone.channels)
    assert torch.isfinite(output.logits).all()


def test_save_and_load_round_trip_keeps_similarity_matrix(tmp_path):
    model = tiny_model()
    inputs = tiny_inputs()
    with torch.no_grad():
        before = model(**inputs)
    model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    assert torch.equal(stored["label_similarity"], model.label_similarity)
    reloaded = AutoModelForAudioVisualSegmentation.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.label_similarity, model.label_similarity)
    with torch.no_grad():
        after = reloaded(**inputs)
    torch.testing.assert_close(after.logits, before.logits)
    assert torch.equal(after.unified_labels, before.unified_labels)


def _reference_ccam_weights(model, pixel_values, unified_labels):
    """Grad-CAM weights the plain way: retain block-output grads on a copy and call backward()."""
    reference = copy.deepcopy(model)
    blocks = {"pvt_v2": lambda b: b.encoder.layers, "swin": lambda b: b.swin.encoder.layers}
    stages = blocks[reference.config.backbone_config.model_type](reference.backbone)
    outputs = []

    def keep(module, inputs, output):
        output[0].retain_grad()
        outputs.append(output[0])

    handles = [stage.blocks[-1].register_forward_hook(keep) for stage in stages]
    flat = pixel_values.flatten(0, 1)
    features = reference.backbone(flat).feature_maps
    logits = reference.visual_classifier(features[-1].mean(dim=(2, 3)))
    logits.gather(1, unified_labels.flatten()[:, None]).sum().backward()
    for handle in handles:
        handle.remove()
    return [output.grad.mean(dim=1) for output in outputs]


@pytest.mark.parametrize("backbone", ["pvt_v2", "swin"])
def test_ccam_weights_match_backward_reference_and_leave_grads_untouched(backbone):
    model = tiny_model(backbone)
    inputs = tiny_inputs()
    with torch.no_grad():
        output = model(**inputs)
    assert all(parameter.grad is None for parameter in model.parameters())
    expected = _reference_ccam_weights(model, inputs["pixel_values"], output.unified_labels)
    for ours, reference in zip(output.ccam_weights, expected):
        torch.testing.assert_close(ours.flatten(0, 1), reference, rtol=1e-4, atol=1e-7)

    model.train()
    model(**inputs)  # gradients enabled: the CCAM gradient must still not land in .grad
    assert all(parameter.grad is None for parameter in model.parameters())


def test_ccam_works_with_a_frozen_backbone():
    model = tiny_model()
    model.backbone.requires_grad_(False)
    with torch.no_grad():
        output = model(**tiny_inputs())
    assert all(weights.abs().sum() > 0 for weights in output.ccam_weights)


def test_unified_label_is_brute_force_argmax():
    model = tiny_model()
    inputs = tiny_inputs()
    with torch.no_grad():
        output = model(**inputs)
    visual = output.visual_logits.flatten(0, 1).softmax(-1) ** 0.1
    audio = inputs["audio_logits"].flatten(0, 1).softmax(-1) ** 0.1
    for row in range(visual.shape[0]):
        best, best_visual = None, None
        for v in range(NUM_VISUAL):
            for a in range(NUM_AUDIO):
                score = audio[row, a] * model.label_similarity[v, a] * visual[row, v]
                if best is None or score > best:
                    best, best_visual = score, v
        assert output.unified_labels.flatten()[row].item() == best_visual


def test_table_ii_ablations():
    inputs = tiny_inputs()
    visual_only = tiny_model(consensus_mode="visual_only")
    with torch.no_grad():
        output = visual_only(pixel_values=inputs["pixel_values"], audio_embeds=inputs["audio_embeds"])
    assert torch.equal(output.unified_labels, output.visual_logits.argmax(-1))

    no_consensus = tiny_model(consensus_mode="none", use_audio_features=False)
    with torch.no_grad():
        output = no_consensus(pixel_values=inputs["pixel_values"])
    assert output.unified_labels is None and output.ccam_weights is None
    assert output.logits.shape == (2, 3, 1, 64, 64)


def test_paper_ccam_normalisation_differs_from_official():
    inputs = tiny_inputs()
    official, paper = tiny_model(), tiny_model(ccam_weight_normalization="none")
    paper.load_state_dict(official.state_dict())
    with torch.no_grad():
        a, b = official(**inputs), paper(**inputs)
    assert torch.equal(a.unified_labels, b.unified_labels)
    assert not torch.allclose(a.logits, b.logits)


def test_loss_uses_labeled_frames_and_trains_without_touching_the_frozen_head():
    model = tiny_model().train()
    inputs = tiny_inputs()
    labels = (torch.rand(2, 3, 64, 64) > 0.5).float()
    first_only = torch.tensor([[True, False, False]] * 2)
    output = model(**inputs, labels=labels, labeled_frames=first_only)
    expected = C3NForAudioVisualSegmentation.segmentation_loss(output.logits[:, :1].detach(), labels[:, :1])
    torch.testing.assert_close(output.loss.detach(), expected)
    output.loss.backward()
    assert model.visual_classifier.weight.grad is None
    assert model.aspp[0].projection.weight.grad is not None
    assert model.backbone.encoder.layers[0].blocks[0].mlp.dense1.weight.grad is not None


@pytest.mark.parametrize(
    "change,argument",
    [
        (lambda i: i.update(pixel_values=i["pixel_values"][0]), "pixel_values"),
        (lambda i: i.update(pixel_values=(i["pixel_values"] * 100).to(torch.uint8)), "pixel_values"),
        (lambda i: i.update(audio_embeds=i["audio_embeds"][:, :2]), "audio_embeds"),
        (lambda i: i.update(audio_embeds=i["audio_embeds"][..., :5]), "audio_embeds"),
        (lambda i: i.update(audio_logits=i["audio_logits"][..., :3]), "audio_logits"),
        (lambda i: i.pop("audio_logits"), "audio_logits"),
        (lambda i: i.update(labels=torch.zeros(2, 3, 32, 32)), "labels"),
        (lambda i: i.update(labeled_frames=torch.ones(2, 4, dtype=torch.bool)), "labeled_frames"),
        (lambda i: i.update(labels=torch.full((2, 3, 64, 64), 255.0)), "labels.*255"),
        (lambda i: i.update(labels=torch.full((2, 3, 64, 64), float("nan"))), "labels"),
        (lambda i: i.update(labels=-torch.ones(2, 3, 64, 64)), "labels"),
        (lambda i: i["pixel_values"].__setitem__((0, 1, 2, 5, 5), float("nan")), "pixel_values"),
        (lambda i: i["audio_embeds"].__setitem__((1, 0, 3), float("nan")), "audio_embeds"),
        (lambda i: i["audio_logits"].__setitem__((0, 2, 1), float("inf")), "audio_logits"),
        (lambda i: i.update(pixel_values=i["pixel_values"][:0]), "pixel_values.*empty"),
        (lambda i: i.update(pixel_values=i["pixel_values"][:, :0]), "pixel_values.*empty"),
    ],
)
def test_bad_inputs_name_the_argument(change, argument):
    model = tiny_model()
    inputs = tiny_inputs()
    change(inputs)
    with pytest.raises((ValueError, TypeError), match=argument):
        model(**inputs)


def test_bad_config_and_similarity_shape():
    with pytest.raises(ValueError, match="consensus_mode"):
        tiny_config(consensus_mode="audio")
    with pytest.raises(ValueError, match="ccam_weight_normalization"):
        tiny_config(ccam_weight_normalization="l1")
    with pytest.raises(ValueError, match="matrix"):
        tiny_model().set_label_similarity(torch.rand(NUM_AUDIO, NUM_VISUAL))
    with pytest.raises(ValueError, match="matrix holds NaN"):
        tiny_model().set_label_similarity(torch.full((NUM_VISUAL, NUM_AUDIO), float("nan")))


def test_similarity_from_label_names_with_offline_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_model(
        visual_label_names=[f"object {i}" for i in range(NUM_VISUAL - 2)] + ["dog", "sports car"],
        audio_label_names=[f"sound {i}" for i in range(NUM_AUDIO - 2)] + ["Bark", "Car engine"],
    )
    matrix = model.compute_label_similarity_from_names()
    assert matrix.shape == (NUM_VISUAL, NUM_AUDIO)
    assert torch.equal(model.label_similarity, matrix)
    assert matrix[-2, -2] > matrix[-2, -1] and matrix[-1, -1] > matrix[-1, -2]


def test_missing_label_embedding_model_says_how_to_pass_a_matrix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="set_label_similarity"):
        compute_label_similarity(["dog"], ["Bark"], str(tmp_path / "no-such-model"))


def test_official_similarity_matrix_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="similarity matrix file"):
        load_official_similarity_matrix(tmp_path / "missing.h5")
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "similarity_matrix.h5"
    with h5py.File(path, "w") as handle:
        handle["similarity_matrix"] = torch.rand(NUM_VISUAL, NUM_AUDIO).numpy()
    assert load_official_similarity_matrix(path).shape == (NUM_VISUAL, NUM_AUDIO)


def test_conversion_script_reports_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        convert_main(["--checkpoint", str(tmp_path / "none.pth"), "--output-dir", str(tmp_path / "out")])


# ----------------------------------------------------------------- audio encoder inside the model
TINY_VGGISH = {
    "stage_channels": [[4], [8]],
    "hidden_sizes": [16],
    "embedding_size": AUDIO_DIM,
    "classifier_hidden_size": 12,
    "num_labels": NUM_AUDIO,
}


def tiny_vggish_c3n(**overrides):
    return tiny_model(audio_config=VGGishConfig(**TINY_VGGISH), **overrides)


def log_mel_examples(batch=2, frames=3, seed=2):
    return torch.randn(batch, frames, 1, 96, 64, generator=torch.Generator().manual_seed(seed))


def test_audio_encoder_gives_the_same_output_as_precomputed_audio():
    model = tiny_vggish_c3n()
    inputs = tiny_inputs()
    features = log_mel_examples()
    with torch.no_grad():
        encoded = model.audio_encoder(input_features=features)
        from_raw = model(pixel_values=inputs["pixel_values"], input_features=features)
        from_precomputed = model(
            pixel_values=inputs["pixel_values"], audio_embeds=encoded.embeddings, audio_logits=encoded.logits
        )
    assert isinstance(model.audio_encoder, VGGishForAudioClassification)
    torch.testing.assert_close(from_raw.logits, from_precomputed.logits, rtol=0, atol=0)
    assert torch.equal(from_raw.unified_labels, from_precomputed.unified_labels)


def test_audio_encoder_round_trip_and_stays_frozen_in_training(tmp_path):
    model = tiny_vggish_c3n()
    inputs = {"pixel_values": tiny_inputs()["pixel_values"], "input_features": log_mel_examples()}
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForAudioVisualSegmentation.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded.config.audio_config, VGGishConfig)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)

    reloaded.train()
    assert not reloaded.audio_encoder.training
    assert not any(parameter.requires_grad for parameter in reloaded.audio_encoder.parameters())
    assert not any(parameter.requires_grad for parameter in reloaded.visual_classifier.parameters())
    encoder_before = {k: v.clone() for k, v in reloaded.audio_encoder.state_dict().items()}
    labels = (torch.rand(2, 3, 64, 64) > 0.5).float()
    optimizer = torch.optim.Adam([p for p in reloaded.parameters() if p.requires_grad], lr=1e-2)
    reloaded(**inputs, labels=labels).loss.backward()
    optimizer.step()
    for key, value in reloaded.audio_encoder.state_dict().items():
        assert torch.equal(value, encoder_before[key]), key


def test_sigmoid_audio_scores_change_what_the_consensus_softmaxes():
    model = tiny_model(audio_score_activation="sigmoid")
    visual_logits = 4 * torch.randn(6, NUM_VISUAL, generator=torch.Generator().manual_seed(3))
    audio_logits = 4 * torch.randn(6, NUM_AUDIO, generator=torch.Generator().manual_seed(4))
    chosen = model.cognitive_consensus(visual_logits, audio_logits)
    audio_confidence = audio_logits.sigmoid().softmax(-1) ** 0.1
    visual_confidence = visual_logits.softmax(-1) ** 0.1
    for row in range(6):
        scores = audio_confidence[row][None, :] * model.label_similarity * visual_confidence[row][:, None]
        assert chosen[row] == scores.flatten().argmax() // NUM_AUDIO


def test_any_transformers_audio_classifier_plugs_in():
    audio_config = ASTConfig(
        hidden_size=AUDIO_DIM,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_length=16,
        num_mel_bins=16,
        patch_size=8,
        frequency_stride=8,
        time_stride=8,
        num_labels=NUM_AUDIO,
    )
    model = tiny_model(audio_config=audio_config)
    spectrograms = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        output = model(pixel_values=tiny_inputs()["pixel_values"], input_values=spectrograms)
        hidden = model.audio_encoder(input_values=spectrograms.flatten(0, 1), output_hidden_states=True)
    assert output.logits.shape == (2, 3, 1, 64, 64)
    expected = model.cognitive_consensus(
        model(**_precomputed(model, hidden)).visual_logits.flatten(0, 1), hidden.logits
    )
    assert torch.equal(output.unified_labels.flatten(), expected)


def _precomputed(model, encoded):
    return {
        "pixel_values": tiny_inputs()["pixel_values"],
        "audio_embeds": encoded.hidden_states[-1].mean(dim=1).reshape(2, 3, -1),
        "audio_logits": encoded.logits.reshape(2, 3, -1),
    }


def test_audio_encoder_names_default_the_similarity_labels(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    audio_names = [f"sound {i}" for i in range(NUM_AUDIO - 1)] + ["Bark"]
    sizes = {key: value for key, value in TINY_VGGISH.items() if key != "num_labels"}
    vggish = VGGishConfig(**sizes, id2label=dict(enumerate(audio_names)))
    model = tiny_model(
        audio_config=vggish, visual_label_names=[f"object {i}" for i in range(NUM_VISUAL - 1)] + ["dog"]
    )
    matrix = model.compute_label_similarity_from_names()
    assert matrix[-1].argmax() == NUM_AUDIO - 1


def test_raw_audio_without_an_encoder_says_what_to_pass():
    with pytest.raises(ValueError, match="has no audio encoder.*audio_embeds"):
        tiny_model()(pixel_values=tiny_inputs()["pixel_values"], input_features=log_mel_examples())


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"input_features": log_mel_examples(), "audio_embeds": torch.zeros(2, 3, AUDIO_DIM)}, "not"),
        ({"input_features": log_mel_examples(batch=1)}, "`input_features` must start with"),
        ({"input_values": torch.zeros(2, 3, 16000)}, "takes `input_features`"),
        (
            {"input_features": log_mel_examples().index_fill(3, torch.tensor([5]), float("nan"))},
            "input_features",
        ),
    ],
)
def test_bad_raw_audio_names_the_problem(inputs, message):
    with pytest.raises(ValueError, match=message):
        tiny_vggish_c3n()(pixel_values=tiny_inputs()["pixel_values"], **inputs)


def test_audio_config_must_match_the_audio_widths():
    with pytest.raises(ValueError, match="audio_embed_dim"):
        tiny_config(audio_config=VGGishConfig(**{**TINY_VGGISH, "embedding_size": AUDIO_DIM + 1}))
    with pytest.raises(ValueError, match="num_audio_classes"):
        tiny_config(audio_config=VGGishConfig(**{**TINY_VGGISH, "num_labels": NUM_AUDIO + 1}))
    with pytest.raises(ValueError, match="audio_score_activation"):
        tiny_config(audio_score_activation="softmax")


def test_padded_frames_do_not_change_the_real_frames():
    model = tiny_model()
    inputs = tiny_inputs(batch=2, frames=3)
    padded = {key: value.clone() for key, value in inputs.items()}
    for value in padded.values():
        value[:, 2] = 0  # the processor pads with zero pixels
    frame_mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    with torch.no_grad():
        with_padding = model(**padded, frame_mask=frame_mask).logits[:, :2]
        without = model(**{key: value[:, :2] for key, value in inputs.items()}).logits
    torch.testing.assert_close(with_padding, without, rtol=1e-5, atol=1e-5)
    labels = (torch.rand(2, 3, 64, 64) > 0.5).float()
    loss_padded = model(**padded, frame_mask=frame_mask, labels=labels).loss
    loss_real = model(**{key: value[:, :2] for key, value in inputs.items()}, labels=labels[:, :2]).loss
    torch.testing.assert_close(loss_padded, loss_real, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="frame_mask"):
        model(**inputs, frame_mask=torch.ones(2, 4))


def test_trains_under_bf16_autocast():
    model = tiny_vggish_c3n().train()
    inputs = {"pixel_values": tiny_inputs()["pixel_values"], "input_features": log_mel_examples()}
    labels = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**inputs, labels=labels)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.head.parameters())


def test_published_heads_get_a_similarity_matrix_from_the_bundled_class_names(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = C3NForAudioVisualSegmentation(
        tiny_config(num_visual_classes=len(IMAGENET_1K_CLASSES), num_audio_classes=len(AUDIOSET_CLASSES))
    )
    matrix = model.compute_label_similarity_from_names()
    assert matrix.shape == (1000, 527) and torch.equal(model.label_similarity, matrix)
    golden_retriever, sports_car = (
        IMAGENET_1K_CLASSES.index("golden retriever"),
        IMAGENET_1K_CLASSES.index("sports car"),
    )
    dog, car = AUDIOSET_CLASSES.index("Dog"), AUDIOSET_CLASSES.index("Car")
    assert matrix[golden_retriever, dog] > matrix[golden_retriever, car]
    assert matrix[sports_car, car] > matrix[sports_car, dog]


# ----------------------------------------------------------------- binary only
def test_c3n_is_binary_and_refuses_other_label_counts(tmp_path):
    config = C3NConfig()
    assert config.num_labels == 1 and not is_semantic_segmentation(config)
    for bad in (-3, 0, 2, 71):
        with pytest.raises(ValueError, match=rf"binary masks only.*got {bad}$"):
            tiny_config(num_labels=bad)
    tiny_config().save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).num_labels == 1
    config = tiny_config()
    config.num_labels = 2  # changed after the config was built
    with pytest.raises(ValueError, match="num_labels must be 1, got 2"):
        C3NForAudioVisualSegmentation(config)


def test_any_float_pixel_dtype_is_cast_and_bool_labels_are_binary():
    model, inputs = tiny_model(), tiny_inputs()
    labels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) > 0.5
    with torch.no_grad():
        expected = model(**inputs, labels=labels.float())
        got = model(**{**inputs, "pixel_values": inputs["pixel_values"].double()}, labels=labels)
    assert got.logits.dtype == torch.float32
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.loss, expected.loss)


# ----------------------------------------------------------------- half precision
def order_one_logits_model():
    """A tiny C3N whose mask logits are of order 1, so that rounding can flip pixels near 0."""
    model = tiny_model()
    with torch.no_grad():
        model.head.classifier.weight.mul_(0.02)
    return model


def assert_same_masks(output, reference):
    assert torch.isfinite(output.logits).all()
    agreement = ((output.logits > 0) == (reference.logits > 0)).float().mean().item()
    assert agreement >= 0.99, agreement
    assert torch.equal(output.unified_labels, reference.unified_labels)
    assert all(
        weights.dtype == torch.float32 and torch.isfinite(weights).all() for weights in output.ccam_weights
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gives_the_float32_masks(tmp_path, dtype):
    model, inputs = order_one_logits_model(), tiny_inputs()
    with torch.no_grad():
        reference = model(**inputs)
    assert (reference.logits.abs() < 1).float().mean() > 0.1  # many pixels near the threshold
    model.save_pretrained(tmp_path)
    loaded = AutoModelForAudioVisualSegmentation.from_pretrained(tmp_path, dtype=dtype).eval()
    for half in (copy.deepcopy(model).to(dtype), loaded):
        assert half.dtype == dtype
        with torch.no_grad():
            output = half(**inputs)  # float32 inputs, cast by the model
        assert output.logits.dtype == dtype
        assert_same_masks(output, reference)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        assert_same_masks(model(**inputs), reference)


# ----------------------------------------------------------------- offloading, compile, export
def test_offloaded_model_equals_the_model_in_memory_and_stays_frozen(tmp_path):
    model = tiny_vggish_c3n()
    inputs = {"pixel_values": tiny_inputs()["pixel_values"], "input_features": log_mel_examples()}
    with torch.no_grad():
        expected = model(**inputs)
    model.save_pretrained(tmp_path / "model")
    offloaded = AutoModelForAudioVisualSegmentation.from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": model.get_memory_footprint() // 2},  # the rest goes to disk
        offload_folder=tmp_path / "offload",
    )
    assert {"cpu", "disk"} <= set(offloaded.hf_device_map.values())
    with torch.no_grad():
        output = offloaded(**inputs)
    torch.testing.assert_close(output.logits, expected.logits)
    assert torch.equal(output.unified_labels, expected.unified_labels)
    offloaded.train()
    assert not offloaded.audio_encoder.training
    frozen = [*offloaded.audio_encoder.parameters(), *offloaded.visual_classifier.parameters()]
    assert not any(parameter.requires_grad for parameter in frozen)


def assert_compiled_equals_eager(backend: str):
    model, inputs = tiny_model(), tiny_inputs(batch=1, frames=2, height=32, width=32)
    with torch.no_grad():
        eager = model(**inputs)
        compiled = torch.compile(model, backend=backend)(**inputs)
    torch.testing.assert_close(compiled.logits, eager.logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(compiled.unified_labels, eager.unified_labels)
    for ours, theirs in zip(compiled.ccam_weights, eager.ccam_weights):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.torch_compile_test
def test_compiled_model_equals_eager():
    # Dynamo's graphs and AOTAutograd, where the gradient probes and autograd.grad meet compile.
    assert_compiled_equals_eager("aot_eager")


@pytest.mark.slow
@pytest.mark.torch_compile_test
def test_inductor_compiled_model_equals_eager():
    # torch.compile's default backend; its C++ code generation takes minutes on a CPU.
    assert_compiled_equals_eager("inductor")


@pytest.mark.torch_compile_test
def test_compiled_training_step_equals_eager():
    model, inputs = tiny_model().train(), tiny_inputs(batch=1, frames=2, height=32, width=32)
    labels = (torch.rand(1, 2, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    eager_loss = model(**inputs, labels=labels).loss
    eager_loss.backward()
    eager_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    # CCAM's backward and the loss's backward both run through the compiled backbone's backward,
    # which AOTAutograd's donated buffers allow only once (see docs/models/c3n.md).
    with torch._functorch.config.patch(donated_buffer=False):
        loss = torch.compile(model, backend="aot_eager")(**inputs, labels=labels).loss
        loss.backward()
    torch.testing.assert_close(loss, eager_loss)
    assert eager_grads.keys() == {name for name, p in model.named_parameters() if p.grad is not None}
    for name, parameter in model.named_parameters():
        if name in eager_grads:
            torch.testing.assert_close(parameter.grad, eager_grads[name], rtol=1e-4, atol=1e-6)


def test_export_explains_why_the_ccam_gradient_does_not_export_and_what_does():
    model, inputs = tiny_model(), tiny_inputs(batch=1, frames=2, height=32, width=32)
    with pytest.raises(RuntimeError, match=r"autograd\.grad.*ccam_weights.*consensus_mode='none'"):
        torch.export.export(model, (), kwargs=inputs)
    with torch.no_grad():
        eager = model(**inputs)
    with_weights = {**inputs, "ccam_weights": eager.ccam_weights}
    program = torch.export.export(model, (), kwargs=with_weights)
    exported = program.module()(**with_weights)
    torch.testing.assert_close(exported.logits, eager.logits)
    assert torch.equal(exported.unified_labels, eager.unified_labels)

    no_ccam = tiny_model(consensus_mode="none")
    with torch.no_grad():
        expected = no_ccam(**inputs).logits
    torch.testing.assert_close(
        torch.export.export(no_ccam, (), kwargs=inputs).module()(**inputs).logits, expected
    )


def test_onnx_export_runs_in_onnxruntime_with_given_ccam_weights(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, inputs = tiny_model(), tiny_inputs(batch=1, frames=2, height=32, width=32)
    with pytest.raises(Exception, match="CCAM"):
        torch.onnx.export(model, (), kwargs=inputs, dynamo=True)
    with torch.no_grad():
        eager = model(**inputs)
    with_weights = {**inputs, "ccam_weights": eager.ccam_weights}
    torch.onnx.export(model, (), tmp_path / "c3n.onnx", kwargs=with_weights, dynamo=True)
    session = onnxruntime.InferenceSession(str(tmp_path / "c3n.onnx"))
    feeds = dict(
        zip(
            [node.name for node in session.get_inputs()],
            [inputs["pixel_values"], inputs["audio_embeds"], inputs["audio_logits"], *eager.ccam_weights],
        )
    )
    logits, unified_labels = session.run(None, {name: value.numpy() for name, value in feeds.items()})[:2]
    np.testing.assert_allclose(logits, eager.logits.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(unified_labels, eager.unified_labels.numpy())


# ----------------------------------------------------------------- gradient checkpointing
@pytest.mark.parametrize("backbone", ["pvt_v2", "swin"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(backbone):
    model, inputs = tiny_model(backbone).train(), tiny_inputs()
    labels = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(6)) > 0.5).float()
    stages = model.backbone.encoder.layers if backbone == "pvt_v2" else model.backbone.swin.encoder.layers
    calls = []  # runs of a stage-2 block's attention (inside the block, so recomputations count)
    stages[1].blocks[0].attention.register_forward_pre_hook(lambda *_: calls.append(1))

    def step():
        model.zero_grad(set_to_none=True)
        calls.clear()
        torch.manual_seed(0)  # Swin's stochastic depth draws the same in both runs
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads, len(calls)

    loss, grads, plain_calls = step()
    model.activation_checkpointing_enable()
    checkpointed_loss, checkpointed_grads, checkpointed_calls = step()
    assert plain_calls == 1 and checkpointed_calls == 3  # forward, CCAM's recompute, the loss's recompute
    torch.testing.assert_close(checkpointed_loss, loss)
    # Every trainable parameter but Swin's unused final norm (the backbone reads the per-stage norms).
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable - grads.keys() == (
        {"backbone.swin.layernorm.weight", "backbone.swin.layernorm.bias"} if backbone == "swin" else set()
    )
    assert checkpointed_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_reentrant_checkpointing_is_refused_with_the_fix():
    model = tiny_model().train()
    model.activation_checkpointing_enable({"use_reentrant": True})
    labels = torch.zeros(2, 3, 64, 64)
    with pytest.raises(ValueError, match="use_reentrant': False"):
        model(**tiny_inputs(), labels=labels)
    no_ccam = tiny_model(consensus_mode="none").train()
    no_ccam.activation_checkpointing_enable({"use_reentrant": True})
    no_ccam(**tiny_inputs(), labels=labels).loss.backward()  # no gradient inside forward: allowed


# ----------------------------------------------------------------- introspection
def test_hidden_states_attentions_and_consensus_are_the_papers_figures():
    model, inputs = tiny_model(), tiny_inputs()
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True, output_attentions=True)
        backbone_maps = model.backbone(inputs["pixel_values"].flatten(0, 1)).feature_maps
    # The stage-by-stage run gives the backbone's own feature maps.
    for ours, theirs in zip(output.hidden_states, backbone_maps):
        torch.testing.assert_close(ours.flatten(0, 1), theirs)
    # Fig. 7: CCAM's spatial attention is the sigmoid of the channel mean of the re-weighted features.
    for features, weights, attention in zip(output.hidden_states, output.ccam_weights, output.attentions):
        channel_weights = torch.sigmoid(F.normalize(weights, dim=-1))[..., None, None]
        torch.testing.assert_close(attention, torch.sigmoid((features * channel_weights).mean(dim=2)))
    # Fig. 6: the top classes of both heads, their confidences and the scores of their pairs.
    visual = output.visual_logits.softmax(-1) ** 0.1
    audio = inputs["audio_logits"].softmax(-1) ** 0.1
    assert torch.equal(output.consensus_top_visual_classes, visual.topk(5).indices)
    assert torch.equal(output.consensus_top_audio_classes, audio.topk(5).indices)
    torch.testing.assert_close(output.consensus_top_visual_confidences, visual.topk(5).values)
    torch.testing.assert_close(output.consensus_top_audio_confidences, audio.topk(5).values)
    for index in np.ndindex(2, 3):
        rows, columns = output.consensus_top_visual_classes[index], output.consensus_top_audio_classes[index]
        expected = (
            visual[index][rows, None] * model.label_similarity[rows][:, columns] * audio[index][None, columns]
        )
        torch.testing.assert_close(output.consensus_top_pair_scores[index], expected)
        best_overall = (visual[index][:, None] * model.label_similarity * audio[index][None]).max()
        assert output.consensus_top_pair_scores[index].max() <= best_overall
        if output.consensus_top_pair_scores[index].max() == best_overall:
            assert (
                output.unified_labels[index]
                == rows[output.consensus_top_pair_scores[index].max(1).values.argmax()]
            )


def test_returned_maps_are_the_tensors_the_forward_used():
    model = tiny_model().train()
    labels = (torch.rand(2, 3, 64, 64) > 0.5).float()
    output = model(**tiny_inputs(), labels=labels, output_hidden_states=True, output_attentions=True)
    maps = [*output.hidden_states, *output.decoder_hidden_states, *output.attentions]
    for tensor in maps:
        tensor.retain_grad()
    output.loss.backward()
    assert all(tensor.grad is not None and tensor.grad.abs().sum() > 0 for tensor in maps)


# ----------------------------------------------------------------- initialisation
def test_buffers_missing_from_a_checkpoint_are_initialised(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    dropped = ("label_similarity", "num_batches_tracked", "running_mean", "running_var")
    kept = {key: value for key, value in state.items() if not key.endswith(dropped)}
    assert len(kept) < len(state)
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded = AutoModelForAudioVisualSegmentation.from_pretrained(tmp_path)
    assert torch.equal(reloaded.label_similarity, torch.zeros(NUM_VISUAL, NUM_AUDIO))
    for norm in (module.output_norm for module in reloaded.fusion):
        assert norm.num_batches_tracked.item() == 0
        assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
        assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))


# ----------------------------------------------------------------- end to end
TINY_AUDIO_ENCODERS = {
    "vggish": ({"model_type": "vggish", **TINY_VGGISH}, VGGishFeatureExtractor, AUDIO_DIM),
    "panns": (
        {"model_type": "panns_cnn14", "block_channels": [4, 4, 4, 4, 4, 8], "embedding_size": AUDIO_DIM},
        PannsFeatureExtractor,
        AUDIO_DIM,
    ),
    "beats": ({"model_type": "beats", **TINY_BEATS}, BeatsFeatureExtractor, TINY_BEATS["hidden_size"]),
}


@pytest.mark.parametrize("encoder", sorted(TINY_AUDIO_ENCODERS))
def test_c3n_runs_through_the_pipeline_and_predict_with_each_audio_encoder(tmp_path, encoder):
    audio_config, feature_extractor, width = TINY_AUDIO_ENCODERS[encoder]
    video = write_video(tmp_path / "clip.mp4", seconds=2, fps=2, size=(36, 44))
    # No num_labels: C3N is binary by default, so the pipeline and predict make binary masks.
    model = tiny_model(audio_config={**audio_config, "num_labels": NUM_AUDIO}, audio_embed_dim=width)
    model.save_pretrained(tmp_path / "model")
    processor = AudioVisualProcessor(AudioVisualImageProcessor(size=32), feature_extractor(), num_frames=2)
    processor.save_pretrained(tmp_path / "model")

    results = pipeline("audio-visual-segmentation", model=str(tmp_path / "model"))(str(video))
    assert len(results) == 2
    assert all(
        result["mask"].shape == (36, 44) and set(np.unique(result["mask"])) <= {0, 1} for result in results
    )
    assert "labels" not in results[0]  # no class scores: a binary model

    out = tmp_path / "out"
    assert cli_main(["predict", str(tmp_path / "model"), str(video), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_type"] == "c3n" and summary["num_frames"] == 2
    for frame, result in zip(summary["frames"], results):
        assert np.array_equal(np.asarray(Image.open(out / frame["mask"])) > 0, result["mask"] > 0)
