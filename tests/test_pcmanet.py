import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModel

import avs_models
from avs_models import AutoModelForAudioVisualSegmentation, PCMANetConfig, PCMANetForAudioVisualSegmentation
from avs_models.models.backbones import pvt_v2_b5_backbone_config, resnet50_backbone_config
from avs_models.models.pcmanet.modeling_pcmanet import PCMANetQuerySelectedCrossAttention


def tiny_config(**overrides) -> PCMANetConfig:
    kwargs = {
        "backbone_config": resnet50_backbone_config(
            embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]
        ),
        "hidden_size": 16,
        "avga_groups": 4,
        "qsca_num_heads": 2,
        "qsca_head_dim": 8,
        "qsca_pool_sizes": [8, 4, 2, 2],
    }
    kwargs.update(overrides)
    return PCMANetConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> PCMANetForAudioVisualSegmentation:
    torch.manual_seed(seed)
    return PCMANetForAudioVisualSegmentation(tiny_config(**overrides)).eval()


def confident_model(seed: int = 0, **overrides) -> PCMANetForAudioVisualSegmentation:
    """A tiny model whose larger head weights make part of every stage confident: on `clip_inputs()`
    its confidence masks keep about 70%, 40% and 10% of the tokens (stages 4, 3, 2)."""
    model = tiny_model(seed, **overrides)
    with torch.no_grad():
        for head in model.heads:
            head.classifier.weight.mul_(8)
    return model


def clip_inputs(batch=2, frames=3, height=64, width=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(batch, frames, 3, height, width, generator=generator),
        "audio_embeds": torch.randn(batch, frames, 128, generator=generator),
    }


def test_auto_classes_resolve_pcmanet_after_import():
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("pcmanet"), PCMANetConfig)
    assert type(AutoModel.from_config(config)) is PCMANetForAudioVisualSegmentation
    assert type(AutoModelForAudioVisualSegmentation.from_config(config)) is PCMANetForAudioVisualSegmentation
    assert "PCMANetForAudioVisualSegmentation" in avs_models.__all__


def test_save_pretrained_round_trip_is_exact(tmp_path):
    model = tiny_model()
    inputs = clip_inputs()
    with torch.no_grad():
        expected = model(**inputs)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_pcmanet.PCMANetConfig",
        "AutoModel": "modeling_pcmanet.PCMANetForAudioVisualSegmentation",
    }
    reloaded = AutoModelForAudioVisualSegmentation.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        actual = reloaded(**inputs)
    assert torch.equal(actual.logits, expected.logits)
    for ours, theirs in zip(actual.auxiliary_logits, expected.auxiliary_logits):
        assert torch.equal(ours, theirs)


