"""AVSegFormer: Auto classes, per-frame behaviour, the official losses, deformable sampling, dtypes,
compile/export, offloading, checkpointing, conversion errors, presets, the trainer and the pipeline."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from hub_users import run_without_the_package
from media import write_video
from tiny_training import TINY_AVSEGFORMER
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor, pipeline

import avs_models
from avs_models import (
    AudioVisualImageProcessor,
    AudioVisualProcessor,
    AutoModelForAudioVisualSegmentation,
    AVSegFormerConfig,
    AVSegFormerForAudioVisualSegmentation,
    VGGishConfig,
)
from avs_models.data import make_synthetic_avsbench
from avs_models.models.avsegformer.convert_avsegformer_original_to_hf import (
    config_from_official_state_dict,
    convert_state_dict,
    load_official_state_dict,
)
from avs_models.models.backbones import resnet50_backbone_config
from avs_models.models.vggish import VGGishFeatureExtractor
from avs_models.training import Trainer, load_training_config


def tiny_config(with_audio_encoder: bool = False, **overrides) -> AVSegFormerConfig:
    kwargs = copy.deepcopy(TINY_AVSEGFORMER["config"])
    if not with_audio_encoder:
        kwargs.pop("audio_config")
    kwargs.update(overrides)
    return AVSegFormerConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> AVSegFormerForAudioVisualSegmentation:
    torch.manual_seed(seed)
    return AVSegFormerForAudioVisualSegmentation(tiny_config(**overrides)).eval()


def clip_inputs(batch=2, frames=3, height=64, width=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(batch, frames, 3, height, width, generator=generator),
        "audio_embeds": torch.randn(batch, frames, 128, generator=generator),
    }


def test_auto_classes_resolve_avsegformer_after_import(tmp_path):
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("avsegformer"), AVSegFormerConfig)
    assert type(AutoModel.from_config(config)) is AVSegFormerForAudioVisualSegmentation
    assert (
        type(AutoModelForAudioVisualSegmentation.from_config(config)) is AVSegFormerForAudioVisualSegmentation
    )
    assert {"AVSegFormerConfig", "AVSegFormerForAudioVisualSegmentation"} <= set(avs_models.__all__)
    config.save_pretrained(tmp_path)
    AudioVisualProcessor(AudioVisualImageProcessor(size=32), VGGishFeatureExtractor()).save_pretrained(
        tmp_path
    )
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), AudioVisualProcessor)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), AudioVisualImageProcessor)


def test_save_pretrained_round_trip_keeps_the_frozen_audio_encoder(tmp_path):
    model = tiny_model(audio_config=TINY_AVSEGFORMER["config"]["audio_config"])
    features = torch.randn(1, 2, 1, 96, 64)
    pixels = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixel_values=pixels, input_features=features).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModel.from_pretrained(tmp_path).train()
    assert not loaded.audio_encoder.training, "a frozen audio encoder stays in eval mode"
    assert not any(parameter.requires_grad for parameter in loaded.audio_encoder.parameters())
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels, input_features=features).logits, expected)
        embeds = loaded.audio_encoder(input_features=features).embeddings
        torch.testing.assert_close(loaded(pixel_values=pixels, audio_embeds=embeds).logits, expected)


# Run by `run_without_the_package`, where Hub users are.
REMOTE_SCRIPT = r"""
import sys
from pathlib import Path

import torch
from transformers import AutoModel

