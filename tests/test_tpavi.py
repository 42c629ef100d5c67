"""TPAVI (the AVSBench baseline): the blocks against the official formulation, the 5-frame groups,
the AVSS frame mask, the losses, audio input, conversion errors, precision, compile/export,
gradient checkpointing, training through the trainer and the pipeline end to end."""

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from media import write_video
from tiny_training import TINY_MODEL
from transformers import AutoModel, pipeline

from avs_models import (
    AutoModelForAudioVisualSegmentation,
    TPAVIConfig,
    TPAVIForAudioVisualSegmentation,
)
from avs_models.cli import main as cli_main
from avs_models.data import make_synthetic_avsbench
from avs_models.models.tpavi.convert_tpavi_original_to_hf import (
    config_from_official_state_dict,
    convert_state_dict,
    load_official_state_dict,
)
from avs_models.models.tpavi.modeling_tpavi import (
    TPAVIAudioVisualInteraction,
    TPAVIFusionBlock,
    TPAVIResidualConvUnit,
)
from avs_models.models.vggish import VGGishFeatureExtractor
from avs_models.processing import AudioVisualImageProcessor, AudioVisualProcessor
from avs_models.training import Trainer, load_training_config

TINY_VGGISH = TINY_MODEL["config"]["audio_config"]
TINY_TPAVI = {
    "backbone_config": TINY_MODEL["config"]["backbone_config"],
    "hidden_size": 16,
    "head_hidden_sizes": [8, 4],
}


def tiny_model(seed: int = 0, **overrides) -> TPAVIForAudioVisualSegmentation:
    torch.manual_seed(seed)
    model = TPAVIForAudioVisualSegmentation(TPAVIConfig(**{**copy.deepcopy(TINY_TPAVI), **overrides}))
    # Non-trivial TPAVI batch norms (they start at zero scale) so that TPAVI changes the maps.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.weight.normal_(1, 0.2)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def clip_inputs(batch=2, frames=5, size=32, seed=1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(batch, frames, 3, size, size, generator=generator),
        "audio_embeds": torch.randn(batch, frames, 128, generator=generator),
    }


def dense_tpavi(block: TPAVIAudioVisualInteraction, visual, audio):
    """The official 'dot' TPAVI written out: 1x1x1 convolutions on (G, C, S, h, w), the full
    (N x N) attention matrix f divided by N, W_z with batch norm, residual, LayerNorm."""
    groups, frames, channels, height, width = visual.shape
    x = visual.permute(0, 2, 1, 3, 4)

    def conv(linear, tensor):
        return torch.einsum("oc,gcshw->goshw", linear.weight, tensor) + linear.bias[None, :, None, None, None]

    audio_features = block.audio_projection(audio)
    audio_map = audio_features.permute(0, 2, 1)[..., None, None].expand(-1, -1, -1, height, width)
    theta = conv(block.query, x).flatten(2)
    phi = conv(block.key, audio_map).flatten(2)
    g = conv(block.value, x).flatten(2).transpose(1, 2)
    f = theta.transpose(1, 2) @ phi
    y = (f / f.shape[-1]) @ g
    y = y.transpose(1, 2).reshape(groups, -1, frames, height, width)
    norm = block.output_norm
    w_y = F.batch_norm(
        conv(block.output, y), norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=norm.eps
    )
    z = (w_y + x).permute(0, 2, 3, 4, 1)
    z = F.layer_norm(z, (channels,), block.layer_norm.weight, block.layer_norm.bias, block.layer_norm.eps)
    return z.permute(0, 1, 4, 2, 3), audio_features, f / f.shape[-1]


def test_tpavi_block_equals_the_dense_official_formulation():
    torch.manual_seed(0)
    block = tiny_model().tpavi_blocks["0"].double()
    visual, audio = (
        torch.randn(3, 5, 16, 6, 7, dtype=torch.float64),
        torch.randn(3, 5, 128, dtype=torch.float64),
    )
    expected, expected_audio, f = dense_tpavi(block, visual, audio)
    fused, audio_features, no_attention = block(visual, audio)
    assert no_attention is None
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(audio_features, expected_audio, rtol=0, atol=0)
    # asked for, the attention maps are computed and the output is computed from them
    fused, _, attention = block(visual, audio, None, True)
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-12)
    # attention[g, s, t, h, w] is f / N of pixel (s, h, w) against any position of frame t
    f = f.view(3, 5, 6, 7, 5, 6, 7)
    torch.testing.assert_close(attention, f[..., 0, 0].permute(0, 1, 4, 2, 3), rtol=0, atol=1e-14)
    torch.testing.assert_close(f[..., 0, 0], f[..., 5, 6])  # columns repeat over a frame's pixels