def test_hub_users_load_with_trust_remote_code_without_the_package(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    inputs = clip_inputs(batch=1)
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        torch.save(model(**inputs).logits, tmp_path / "expected.pt")
    script = f"""
import sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
assert "avs_models" not in sys.modules, "the package must not be needed"
inputs = torch.load({str(tmp_path / "inputs.pt")!r})
with torch.no_grad():
    logits = model(**inputs).logits
assert torch.equal(logits, torch.load({str(tmp_path / "expected.pt")!r}))
print("remote ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote ok" in result.stdout


@pytest.mark.parametrize("batch,frames,height,width", [(1, 1, 64, 64), (3, 2, 64, 96), (1, 7, 96, 64)])
def test_any_batch_frames_and_size(batch, frames, height, width):
    model = tiny_model()
    with torch.no_grad():
        output = model(**clip_inputs(batch, frames, height, width))
    assert output.logits.shape == (batch, frames, 1, height, width)
    assert [tuple(x.shape) for x in output.auxiliary_logits] == [(batch, frames, 1, height, width)] * 3
    assert output.kept_token_ratios.shape == (3,)
    for mask, ratio in zip(output.confidence_masks, output.kept_token_ratios):
        assert mask.shape[:3] == (batch, frames, 1)
        assert torch.isclose(mask.mean(), ratio)


def test_clips_in_a_batch_do_not_interact():
    model = tiny_model()
    inputs = clip_inputs(batch=3)
    with torch.no_grad():
        together = model(**inputs).logits
        alone = model(
            pixel_values=inputs["pixel_values"][1:2], audio_embeds=inputs["audio_embeds"][1:2]
        ).logits
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)


def test_audio_changes_the_prediction():
    model = tiny_model()
    inputs = clip_inputs()
    with torch.no_grad():
        first = model(**inputs).logits
        second = model(
            pixel_values=inputs["pixel_values"], audio_embeds=torch.randn_like(inputs["audio_embeds"])
        ).logits
    assert (first - second).abs().max() > 1e-4


def test_confidence_masks_are_progressive():
    # Large head weights make some pixels confident, so the masks are partly off.
    model = tiny_model()
    with torch.no_grad():
        for head in model.heads:
            head.classifier.weight.mul_(50)
        output = model(**clip_inputs())
    deeper = output.confidence_masks[0]
    for mask in output.confidence_masks[1:]:
        upsampled = F.interpolate(deeper.flatten(0, 1), size=mask.shape[-2:], mode="nearest").unflatten(
            0, mask.shape[:2]
        )
        assert torch.all(mask <= upsampled), "a confident pixel must stay confident in shallower stages"
        deeper = mask
    assert output.kept_token_ratios[-1] < 1.0
    assert torch.all(output.kept_token_ratios[1:] <= output.kept_token_ratios[:-1] + 1e-6)


def _dense_qsca_reference(module, visual, audio, num_frames, keep_mask):
    """Every token attends; the unkept tokens' attention outputs are zeroed afterwards."""
    frames, channels, height, width = visual.shape
    grid = module.pool_size
    tokens = module.token_embedding(F.adaptive_avg_pool2d(visual, grid).flatten(2).transpose(1, 2))
    audio = module.audio_projection(audio)
    normed_tokens, normed_audio = module.layer_norm(tokens), module.layer_norm(audio)
    heads, dim = module.num_heads, module.head_dim
    clips = frames // num_frames
    q_a, k_a, v_a = (
        module.audio_query_key_value(normed_audio).view(clips, num_frames, 3, heads, dim).unbind(2)
    )
    k_v, v_v = (
        F.linear(normed_tokens, module.visual_key_value.weight)
        .view(clips, num_frames * grid * grid, 2, heads, dim)
        .unbind(2)
    )
    q_v = module.visual_query(normed_tokens).view(clips, num_frames * grid * grid, heads, dim)

    def attend(query, key, value):
        weights = torch.einsum("bqhd,bkhd->bhqk", query, key).mul(dim**-0.5).softmax(-1)
        return torch.einsum("bhqk,bkhd->bqhd", weights, value).flatten(2)

    new_audio = audio + module.output_projection(attend(q_a, k_v, v_v).reshape(frames, -1))
    visual_out = attend(q_v, k_a, v_a).reshape(frames, grid * grid, -1)
    if keep_mask is not None:
        visual_out = visual_out * keep_mask.reshape(frames, grid * grid, 1)
    new_tokens = tokens + module.output_projection(visual_out)
    if module.spatial_layout:
        guide = new_tokens.transpose(1, 2).reshape(frames, channels, grid, grid)
    else:
        guide = new_tokens.reshape(frames, channels, grid, grid)
    return F.interpolate(guide, size=(height, width), mode="bilinear", align_corners=False), new_audio


@pytest.mark.parametrize("layout", ["official", "spatial"])
@pytest.mark.parametrize("kept", [0.0, 0.3, 1.0, None])
def test_query_selection_equals_dense_masked_attention(layout, kept):
    torch.manual_seed(0)
    module = PCMANetQuerySelectedCrossAttention(tiny_config(qsca_token_layout=layout), pool_size=4).eval()
    visual, audio = torch.randn(6, 16, 8, 8), torch.randn(6, 16)
    keep_mask = None if kept is None else (torch.rand(6, 1, 4, 4) < kept).float()
    with torch.no_grad():
        guide, new_audio, _, _ = module(visual, audio, num_frames=3, keep_mask=keep_mask)
        reference_guide, reference_audio = _dense_qsca_reference(module, visual, audio, 3, keep_mask)
    torch.testing.assert_close(guide, reference_guide, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new_audio, reference_audio, atol=1e-5, rtol=1e-5)


def test_qsca_built_on_its_own_is_initialised_as_linear_layers_are():
    torch.manual_seed(0)
    weight = PCMANetQuerySelectedCrossAttention(tiny_config(), pool_size=4).visual_key_value.weight
    bound = 1 / 16**0.5  # nn.Linear's uniform bound, 1 / sqrt(fan_in)
    assert torch.isfinite(weight).all() and weight.std() > 0.1 * bound and weight.abs().max() <= bound


def test_query_selection_cost_follows_the_kept_ratio():
    torch.manual_seed(0)
    module = PCMANetQuerySelectedCrossAttention(
        tiny_config(hidden_size=64, avga_groups=4), pool_size=16
    ).eval()
    visual, audio = torch.randn(10, 64, 16, 16), torch.randn(10, 64)

    def selected_query_flops(kept_ratio):
        keep_mask = (
            torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(1)) < kept_ratio
        ).float()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(visual, audio, num_frames=5, keep_mask=keep_mask)
        return counter.get_total_flops(), int(keep_mask.sum())

    full_flops, full_kept = selected_query_flops(1.01)
    tenth_flops, tenth_kept = selected_query_flops(0.1)
    # Query and output projections (64 <-> 2 heads x 8) plus attention over the clip's 5 audio tokens.
    per_token = 2 * (2 * 64 * 16) + 2 * (2 * 16 * 5)
    assert full_flops - tenth_flops == pytest.approx((full_kept - tenth_kept) * per_token, rel=0.05)