folder = Path(sys.argv[1])
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(**torch.load(folder / "inputs.pt")).logits
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
assert torch.equal(logits, torch.load(folder / "expected.pt"))
print("remote ok")
"""


@pytest.mark.parametrize("with_audio_encoder", [False, True], ids=["audio_embeds", "vggish"])
def test_hub_users_load_with_trust_remote_code_without_the_package(with_audio_encoder, tmp_path):
    model = tiny_model(with_audio_encoder=with_audio_encoder)
    inputs = clip_inputs(batch=1, frames=2, height=32, width=32)
    if with_audio_encoder:
        inputs["input_features"] = torch.randn(1, 2, 1, 96, 64)
        del inputs["audio_embeds"]
    model.save_pretrained(tmp_path / "model")
    torch.save(inputs, tmp_path / "model" / "inputs.pt")
    with torch.no_grad():
        torch.save(model(**inputs).logits, tmp_path / "model" / "expected.pt")
    assert "remote ok" in run_without_the_package(REMOTE_SCRIPT, str(tmp_path / "model"), tmp_path)


@pytest.mark.parametrize("batch, frames, height, width", [(2, 3, 64, 64), (1, 1, 32, 48), (1, 2, 40, 56)])
def test_any_batch_frames_and_size_including_a_single_frame(batch, frames, height, width):
    # The official mixer's `x.squeeze()` fails for a batch of one frame; this one does not.
    output = tiny_model()(**clip_inputs(batch, frames, height, width))
    assert output.logits.shape == (batch, frames, 1, height, width)
    assert output.mask_feature.shape == (batch, frames, 16, height // 4, width // 4)
    assert output.queries.shape == (batch, frames, 6, 16)


def test_every_frame_is_segmented_on_its_own():
    model = tiny_model()
    inputs = clip_inputs(batch=2, frames=3)
    with torch.no_grad():
        together = model(**inputs).logits
        # The same 6 frames as 6 one-frame clips, in reverse order.
        alone = model(
            pixel_values=inputs["pixel_values"].flatten(0, 1).flip(0).unsqueeze(1),
            audio_embeds=inputs["audio_embeds"].flatten(0, 1).flip(0).unsqueeze(1),
        ).logits
    torch.testing.assert_close(alone.flip(0).view_as(together), together, atol=1e-5, rtol=1e-5)


def test_audio_changes_the_prediction():
    model = tiny_model()
    inputs = clip_inputs()
    with torch.no_grad():
        first = model(**inputs).logits
        inputs["audio_embeds"] = inputs["audio_embeds"] + 1
        second = model(**inputs).logits
    assert (first - second).abs().max() > 1e-4


def test_encoder_positions_are_raw_index_sine_encodings_plus_level_embeddings():
    model = tiny_model()
    with torch.no_grad():
        embeddings = model.position_embedding([(3, 4)], "cpu", torch.float32)[0]
        level = model.position_embedding.level_embed[0]
    half = 8  # hidden_size 16: 8 channels for rows, then 8 for columns; channel 0 is sin(index / 1)
    rows = torch.arange(1, 4, dtype=torch.float32).repeat_interleave(4)
    columns = torch.arange(1, 5, dtype=torch.float32).repeat(3)
    torch.testing.assert_close(embeddings[:, 0] - level[0], rows.sin())
    torch.testing.assert_close(embeddings[:, 1] - level[1], rows.cos())
    torch.testing.assert_close(embeddings[:, half] - level[half], columns.sin())


def _bilinear_zero_padded(value: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """The CUDA kernel's rule: pixel (i, j) has its centre at ((j + 0.5) / W, (i + 0.5) / H);
    corners outside the map contribute zero. `value` is `(C, H, W)`."""
    channels, height, width = value.shape
    column, row = x * width - 0.5, y * height - 0.5
    left, top = int(np.floor(column)), int(np.floor(row))
    result = torch.zeros(channels, dtype=value.dtype)
    for i, weight_y in ((top, 1 - (row - top)), (top + 1, row - top)):
        for j, weight_x in ((left, 1 - (column - left)), (left + 1, column - left)):
            if 0 <= i < height and 0 <= j < width:
                result += weight_y * weight_x * value[:, i, j]
    return result


def test_deformable_sampling_is_bilinear_with_zero_padding():
    layer = tiny_model().encoder.layers[0].self_attn.double()
    torch.manual_seed(1)
    with torch.no_grad():  # large offsets: many sampling points fall outside the maps
        layer.sampling_offsets.weight.normal_(std=2.0)
        layer.attention_weights.weight.normal_()
    shapes = [(4, 5), (2, 3), (1, 2)]
    tokens = torch.randn(1, sum(h * w for h, w in shapes), 16, dtype=torch.float64)
    reference = type(tiny_model().encoder).reference_points(shapes, "cpu", torch.float64)
    with torch.no_grad():
        output, weights = layer(
            hidden_states=tokens,
            encoder_hidden_states=tokens,
            reference_points=reference,
            spatial_shapes_list=shapes,
        )
        value = layer.value_proj(tokens)[0].view(-1, 2, 8)
        offsets = layer.sampling_offsets(tokens)[0].view(-1, 2, 3, 2, 2)
    heads_out = torch.zeros(tokens.shape[1], 2, 8, dtype=torch.float64)
    outside = 0
    for query in range(tokens.shape[1]):
        for head in range(2):
            start = 0
            for level, (height, width) in enumerate(shapes):
                level_value = value[start : start + height * width, head].T.reshape(8, height, width)
                for point in range(2):
                    x = reference[0, query, level, 0] + offsets[query, head, level, point, 0] / width
                    y = reference[0, query, level, 1] + offsets[query, head, level, point, 1] / height
                    outside += not (0 <= x <= 1 and 0 <= y <= 1)
                    sampled = _bilinear_zero_padded(level_value, float(x), float(y))
                    heads_out[query, head] += weights[0, query, head, level, point] * sampled
                start += height * width
    assert outside > 10
    expected = layer.output_proj(heads_out.flatten(1))
    torch.testing.assert_close(output[0], expected, atol=1e-10, rtol=0)


def _official_dice(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probability, target = probability.flatten(1), target.flatten(1)
    overlap = (probability * target).sum(-1)
    return (1 - 2 * overlap / ((probability**2).sum(-1) + 0.001 + (target**2).sum(-1) + 0.001)).mean()


def test_binary_loss_is_the_official_dice_plus_weighted_mix_loss_on_labelled_frames():
    model = tiny_model()
    inputs = clip_inputs(batch=2, frames=3, height=32, width=32)
    labels = torch.zeros(2, 3, 32, 32)
    labels[:, :, 8:20, 4:16] = 1
    labeled_frames = torch.tensor([[1, 0, 0], [1, 0, 0]])  # S4 training: the first frame only
    output = model(**inputs, labels=labels, labeled_frames=labeled_frames)
    first = output.logits[:, 0, 0]
    torch.testing.assert_close(output.mask_loss, _official_dice(first.sigmoid(), labels[:, 0]))
    channel_mean = output.mask_feature[:, 0].mean(dim=1, keepdim=True)
    channel_mean = F.interpolate(channel_mean, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(output.mix_loss, _official_dice(channel_mean[:, 0].sigmoid(), labels[:, 0]))
    torch.testing.assert_close(output.loss, output.mask_loss + 0.1 * output.mix_loss)
    changed = labels.clone()
    changed[:, 1:] = 1 - changed[:, 1:]  # unlabelled frames' ground truth is never read
    assert torch.equal(model(**inputs, labels=changed, labeled_frames=labeled_frames).loss, output.loss)

    bce = tiny_model(mask_loss="bce", mix_loss_weight=0.5)(**inputs, labels=labels)
    torch.testing.assert_close(bce.mask_loss, F.binary_cross_entropy(bce.logits[:, :, 0].sigmoid(), labels))
    torch.testing.assert_close(bce.loss, bce.mask_loss + 0.5 * bce.mix_loss)


def test_semantic_loss_ignores_padding_frames_and_the_ignore_index():
    model = tiny_model(num_labels=4)
    inputs = clip_inputs(batch=1, frames=4, height=32, width=32)
    labels = torch.randint(0, 4, (1, 4, 32, 32))
    labels[0, 0, :4] = 255  # ignored pixels
    frame_mask = torch.tensor([[1, 1, 1, 0]])
    output = model(**inputs, labels=labels, frame_mask=frame_mask)
    assert output.logits[0, 3].abs().max() == 0 and output.mask_feature[0, 3].abs().max() == 0
    expected = (
        F.cross_entropy(output.logits[0, :3], labels[0, :3], ignore_index=255, reduction="none")
        .mean(dim=(1, 2))
        .mean()
    )
    torch.testing.assert_close(output.mask_loss, expected)
    # Mix loss: Dice of the channel mean against "any object" (class > 0), ignored pixels left out.
    channel_mean = F.interpolate(
        output.mask_feature[0, :3].mean(1, keepdim=True), size=(32, 32), mode="bilinear"
    )
    counted = (labels[0, :3] != 255).float()
    foreground = ((labels[0, :3] > 0) & (labels[0, :3] != 255)).float()
    torch.testing.assert_close(
        output.mix_loss,
        _official_dice(channel_mean[:, 0].sigmoid() * counted, foreground),
        atol=1e-6,
        rtol=1e-5,
    )
    padded = labels.clone()
    padded[0, 3] = 3
    assert torch.equal(model(**inputs, labels=padded, frame_mask=frame_mask).loss, output.loss)


@pytest.mark.parametrize(
    "labels, message",
    [
        (torch.full((1, 2, 32, 32), 255.0), "pass mask_values='0/255'"),
        (torch.full((1, 2, 32, 32), 0.5), "must be a binary mask"),
    ],
)
def test_bad_labels_are_refused_with_the_values_found(labels, message):
    with pytest.raises(ValueError, match=message):
        tiny_model()(**clip_inputs(batch=1, frames=2, height=32, width=32), labels=labels)


def test_semantic_labels_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"class ids in \[0, 4\)"):
        tiny_model(num_labels=4)(
            **clip_inputs(batch=1, frames=2, height=32, width=32), labels=torch.full((1, 2, 32, 32), 7)
        )


def test_hidden_states_and_attentions_are_the_tensors_the_forward_used():
    model = tiny_model().train()
    inputs = clip_inputs(batch=1, frames=2, height=32, width=32)
    output = model(**inputs, output_hidden_states=True, output_attentions=True)
    assert [tuple(map.shape) for map in output.backbone_hidden_states] == [
        (2, 8, 8, 8),
        (2, 16, 4, 4),
        (2, 24, 2, 2),
        (2, 32, 1, 1),
    ]
    tokens = 4 * 4 + 2 * 2 + 1
    assert len(output.encoder_hidden_states) == 3 and output.encoder_hidden_states[0].shape == (2, tokens, 16)
    assert len(output.decoder_hidden_states) == 3 and output.decoder_hidden_states[-1].shape == (2, 6, 16)
    assert torch.equal(output.decoder_hidden_states[-1], output.queries.flatten(0, 1))
    assert output.encoder_attentions[0].shape == (2, tokens, 2, 3, 2)
    assert output.decoder_attentions[0].shape == (2, 2, 6, 6)
    assert output.cross_attentions[0].shape == (2, 2, 6, tokens)
    assert output.mixer_attentions.shape == (2, 2, 8, 8)
    for weights, dims in ((output.encoder_attentions[0], (3, 4)), (output.cross_attentions[1], (3,))):
        torch.testing.assert_close(weights.sum(dim=dims), torch.ones_like(weights.sum(dim=dims)))
    torch.testing.assert_close(output.mixer_attentions.sum(dim=(2, 3)), torch.ones(2, 2))
    kept = [
        output.backbone_hidden_states[0],
        output.encoder_hidden_states[0],
        output.decoder_hidden_states[0],
        output.encoder_attentions[0],
        output.cross_attentions[0],
        output.mixer_attentions,
    ]
    for tensor in kept:
        tensor.retain_grad()
    output.logits.sum().backward()
    assert all(tensor.grad is not None and tensor.grad.abs().sum() > 0 for tensor in kept)
    plain = model(**inputs)
    assert plain.encoder_hidden_states is None and plain.cross_attentions is None


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    inputs = clip_inputs(batch=1, frames=2, height=32, width=32)
    labels = (torch.rand(1, 2, 32, 32) > 0.5).float()
    results = []
    for checkpointing in (False, True):
        model = tiny_model(dropout=0.0).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.decoder.layers)
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        results.append(
            (loss, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        )
    (loss, grads), (checkpointed_loss, checkpointed_grads) = results
    torch.testing.assert_close(checkpointed_loss, loss)
    assert grads.keys() == checkpointed_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_outputs_are_finite_and_masks_agree_with_fp32(dtype, tmp_path):
    model = tiny_model()
    inputs = clip_inputs(batch=1, frames=2, height=64, width=64)
    with torch.no_grad():
        expected = model(**inputs).logits
        model.save_pretrained(tmp_path)
        for half in (copy.deepcopy(model).to(dtype), AutoModel.from_pretrained(tmp_path, dtype=dtype)):
            logits = half(**inputs).logits
            assert logits.dtype == dtype and torch.isfinite(logits).all()
            agreement = ((logits.float() > 0) == (expected > 0)).float().mean()
            assert agreement >= 0.99, f"{dtype}: {agreement:.4f} of the pixels agree"
        with torch.autocast("cpu", dtype=dtype):
            logits = model(**inputs).logits
        assert (
            torch.isfinite(logits).all() and ((logits.float() > 0) == (expected > 0)).float().mean() >= 0.99
        )


@pytest.mark.torch_compile_test
def test_torch_compile_and_export_match_eager():
    # One layer per stack keeps the compile short; every block type is still in the graph.
    model = tiny_model(encoder_layers=1, decoder_layers=1)
    inputs = clip_inputs(batch=1, frames=2, height=32, width=32)
    with torch.no_grad():
        expected = model(**inputs).logits
        compiled = torch.compile(model)(**inputs).logits
    torch.testing.assert_close(compiled, expected, atol=1e-4, rtol=1e-4)
    exported = torch.export.export(model, args=(), kwargs=inputs)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(**inputs).logits, expected, atol=1e-5, rtol=1e-5)


def test_offloaded_model_gives_the_same_outputs(tmp_path):
    model = tiny_model(audio_config=TINY_AVSEGFORMER["config"]["audio_config"])
    inputs = {"pixel_values": torch.randn(1, 2, 3, 32, 32), "input_features": torch.randn(1, 2, 1, 96, 64)}
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path / "model")
    offloaded = AutoModel.from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": model.get_memory_footprint() // 3},
        offload_folder=tmp_path / "offload",
    )
    assert "disk" in set(offloaded.hf_device_map.values()), offloaded.hf_device_map
    with torch.no_grad():
        torch.testing.assert_close(offloaded(**inputs).logits, expected)


def test_training_step_reduces_loss():
    model = tiny_model().train()
    inputs = clip_inputs(batch=2, frames=2, height=32, width=32)
    labels = torch.zeros(2, 2, 32, 32)
    labels[..., 8:24, 8:24] = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda i: i.update(pixel_values=i["pixel_values"][0]),
            "`pixel_values` must have shape (B, T, 3, H, W)",
        ),
        (
            lambda i: i.update(pixel_values=i["pixel_values"].to(torch.uint8)),
            "`pixel_values` must be a float tensor",
        ),
        (
            lambda i: i.update(audio_embeds=i["audio_embeds"][:, :2]),
            "`audio_embeds` must have shape (2, 3, 128)",
        ),
        (lambda i: i.update(audio_embeds=i["audio_embeds"] * torch.nan), "`audio_embeds` holds 768 NaN"),
        (lambda i: i.update(labels=torch.zeros(2, 3, 32, 32)), "`labels` must have shape (2, 3, 64, 64)"),
        (lambda i: i.update(frame_mask=torch.ones(2, 4)), "`frame_mask` must have shape (2, 3)"),
        (lambda i: i.update(input_features=torch.zeros(2, 3, 1, 96, 64)), "exactly one of `input_features`"),
        (lambda i: i.pop("audio_embeds"), "exactly one of `input_features`"),
    ],
)
def test_bad_inputs_name_the_argument_and_expected_shape(change, message):
    inputs = clip_inputs()
    change(inputs)
    with pytest.raises((ValueError, TypeError)) as error:
        tiny_model()(**inputs)
    assert message in str(error.value)


def test_log_mel_without_audio_encoder_explains_what_to_pass():
    with pytest.raises(ValueError, match="pass VGGish embeddings as `audio_embeds`"):
        tiny_model()(pixel_values=torch.randn(1, 2, 3, 32, 32), input_features=torch.randn(1, 2, 1, 96, 64))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"decoder_attention_heads": 3},
            "decoder_attention_heads=3 must be a positive divisor of hidden_size=16",
        ),
        ({"group_norm_groups": 5}, "group_norm_groups=5 must be a positive divisor"),
        ({"mask_loss": "focal"}, "mask_loss must be one of"),
        ({"head_hidden_sizes": [8]}, "head_hidden_sizes must hold 2"),
        ({"dropout": 1.5}, "dropout must lie in"),
        ({"num_queries": 0}, "num_queries must be a positive integer"),
    ],
)
def test_bad_config_values_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        tiny_config(**overrides)


def test_conversion_errors_name_the_key_or_the_file(tmp_path):
    with pytest.raises(ValueError, match="Not an official AVSegFormer state dict"):
        config_from_official_state_dict({"audio_proj.weight": torch.zeros(256, 128)})
    with pytest.raises(KeyError, match="head.bogus.weight"):
        convert_state_dict({"head.bogus.weight": torch.zeros(1)}, VGGishConfig())
    torch.save({"model": "not tensors"}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not hold an AVSegFormer state dict"):
        load_official_state_dict(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_official_state_dict(tmp_path / "missing.pth")


@pytest.mark.parametrize(
    "preset, subset, batch, epochs, image_size, num_labels",
    [
        ("avsegformer_s4", "s4", 2, 30, 512, 1),
        ("avsegformer_ms3", "ms3", 2, 60, 512, 1),
        ("avsegformer_avss", "avss", 4, 30, 224, 71),
    ],
)
def test_presets_mirror_the_official_configs(preset, subset, batch, epochs, image_size, num_labels):
    config = load_training_config(preset)
    assert (config.subset, config.batch_size, config.eval_batch_size, config.num_epochs) == (
        subset,
        batch,
        batch,
        epochs,
    )
    assert config.image_size == image_size and config.augmentation is None
    assert config.optimizer == {"name": "adamw", "learning_rate": 2e-5}
    assert config.drop_path_rate == 0.1  # pvt_v2_b5() of the official code
    model_config = AutoConfig.for_model(config.model["model_type"], **config.model["config"])
    assert isinstance(model_config, AVSegFormerConfig) and model_config.backbone_config.model_type == "pvt_v2"
    assert (model_config.num_labels, model_config.mask_loss) == (num_labels, "dice")
    assert (model_config.mask_loss_weight, model_config.mix_loss_weight) == (1.0, 0.1)
    assert model_config.audio_config.model_type == "vggish"


def test_tiny_avsegformer_trains_through_the_trainer(tmp_path):
    data_dir = tmp_path / "data"
    make_synthetic_avsbench(data_dir, "s4", 4, seed=0, image_size=32)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "subset": "s4",
                "model": TINY_AVSEGFORMER,
                "optimizer": {"name": "adamw", "learning_rate": 1e-3},
                "batch_size": 2,
                "num_epochs": 1,
                "image_size": 32,
                "logging_steps": 1,
            }
        )
    )
    config = load_training_config(
        str(config_file), [f"data_dir={data_dir}", f"output_dir={tmp_path / 'out'}", "validation_split=test"]
    )
    trainer = Trainer(config)
    initial = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    state = trainer.train()
    assert state["best_miou"] is not None
    final = AutoModelForAudioVisualSegmentation.from_pretrained(tmp_path / "out" / "final")
    assert isinstance(final, AVSegFormerForAudioVisualSegmentation)
    trained = final.state_dict()
    frozen = [key for key in initial if key.startswith("audio_encoder.")]
    assert frozen and all(torch.equal(trained[key], initial[key]) for key in frozen)
    assert not torch.equal(trained["mask_head.classifier.weight"], initial["mask_head.classifier.weight"])
    assert AudioVisualProcessor.from_pretrained(tmp_path / "out" / "final").feature_extractor is not None


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=3, fps=2, size=(36, 44))


def test_pipeline_runs_avsegformer_with_its_audio_encoder(video, tmp_path):
    model = tiny_model(audio_config=TINY_AVSEGFORMER["config"]["audio_config"], num_labels=3)
    model.save_pretrained(tmp_path)
    processor = AudioVisualProcessor(
        AudioVisualImageProcessor(size=32), VGGishFeatureExtractor(), num_frames=2
    )
    processor.save_pretrained(tmp_path)
    results = pipeline("audio-visual-segmentation", model=str(tmp_path))(str(video), show_progress=False)
    assert [result["time"] for result in results] == pytest.approx([0.5, 1.5, 2.5])
    inputs = processor(video)
    with torch.no_grad():
        logits = model(
            **{key: inputs[key] for key in ("pixel_values", "input_features", "frame_mask")}
        ).logits
    masks = processor.post_process_masks(logits, inputs["original_sizes"], inputs["frame_mask"])
    assert all(np.array_equal(r["mask"], m) for r, m in zip(results, [m for clip in masks for m in clip]))


@pytest.mark.slow
def test_full_size_model_trains_one_step():
    torch.manual_seed(0)
    model = AVSegFormerForAudioVisualSegmentation(
        AVSegFormerConfig(backbone_config=resnet50_backbone_config(), audio_config=VGGishConfig())
    ).train()
    output = model(
        pixel_values=torch.randn(1, 2, 3, 224, 224),
        input_features=torch.randn(1, 2, 1, 96, 64),
        labels=torch.zeros(1, 2, 224, 224),
        labeled_frames=torch.tensor([[1, 0]]),
    )
    output.loss.backward()
    assert output.logits.shape == (1, 2, 1, 224, 224) and output.mask_feature.shape == (1, 2, 256, 56, 56)
    assert all(parameter.grad is None for parameter in model.audio_encoder.parameters())
    assert model.mask_head.classifier.weight.grad is not None
