"""Official TPAVI (AVSBench) checkpoints, converted by our script, reproduce the official outputs:
the logits, every stage map after TPAVI (`v_map`) and TPAVI's audio features (`a_fea`)."""

import json

import pytest
import torch
from parity_weights import assert_holds_vggish, deterministic_state_dict, save_vggish
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from avs_models.data import AVSS_CLASS_NAMES
from avs_models.models.tpavi.convert_tpavi_original_to_hf import UNUSED_OFFICIAL_KEY
from avs_models.models.tpavi.convert_tpavi_original_to_hf import main as convert

VARIANTS = ["tpavi_resnet50_s4", "tpavi_pvtv2b5_ms3", "tpavi_pvtv2b5_avss"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_checkpoint_matches_official_outputs(variant, parity_dir, tmp_path):
    fixture = parity_dir / variant
    meta = json.loads((fixture / "meta.json").read_text())
    tensors = load_file(fixture / "tensors.safetensors")
    official_state_dict = deterministic_state_dict(meta["state_dict_spec"])
    torch.save(official_state_dict, tmp_path / "official.pth")
    unused_parameters = sum(
        tensor.numel()
        for key, tensor in official_state_dict.items()
        if UNUSED_OFFICIAL_KEY.match(key)
        and not key.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    del official_state_dict  # one full-size model in memory at a time

    arguments = ["--checkpoint", str(tmp_path / "official.pth"), "--output-dir", str(tmp_path / "converted")]
    if variant == "tpavi_resnet50_s4":  # also attach a VGGish encoder
        arguments += save_vggish(tmp_path / "vggish")
    convert(arguments)
    (tmp_path / "official.pth").unlink()
    model = AutoModel.from_pretrained(tmp_path / "converted").eval()
    if variant == "tpavi_resnet50_s4":
        assert_holds_vggish(model, tmp_path / "vggish")
    processor = AutoProcessor.from_pretrained(tmp_path / "converted")
    assert processor.num_frames == meta["frames_per_clip"]
    if meta["num_classes"] == len(AVSS_CLASS_NAMES):
        assert model.config.id2label == dict(enumerate(AVSS_CLASS_NAMES))
        assert model.config.tpavi_audio_bias is False  # the AVSS code's `align_channel` has no bias

    clips, frames = meta["clips"], meta["frames_per_clip"]
    inputs = {
        "pixel_values": tensors["images"].view(clips, frames, 3, 224, 224),
        "audio_embeds": tensors["audio"].view(clips, frames, -1),
    }
    if "vid_temporal_mask_flag" in tensors:
        inputs["frame_mask"] = tensors["vid_temporal_mask_flag"].view(clips, frames)
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True)

    stride = meta["output_stride"]
    group_size = meta["tpavi_group_size"]
    ours = {"pred_strided": output.logits.flatten(0, 1)[:, :, ::stride, ::stride]}
    for stage, stage_map in enumerate(output.hidden_states, start=1):
        stage_map = stage_map.flatten(0, 1)
        if stage < 4:
            ours[f"v_map{stage}_strided"] = stage_map[:, :, ::stride, ::stride]
        else:
            ours["v_map4"] = stage_map
    for stage, audio in enumerate(output.audio_hidden_states, start=1):
        ours[f"a_fea{stage}"] = audio.reshape(-1, group_size, audio.shape[-1])
    assert sorted(ours) == sorted(meta["outputs"])
    for name, value in ours.items():
        print(f"{variant} {name}: max |diff| {(value - tensors[name]).abs().max():.3e}")
        torch.testing.assert_close(value, tensors[name], atol=1e-3, rtol=0, msg=name)

    # Every official parameter is in our model or in a part the official forward never runs.
    ours_count = sum(
        p.numel() for name, p in model.named_parameters() if not name.startswith("audio_encoder.")
    )
    assert ours_count + unused_parameters == meta["official_param_count"]