@pytest.mark.parametrize("detach", [True, False])
def test_official_scatter_blocks_gradients_through_selected_tokens(detach):
    torch.manual_seed(0)
    module = PCMANetQuerySelectedCrossAttention(tiny_config(qsca_detach_selected_tokens=detach), pool_size=4)
    keep_mask = (torch.rand(6, 1, 4, 4) < 0.5).float()
    guide, *_ = module(torch.randn(6, 16, 8, 8), torch.randn(6, 16), num_frames=3, keep_mask=keep_mask)
    guide.square().sum().backward()
    query_grad = module.visual_query.weight.grad
    if detach:
        assert query_grad is None or torch.count_nonzero(query_grad) == 0
    else:
        assert torch.count_nonzero(query_grad) > 0
    assert torch.count_nonzero(module.output_projection.weight.grad) > 0


@pytest.mark.parametrize("detach", [True, False])
def test_which_parameters_the_official_scatter_leaves_without_gradient(detach):
    """With the official gradient-free scatter, the QSCAs of stages 1-3 (those that select tokens)
    pass no gradient through their attention, so its weights keep their initial values in training;
    and the audio state each QSCA hands on only feeds those, so the audio-side key/value projection
    of stage 4 gets none either. Without the detach, only stage 1's key/value projection (its audio
    state is read by no later stage) gets none."""
    model = confident_model(qsca_detach_selected_tokens=detach).train()
    model(**clip_inputs(), labels=_segmentation_labels()).loss.backward()
    without = {name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()}
    if not detach:
        assert without == {"cross_attention.0.visual_key_value.weight"}
        return
    attention = ["audio_projection.weight", "audio_projection.bias", "layer_norm.weight", "layer_norm.bias"]
    attention += ["visual_query.weight", "visual_key_value.weight", "audio_query_key_value.weight"]
    expected = {f"cross_attention.{stage}.{name}" for stage in range(3) for name in attention}
    expected.add("cross_attention.3.visual_key_value.weight")
    assert without == expected


