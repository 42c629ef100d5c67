"""Official AVSegFormer checkpoints, converted by our script, reproduce the official outputs."""

import json

import pytest
import torch
from parity_weights import deterministic_state_dict
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from avs_models.models.avsegformer.convert_avsegformer_original_to_hf import main as convert

VARIANTS = ("avsegformer_resnet50_s4", "avsegformer_pvtv2b5_ms3", "avsegformer_pvtv2b5_avss")
# Official tensors in branches the official forward never runs (the converter drops them).
UNUSED_PREFIXES = ("head.fpn.", "head.attn_fc.", "backbone.layer3_2.", "backbone.layer4_2.")
BUFFER_NAMES = ("running_mean", "running_var", "num_batches_tracked")


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_checkpoint_matches_official_outputs(variant, parity_dir, tmp_path, capsys):
    fixture = parity_dir / variant
    meta = json.loads((fixture / "meta.json").read_text())
    tensors = load_file(fixture / "tensors.safetensors")
    official_state_dict = deterministic_state_dict(meta["state_dict_spec"])
    torch.save(official_state_dict, tmp_path / "official.pth")
    unused = [key for key in official_state_dict if key.startswith(UNUSED_PREFIXES)]
    unused_parameters = sum(
        official_state_dict[key].numel() for key in unused if not key.endswith(BUFFER_NAMES)
    )
    del official_state_dict  # one full-size copy in memory at a time

    convert(["--checkpoint", str(tmp_path / "official.pth"), "--output-dir", str(tmp_path / "converted")])
    assert f"dropped {len(unused)} tensors" in capsys.readouterr().out
    model = AutoModel.from_pretrained(tmp_path / "converted").eval()
    assert type(model).__name__ == "AVSegFormerForAudioVisualSegmentation"
    # Every official parameter is in our model or in a branch the official forward never runs.
    assert model.num_parameters() + unused_parameters == meta["official_param_count"]

    clips, frames = meta["clips"], meta["frames_per_clip"]
    pixel_values = tensors["images"].view(clips, frames, 3, 224, 224)
    frame_mask = (
        tensors["vid_temporal_mask_flag"].view(clips, frames) if "vid_temporal_mask_flag" in tensors else None
    )
    stride = meta["output_stride"]
    with torch.no_grad():
        embeddings = model.audio_encoder(input_features=tensors["log_mel"]).embeddings
        output = model(
            pixel_values=pixel_values,
            input_features=tensors["log_mel"].view(clips, frames, 1, 96, 64),
            frame_mask=frame_mask,
        )
    results = {
        "vggish_embeddings": (embeddings, tensors["vggish_embeddings"]),
        "pred_strided": (output.logits.flatten(0, 1)[:, :, ::stride, ::stride], tensors["pred_strided"]),
        "mask_feature_strided": (
            output.mask_feature.flatten(0, 1)[:, :, ::stride, ::stride],
            tensors["mask_feature_strided"],
        ),
    }
    if variant == "avsegformer_resnet50_s4":  # the official VGGish embeddings as `audio_embeds`
        with torch.no_grad():
            from_embeddings = model(
                pixel_values=pixel_values, audio_embeds=tensors["vggish_embeddings"].view(clips, frames, -1)
            )
        results["pred_strided (audio_embeds)"] = (
            from_embeddings.logits.flatten(0, 1)[:, :, ::stride, ::stride],
            tensors["pred_strided"],
        )
    for name, (ours, theirs) in results.items():
        print(f"{variant} {name}: max |diff| {(ours - theirs).abs().max():.3e}")
        torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=0, msg=name)

    processor = AutoProcessor.from_pretrained(tmp_path / "converted")
    semantic = variant.endswith("avss")
    assert processor.num_frames == (10 if semantic else 5)
    assert processor.image_processor.size == (
        {"height": 224, "width": 224} if semantic else {"height": 512, "width": 512}
    )
    if semantic:
        assert model.config.id2label[0] == "background" and len(model.config.id2label) == 71