def test_residual_unit_rectifies_its_skip_and_returned_maps_are_rectified():
    torch.manual_seed(0)
    unit = TPAVIResidualConvUnit(4)
    features = torch.randn(2, 4, 5, 5)
    rectified = features.relu()
    expected = unit.conv2(unit.conv1(rectified).relu()) + rectified
    torch.testing.assert_close(unit(features), expected)
    assert torch.equal(features, features.clone())  # the input is not modified in place
    block = TPAVIFusionBlock(4, has_skip=False)
    assert block(features, None, (10, 10)).shape == (2, 4, 10, 10)
    with torch.no_grad():
        output = tiny_model()(**clip_inputs(), output_hidden_states=True)
    assert all(bool((stage_map >= 0).all()) for stage_map in output.hidden_states)
    assert [tuple(m.shape) for m in output.hidden_states] == [(2, 5, 16, s, s) for s in (8, 4, 2, 1)]
    assert [tuple(a.shape) for a in output.audio_hidden_states] == [(2, 5, 16)] * 4


def test_ten_frame_clips_are_two_independent_five_frame_groups():
    inputs = clip_inputs(batch=1, frames=10)
    changed = {key: value.clone() for key, value in inputs.items()}
    changed["pixel_values"][:, 5:] += 1.0
    changed["audio_embeds"][:, 5:] += 1.0
    for group, first_half_changes in ((5, False), (None, True)):
        model = tiny_model(tpavi_frames_per_group=group)
        with torch.no_grad():
            before, after = model(**inputs).logits, model(**changed).logits
        assert torch.equal(before[:, :5], after[:, :5]) != first_half_changes
        assert not torch.equal(before[:, 5:], after[:, 5:])
    with pytest.raises(ValueError, match=r"multiple of it; pixel_values has T=7"):
        tiny_model()(**clip_inputs(frames=7))


def test_frame_mask_zeroes_padded_frames_as_the_official_avss_model():
    model = tiny_model(num_labels=71, tpavi_audio_bias=False)
    inputs = clip_inputs(batch=1, frames=10)
    frame_mask = torch.tensor([[1] * 7 + [0] * 3])
    changed = {key: value.clone() for key, value in inputs.items()}
    changed["pixel_values"][:, 7:] = torch.randn(1, 3, 3, 32, 32)
    changed["audio_embeds"][:, 7:] = 5.0
    with torch.no_grad():
        output = model(**inputs, frame_mask=frame_mask, output_hidden_states=True)
        other = model(**changed, frame_mask=frame_mask)
    assert output.logits.shape == (1, 10, 71, 32, 32)
    assert bool((output.logits[:, 7:] == 0).all()) and bool((output.logits[:, :7] != 0).any())
    assert all(bool((m[:, 7:] == 0).all()) for m in output.hidden_states)
    # no bias in the AVSS audio projection: padded frames' audio features are zero
    assert all(bool((a[:, 7:] == 0).all()) for a in output.audio_hidden_states)
    torch.testing.assert_close(output.logits, other.logits, rtol=0, atol=0)
    assert "audio_projection.bias" not in dict(model.tpavi_blocks["0"].named_parameters())