def test_binary_loss_is_bce_plus_iou_on_labelled_frames():
    model = tiny_model()
    inputs = clip_inputs(batch=2, frames=3)
    labels = (torch.rand(2, 3, 64, 64) > 0.5).float()
    labeled_frames = torch.tensor([[1, 0, 0], [1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        output = model(**inputs, labels=labels, labeled_frames=labeled_frames)
        changed = labels.clone()
        changed[:, 1:] = 1 - changed[:, 1:]
        same = model(**inputs, labels=changed, labeled_frames=labeled_frames)
    assert torch.equal(output.loss, same.loss), "unlabelled frames must not count"

    first_logits = output.logits[:, 0]  # (B, 1, H, W)
    probability = first_logits.sigmoid()
    target = labels[:, 0:1]
    bce = F.binary_cross_entropy(probability, target)
    intersection = (probability * target).sum(dim=(2, 3))
    union = (probability + target).sum(dim=(2, 3))
    iou = (1 - (intersection + 1) / (union - intersection + 1)).mean()
    torch.testing.assert_close(output.stage_losses[0], bce + iou, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.loss, output.stage_losses.sum())


def test_semantic_model_uses_softmax_confidence_and_masks_padding_frames():
    model = tiny_model(num_labels=5)
    inputs = clip_inputs(batch=1, frames=4)
    frame_mask = torch.tensor([[1, 1, 1, 0]])
    labels = torch.randint(0, 5, (1, 4, 64, 64))
    with torch.no_grad():
        output = model(**inputs, labels=labels, frame_mask=frame_mask)
        relabelled = labels.clone()
        relabelled[:, 3] = (relabelled[:, 3] + 1) % 5
        same = model(**inputs, labels=relabelled, frame_mask=frame_mask)
    assert output.logits.shape == (1, 4, 5, 64, 64)
    assert torch.equal(output.loss, same.loss), "padding frames must not count in the loss"
    expected_first = (
        F.cross_entropy(output.logits[0, :3], labels[0, :3], reduction="none").mean(dim=(1, 2)).mean()
    )
    torch.testing.assert_close(output.stage_losses[0], expected_first, atol=1e-5, rtol=1e-5)


def test_training_step_reduces_loss():
    model = tiny_model().train()
    inputs = clip_inputs(batch=2, frames=2, height=32, width=32)
    labels = torch.zeros(2, 2, 32, 32)
    labels[..., 8:24, 8:24] = 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("reload", [False, True], ids=["built", "from_pretrained"])
def test_log_mel_input_goes_through_the_frozen_vggish_encoder(reload, tmp_path):
    from avs_models import VGGishConfig

    model = tiny_model(audio_config=VGGishConfig())
    if reload:  # loading makes fresh parameters: the encoder must come back frozen
        model.save_pretrained(tmp_path)
        model = PCMANetForAudioVisualSegmentation.from_pretrained(tmp_path)
    model.train()
    assert not model.audio_encoder.training, "a frozen audio encoder stays in eval mode"
    assert not any(parameter.requires_grad for parameter in model.audio_encoder.parameters())
    features = torch.randn(1, 2, 1, 96, 64)
    pixels = torch.randn(1, 2, 3, 32, 32)
    output = model(pixel_values=pixels, input_features=features, labels=torch.ones(1, 2, 32, 32))
    output.loss.backward()
    with torch.no_grad():
        embeds = model.audio_encoder(input_features=features).embeddings
        model.eval()
        via_embeds = model(pixel_values=pixels, audio_embeds=embeds).logits
        via_features = model(pixel_values=pixels, input_features=features).logits
    torch.testing.assert_close(via_features, via_embeds)


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
        (
            lambda i: i.update(audio_embeds=i["audio_embeds"][..., :64]),
            "`audio_embeds` must have shape (2, 3, 128)",
        ),
        (lambda i: i.update(labels=torch.zeros(2, 3, 32, 32)), "`labels` must have shape (2, 3, 64, 64)"),
        (lambda i: i.update(frame_mask=torch.ones(2, 4)), "`frame_mask` must have shape (2, 3)"),
        (lambda i: i.update(input_features=torch.zeros(2, 3, 1, 96, 64)), "exactly one of `input_features`"),
        (lambda i: i.pop("audio_embeds"), "exactly one of `input_features`"),
    ],
)
def test_bad_inputs_name_the_argument_and_expected_shape(change, message):
    model = tiny_model()
    inputs = clip_inputs()
    change(inputs)
    with pytest.raises((ValueError, TypeError)) as error:
        model(**inputs)
    assert message in str(error.value)


def test_log_mel_without_audio_encoder_explains_what_to_pass():
    model = tiny_model()
    with pytest.raises(ValueError, match="pass VGGish embeddings as `audio_embeds`"):
        model(pixel_values=torch.randn(1, 2, 3, 32, 32), input_features=torch.randn(1, 2, 1, 96, 64))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"avga_groups": 3}, "avga_groups=3 must divide hidden_size=16"),
        ({"qsca_token_layout": "columns"}, "qsca_token_layout must be one of"),
        ({"qsca_pool_sizes": [8, 4, 2]}, "qsca_pool_sizes must hold 4"),
        ({"confidence_threshold": 0.3}, "confidence_threshold must lie in"),
        ({"loss_stage_weights": [1, 1]}, "loss_stage_weights must hold 4"),
    ],
)
def test_bad_config_values_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        tiny_config(**overrides)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet50", "pvt_v2_b5"])
def test_full_size_model_trains_one_step(backbone):
    from avs_models import VGGishConfig

    backbone_config = resnet50_backbone_config() if backbone == "resnet50" else pvt_v2_b5_backbone_config()
    torch.manual_seed(0)
    model = PCMANetForAudioVisualSegmentation(
        PCMANetConfig(backbone_config=backbone_config, audio_config=VGGishConfig(), avga_groups=4)
    ).train()
    output = model(
        pixel_values=torch.randn(1, 2, 3, 224, 224),
        input_features=torch.randn(1, 2, 1, 96, 64),
        labels=torch.zeros(1, 2, 224, 224),
        labeled_frames=torch.tensor([[1, 0]]),
    )
    output.loss.backward()
    assert output.logits.shape == (1, 2, 1, 224, 224)
    assert [mask.shape[-1] for mask in output.confidence_masks] == [7, 14, 28]
    assert all(parameter.grad is None for parameter in model.audio_encoder.parameters())
    assert model.heads[0].classifier.weight.grad is not None


# ---------------------------------------------------------------- bad labels, bad config values


@pytest.mark.parametrize(
    "labels, message",
    [
        (torch.full((2, 3, 64, 64), 255), "`labels` must be a binary mask with values 0/1; found values 255"),
        (torch.full((2, 3, 64, 64), -1.0), "`labels` must be a binary mask with values 0/1; found values -1"),
        (torch.full((2, 3, 64, 64), float("nan")), "`labels` must be a binary mask with values 0/1; found values nan"),
    ],
    ids=["0-255", "minus-one", "nan"],
)
def test_binary_labels_must_be_zero_or_one(labels, message):
    with pytest.raises(ValueError) as error:
        tiny_model()(**clip_inputs(), labels=labels)
    assert message in str(error.value)


def test_a_batch_without_labelled_frames_is_refused():
    with pytest.raises(ValueError, match="No labelled frame in the batch"):
        tiny_model()(**clip_inputs(), labels=torch.zeros(2, 3, 64, 64), labeled_frames=torch.zeros(2, 3))


