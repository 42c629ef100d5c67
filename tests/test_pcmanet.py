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
        module.visual_key_value(normed_tokens).view(clips, num_frames * grid * grid, 2, heads, dim).unbind(2)
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
        guide, new_audio = module(visual, audio, num_frames=3, keep_mask=keep_mask)
        reference_guide, reference_audio = _dense_qsca_reference(module, visual, audio, 3, keep_mask)
    torch.testing.assert_close(guide, reference_guide, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new_audio, reference_audio, atol=1e-5, rtol=1e-5)


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
    guide, _ = module(torch.randn(6, 16, 8, 8), torch.randn(6, 16), num_frames=3, keep_mask=keep_mask)
    guide.square().sum().backward()
    query_grad = module.visual_query.weight.grad
    if detach:
        assert query_grad is None or torch.count_nonzero(query_grad) == 0
    else:
        assert torch.count_nonzero(query_grad) > 0
    assert torch.count_nonzero(module.output_projection.weight.grad) > 0


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
            "pixel_values must have shape (B, T, 3, H, W)",
        ),
        (
            lambda i: i.update(pixel_values=i["pixel_values"].to(torch.uint8)),
            "pixel_values must be a float tensor",
        ),
        (
            lambda i: i.update(audio_embeds=i["audio_embeds"][:, :2]),
            "audio_embeds must have shape (2, 3, 128)",
        ),
        (
            lambda i: i.update(audio_embeds=i["audio_embeds"][..., :64]),
            "audio_embeds must have shape (2, 3, 128)",
        ),
        (lambda i: i.update(labels=torch.zeros(2, 3, 32, 32)), "labels must have shape (2, 3, 64, 64)"),
        (lambda i: i.update(frame_mask=torch.ones(2, 4)), "frame_mask must have shape (2, 3)"),
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