def test_binary_loss_and_audio_visual_matching_loss():
    model = tiny_model(avm_loss_weight=0.5)
    inputs = clip_inputs()
    labels = (torch.rand(2, 5, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    labeled = torch.tensor([[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    output = model(**inputs, labels=labels, labeled_frames=labeled, output_hidden_states=True)
    logits = output.logits.detach()
    expected_bce = F.binary_cross_entropy_with_logits(logits[:, 0, 0], labels[:, 0])
    torch.testing.assert_close(output.segmentation_loss, expected_bce)

    # the MS3 code's AVM: sigmoid of the pooled logits as mask, KL summed over the frames
    frame_logits = logits.flatten(0, 1)
    stage_losses = []
    for stage_map, audio in zip(output.hidden_states, output.audio_hidden_states):
        stage_map = stage_map.detach().flatten(0, 1)
        mask = torch.sigmoid(F.adaptive_avg_pool2d(frame_logits, stage_map.shape[-2:]))
        visual = (stage_map * mask).mean(-1).mean(-1)
        audio = audio.detach().flatten(0, 1)
        per_frame = F.kl_div(visual.softmax(-1).log(), audio.softmax(-1), reduction="none").sum(-1)
        stage_losses.append(per_frame[labeled.flatten().bool()].sum())
    torch.testing.assert_close(output.avm_loss, torch.stack(stage_losses).mean())
    torch.testing.assert_close(output.loss, output.segmentation_loss + 0.5 * output.avm_loss)
    output.loss.backward()
    assert model.tpavi_blocks["0"].audio_projection.weight.grad.abs().sum() > 0

    plain = tiny_model()(**inputs, labels=labels)
    assert plain.avm_loss is None and torch.equal(plain.loss, plain.segmentation_loss)


def test_semantic_loss_ignores_255_and_averages_the_labelled_frames():
    model = tiny_model(num_labels=71, tpavi_audio_bias=False, avm_loss_weight=0.5)
    inputs = clip_inputs(batch=1, frames=10)
    labels = torch.randint(0, 71, (1, 10, 32, 32), generator=torch.Generator().manual_seed(4))
    labels[0, 0, :8] = 255
    frame_mask = torch.tensor([[1] * 5 + [0] * 5])
    labeled = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        output = model(**inputs, labels=labels, frame_mask=frame_mask, labeled_frames=labeled)
    # the official per-frame mean over all pixels; the 255 pixels add nothing
    frame_losses = [
        F.cross_entropy(
            output.logits[0, frame][None], labels[0, frame][None], ignore_index=255, reduction="sum"
        )
        / (32 * 32)
        for frame in (0, 1)
    ]
    torch.testing.assert_close(output.segmentation_loss, torch.stack(frame_losses).mean())
    assert output.avm_loss is not None and math.isfinite(output.avm_loss.item())
    with pytest.raises(ValueError, match=r"`labels` must hold class ids in \[0, 71\)"):
        model(**inputs, labels=torch.full((1, 10, 32, 32), 80))


def test_label_and_input_errors_name_the_argument():
    model = tiny_model()
    inputs = clip_inputs()
    with pytest.raises(ValueError, match="`labels` must be a binary mask"):
        model(**inputs, labels=torch.full((2, 5, 32, 32), 3.0))
    with pytest.raises(ValueError, match="No labelled frame"):
        model(**inputs, labels=torch.zeros(2, 5, 32, 32), labeled_frames=torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"`audio_embeds` must have shape \(2, 5, 128\)"):
        model(pixel_values=inputs["pixel_values"], audio_embeds=torch.zeros(2, 5, 64))
    with pytest.raises(ValueError, match="exactly one of `input_features`"):
        model(pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="has no audio encoder"):
        model(pixel_values=inputs["pixel_values"], input_features=torch.zeros(2, 5, 1, 96, 64))
    audio_with_nan = inputs["audio_embeds"].clone()
    audio_with_nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="`audio_embeds` holds 1 NaN"):
        model(pixel_values=inputs["pixel_values"], audio_embeds=audio_with_nan)
    with pytest.raises(ValueError, match=r"`frame_mask` must have shape \(2, 5\)"):
        model(**inputs, frame_mask=torch.ones(2, 4))
    with pytest.raises(TypeError, match="`pixel_values` must be a float tensor"):
        model(pixel_values=inputs["pixel_values"].to(torch.uint8), audio_embeds=inputs["audio_embeds"])
    with pytest.raises(ValueError, match="avm_loss_stages"):
        TPAVIConfig(tpavi_stages=[2, 3], avm_loss_weight=0.5)
    with pytest.raises(ValueError, match="tpavi_frames_per_group"):
        TPAVIConfig(tpavi_frames_per_group=0)


def test_embedded_vggish_gives_the_same_output_as_its_embeddings(tmp_path):
    model = tiny_model(audio_config=TINY_VGGISH)
    log_mel = torch.randn(2, 5, 1, 96, 64)
    with torch.no_grad():
        embeddings = model.audio_encoder(input_features=log_mel).embeddings
        from_log_mel = model(pixel_values=clip_inputs()["pixel_values"], input_features=log_mel).logits
    bare = tiny_model()
    bare.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("audio_encoder.")})
    with torch.no_grad():
        from_embeddings = bare(pixel_values=clip_inputs()["pixel_values"], audio_embeds=embeddings).logits
    torch.testing.assert_close(from_log_mel, from_embeddings)

    model.save_pretrained(tmp_path)
    for auto_class in (AutoModel, AutoModelForAudioVisualSegmentation):
        reloaded = auto_class.from_pretrained(tmp_path).eval()
        assert isinstance(reloaded, TPAVIForAudioVisualSegmentation)
        assert not any(p.requires_grad for p in reloaded.audio_encoder.parameters())
        with torch.no_grad():
            torch.testing.assert_close(
                reloaded(pixel_values=clip_inputs()["pixel_values"], input_features=log_mel).logits,
                from_log_mel,
            )


def test_converter_reads_safely_and_refuses_what_it_cannot_place(tmp_path):
    with pytest.raises(ValueError, match="Not an official TPAVI"):
        config_from_official_state_dict({"conv1.0.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="Unexpected key in official TPAVI checkpoint: 'extra.weight'"):
        convert_state_dict({"extra.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="Unexpected ResNet key"):
        convert_state_dict({"resnet.fc.weight": torch.zeros(1)})
    converted, dropped = convert_state_dict(
        {
            "tpavi_b2.theta.weight": torch.ones(8, 16, 1, 1, 1),
            "tpavi_b2.W_z.1.running_var": torch.ones(16),
            "path4.resConfUnit1.conv1.weight": torch.ones(1),
            "output_conv.4.bias": torch.ones(1),
        }
    )
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        "tpavi_blocks.1.query.weight": (8, 16),
        "tpavi_blocks.1.output_norm.running_var": (16,),
        "head.classifier.bias": (1,),
    }
    assert dropped == ["path4.resConfUnit1.conv1.weight"]
    torch.save({"module.conv1.conv2d_list.0.weight": torch.zeros(1)}, tmp_path / "wrapped.pth")
    assert list(load_official_state_dict(tmp_path / "wrapped.pth")) == ["conv1.conv2d_list.0.weight"]
    torch.save({"epoch": 3}, tmp_path / "not_weights.pth")
    with pytest.raises(ValueError, match="does not hold a TPAVI state dict"):
        load_official_state_dict(tmp_path / "not_weights.pth")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_official_state_dict(tmp_path / "missing.pth")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_finite_and_agrees_with_float32(dtype, tmp_path):
    model = tiny_model(num_labels=1)
    inputs = clip_inputs(size=64)
    with torch.no_grad():
        reference = model(**inputs).logits
        half = copy.deepcopy(model).to(dtype)(**inputs).logits
        model.save_pretrained(tmp_path)
        loaded = (
            TPAVIForAudioVisualSegmentation.from_pretrained(tmp_path, dtype=dtype).eval()(**inputs).logits
        )
    for logits in (half, loaded):
        assert logits.dtype == dtype and bool(torch.isfinite(logits).all())
        agreement = ((logits.float() > 0) == (reference > 0)).float().mean().item()
        assert agreement >= 0.99, agreement


def test_bfloat16_autocast_is_finite_and_agrees_with_float32():
    model = tiny_model()
    inputs = clip_inputs(size=64)
    with torch.no_grad():
        reference = model(**inputs).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(**inputs).logits
    assert bool(torch.isfinite(autocast).all())
    assert ((autocast.float() > 0) == (reference > 0)).float().mean().item() >= 0.99


def test_returned_maps_are_the_tensors_the_forward_used():
    model = tiny_model(num_labels=71, tpavi_audio_bias=False)
    output = model(**clip_inputs(batch=1, frames=10), output_hidden_states=True, output_attentions=True)
    recorded = [*output.hidden_states, *output.audio_hidden_states, *output.attentions]
    assert [tuple(a.shape) for a in output.attentions] == [(1, 10, 5, s, s) for s in (8, 4, 2, 1)]
    for state in recorded:
        state.retain_grad()
    output.logits.sum().backward()
    assert all(state.grad is not None for state in recorded)


def test_forced_disk_offloading_gives_the_same_outputs(tmp_path):
    model = tiny_model(audio_config=TINY_VGGISH)
    inputs = {"pixel_values": clip_inputs()["pixel_values"], "input_features": torch.randn(2, 5, 1, 96, 64)}
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path / "model")
    offloaded = TPAVIForAudioVisualSegmentation.from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": model.get_memory_footprint() // 3},
        offload_folder=tmp_path / "offload",
    ).eval()
    assert "disk" in set(offloaded.hf_device_map.values()), offloaded.hf_device_map
    with torch.no_grad():
        torch.testing.assert_close(offloaded(**inputs).logits, expected, rtol=1e-6, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    model = tiny_model(avm_loss_weight=0.5).train()
    checkpointed = copy.deepcopy(model)
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert checkpointed.is_activation_checkpointing and checkpointed.tpavi_blocks["0"].gradient_checkpointing
    inputs = {**clip_inputs(), "labels": (torch.rand(2, 5, 32, 32) > 0.5).float()}
    losses = []
    for candidate in (model, checkpointed):
        loss = candidate(**inputs).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    for (name, p), q in zip(model.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.torch_compile_test
def test_torch_compile_and_export_match_eager():
    model = tiny_model()
    inputs = clip_inputs()
    with torch.no_grad():
        eager = model(**inputs).logits
        compiled = torch.compile(model)(**inputs).logits
        exported = torch.export.export(model, args=(), kwargs=inputs).module()(**inputs)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(exported[0] if isinstance(exported, tuple) else exported.logits, eager)


@pytest.mark.parametrize("export_format", ["torch-export", "onnx"])
def test_avs_models_export_with_vggish_and_a_dynamic_batch(tmp_path, capsys, export_format):
    tiny_model(audio_config=TINY_VGGISH).save_pretrained(tmp_path / "model")
    out = tmp_path / ("tpavi.pt2" if export_format == "torch-export" else "tpavi.onnx")
    argv = ["export", str(tmp_path / "model"), "--format", export_format, "--out", str(out)]
    assert cli_main([*argv, "--image-size", "32", "--dynamic-batch"]) == 0
    differences = [float(value) for value in re.findall(r"batch \d+: ([0-9.e+-]+)", capsys.readouterr().out)]
    assert len(differences) == 2 and max(differences) < 1e-4 and out.is_file()


def test_tiny_tpavi_trains_on_ms3_with_the_avm_loss_through_the_trainer(tmp_path):
    make_synthetic_avsbench(tmp_path / "data", "ms3", 4, seed=0, image_size=32)
    config = load_training_config(
        "tpavi_ms3",
        [
            f"data_dir={tmp_path / 'data'}",
            f"output_dir={tmp_path / 'out'}",
            "validation_split=test",
            "num_epochs=1",
            "batch_size=2",
            "image_size=32",
            "drop_path_rate=null",
            "save_total_limit=1",
        ],
    )
    assert config.model["config"]["avm_loss_weight"] == 0.5
    config.model["config"].update(copy.deepcopy(TINY_TPAVI), audio_config=TINY_VGGISH)
    trainer = Trainer(config)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    state = trainer.train()
    assert state["best_miou"] is not None
    assert all(math.isfinite(entry["loss"]) for entry in state["history"] if "loss" in entry)
    final = AutoModelForAudioVisualSegmentation.from_pretrained(tmp_path / "out" / "final")
    assert isinstance(final, TPAVIForAudioVisualSegmentation) and final.config.avm_loss_weight == 0.5
    trained = final.state_dict()
    # TPAVI's batch norm starts at zero scale (as the official), so its first step trains that scale
    for name in ("tpavi_blocks.0.output_norm.weight", "aspp.0.convs.0.weight", "head.classifier.weight"):
        assert not torch.equal(trained[name], before[name]), name
    assert all(torch.equal(trained[k], before[k]) for k in before if k.startswith("audio_encoder."))


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("tpavi_s4", (4, 15, "s4", 0.0)),
        ("tpavi_ms3", (4, 30, "ms3", 0.5)),
        ("tpavi_avss", (4, 60, "avss", 0.5)),
    ],
)
def test_presets_mirror_the_official_train_scripts(preset, expected):
    config = load_training_config(preset)
    model_config = TPAVIConfig(**config.model["config"])
    assert (config.batch_size, config.num_epochs, config.subset, model_config.avm_loss_weight) == expected
    assert config.optimizer == {"name": "adam", "learning_rate": 1e-4}
    assert config.image_size == 224 and config.augmentation is None and config.drop_path_rate == 0.1
    assert model_config.backbone_config.model_type == "pvt_v2" and model_config.backbone_config.depths == [
        3,
        6,
        40,
        3,
    ]
    assert model_config.avm_loss_stages == [0, 1, 2, 3] and model_config.tpavi_stages == [0, 1, 2, 3]
    assert model_config.num_labels == (71 if preset == "tpavi_avss" else 1)
    assert model_config.tpavi_audio_bias == (preset != "tpavi_avss")


def test_pipeline_segments_a_video_end_to_end(tmp_path):
    video = write_video(tmp_path / "clip.mp4", seconds=7, fps=2, size=(36, 44))
    tiny_model(audio_config=TINY_VGGISH).save_pretrained(tmp_path / "model")
    AudioVisualProcessor(
        AudioVisualImageProcessor(size=32), VGGishFeatureExtractor(), num_frames=5
    ).save_pretrained(tmp_path / "model")
    results = pipeline("audio-visual-segmentation", model=str(tmp_path / "model"))(str(video))
    assert [result["start"] for result in results] == [float(second) for second in range(7)]
    assert all(result["mask"].shape == (36, 44) for result in results)