def test_only_the_labelled_frames_labels_are_read():
    model = tiny_model()
    labels = torch.zeros(2, 3, 64, 64)
    labels[:, 1:] = 255  # S4 clips label the first frame only; the others may hold anything
    output = model(**clip_inputs(), labels=labels, labeled_frames=torch.tensor([[1, 0, 0], [1, 0, 0]]))
    assert torch.isfinite(output.loss)


def test_semantic_label_outside_the_classes_is_a_clear_error():
    model = tiny_model(num_labels=71)
    labels = torch.zeros(2, 3, 64, 64, dtype=torch.long)
    labels[0, 0, 0, 0] = 80
    with pytest.raises(ValueError, match=r"`labels` must hold class ids in \[0, 71\) or the ignore index 255; found 80"):
        model(**clip_inputs(), labels=labels)


def test_semantic_loss_ignores_the_ignore_index_as_the_official_per_frame_mean():
    model = tiny_model(num_labels=5)
    inputs = clip_inputs(batch=1, frames=2)
    labels = torch.randint(0, 5, (1, 2, 64, 64), generator=torch.Generator().manual_seed(0))
    labels[:, :, :20] = 255
    with torch.no_grad():
        output = model(**inputs, labels=labels)
        relabelled = labels.clone()
        relabelled[:, :, :20] = 0
        scored = model(**inputs, labels=relabelled)
    logits, target = output.logits[0], labels[0]
    # Ignored pixels add nothing; each frame's sum is divided by all its pixels (official reduction).
    pixel_losses = F.cross_entropy(logits, target.clamp(max=4), reduction="none") * (target != 255)
    torch.testing.assert_close(output.stage_losses[0], pixel_losses.mean(dim=(1, 2)).mean())
    assert output.loss < scored.loss


def test_custom_ignore_index_is_used_and_checked():
    model = tiny_model(num_labels=5, ignore_index=-1)
    labels = torch.full((2, 3, 64, 64), -1)
    labels[..., 0, 0] = 2
    assert torch.isfinite(model(**clip_inputs(), labels=labels).loss)
    with pytest.raises(ValueError, match="found 255"):
        model(**clip_inputs(), labels=torch.full((2, 3, 64, 64), 255))
    with pytest.raises(ValueError, match=r"ignore_index=3 is a class id of this 5-class model"):
        tiny_config(num_labels=5, ignore_index=3)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: i.update(pixel_values=i["pixel_values"][:0], audio_embeds=i["audio_embeds"][:0]), "`pixel_values` is empty"),
        (lambda i: i.update(pixel_values=i["pixel_values"][:, :0], audio_embeds=i["audio_embeds"][:, :0]), "`pixel_values` is empty"),
        (lambda i: i["pixel_values"].__setitem__((0, 1, 2, 3, 4), float("nan")), "`pixel_values` holds 1 NaN or infinite"),
        (lambda i: i["audio_embeds"].__setitem__((1, 0, 5), float("inf")), "`audio_embeds` holds 1 NaN or infinite"),
    ],
    ids=["empty-batch", "empty-clip", "nan-pixel", "inf-audio"],
)
def test_empty_and_non_finite_inputs_are_refused(change, message):
    inputs = clip_inputs()
    change(inputs)
    with pytest.raises(ValueError, match=message):
        tiny_model()(**inputs)


def test_float64_frames_and_audio_are_cast_to_the_model_dtype():
    model = tiny_model()
    inputs = clip_inputs()
    with torch.no_grad():
        expected = model(**inputs).logits
        actual = model(**{name: value.double() for name, value in inputs.items()}).logits
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected)


def test_non_finite_log_mel_input_is_refused():
    from avs_models import VGGishConfig

    model = tiny_model(audio_config=VGGishConfig())
    features = torch.zeros(1, 2, 1, 96, 64)
    features[0, 1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="`input_features` holds 1 NaN or infinite"):
        model(pixel_values=torch.randn(1, 2, 3, 32, 32), input_features=features)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_labels": -3}, "num_labels must be at least 1, got -3"),
        ({"num_labels": 0}, "num_labels must be at least 1, got 0"),
        ({"use_avga": "maybe"}, "use_avga must be true or false, got 'maybe'"),
        ({"cim_progression": 1}, "cim_progression must be true or false, got 1"),
    ],
)
def test_bad_label_counts_and_switches_are_reported_as_given(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


# ---------------------------------------------------------------- the paper's ablations (Table IV)


def _capture(modules, slot):
    """Record, per module index, an argument (`slot` an int) or the output (`slot="output"`) of each call."""
    seen = {}
    for index, module in enumerate(modules):
        if slot == "output":
            module.register_forward_hook(lambda _, __, output, index=index: seen.__setitem__(index, output))
        else:
            module.register_forward_pre_hook(lambda _, args, index=index: seen.__setitem__(index, args[slot]))
    return seen


def test_without_avga_the_audio_vector_is_added_to_every_pixel():
    model = tiny_model(use_avga=False)
    assert model.grouped_attention is None
    assert not any(key.startswith("grouped_attention.") for key in model.state_dict())
    projected = _capture(model.stage_projections, "output")
    fused = _capture(model.fusion, 0)
    inputs = clip_inputs()
    with torch.no_grad():
        output = model(**inputs, output_attentions=True)
        audio = model.audio_projection(inputs["audio_embeds"].flatten(0, 1))
    for stage in range(4):
        torch.testing.assert_close(fused[stage], projected[stage] + audio[:, :, None, None])
    assert output.attentions is None


def test_without_qsca_the_fusion_gets_no_guide():
    model = tiny_model(use_qsca=False)
    assert model.cross_attention is None
    assert not any(key.startswith("cross_attention.") or ".guide_conv." in key for key in model.state_dict())
    guides = _capture(model.fusion, 2)
    with torch.no_grad():
        output = model(**clip_inputs(), output_attentions=True)
    assert guides == {stage: None for stage in range(4)}
    assert output.audio_cross_attentions is None and output.visual_cross_attentions is None
    assert len(output.confidence_masks) == 3


@pytest.mark.parametrize("selection", [True, False])
def test_qsca_without_masking_queries_with_every_token(selection):
    model = confident_model(qsca_query_selection=selection)
    keep_masks = _capture(model.cross_attention, 3)
    with torch.no_grad():
        output = model(**clip_inputs(), output_attentions=True)
    assert output.kept_token_ratios.max() < 1, "the confidence masks still drop tokens"
    assert keep_masks[3] is None, "the deepest QSCA always queries with every token"
    for stage in range(3):
        query_rows = output.visual_cross_attentions[stage].sum(dim=-1)  # (B, T, heads, N): 1 if queried
        if selection:
            assert torch.equal(keep_masks[stage], output.confidence_masks[2 - stage].flatten(0, 1))
            assert (query_rows == 0).any()
        else:
            assert keep_masks[stage] is None
            torch.testing.assert_close(query_rows, torch.ones_like(query_rows))


@pytest.mark.parametrize("continuity", [True, False])
def test_qsca_without_continuity_receives_the_initial_audio(continuity):
    model = tiny_model(qsca_audio_continuity=continuity)
    received = _capture(model.cross_attention, 1)
    returned = _capture(model.cross_attention, "output")
    inputs = clip_inputs()
    with torch.no_grad():
        model(**inputs)
        initial = model.audio_projection(inputs["audio_embeds"].flatten(0, 1))
    assert torch.equal(received[3], initial)
    for stage in range(3):
        expected = returned[stage + 1][1] if continuity else initial
        assert torch.equal(received[stage], expected)
        assert not torch.equal(returned[stage + 1][1], initial)


@pytest.mark.parametrize("progression", [True, False])
def test_cim_without_progression_masks_each_stage_from_its_own_prediction(progression):
    model = confident_model(cim_progression=progression)
    stage_logits = _capture(model.heads, "output")
    with torch.no_grad():
        output = model(**clip_inputs())
    own = {stage: model._unconfident(stage_logits[stage]) for stage in (3, 2, 1)}
    deeper = None
    for stage, mask in zip((3, 2, 1), output.confidence_masks):
        mask = mask.flatten(0, 1)
        if progression and deeper is not None:
            expected = F.interpolate(deeper, size=mask.shape[-2:], mode="nearest") * own[stage]
        else:
            expected = own[stage]
        assert torch.equal(mask, expected)
        if deeper is not None and not progression:
            upsampled = F.interpolate(deeper, size=mask.shape[-2:], mode="nearest")
            assert (mask > upsampled).any(), "a pixel confident in the deeper stage is unconfident again"
        deeper = mask


def test_ablated_models_train_and_save(tmp_path):
    switches = {
        "use_avga": False,
        "use_qsca": False,
        "qsca_query_selection": False,
        "qsca_audio_continuity": False,
        "cim_progression": False,
    }
    for switch, value in switches.items():
        model = confident_model(**{switch: value}).train()
        output = model(**clip_inputs(batch=1, frames=2), labels=torch.ones(1, 2, 64, 64))
        output.loss.backward()
        model.save_pretrained(tmp_path / switch)
        reloaded = PCMANetForAudioVisualSegmentation.from_pretrained(tmp_path / switch)
        assert getattr(reloaded.config, switch) is value


@pytest.mark.parametrize("preset, groups", [("pcmanet_s4", 4), ("pcmanet_ms3", 8), ("pcmanet_avss", 8)])
def test_presets_use_the_avga_groups_of_the_official_resnet_models(preset, groups):
    from avs_models.training.config import load_training_config

    assert load_training_config(preset).model["config"]["avga_groups"] == groups


def test_ablation_switches_reach_the_model_config_from_the_command_line():
    from avs_models.training.config import load_training_config

    training = load_training_config("pcmanet_s4", ["model.config.qsca_audio_continuity=false"])
    config = AutoConfig.for_model(training.model["model_type"], **training.model["config"])
    assert config.qsca_audio_continuity is False and config.use_avga is True


# ---------------------------------------------------------------- introspection


def test_hidden_states_and_attentions_have_the_documented_shapes():
    model = confident_model()
    inputs = clip_inputs(batch=2, frames=3)
    decoder_inputs = _capture(model.heads, 0)
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True, output_attentions=True)
    sizes, grids = [16, 8, 4, 2], model.config.qsca_pool_sizes
    widths = model.backbone.channels
    assert [tuple(x.shape) for x in output.hidden_states] == [(2, 3, w, s, s) for w, s in zip(widths, sizes)]
    assert [tuple(x.shape) for x in output.decoder_hidden_states] == [(2, 3, 16, s, s) for s in sizes]
    assert [tuple(x.shape) for x in output.attentions] == [(2, 3, 4, s, s) for s in sizes]
    assert [tuple(x.shape) for x in output.audio_cross_attentions] == [(2, 3, 2, 3, g * g) for g in grids]
    assert [tuple(x.shape) for x in output.visual_cross_attentions] == [(2, 3, 2, g * g, 3) for g in grids]
    for stage in range(4):
        torch.testing.assert_close(output.decoder_hidden_states[stage].flatten(0, 1), decoder_inputs[stage])
        weights = output.audio_cross_attentions[stage].sum(dim=(-2, -1))
        torch.testing.assert_close(weights, torch.ones_like(weights))
    # A token the deeper mask dropped is no query: its row of weights is zero, the others sum to 1.
    keep = F.interpolate(output.confidence_masks[0].flatten(0, 1), size=(grids[2], grids[2]), mode="nearest")
    rows = output.visual_cross_attentions[2].sum(dim=-1)  # (B, T, heads, N)
    expected = keep.reshape(2, 3, 1, -1).expand_as(rows)
    torch.testing.assert_close(rows, expected)


def test_avga_attentions_are_the_cosine_similarity_of_audio_and_each_channel_group():
    model = tiny_model()
    attention = model.grouped_attention[0]
    visual = _capture([attention.grouped_conv], "output")
    audio = _capture([attention.audio_mlp], "output")
    with torch.no_grad():
        output = model(**clip_inputs(), output_attentions=True)
    groups = visual[0].unflatten(1, (4, -1))  # (BT, g, C/g, h, w)
    expected = F.cosine_similarity(groups, audio[0][:, None, :, None, None], dim=2, eps=1e-12)
    torch.testing.assert_close(output.attentions[0].flatten(0, 1), expected)
    assert output.attentions[0].abs().max() <= 1 + 1e-6


def test_outputs_follow_the_config_flags_and_return_dict_false_keeps_the_field_order():
    model = tiny_model()
    inputs = clip_inputs(batch=1, frames=2)
    with torch.no_grad():
        plain = model(**inputs)
        assert plain.hidden_states is None and plain.attentions is None
        model.config.output_hidden_states = model.config.output_attentions = True
        full = model(**inputs)
        assert full.hidden_states is not None and full.attentions is not None
        assert model(**inputs, output_attentions=False).attentions is None
        as_tuple = model(**inputs, return_dict=False)
    assert list(full.keys()) == [
        "logits", "auxiliary_logits", "confidence_masks", "kept_token_ratios", "hidden_states",
        "decoder_hidden_states", "attentions", "audio_cross_attentions", "visual_cross_attentions",
    ]  # fmt: skip
    assert len(as_tuple) == len(full)
    torch.testing.assert_close(as_tuple[0], full.logits)
    torch.testing.assert_close(as_tuple[-1], full.visual_cross_attentions)


# ---------------------------------------------------------------- gradient checkpointing, compile, export


def _loss_and_gradients(model, inputs, labels, run=None):
    """One training step's loss and parameter gradients (zero where none arrived); `run` (default: the
    model) does the forward."""
    model.zero_grad(set_to_none=True)
    loss = (model if run is None else run)(**inputs, labels=labels).loss
    loss.backward()
    return loss.detach(), {
        name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def _assert_gradients_close(actual: dict, expected: dict, rtol: float) -> None:
    """Every gradient within `rtol` of the largest entry of the expected one, plus a millionth of the
    model's largest gradient entry (sums over many pixels are reordered by checkpointing and
    compilers, so small entries carry relative noise, and gradients that are zero in exact
    arithmetic, such as a convolution bias before BatchNorm, are pure noise)."""
    assert actual.keys() == expected.keys()
    largest = max(gradient.abs().max().item() for gradient in expected.values())
    for name, gradient in actual.items():
        scale = expected[name].abs().max().item()
        assert (gradient - expected[name]).abs().max().item() <= rtol * scale + 1e-6 * largest, name


def _segmentation_labels(batch=2, frames=3, size=64):
    labels = torch.zeros(batch, frames, size, size)
    labels[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return labels


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(use_reentrant):
    model = confident_model().train()
    inputs, labels = clip_inputs(), _segmentation_labels()
    expected_loss, expected_gradients = _loss_and_gradients(model, inputs, labels)

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert model.is_gradient_checkpointing
    calls = []
    model.fusion[0].output_conv.register_forward_pre_hook(lambda *_: calls.append(1))
    loss, gradients = _loss_and_gradients(model, inputs, labels)
    assert len(calls) == 2, "the checkpointed block runs again in the backward pass"
    torch.testing.assert_close(loss, expected_loss)
    _assert_gradients_close(gradients, expected_gradients, rtol=1e-5)


@pytest.mark.torch_compile_test
def test_compiled_model_equals_eager_in_inference_at_each_image_size():
    # dynamic=False, as docs/using-models.md advises: a second image size compiles anew instead of
    # going shape-dynamic, which PyTorch 2.13's Inductor fails on (pytorch/pytorch#188422).
    model = confident_model()
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    for size in (64, 96):
        inputs = clip_inputs(batch=2, frames=2, height=size, width=size)
        with torch.no_grad():
            expected = model(**inputs)
            actual = compiled(**inputs)
        torch.testing.assert_close(actual.logits, expected.logits, rtol=1e-4, atol=1e-4)
        for ours, theirs in zip(actual.confidence_masks, expected.confidence_masks):
            assert torch.equal(ours, theirs)


@pytest.mark.torch_compile_test
def test_compiled_training_step_equals_eager():
    # In float64: train-mode BatchNorm over tiny batches and the sharpened heads amplify float32
    # rounding (compiled and eager gradients differ by up to 2e-4 of the largest in float32, by
    # CPU); in float64 the two graphs agree to 3e-8, so a real difference would stand out.
    model = confident_model().train().double()
    inputs = {name: tensor.double() for name, tensor in clip_inputs(batch=2, frames=2).items()}
    labels = _segmentation_labels(frames=2)
    expected_loss, expected_gradients = _loss_and_gradients(model, inputs, labels)
    loss, gradients = _loss_and_gradients(model, inputs, labels, run=torch.compile(model, fullgraph=True))
    torch.testing.assert_close(loss, expected_loss, rtol=1e-10, atol=1e-12)
    _assert_gradients_close(gradients, expected_gradients, rtol=1e-6)


@pytest.mark.torch_compile_test
def test_compiled_qsca_keeps_no_token_or_every_token_under_max_autotune():
    torch.manual_seed(0)
    module = PCMANetQuerySelectedCrossAttention(tiny_config(), pool_size=4).eval()
    compiled = torch.compile(module, mode="max-autotune", fullgraph=True)
    visual, audio = torch.randn(6, 16, 8, 8), torch.randn(6, 16)
    for keep_mask in (torch.zeros(6, 1, 4, 4), torch.ones(6, 1, 4, 4), (torch.rand(6, 1, 4, 4) < 0.3).float()):
        with torch.no_grad():
            expected = module(visual, audio, 3, keep_mask, True)
            actual = compiled(visual, audio, 3, keep_mask, True)
        for ours, theirs in zip(actual, expected):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("threshold, kept", [(0.500001, 0.0), (1.0, 1.0)], ids=["keeps-nothing", "keeps-everything"])
def test_confidence_thresholds_that_keep_no_token_or_every_token(threshold, kept):
    model = tiny_model(confidence_threshold=threshold)
    with torch.no_grad():
        output = model(**clip_inputs(), output_attentions=True)
    assert output.kept_token_ratios.tolist() == [kept] * 3
    assert torch.isfinite(output.logits).all()


def test_torch_export_for_inference_matches_eager():
    model = confident_model()
    inputs = clip_inputs(batch=1, frames=2)
    program = torch.export.export(model, args=(), kwargs=inputs)
    with torch.no_grad():
        expected = model(**inputs)
    actual = program.module()(**inputs)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(actual.kept_token_ratios, expected.kept_token_ratios)


def test_onnx_export_runs_in_onnxruntime_and_matches_pytorch(tmp_path):
    import onnxruntime

    model = confident_model()
    inputs = clip_inputs(batch=1, frames=2)
    with torch.no_grad():
        expected = model(**inputs)
    program = torch.onnx.export(model, args=(), kwargs=inputs, dynamo=True, verbose=False)
    program.save(tmp_path / "pcmanet.onnx")
    session = onnxruntime.InferenceSession(tmp_path / "pcmanet.onnx", providers=["CPUExecutionProvider"])
    feed = {entry.name: inputs[entry.name].numpy() for entry in session.get_inputs()}
    logits, *_ = session.run(None, feed)
    torch.testing.assert_close(torch.from_numpy(logits), expected.logits, rtol=1e-4, atol=1e-4)
